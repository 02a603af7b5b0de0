/* method perq: calibration sequences, the W4A4 hook, and whole jobs on
 * stories260K (PERQ_SHARED; skipped without it): MassDiff's mechanism on every
 * layer, block mode, a weight-only artifact that loads and scores close to
 * the float model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calibrate.h"
#include "perq/actquant.h"
#include "perq/fsutil.h"
#include "perq/job.h"

static char model_dir[512], text_path[512], calib_path[600], tmp_root[256];

static void test_calib_sequences(void **state)
{
    (void)state;
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++)
        ids[i] = 3 + i;
    int32_t *a, *b, *c;
    perq_err err = {0};
    assert_int_equal(perq_calib_sequences(ids, 1000, 1, 5, 10, 42, &a, &err), 0);
    assert_int_equal(perq_calib_sequences(ids, 1000, 1, 5, 10, 42, &b, &err), 0);
    assert_int_equal(perq_calib_sequences(ids, 1000, 1, 5, 10, 43, &c, &err), 0);
    for (int s = 0; s < 5; s++) {
        assert_int_equal(a[s * 10], 1);
        for (int t = 2; t < 10; t++)
            assert_int_equal(a[s * 10 + t], a[s * 10 + t - 1] + 1); /* consecutive text */
        assert_true(a[s * 10 + 9] <= 3 + 999);
    }
    assert_memory_equal(a, b, 50 * sizeof *a);
    assert_memory_not_equal(a, c, 50 * sizeof *a);
    free(a);
    free(b);
    free(c);
    assert_int_equal(perq_calib_sequences(ids, 5, 1, 2, 10, 42, &a, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
}

/* down_proj: rotated then quantized; lm_head: untouched; W4A16: only R3. */
static void test_w4a4_hook(void **state)
{
    (void)state;
    perq_rotation r;
    perq_err err = {0};
    assert_int_equal(perq_rotation_init(&r, 4, 1, &err), 0);
    float x[2][8] = {{1, -2, 3, 0.5f, 7, -1, 0, 2}, {0.1f, 0.2f, -0.3f, 4, 1, 1, -5, 2}};
    float want[2][8];
    memcpy(want, x, sizeof x);
    assert_int_equal(perq_rotation_right(&r, &want[0][0], 2, 8, PERQ_ROT_N, &err), 0);
    float rotated[2][8];
    memcpy(rotated, want, sizeof want);
    perq_actquant_rows(&want[0][0], 2, 8, PERQ_ACTQUANT_CLIP);

    perq_w4a4 h = {&r, 4};
    perq_linear_hook hook = perq_w4a4_hook(&h);
    perq_linear_site site = {.layer = 0, .kind = PERQ_LIN_DOWN, .x = &x[0][0], .rows = 2, .in = 8, .out = 3};
    float head[2][8];
    memcpy(head, x, sizeof x);
    assert_int_equal(hook.before(hook.ctx, &site, &err), 0);
    assert_memory_equal(x, want, sizeof x);

    float keep[2][8];
    memcpy(keep, head, sizeof head);
    site.kind = PERQ_LIN_HEAD;
    site.x = &head[0][0];
    assert_int_equal(hook.before(hook.ctx, &site, &err), 0);
    assert_memory_equal(head, keep, sizeof head);

    perq_w4a4 a16 = {&r, 16};
    hook = perq_w4a4_hook(&a16);
    site.kind = PERQ_LIN_DOWN;
    assert_int_equal(hook.before(hook.ctx, &site, &err), 0);
    assert_int_equal(perq_rotation_right(&r, &keep[0][0], 2, 8, PERQ_ROT_N, &err), 0);
    assert_memory_equal(head, keep, sizeof head);

    perq_w4a4 nothing = {NULL, 16};
    assert_null(perq_w4a4_hook(&nothing).before);
    perq_rotation_free(&r);
}

/* ---- whole jobs ----------------------------------------------------------------- */

/* Stages and per-layer progress as a reporter sees them. */
typedef struct seen {
    char stages[512][16];
    int n_stages;
    long long last_done, last_total;
    int progress_ok;
} seen;

static void on_stage(void *ctx, const char *stage)
{
    seen *s = ctx;
    if (s->n_stages < 512)
        snprintf(s->stages[s->n_stages++], sizeof s->stages[0], "%s", stage);
}

static void on_progress(void *ctx, long long done, long long total)
{
    seen *s = ctx;
    s->progress_ok = s->progress_ok && done >= 0 && done <= total;
    s->last_done = done;
    s->last_total = total;
}

static json_t *run_job_seen(const char *spec_text, const char *name, seen *watch)
{
    if (!getenv("PERQ_SHARED"))
        skip();
    char out[700];
    snprintf(out, sizeof out, "%s/%s", tmp_root, name);
    json_error_t jerr;
    json_t *doc = json_loads(spec_text, 0, &jerr);
    assert_non_null(doc);
    perq_jobspec spec;
    perq_err err = {0};
    if (perq_jobspec_parse(doc, false, &spec, &err) != 0)
        fail_msg("spec: %s", err.msg);
    json_decref(doc);
    perq_job_paths paths = {model_dir, out, calib_path, spec.eval.present ? text_path : NULL};
    json_t *metrics = NULL;
    perq_reporter rep = {watch, on_stage, on_progress, NULL, NULL};
    if (perq_job_run(&spec, &paths, watch ? &rep : NULL, &metrics, &err) != 0)
        fail_msg("job %s: %s", name, err.msg);
    json_decref(metrics);
    char path[800];
    snprintf(path, sizeof path, "%s/report.json", out);
    json_t *report = json_load_file(path, 0, &jerr);
    assert_non_null(report);
    return report;
}

static json_t *run_job(const char *spec_text, const char *name)
{
    return run_job_seen(spec_text, name, NULL);
}

static double num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

/* R3 in blocks of 4 after MassDiff: on every layer the blocks' l1 masses are
 * more even and the per-token INT4 error of the rotated input lower. */
static void test_massdiff_mechanism(void **state)
{
    (void)state;
    json_t *r = run_job("{\"method\": \"perq\", \"activations\": {\"bits\": 4}, \"weights\": {\"algorithm\": \"rtn\"},"
                        " \"rotation\": {\"mode\": \"full\", \"block_size\": 4, \"permutation\": \"massdiff\"},"
                        " \"calibration\": {\"dataset\": \"c\", \"samples\": 8, \"seq_len\": 128, \"seed\": 1}}",
                        "massdiff");
    const json_t *layers = json_object_get(r, "layers");
    assert_int_equal(json_array_size(layers), 5);
    for (size_t l = 0; l < 5; l++) {
        const json_t *d = json_object_get(json_array_get(layers, l), "down_proj_input");
        printf("# layer %zu: mass ratio %.3f -> %.3f, INT4 error %.5f -> %.5f\n", l, num(d, "mass_ratio_before"),
               num(d, "mass_ratio_after"), num(d, "act_error_before"), num(d, "act_error_after"));
        assert_true(num(d, "mass_ratio_after") < num(d, "mass_ratio_before"));
        assert_true(num(d, "act_error_after") < num(d, "act_error_before"));
        assert_int_equal((int)num(d, "block_size"), 4);
    }
    json_decref(r);
}

static int stage_count(const seen *s, const char *stage)
{
    int n = 0;
    for (int i = 0; i < s->n_stages; i++)
        n += strcmp(s->stages[i], stage) == 0;
    return n;
}

/* A W4A4 block job reports every stage of API.md as it happens, layer by
 * layer (permuting once per layer, before that layer's quantizing), and the
 * report times each. */
static void test_stages(void **state)
{
    (void)state;
    seen s = {.progress_ok = 1};
    json_t *r = run_job_seen("{\"method\": \"perq\", \"weights\": {\"algorithm\": \"gptq\"},"
                             " \"rotation\": {\"mode\": \"full\", \"block_size\": 4, \"permutation\": \"massdiff\"},"
                             " \"calibration\": {\"dataset\": \"c\", \"samples\": 4, \"seq_len\": 64, \"seed\": 1},"
                             " \"eval\": {\"dataset\": \"e\", \"ctx\": 64, \"chunks\": 2}}",
                             "stages", &s);
    assert_true(s.n_stages > 0);
    assert_string_equal(s.stages[0], "loading");
    assert_string_equal(s.stages[s.n_stages - 2], "exporting");
    assert_string_equal(s.stages[s.n_stages - 1], "evaluating");
    assert_int_equal(stage_count(&s, "permuting"), 5);
    assert_int_equal(stage_count(&s, "quantizing"), 5);
    assert_true(stage_count(&s, "rotating") >= 5);
    assert_true(stage_count(&s, "calibrating") >= 10);
    for (int i = 0, permuted = 0; i < s.n_stages; i++) {
        permuted += strcmp(s.stages[i], "permuting") == 0;
        if (strcmp(s.stages[i], "quantizing") == 0)
            assert_true(permuted > 0 && --permuted == 0); /* one permuting before each quantizing */
        if (i > 0)
            assert_string_not_equal(s.stages[i], s.stages[i - 1]);
    }
    assert_true(s.progress_ok);
    const json_t *secs = json_object_get(json_object_get(r, "compute"), "stage_seconds");
    for (int k = 0; k < PERQ_PIPELINE_STAGES; k++)
        assert_true(num(secs, perq_pipeline_stage_name((perq_pipeline_stage)k)) >= 0);
    assert_true(num(json_object_get(r, "compute"), "calibration_gflop") > 0);
    assert_true(num(json_object_get(r, "compute"), "gptq_update_gflop") > 0);
    json_decref(r);
}

/* Without a rotation nothing needs the norms folded: a perq W4A16 RTN job
 * with mode none quantizes exactly what method rtn does, and the artifact
 * keeps the model's norm weights. */
static void test_none_is_rtn(void **state)
{
    (void)state;
    json_t *p = run_job("{\"method\": \"perq\", \"activations\": {\"bits\": 16}, \"weights\": {\"algorithm\": \"rtn\","
                        " \"group_size\": null}, \"rotation\": {\"mode\": \"none\", \"permutation\": \"identity\"},"
                        " \"calibration\": {\"dataset\": \"c\", \"samples\": 2, \"seq_len\": 64, \"seed\": 1},"
                        " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 8}}",
                        "none_perq");
    json_t *r = run_job("{\"method\": \"rtn\", \"weights\": {\"algorithm\": \"rtn\", \"group_size\": null},"
                        " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 8}}",
                        "none_rtn");
    double a = num(json_object_get(p, "eval"), "ppl_quantized"), b = num(json_object_get(r, "eval"), "ppl_quantized");
    printf("# W4A16 RTN, no rotation: perq %.6f, method rtn %.6f\n", a, b);
    assert_true(fabs(a - b) < 1e-4 * b);
    json_decref(p);
    json_decref(r);
}

/* All-block mode (P1, R1/R2/R3 in blocks of 4): runs, reports P1, and the
 * W4A4 model it exports scores within reach of the float model. */
static void test_block_mode(void **state)
{
    (void)state;
    json_t *r = run_job("{\"method\": \"perq\", \"weights\": {\"algorithm\": \"gptq\"},"
                        " \"rotation\": {\"mode\": \"block\", \"block_size\": 4, \"permutation\": \"massdiff\"},"
                        " \"calibration\": {\"dataset\": \"c\", \"samples\": 8, \"seq_len\": 128, \"seed\": 1},"
                        " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 8}}",
                        "block");
    const json_t *p1 = json_object_get(json_object_get(r, "rotations"), "p1");
    assert_non_null(p1);
    assert_true(num(p1, "mass_ratio_after") <= num(p1, "mass_ratio_before"));
    const json_t *e = json_object_get(r, "eval");
    double f = num(e, "ppl_float"), q = num(e, "ppl_quantized");
    printf("# block 4 W4A4 GPTQ: ppl float %.4f, quantized %.4f\n", f, q);
    assert_true(q > f && q < 1.6 * f);
    json_decref(r);
}

/* W4A16 with R1+R2 folded: an untied, rotated artifact without any online
 * transform, close to the float model. */
static void test_weight_only(void **state)
{
    (void)state;
    json_t *r = run_job("{\"method\": \"perq\", \"activations\": {\"bits\": 16}, \"weights\": {\"group_size\": 32},"
                        " \"calibration\": {\"dataset\": \"c\", \"samples\": 8, \"seq_len\": 128, \"seed\": 1},"
                        " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 8}}",
                        "a16");
    const json_t *e = json_object_get(r, "eval");
    double f = num(e, "ppl_float"), q = num(e, "ppl_quantized");
    printf("# W4A16 g32 GPTQ R1+R2: ppl float %.4f, quantized %.4f\n", f, q);
    assert_true(q > f && q < 1.2 * f);
    assert_true(json_is_null(json_object_get(json_object_get(r, "rotations"), "r3")));
    json_decref(r);
    char path[800];
    snprintf(path, sizeof path, "%s/a16/config.json", tmp_root);
    json_t *cfg = json_load_file(path, 0, NULL);
    assert_non_null(cfg);
    assert_true(json_is_false(json_object_get(cfg, "tie_word_embeddings")));
    const json_t *qc = json_object_get(cfg, "quantization_config");
    assert_null(json_object_get(qc, "transform_config"));
    json_decref(cfg);
}

static int setup(void **state)
{
    (void)state;
    const char *shared = getenv("PERQ_SHARED");
    snprintf(model_dir, sizeof model_dir, "%s/models/stories260K", shared ? shared : "../shared");
    snprintf(text_path, sizeof text_path, "%s/data/tinystories_valid_head.txt", shared ? shared : "../shared");
    snprintf(tmp_root, sizeof tmp_root, "/tmp/perq_test_pipeline.XXXXXX");
    if (!mkdtemp(tmp_root))
        return -1;
    snprintf(calib_path, sizeof calib_path, "%s/calib.txt", tmp_root);
    if (!shared)
        return 0;
    /* Calibration text from the end of the file, away from the evaluation chunks. */
    FILE *in = fopen(text_path, "rb"), *out = fopen(calib_path, "wb");
    if (!in || !out)
        return -1;
    fseek(in, -40000, SEEK_END);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    perq_err err = {0};
    return perq_remove_tree(tmp_root, &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calib_sequences),
        cmocka_unit_test(test_w4a4_hook),
        cmocka_unit_test(test_massdiff_mechanism),
        cmocka_unit_test(test_stages),
        cmocka_unit_test(test_none_is_rtn),
        cmocka_unit_test(test_block_mode),
        cmocka_unit_test(test_weight_only),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
