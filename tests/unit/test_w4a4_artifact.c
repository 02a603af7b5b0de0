/* A perq W4A4 artifact read back by perq itself: `perq eval` on the folder
 * (perq_eval_perplexity) gives exactly the W4A4 perplexity the job reported,
 * because config.json's input_activations and transform_config rebuild the
 * job's own hook; without them the figure differs. The untied head is
 * consistent with config.json. Activation schemes and transforms perq cannot
 * apply are refused with their reason. The job (stories260K, RTN weights, R3
 * in blocks of 4) runs once for the whole file; skipped without the shared
 * model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "perq/eval.h"
#include "perq/job.h"
#include "perq/jobspec.h"
#include "perq/perplexity.h"
#include "perq/safetensors.h"
#include "perq/tokenizer.h"
#include "perq/w4a4.h"

enum { EVAL_CTX = 128, EVAL_CHUNKS = 4 };

static const char *const job_spec =
    "{\"method\": \"perq\", \"activations\": {\"bits\": 4}, \"weights\": {\"algorithm\": \"rtn\"},"
    " \"rotation\": {\"mode\": \"full\", \"block_size\": 4, \"permutation\": \"massdiff\"},"
    " \"calibration\": {\"dataset\": \"c\", \"samples\": 4, \"seq_len\": 128, \"seed\": 7},"
    " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 4}}";

typedef struct fixture {
    char *tmp, *model, *text, *artifact;
    json_t *metrics, *report;
} fixture;

static fixture fx;

static int setup(void **state)
{
    (void)state;
    fx.model = shared_path("models/stories260K");
    fx.text = shared_path("data/tinystories_valid_head.txt");
    if (access(fx.model, R_OK) != 0 || access(fx.text, R_OK) != 0)
        return 0; /* each test skips */
    char tmpl[] = "/tmp/perq-w4a4-artifact-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    fx.tmp = strdup(tmpl);
    if (asprintf(&fx.artifact, "%s/job", fx.tmp) < 0)
        return -1;
    perq_job_paths paths = {fx.model, fx.artifact, fx.text, fx.text};
    perq_err err = {0};
    if (test_run_spec(job_spec, &paths, &fx.metrics, &err) != 0) {
        fprintf(stderr, "job: %s\n", err.msg);
        return -1;
    }
    char *path;
    if (asprintf(&path, "%s/report.json", fx.artifact) < 0)
        return -1;
    fx.report = json_load_file(path, 0, NULL);
    free(path);
    return fx.report ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (fx.tmp)
        perq_remove_tree(fx.tmp, NULL);
    json_decref(fx.metrics);
    json_decref(fx.report);
    free(fx.tmp);
    free(fx.model);
    free(fx.text);
    free(fx.artifact);
    return 0;
}

static void need_job(void)
{
    if (!fx.report)
        skip();
}

static double eval_number(const char *key)
{
    const json_t *v = json_object_get(json_object_get(fx.report, "eval"), key);
    assert_true(json_is_real(v));
    return json_real_value(v);
}

static perq_eval_result eval_dir(const char *dir)
{
    perq_eval_options opt = {PERQ_PPL_LLAMACPP, EVAL_CTX, EVAL_CHUNKS};
    perq_eval_result r;
    perq_err err = {0};
    if (perq_eval_perplexity(dir, fx.text, &opt, NULL, &r, &err) != 0)
        fail_msg("eval %s: %s", dir, err.msg);
    return r;
}

/* ---- the artifact evaluates as the job did --------------------------------------- */

static void test_eval_reproduces_job(void **state)
{
    (void)state;
    need_job();
    perq_eval_result r = eval_dir(fx.artifact);
    double job_ppl = eval_number("ppl_quantized");
    printf("# W4A4 artifact: job %.10f, perq eval %.10f (float %.6f)\n", job_ppl, r.ppl, eval_number("ppl_float"));
    assert_true(r.ppl == job_ppl);
    assert_true(r.nll == eval_number("nll_quantized"));
    assert_true(r.ppl == json_real_value(json_object_get(fx.metrics, "ppl_quantized")));
    assert_int_equal(r.chunks, EVAL_CHUNKS);
    assert_int_equal(r.ctx, EVAL_CTX);
    assert_int_equal(r.tokens_scored, json_integer_value(json_object_get(json_object_get(fx.report, "eval"),
                                                                         "tokens_scored")));
}

/* The same weights with activations in fp32 and no R3 score differently, so
 * the equality above is the hook's doing. */
static void test_without_the_hook_differs(void **state)
{
    (void)state;
    need_job();
    perq_model *m;
    perq_tokenizer *tok;
    perq_err err = {0};
    assert_int_equal(perq_model_open(fx.artifact, &m, &err), 0);
    assert_int_equal(perq_tokenizer_load(fx.artifact, &tok, &err), 0);
    char *text;
    size_t len, n;
    int32_t *ids;
    assert_int_equal(perq_read_file(fx.text, 0, &text, &len, &err), 0);
    if (len > 0 && text[len - 1] == '\n')
        len--;
    assert_int_equal(perq_tokenizer_encode(tok, text, len, true, &ids, &n, &err), 0);
    perq_eval_options opt = {PERQ_PPL_LLAMACPP, EVAL_CTX, EVAL_CHUNKS};
    perq_eval_result r;
    assert_int_equal(perq_perplexity_ids(m, ids, n, perq_tokenizer_bos_id(tok), &opt, PERQ_EVAL_AUTO, NULL, NULL, &r,
                                         &err),
                     0);
    printf("# fp32 activations, no R3: %.6f\n", r.ppl);
    assert_true(fabs(r.ppl - eval_number("ppl_quantized")) > 1e-6 * r.ppl);
    free(ids);
    free(text);
    perq_tokenizer_free(tok);
    perq_model_close(m);
}

/* ---- config.json as the job wrote it -------------------------------------------- */

static json_t *artifact_config(void)
{
    char *path = in_dir(fx.artifact, "config.json");
    json_t *cfg = json_load_file(path, 0, NULL);
    free(path);
    assert_non_null(cfg);
    return cfg;
}

static void test_scheme_of_artifact(void **state)
{
    (void)state;
    need_job();
    perq_w4a4_scheme s;
    perq_err err = {0};
    assert_int_equal(perq_w4a4_scheme_read(fx.artifact, &s, &err), 0);
    assert_int_equal(s.act_bits, 4);
    assert_true(s.has_r3);
    assert_int_equal(s.r3_block, 4);
    assert_string_equal(s.r3_construction, "sylvester(4)");
    assert_true(perq_w4a4_scheme_active(&s));
}

/* The head was changed by folding (norm, R1): the artifact says untied and
 * carries lm_head.weight, and perq reads that head rather than the embedding. */
static void test_untied_head(void **state)
{
    (void)state;
    need_job();
    json_t *cfg = artifact_config();
    assert_true(json_is_false(json_object_get(cfg, "tie_word_embeddings")));
    json_decref(cfg);
    perq_checkpoint ck;
    perq_err err = {0};
    assert_int_equal(perq_ckpt_open(fx.artifact, &ck, &err), 0);
    const perq_tensor *head = perq_ckpt_find(&ck, "lm_head.weight");
    const perq_tensor *embed = perq_ckpt_find(&ck, "model.embed_tokens.weight");
    assert_non_null(head);
    assert_non_null(embed);
    assert_int_equal(head->ndim, 2);
    assert_int_equal(head->shape[0], 512);
    assert_int_equal(head->shape[1], 64);
    assert_true(head->nbytes == embed->nbytes && memcmp(head->data, embed->data, head->nbytes) != 0);
    perq_model *m;
    assert_int_equal(perq_model_open(fx.artifact, &m, &err), 0);
    assert_false(m->cfg.tie_word_embeddings);
    assert_int_equal(perq_model_load_head(m, &err), 0);
    assert_int_equal(head->dtype, PERQ_DT_F32);
    assert_memory_equal(m->head, head->data, head->nbytes);
    perq_model_close(m);
    perq_ckpt_close(&ck);
}

/* ---- refusals ------------------------------------------------------------------------- */

/* config.json of the artifact with one edit at a JSON pointer-ish path. */
static char *config_with(const char *group_key, const char *key, json_t *value)
{
    json_t *cfg = artifact_config();
    json_t *qc = json_object_get(cfg, "quantization_config");
    json_t *target;
    if (!strcmp(group_key, "acts"))
        target = json_object_get(json_object_get(json_object_get(qc, "config_groups"), "group_0"), "input_activations");
    else if (!strcmp(group_key, "r3"))
        target = json_object_get(json_object_get(json_object_get(qc, "transform_config"), "config_groups"), "r3");
    else if (!strcmp(group_key, "apply"))
        target = json_array_get(json_object_get(json_object_get(json_object_get(json_object_get(qc,
                                "transform_config"), "config_groups"), "r3"), "apply"), 0);
    else
        target = qc;
    assert_non_null(target);
    assert_int_equal(json_object_set_new(target, key, value), 0);
    char *text = json_dumps(cfg, 0);
    json_decref(cfg);
    assert_non_null(text);
    return text;
}

static void expect_refused(const char *group_key, const char *key, json_t *value, perq_errcode code,
                           const char *phrase)
{
    char *text = config_with(group_key, key, value);
    perq_w4a4_scheme s;
    perq_err err = {0};
    assert_int_equal(perq_w4a4_scheme_parse(text, strlen(text), &s, &err), -1);
    printf("# %s.%s: %s\n", group_key, key, err.msg);
    assert_int_equal(err.code, code);
    assert_non_null(strstr(err.msg, phrase));
    free(text);
}

static void test_refusals(void **state)
{
    (void)state;
    need_job();
    expect_refused("r3", "type", json_string("fourier"), PERQ_E_UNSUPPORTED, "\"fourier\"");
    expect_refused("r3", "randomize", json_true(), PERQ_E_UNSUPPORTED, "randomized");
    expect_refused("r3", "head_dim", json_string("4"), PERQ_E_FORMAT, "head_dim");
    expect_refused("apply", "location", json_string("weight_input"), PERQ_E_UNSUPPORTED, "\"weight_input\"");
    expect_refused("apply", "inverse", json_true(), PERQ_E_UNSUPPORTED, "inverse");
    expect_refused("apply", "targets", json_pack("[s]", "Linear"), PERQ_E_UNSUPPORTED, "targets");
    expect_refused("acts", "num_bits", json_integer(8), PERQ_E_UNSUPPORTED, "8-bit");
    expect_refused("acts", "strategy", json_string("tensor"), PERQ_E_UNSUPPORTED, "\"tensor\"");
    expect_refused("acts", "symmetric", json_true(), PERQ_E_UNSUPPORTED, "symmetric");
    expect_refused("acts", "dynamic", json_false(), PERQ_E_UNSUPPORTED, "dynamic");
    expect_refused("qc", "transform_config", json_pack("{s{s{ss}s{ss}}}", "config_groups", "a", "type", "hadamard",
                                                       "b", "type", "hadamard"),
                   PERQ_E_UNSUPPORTED, "2 transform groups");
}

/* A folder with the artifact's files and an edited config.json. */
static char *edited_artifact(const char *name, char *config_text)
{
    char *dir = in_dir(fx.tmp, name);
    perq_err err = {0};
    assert_int_equal(perq_mkdirs(dir, &err), 0);
    const char *files[] = {"model.safetensors", "tokenizer.json", "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *src = in_dir(fx.artifact, files[i]), *dst = in_dir(dir, files[i]);
        if (access(src, R_OK) == 0)
            assert_int_equal(perq_copy_file(src, dst, &err), 0);
        free(src);
        free(dst);
    }
    char *cfg = in_dir(dir, "config.json");
    assert_int_equal(perq_write_file_atomic(cfg, config_text, strlen(config_text), &err), 0);
    free(cfg);
    free(config_text);
    return dir;
}

static int eval_fails(const char *dir, perq_err *err)
{
    perq_eval_options opt = {PERQ_PPL_LLAMACPP, EVAL_CTX, EVAL_CHUNKS};
    perq_eval_result r;
    return perq_eval_perplexity(dir, fx.text, &opt, NULL, &r, err);
}

/* End to end: perq eval refuses rather than scoring fp32 activations, and an
 * R3 it would build differently from the one named is refused too. */
static void test_eval_refuses(void **state)
{
    (void)state;
    need_job();
    perq_err err = {0};
    char *dir = edited_artifact("fourier", config_with("r3", "type", json_string("fourier")));
    assert_int_equal(eval_fails(dir, &err), -1);
    assert_int_equal(err.code, PERQ_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "transform type \"fourier\""));
    free(dir);

    dir = edited_artifact("r3-of-5", config_with("r3", "head_dim", json_integer(5)));
    assert_int_equal(eval_fails(dir, &err), -1);
    assert_non_null(strstr(err.msg, "do not divide intermediate_size 172"));
    free(dir);

    dir = edited_artifact("named-otherwise", config_with("r3", "construction", json_string("sylvester(2) x h2")));
    assert_int_equal(eval_fails(dir, &err), -1);
    assert_non_null(strstr(err.msg, "\"sylvester(4)\""));
    free(dir);

    /* Without transform_config the same folder evaluates, without R3: another figure. */
    dir = edited_artifact("no-r3", config_with("qc", "transform_config", json_null()));
    perq_eval_result r = eval_dir(dir);
    printf("# without R3: %.6f\n", r.ppl);
    assert_true(fabs(r.ppl - eval_number("ppl_quantized")) > 1e-6 * r.ppl);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_reproduces_job), cmocka_unit_test(test_without_the_hook_differs),
        cmocka_unit_test(test_scheme_of_artifact),  cmocka_unit_test(test_untied_head),
        cmocka_unit_test(test_refusals),            cmocka_unit_test(test_eval_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
