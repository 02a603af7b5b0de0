/* The job spec: every default, every rejection with its message, and the
 * normalised form parsing back to the same spec. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perq/jobspec.h"

static json_t *load(const char *text)
{
    json_error_t e;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    if (!doc)
        fail_msg("test JSON does not parse: %s: %s", e.text, text);
    return doc;
}

static int parse_text(const char *text, bool require_model, perq_jobspec *s, perq_err *err)
{
    json_t *doc = load(text);
    int rc = perq_jobspec_parse(doc, require_model, s, err);
    json_decref(doc);
    return rc;
}

/* The normalised form parses back (with and without a required model) to the same spec. */
static void assert_round_trip(const perq_jobspec *s)
{
    json_t *j = perq_jobspec_to_json(s);
    assert_non_null(j);
    perq_jobspec back;
    perq_err err = {0};
    if (perq_jobspec_parse(j, s->model[0] != 0, &back, &err) != 0)
        fail_msg("normalised spec rejected: %s", err.msg);
    assert_memory_equal(&back, s, sizeof back);
    json_t *again = perq_jobspec_to_json(&back);
    assert_true(json_equal(j, again));
    json_decref(again);
    json_decref(j);
}

static void assert_normalised(const char *text, bool require_model, const char *want)
{
    perq_jobspec s;
    perq_err err = {0};
    if (parse_text(text, require_model, &s, &err) != 0)
        fail_msg("rejected %s: %s", text, err.msg);
    json_t *got = perq_jobspec_to_json(&s), *expected = load(want);
    if (!json_equal(got, expected)) {
        char *dump = json_dumps(got, JSON_COMPACT);
        print_error("got      %s\nexpected %s\n", dump, want);
        free(dump);
        fail();
    }
    json_decref(got);
    json_decref(expected);
    assert_round_trip(&s);
}

static void test_rtn_defaults(void **state)
{
    (void)state;
    perq_jobspec s;
    perq_err err = {0};
    assert_int_equal(parse_text("{\"model\": \"m_1\", \"method\": \"rtn\"}", true, &s, &err), 0);
    assert_string_equal(s.model, "m_1");
    assert_int_equal(s.method, PERQ_METHOD_RTN);
    assert_int_equal(s.weights.bits, 4);
    assert_int_equal(s.weights.group_size, 0);
    assert_int_equal(s.weights.algorithm, PERQ_WALGO_RTN);
    assert_int_equal(s.activations.bits, 16);
    assert_int_equal(s.rotation.mode, PERQ_ROT_NONE);
    assert_int_equal(s.rotation.block_size, 0);
    assert_int_equal(s.rotation.permutation, PERQ_PERM_IDENTITY);
    assert_false(s.calibration.present);
    assert_int_equal(s.outputs, PERQ_OUT_COMPRESSED_TENSORS);
    assert_false(s.eval.present);
    assert_normalised("{\"model\": \"m_1\", \"method\": \"rtn\"}", true,
                      "{\"model\": \"m_1\", \"method\": \"rtn\","
                      " \"weights\": {\"bits\": 4, \"group_size\": null, \"algorithm\": \"rtn\"},"
                      " \"activations\": {\"bits\": 16},"
                      " \"rotation\": {\"mode\": \"none\", \"block_size\": null, \"permutation\": \"identity\"},"
                      " \"calibration\": null, \"outputs\": [\"compressed-tensors\"], \"eval\": null}");
}

static void test_perq_defaults(void **state)
{
    (void)state;
    const char *text = "{\"model\": \"m\", \"calibration\": {\"dataset\": \"wiki\"}}";
    perq_jobspec s;
    perq_err err = {0};
    assert_int_equal(parse_text(text, true, &s, &err), 0);
    assert_int_equal(s.method, PERQ_METHOD_PERQ);
    assert_int_equal(s.weights.algorithm, PERQ_WALGO_GPTQ);
    assert_int_equal(s.activations.bits, 4);
    assert_int_equal(s.rotation.mode, PERQ_ROT_FULL);
    assert_int_equal(s.rotation.permutation, PERQ_PERM_MASSDIFF);
    assert_true(s.calibration.present);
    assert_string_equal(s.calibration.dataset, "wiki");
    assert_int_equal(s.calibration.samples, 128);
    assert_int_equal(s.calibration.seq_len, 2048);
    assert_int_equal(s.calibration.seed, 42);
    assert_normalised(text, true,
                      "{\"model\": \"m\", \"method\": \"perq\","
                      " \"weights\": {\"bits\": 4, \"group_size\": null, \"algorithm\": \"gptq\"},"
                      " \"activations\": {\"bits\": 4},"
                      " \"rotation\": {\"mode\": \"full\", \"block_size\": null, \"permutation\": \"massdiff\","
                      " \"randomized\": false, \"online\": true, \"fold_norms\": true},"
                      " \"calibration\": {\"dataset\": \"wiki\", \"samples\": 128, \"seq_len\": 2048, \"seed\": 42},"
                      " \"outputs\": [\"compressed-tensors\"], \"eval\": null}");
}

static void test_eval_defaults_and_no_model(void **state)
{
    (void)state;
    assert_normalised("{\"method\": \"rtn\", \"eval\": {\"dataset\": \"/tmp/wiki test.txt\"}}", false,
                      "{\"method\": \"rtn\","
                      " \"weights\": {\"bits\": 4, \"group_size\": null, \"algorithm\": \"rtn\"},"
                      " \"activations\": {\"bits\": 16},"
                      " \"rotation\": {\"mode\": \"none\", \"block_size\": null, \"permutation\": \"identity\"},"
                      " \"calibration\": null, \"outputs\": [\"compressed-tensors\"],"
                      " \"eval\": {\"dataset\": \"/tmp/wiki test.txt\", \"ctx\": 256, \"chunks\": null}}");
}

static void test_full_spec(void **state)
{
    (void)state;
    /* the example of API.md, every field given */
    const char *text =
        "{\"model\": \"m\", \"method\": \"perq\","
        " \"weights\": {\"bits\": 4, \"group_size\": 128, \"algorithm\": \"gptq\"},"
        " \"activations\": {\"bits\": 4},"
        " \"rotation\": {\"mode\": \"full\", \"block_size\": 16, \"permutation\": \"massdiff\"},"
        " \"calibration\": {\"dataset\": \"wiki\", \"samples\": 16, \"seq_len\": 512, \"seed\": 7},"
        " \"outputs\": [\"compressed-tensors\"],"
        " \"eval\": {\"dataset\": \"wiki\", \"ctx\": 512, \"chunks\": 64}}";
    perq_jobspec s;
    perq_err err = {0};
    assert_int_equal(parse_text(text, true, &s, &err), 0);
    assert_int_equal(s.weights.group_size, 128);
    assert_int_equal(s.rotation.block_size, 16);
    assert_int_equal(s.calibration.samples, 16);
    assert_int_equal(s.calibration.seq_len, 512);
    assert_int_equal(s.calibration.seed, 7);
    assert_int_equal(s.outputs, PERQ_OUT_COMPRESSED_TENSORS);
    assert_int_equal(s.eval.ctx, 512);
    assert_int_equal(s.eval.chunks, 64);
    assert_round_trip(&s);
}

static void test_randomized_and_offline_rotations(void **state)
{
    (void)state;
    const char *text = "{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"},"
                       " \"rotation\": {\"randomized\": true, \"online\": false}}";
    perq_jobspec s;
    perq_err err = {0};
    assert_int_equal(parse_text(text, true, &s, &err), 0);
    assert_true(s.rotation.randomized);
    assert_false(s.rotation.online);
    assert_round_trip(&s);
    assert_int_equal(parse_text("{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}}", true, &s, &err), 0);
    assert_false(s.rotation.randomized);
    assert_true(s.rotation.online);
    assert_true(s.rotation.fold_norms);
    /* mode none keeps the norms unless told */
    assert_int_equal(parse_text("{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"},"
                                " \"rotation\": {\"mode\": \"none\"}}", true, &s, &err), 0);
    assert_false(s.rotation.fold_norms);
    assert_round_trip(&s);
    assert_int_equal(parse_text("{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"},"
                                " \"rotation\": {\"mode\": \"none\", \"fold_norms\": true}}", true, &s, &err), 0);
    assert_true(s.rotation.fold_norms);
    assert_round_trip(&s);
}

static void test_accepted_variants(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "{\"model\": \"m\", \"method\": \"rtn\", \"weights\": {\"group_size\": 32}}",
        "{\"model\": \"m\", \"method\": \"rtn\", \"weights\": {\"group_size\": null, \"algorithm\": \"rtn\"}}",
        "{\"model\": \"m\", \"method\": \"rtn\", \"rotation\": {\"mode\": \"none\"}, \"activations\": {\"bits\": 16}}",
        "{\"model\": \"m\", \"method\": \"rtn\", \"rotation\": {\"mode\": \"none\", \"block_size\": null,"
        " \"permutation\": \"identity\"}, \"calibration\": null, \"eval\": null}",
        "{\"model\": \"m\", \"method\": \"perq\", \"calibration\": {\"dataset\": \"d\"}, \"weights\":"
        " {\"algorithm\": \"rtn\", \"group_size\": 64}, \"activations\": {\"bits\": 16}}",
        "{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\", \"seed\": 0}, \"rotation\":"
        " {\"mode\": \"block\", \"block_size\": 2, \"permutation\": \"zigzag\"}}",
        "{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"mode\": \"none\","
        " \"permutation\": \"random\"}, \"activations\": {\"bits\": 16}, \"outputs\": [\"gguf\"]}",
        "{\"model\": \"m\", \"method\": \"rtn\", \"outputs\": [\"gguf\", \"compressed-tensors\"]}",
        "{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"activations\": {\"bits\": 16},"
        " \"weights\": {\"group_size\": 32}, \"outputs\": [\"compressed-tensors\", \"gguf\"]}",
        "{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\", \"seed\": 9007199254740993},"
        " \"rotation\": {\"block_size\": 65536}}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        perq_jobspec s;
        perq_err err = {0};
        if (parse_text(ok[i], true, &s, &err) != 0)
            fail_msg("rejected %s: %s", ok[i], err.msg);
        assert_round_trip(&s);
    }
}

#define GGUF_W4A4                                                                                           \
    "outputs: gguf is for weight-only jobs (activations.bits 16): W4A4 needs online activation quantization and " \
    "the R3 rotation, which GGUF cannot describe"

static const struct {
    const char *spec;
    const char *message;
} rejections[] = {
    {"[]", "job spec: must be a JSON object"},
    {"{}", "model: required"},
    {"{\"model\": \"\"}", "model: must be a non-empty string of at most 127 bytes"},
    {"{\"model\": 5}", "model: must be a non-empty string of at most 127 bytes"},
    {"{\"model\": \"m\", \"colour\": 1}", "colour: unknown field"},
    {"{\"model\": \"m\", \"method\": \"awq\"}", "method: must be \"perq\" or \"rtn\""},
    {"{\"model\": \"m\", \"method\": null}", "method: must be \"perq\" or \"rtn\""},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"weights\": 4}", "weights: must be an object"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"weights\": {\"bit\": 4}}", "weights.bit: unknown field"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"weights\": {\"bits\": 8}}", "weights.bits: must be 4"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"weights\": {\"bits\": 4.0}}", "weights.bits: must be 4"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"weights\": {\"group_size\": 16}}",
     "weights.group_size: must be 32, 64, 128 or null"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"weights\": {\"group_size\": \"32\"}}",
     "weights.group_size: must be 32, 64, 128 or null"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"weights\": {\"algorithm\": \"awq\"}}",
     "weights.algorithm: must be \"gptq\" or \"rtn\""},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"weights\": {\"algorithm\": \"gptq\"}}",
     "weights.algorithm: method rtn rounds to nearest (\"rtn\"); \"gptq\" needs method perq"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"activations\": {\"bits\": 8}}", "activations.bits: must be 4 or 16"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"activations\": {\"bits\": 16, \"x\": 1}}",
     "activations.x: unknown field"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"activations\": {\"bits\": 4}}",
     "activations.bits: method rtn is weight-only (16); 4-bit activations need method perq"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"rotation\": {\"mode\": \"full\"}}", "rotation: method rtn does not rotate"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"rotation\": {\"mode\": \"none\", \"block_size\": 16}}",
     "rotation: method rtn does not rotate"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"rotation\": {\"permutation\": \"massdiff\"}}",
     "rotation.permutation: method rtn does not permute"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"rotation\": null}", "rotation: must be an object"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"mode\": \"half\"}}",
     "rotation.mode: must be \"full\", \"block\" or \"none\""},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"permutation\": \"sorted\"}}",
     "rotation.permutation: must be \"massdiff\", \"identity\", \"zigzag\" or \"random\""},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"block_size\": 24}}",
     "rotation.block_size: must be a power of two from 2 to 65536, or null"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"block_size\": 1}}",
     "rotation.block_size: must be a power of two from 2 to 65536, or null"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"block_size\": 131072}}",
     "rotation.block_size: must be a power of two from 2 to 65536, or null"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"block_size\": -16}}",
     "rotation.block_size: must be a power of two from 2 to 65536, or null"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"mode\": \"none\", \"block_size\": 16}}",
     "rotation.block_size: mode none has no blocks"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"mode\": \"block\"}}",
     "rotation.block_size: mode block needs a block size"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"randomized\": 1}}",
     "rotation.randomized: must be true or false"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"online\": \"yes\"}}",
     "rotation.online: must be true or false"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"mode\": \"none\", \"randomized\": false}}",
     "rotation: mode none has no rotation to randomize or put online"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"online\": false, \"block_size\": 16}}",
     "rotation.block_size: with online false, mode full has no block rotation to size"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"rotation\": {\"randomized\": true}}",
     "rotation: method rtn does not rotate"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"rotation\": {\"fold_norms\": true}}",
     "rotation: method rtn does not rotate"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"rotation\": {\"fold_norms\": false}}",
     "rotation.fold_norms: a rotation needs the norms folded (false only with mode none)"},
    {"{\"model\": \"m\"}", "calibration: required for method perq"},
    {"{\"model\": \"m\", \"calibration\": null}", "calibration: required for method perq"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"calibration\": {\"dataset\": \"d\"}}",
     "calibration: method rtn does not calibrate"},
    {"{\"model\": \"m\", \"calibration\": \"d\"}", "calibration: must be an object or null"},
    {"{\"model\": \"m\", \"calibration\": {}}", "calibration.dataset: required"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\", \"n\": 1}}", "calibration.n: unknown field"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"a\\u0000b\"}}",
     "calibration.dataset: must be a non-empty string of at most 255 bytes"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\", \"samples\": 0}}",
     "calibration.samples: must be an integer from 1 to 65536"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\", \"samples\": true}}",
     "calibration.samples: must be an integer from 1 to 65536"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\", \"seq_len\": 4}}",
     "calibration.seq_len: must be an integer from 8 to 131072"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\", \"seq_len\": 4294967297}}",
     "calibration.seq_len: must be an integer from 8 to 131072"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\", \"seed\": -1}}",
     "calibration.seed: must be a non-negative integer"},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\", \"seed\": 1.5}}",
     "calibration.seed: must be a non-negative integer"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"outputs\": []}", "outputs: must be a non-empty array of formats"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"outputs\": \"gguf\"}", "outputs: must be a non-empty array of formats"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"outputs\": [\"gguf\", \"onnx\"]}",
     "outputs[1]: must be \"compressed-tensors\" or \"gguf\""},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"outputs\": [\"gguf\", \"gguf\"]}", "outputs[1]: \"gguf\" given twice"},
    /* W4A4 (the default of method perq) cannot be described in GGUF: refused before anything is queued */
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"outputs\": [\"gguf\"]}", GGUF_W4A4},
    {"{\"model\": \"m\", \"calibration\": {\"dataset\": \"d\"}, \"activations\": {\"bits\": 4},"
     " \"outputs\": [\"compressed-tensors\", \"gguf\"]}", GGUF_W4A4},
    {"{\"model\": \"m\", \"outputs\": [\"gguf\"], \"calibration\": {\"dataset\": \"d\"}, \"rotation\":"
     " {\"mode\": \"none\"}}", GGUF_W4A4},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"eval\": {}}", "eval.dataset: required"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"eval\": []}", "eval: must be an object or null"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"eval\": {\"dataset\": \"d\", \"ctx\": 4}}",
     "eval.ctx: must be an integer from 8 to 131072"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"eval\": {\"dataset\": \"d\", \"chunks\": 0}}",
     "eval.chunks: must be an integer from 1 to 1000000000, or null"},
    {"{\"model\": \"m\", \"method\": \"rtn\", \"eval\": {\"dataset\": \"d\", \"batch\": 1}}", "eval.batch: unknown field"},
};

static void test_rejections(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rejections / sizeof rejections[0]; i++) {
        perq_jobspec s;
        perq_err err = {0};
        if (parse_text(rejections[i].spec, true, &s, &err) == 0)
            fail_msg("accepted %s", rejections[i].spec);
        assert_int_equal(err.code, PERQ_E_INVALID);
        if (strcmp(err.msg, rejections[i].message) != 0)
            fail_msg("%s\n  said     %s\n  expected %s", rejections[i].spec, err.msg, rejections[i].message);
    }
}

static void test_long_strings(void **state)
{
    (void)state;
    char model[200], text[400];
    memset(model, 'a', sizeof model - 1);
    model[sizeof model - 1] = 0;
    snprintf(text, sizeof text, "{\"model\": \"%.127s\", \"method\": \"rtn\"}", model);
    perq_jobspec s;
    perq_err err = {0};
    assert_int_equal(parse_text(text, true, &s, &err), 0); /* 127 bytes fit */
    assert_int_equal(strlen(s.model), 127);
    snprintf(text, sizeof text, "{\"model\": \"%.128s\", \"method\": \"rtn\"}", model);
    assert_int_equal(parse_text(text, true, &s, &err), -1);
    assert_string_equal(err.msg, "model: must be a non-empty string of at most 127 bytes");
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(perq_method_name(PERQ_METHOD_RTN), "rtn");
    assert_string_equal(perq_walgo_name(PERQ_WALGO_GPTQ), "gptq");
    assert_string_equal(perq_rotation_mode_name(PERQ_ROT_BLOCK), "block");
    assert_string_equal(perq_permutation_name(PERQ_PERM_ZIGZAG), "zigzag");
    assert_string_equal(perq_method_name((perq_method)9), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtn_defaults),
        cmocka_unit_test(test_perq_defaults),
        cmocka_unit_test(test_eval_defaults_and_no_model),
        cmocka_unit_test(test_full_spec),
        cmocka_unit_test(test_randomized_and_offline_rotations),
        cmocka_unit_test(test_accepted_variants),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_long_strings),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
