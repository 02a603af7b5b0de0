/* The rotation options of a perq job on stories260K: randomized Hadamard
 * rotations, W4A4 without the online R3, and norm folding without rotation.
 * Each must change what is exported the way it says, and leave a model that
 * still scores close to the float one. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <jansson.h>

#include "perq/job.h"
#include "perq/safetensors.h"
#include "testutil.h"

static char *tmp, *model_dir, *text_path;

static int setup(void **state)
{
    (void)state;
    tmp = test_tmpdir("rotation-options");
    model_dir = shared_path("models/stories260K");
    text_path = shared_path("data/tinystories_valid_head.txt");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = perq_remove_tree(tmp, NULL);
    free(tmp);
    free(model_dir);
    free(text_path);
    return rc;
}

/* Runs a job whose spec has the given weights, activation bits, rotation and
 * calibration seed, with an eval of 8 chunks; returns its report.json. */
static json_t *run_job(const char *name, const char *weights, int act_bits, const char *rotation, int seed)
{
    if (!getenv("PERQ_SHARED"))
        skip();
    char *spec, *out = in_dir(tmp, name);
    assert_true(asprintf(&spec,
                         "{\"method\": \"perq\", \"weights\": %s, \"activations\": {\"bits\": %d}, \"rotation\": %s,"
                         " \"calibration\": {\"dataset\": \"c\", \"samples\": 4, \"seq_len\": 128, \"seed\": %d},"
                         " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 8}}",
                         weights, act_bits, rotation, seed) > 0);
    perq_job_paths paths = {model_dir, out, text_path, text_path};
    perq_err err = {0};
    if (test_run_spec(spec, &paths, NULL, &err) != 0)
        fail_msg("job %s: %s", name, err.msg);
    char *report_path = in_dir(out, "report.json");
    json_t *report = json_load_file(report_path, 0, NULL);
    assert_non_null(report);
    free(report_path);
    free(spec);
    free(out);
    return report;
}

static double ppl_quantized(const json_t *report)
{
    return json_number_value(json_object_get(json_object_get(report, "eval"), "ppl_quantized"));
}

static double ppl_float(const json_t *report)
{
    return json_number_value(json_object_get(json_object_get(report, "eval"), "ppl_float"));
}

static char *read_whole(const char *job, const char *file, size_t *len)
{
    char *dir = in_dir(tmp, job), *path = in_dir(dir, file), *buf = NULL;
    perq_err err = {0};
    if (perq_read_file(path, 0, &buf, len, &err) != 0)
        fail_msg("%s", err.msg);
    free(path);
    free(dir);
    return buf;
}

static bool same_file(const char *job_a, const char *job_b, const char *file)
{
    size_t na, nb;
    char *a = read_whole(job_a, file, &na), *b = read_whole(job_b, file, &nb);
    bool same = na == nb && memcmp(a, b, na) == 0;
    free(a);
    free(b);
    return same;
}

#define GPTQ "{\"algorithm\": \"gptq\", \"group_size\": null}"
#define RTN "{\"algorithm\": \"rtn\", \"group_size\": null}"

/* Randomized rotations depend on the seed, are said in the report, and keep
 * the W4A4 model within reach of the plain one. */
static void test_randomized(void **state)
{
    (void)state;
    const char *plain_rot = "{\"mode\": \"full\", \"block_size\": 4, \"permutation\": \"massdiff\"}";
    const char *random_rot = "{\"mode\": \"full\", \"block_size\": 4, \"permutation\": \"massdiff\","
                             " \"randomized\": true}";
    json_t *plain = run_job("plain", GPTQ, 4, plain_rot, 1);
    json_t *rand1 = run_job("rand1", GPTQ, 4, random_rot, 1);
    json_t *rand2 = run_job("rand2", GPTQ, 4, random_rot, 2);
    const json_t *signs = json_object_get(json_object_get(rand1, "rotations"), "random_signs");
    assert_true(json_is_integer(signs));
    assert_int_equal(json_integer_value(signs), 1);
    assert_true(json_is_null(json_object_get(json_object_get(plain, "rotations"), "random_signs")));
    assert_false(same_file("plain", "rand1", "model.safetensors"));
    assert_false(same_file("rand1", "rand2", "model.safetensors"));
    double f = ppl_float(plain), p = ppl_quantized(plain), r1 = ppl_quantized(rand1), r2 = ppl_quantized(rand2);
    printf("# W4A4 GPTQ R3 block 4 massdiff: float %.4f, plain %.4f, randomized %.4f / %.4f\n", f, p, r1, r2);
    assert_true(r1 > f && r1 < 1.25 * p);
    assert_true(r2 > f && r2 < 1.25 * p);
    json_decref(plain);
    json_decref(rand1);
    json_decref(rand2);
}

/* online false: no R3, no P3, no transform in the artifact's config; the
 * model is worse than with R3 but still a working W4A4 model. */
static void test_without_online_rotation(void **state)
{
    (void)state;
    json_t *off = run_job("r12", GPTQ, 4, "{\"mode\": \"full\", \"permutation\": \"identity\", \"online\": false}", 1);
    json_t *on = run_job("r123", GPTQ, 4, "{\"mode\": \"full\", \"permutation\": \"identity\"}", 1);
    const json_t *rot = json_object_get(off, "rotations");
    assert_true(json_is_null(json_object_get(rot, "r3")));
    assert_true(json_is_object(json_object_get(rot, "r1")));
    const json_t *layer0 = json_array_get(json_object_get(off, "layers"), 0);
    assert_null(json_object_get(layer0, "down_proj_input"));
    size_t n;
    char *cfg = read_whole("r12", "config.json", &n);
    json_t *doc = json_loadb(cfg, n, 0, NULL);
    assert_non_null(doc);
    const json_t *qc = json_object_get(doc, "quantization_config");
    const json_t *group = json_object_get(json_object_get(qc, "config_groups"), "group_0");
    assert_true(json_is_object(json_object_get(group, "input_activations")));
    assert_null(json_object_get(qc, "transform_config"));
    double f = ppl_float(on), with = ppl_quantized(on), without = ppl_quantized(off);
    printf("# W4A4 GPTQ: float %.4f, R1+R2+R3 %.4f, R1+R2 %.4f\n", f, with, without);
    assert_true(with < without && without < 2.0 * f);
    json_decref(doc);
    free(cfg);
    json_decref(off);
    json_decref(on);
}

/* The exported layer norms: ones when folded, the checkpoint's when kept. */
static void assert_norms(const char *job, bool ones)
{
    char *dir = in_dir(tmp, job), *path = in_dir(dir, "model.safetensors");
    perq_st_file f;
    perq_err err = {0};
    assert_int_equal(perq_st_open(path, &f, &err), 0);
    const perq_tensor *t = perq_st_find(&f, "model.layers.0.input_layernorm.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, PERQ_DT_F32);
    const float *v = t->data;
    int all_ones = 1;
    for (size_t i = 0; i < t->nbytes / sizeof *v; i++)
        all_ones &= v[i] == 1.0f;
    assert_int_equal(all_ones, ones);
    perq_st_close(&f);
    free(path);
    free(dir);
}

/* fold_norms with mode none: same weights' function, other quantization. */
static void test_fold_norms_without_rotation(void **state)
{
    (void)state;
    json_t *kept = run_job("kept", RTN, 16, "{\"mode\": \"none\", \"permutation\": \"identity\"}", 1);
    json_t *folded = run_job("folded", RTN, 16,
                             "{\"mode\": \"none\", \"permutation\": \"identity\", \"fold_norms\": true}", 1);
    assert_norms("kept", false);
    assert_norms("folded", true);
    double f = ppl_float(kept), k = ppl_quantized(kept), d = ppl_quantized(folded);
    printf("# W4A16 RTN no rotation: float %.4f, norms kept %.4f, folded %.4f\n", f, k, d);
    assert_true(fabs(k - d) > 1e-3 * k);
    assert_true(d > f && d < 1.5 * f);
    json_decref(kept);
    json_decref(folded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_randomized),
        cmocka_unit_test(test_without_online_rotation),
        cmocka_unit_test(test_fold_norms_without_rotation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
