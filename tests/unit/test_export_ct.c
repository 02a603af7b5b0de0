/* rtn jobs on stories260K (F32 per channel, BF16 groups of 32) through
 * perq_job_run, read back with the safetensors reader: packed layout, scales
 * in the model's dtype and equal to what the search picks, dequantized weights
 * within half a step, float tensors bit-exact, config.json, report.json and a
 * manifest whose hashes hold. Also sharding, cancel and refusals. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "export_ct.h"
#include "perq/fsutil.h"
#include "perq/int4.h"
#include "perq/job.h"
#include "perq/jobspec.h"
#include "perq/safetensors.h"

static char model_f32[1024], model_bf16[1024], eval_text[1024];

static const char *const linear_parts[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                           "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                           "mlp.down_proj"};

/* ---- a reporter that remembers ------------------------------------------------ */

typedef struct seen {
    char stages[8][16];
    int n_stages;
    long long last_done, last_total;
    int progress_calls, cancel_after; /* cancel_after 0: never */
} seen;

static void on_stage(void *ctx, const char *stage)
{
    seen *s = ctx;
    if (s->n_stages < 8)
        snprintf(s->stages[s->n_stages++], sizeof s->stages[0], "%s", stage);
}
static void on_progress(void *ctx, long long done, long long total)
{
    seen *s = ctx;
    s->last_done = done;
    s->last_total = total;
    s->progress_calls++;
}
static int on_cancelled(void *ctx)
{
    seen *s = ctx;
    return s->cancel_after && s->progress_calls >= s->cancel_after;
}

static void make_temp_dir(char *buf, size_t cap)
{
    snprintf(buf, cap, "/tmp/perq-test-export-XXXXXX");
    assert_non_null(mkdtemp(buf));
}

static void spec_of(const char *text, perq_jobspec *spec)
{
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    perq_err err = {0};
    if (perq_jobspec_parse(doc, false, spec, &err) != 0)
        fail_msg("spec %s: %s", text, err.msg);
    json_decref(doc);
}

static int run(const char *spec_text, const char *model, const char *out, seen *s, json_t **metrics, perq_err *err)
{
    perq_jobspec spec;
    spec_of(spec_text, &spec);
    perq_reporter rep = {s, on_stage, on_progress, NULL, on_cancelled};
    perq_job_paths paths = {model, out, NULL, spec.eval.present ? eval_text : NULL};
    return perq_job_run(&spec, &paths, &rep, metrics, err);
}

static char *path_in(const char *dir, const char *name)
{
    static char buf[2048];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

/* ---- checks on an artifact ---------------------------------------------------- */

static void check_linear(const perq_checkpoint *orig, const perq_st_file *art, const char *prefix, int group)
{
    char name[256];
    snprintf(name, sizeof name, "%s.weight", prefix);
    const perq_tensor *w = perq_ckpt_find(orig, name);
    assert_non_null(w);
    assert_null(perq_st_find(art, name)); /* only the packed form */
    int rows = (int)w->shape[0], cols = (int)w->shape[1];
    int g = group ? (group < cols ? group : cols) : cols, ng = (cols + g - 1) / g;
    size_t words = (size_t)(cols + 7) / 8;

    snprintf(name, sizeof name, "%s.weight_packed", prefix);
    const perq_tensor *packed = perq_st_find(art, name);
    assert_non_null(packed);
    assert_int_equal(packed->dtype, PERQ_DT_I32);
    assert_int_equal(packed->ndim, 2);
    assert_int_equal(packed->shape[0], rows);
    assert_int_equal(packed->shape[1], (int64_t)words);
    snprintf(name, sizeof name, "%s.weight_scale", prefix);
    const perq_tensor *scale = perq_st_find(art, name);
    assert_non_null(scale);
    assert_int_equal(scale->dtype, w->dtype);
    assert_int_equal(scale->shape[0], rows);
    assert_int_equal(scale->shape[1], ng);
    snprintf(name, sizeof name, "%s.weight_shape", prefix);
    const perq_tensor *shape = perq_st_find(art, name);
    assert_non_null(shape);
    assert_int_equal(shape->dtype, PERQ_DT_I64);
    int64_t dims[2];
    memcpy(dims, shape->data, sizeof dims);
    assert_int_equal(dims[0], rows);
    assert_int_equal(dims[1], cols);

    float *wf = malloc((size_t)rows * cols * sizeof *wf), *s = malloc((size_t)rows * ng * sizeof *s);
    int8_t *q = malloc((size_t)rows * cols);
    perq_to_f32(w->dtype, w->data, wf, (size_t)rows * cols);
    perq_to_f32(scale->dtype, scale->data, s, (size_t)rows * ng);
    int32_t *pk = malloc(packed->nbytes);
    memcpy(pk, packed->data, packed->nbytes);
    perq_int4_unpack(pk, rows, cols, q);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < ng; k++) {
            int begin = k * g, len = cols - begin < g ? cols - begin : g;
            const float *gw = wf + (size_t)r * cols + begin;
            double sc = s[(size_t)r * ng + k];
            /* the stored scale is the one the search picks in the stored dtype */
            assert_true(sc == perq_int4_mse_scale_as(gw, len, w->dtype));
            for (int c = 0; c < len; c++) {
                double x = gw[c], back = (double)q[(size_t)r * cols + begin + c] * sc;
                if (fabs(x) <= 7.5 * sc && fabs(x - back) > sc * (0.5 + 1e-6))
                    fail_msg("%s[%d][%d]: %g -> %g, scale %g", prefix, r, begin + c, x, back, sc);
            }
        }
    free(wf);
    free(s);
    free(q);
    free(pk);
}

static void check_tensors(const char *model, const char *out, int group)
{
    perq_checkpoint orig;
    perq_st_file art;
    perq_err err = {0};
    assert_int_equal(perq_ckpt_open(model, &orig, &err), 0);
    if (perq_st_open(path_in(out, "model.safetensors"), &art, &err) != 0)
        fail_msg("%s", err.msg);
    for (int l = 0; l < 5; l++)
        for (int p = 0; p < 7; p++) {
            char prefix[128];
            snprintf(prefix, sizeof prefix, "model.layers.%d.%s", l, linear_parts[p]);
            check_linear(&orig, &art, prefix, group);
        }
    /* everything else: same dtype, shape and bytes; 35 linears became 105 tensors */
    size_t copied = 0;
    for (size_t f = 0; f < orig.n_files; f++)
        for (size_t i = 0; i < orig.files[f].n_tensors; i++) {
            const perq_tensor *t = &orig.files[f].tensors[i];
            if (strstr(t->name, "_proj."))
                continue;
            const perq_tensor *a = perq_st_find(&art, t->name);
            assert_non_null(a);
            assert_int_equal(a->dtype, t->dtype);
            assert_int_equal(a->nbytes, t->nbytes);
            assert_memory_equal(a->data, t->data, t->nbytes);
            copied++;
        }
    assert_int_equal(copied, 1 + 5 * 2 + 1); /* embeddings, two norms per layer, final norm */
    assert_int_equal(art.n_tensors, copied + 35 * 3);
    assert_null(perq_st_find(&art, "lm_head.weight")); /* tied */
    perq_st_close(&art);
    perq_ckpt_close(&orig);
}

static void check_config(const char *model, const char *out, int group)
{
    json_t *in = json_load_file(path_in(model, "config.json"), 0, NULL);
    json_t *cfg = json_load_file(path_in(out, "config.json"), 0, NULL);
    assert_non_null(in);
    assert_non_null(cfg);
    const char *key;
    json_t *value;
    json_object_foreach(in, key, value) assert_true(json_equal(value, json_object_get(cfg, key)));
    json_t *qc = json_object_get(cfg, "quantization_config");
    assert_string_equal(json_string_value(json_object_get(qc, "quant_method")), "compressed-tensors");
    assert_string_equal(json_string_value(json_object_get(qc, "format")), "pack-quantized");
    assert_string_equal(json_string_value(json_object_get(qc, "quantization_status")), "compressed");
    json_t *g0 = json_object_get(json_object_get(qc, "config_groups"), "group_0");
    assert_string_equal(json_string_value(json_array_get(json_object_get(g0, "targets"), 0)), "Linear");
    assert_true(json_is_null(json_object_get(g0, "input_activations")));
    json_t *w = json_object_get(g0, "weights");
    assert_int_equal(json_integer_value(json_object_get(w, "num_bits")), 4);
    assert_string_equal(json_string_value(json_object_get(w, "type")), "int");
    assert_true(json_is_true(json_object_get(w, "symmetric")));
    assert_true(json_is_false(json_object_get(w, "dynamic")));
    assert_string_equal(json_string_value(json_object_get(w, "strategy")), group ? "group" : "channel");
    if (group)
        assert_int_equal(json_integer_value(json_object_get(w, "group_size")), group);
    else
        assert_true(json_is_null(json_object_get(w, "group_size")));
    json_t *ignore = json_object_get(qc, "ignore");
    assert_int_equal(json_array_size(ignore), 1);
    assert_string_equal(json_string_value(json_array_get(ignore, 0)), "lm_head");
    json_decref(in);
    json_decref(cfg);
}

static void check_manifest(const char *model, const char *out, const char *spec_text)
{
    json_t *m = json_load_file(path_in(out, "manifest.json"), 0, NULL);
    assert_non_null(m);
    assert_int_equal(json_integer_value(json_object_get(m, "format_version")), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(m, "tool"), "name")), "perq");
    assert_true(json_is_string(json_object_get(m, "created_at")));
    perq_jobspec spec;
    spec_of(spec_text, &spec);
    json_t *norm = perq_jobspec_to_json(&spec);
    assert_true(json_equal(norm, json_object_get(m, "spec")));
    json_decref(norm);
    json_t *timings = json_object_get(m, "timings");
    assert_true(json_is_real(json_object_get(timings, "quantizing")));
    assert_true(json_is_real(json_object_get(timings, "exporting")));
    json_t *files = json_object_get(m, "files");
    size_t i;
    json_t *f;
    int listed = 0;
    json_array_foreach(files, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        assert_non_null(name);
        assert_string_not_equal(name, "manifest.json");
        char hex[65];
        uint64_t bytes;
        perq_err err = {0};
        assert_int_equal(perq_sha256_file(path_in(out, name), hex, &bytes, &err), 0);
        assert_string_equal(hex, json_string_value(json_object_get(f, "sha256")));
        assert_int_equal((json_int_t)bytes, json_integer_value(json_object_get(f, "bytes")));
        listed++;
    }
    /* model, config, tokenizer.json, tokenizer_config.json, generation_config.json,
     * report.json, report.html */
    assert_int_equal(listed, 7);
    char src[65], dst[65];
    uint64_t b1, b2;
    perq_err err = {0};
    assert_int_equal(perq_sha256_file(path_in(model, "tokenizer.json"), src, &b1, &err), 0);
    assert_int_equal(perq_sha256_file(path_in(out, "tokenizer.json"), dst, &b2, &err), 0);
    assert_string_equal(src, dst);
    json_decref(m);
}

static void check_report(const char *out)
{
    json_t *r = json_load_file(path_in(out, "report.json"), 0, NULL);
    assert_non_null(r);
    json_t *layers = json_object_get(r, "layers");
    assert_int_equal(json_array_size(layers), 5);
    size_t i;
    json_t *layer;
    json_array_foreach(layers, i, layer) {
        json_t *linears = json_object_get(layer, "linears");
        assert_int_equal(json_object_size(linears), 7);
        const char *key;
        json_t *lin;
        json_object_foreach(linears, key, lin) {
            double e = json_real_value(json_object_get(lin, "rel_error"));
            assert_true(e > 0.001 && e < 0.5); /* 4 bits: a few percent, never nothing */
        }
    }
    json_decref(r);
}

static void check_job(const char *spec_text, const char *model, int group)
{
    char out[256];
    make_temp_dir(out, sizeof out);
    seen s = {0};
    json_t *metrics = NULL;
    perq_err err = {0};
    if (run(spec_text, model, out, &s, &metrics, &err) != 0)
        fail_msg("job failed: %s", err.msg);
    assert_int_equal(s.n_stages, 3);
    assert_string_equal(s.stages[0], "loading");
    assert_string_equal(s.stages[1], "quantizing");
    assert_string_equal(s.stages[2], "exporting");
    assert_int_equal(s.last_done, s.last_total);
    assert_int_equal(json_integer_value(json_object_get(metrics, "linears")), 35);
    assert_true(json_integer_value(json_object_get(metrics, "bytes_out")) > 0);
    assert_true(json_is_object(json_object_get(metrics, "seconds")));
    json_decref(metrics);
    check_tensors(model, out, group);
    check_config(model, out, group);
    check_manifest(model, out, spec_text);
    check_report(out);
    assert_int_equal(perq_remove_tree(out, &err), 0);
}

static void test_rtn_per_channel_f32(void **state)
{
    (void)state;
    check_job("{\"method\": \"rtn\"}", model_f32, 0);
}

static void test_rtn_group32_bf16(void **state)
{
    (void)state;
    /* down_proj is 172 wide: five groups of 32 and a last one of 12 */
    check_job("{\"method\": \"rtn\", \"weights\": {\"group_size\": 32}}", model_bf16, 32);
}

/* ---- sharding through the export API ------------------------------------------- */

static void export_with_shards(const char *out, uint64_t shard_bytes)
{
    perq_checkpoint ck;
    perq_err err = {0};
    assert_int_equal(perq_ckpt_open(model_f32, &ck, &err), 0);
    perq_ct_options opt = {32, 16, shard_bytes};
    perq_ct_export *x = perq_ct_new(&opt);
    float *w = malloc(64 * 172 * sizeof *w);
    for (size_t i = 0; i < ck.files[0].n_tensors; i++) {
        const perq_tensor *t = &ck.files[0].tensors[i];
        size_t len = strlen(t->name);
        if (strstr(t->name, "_proj.weight") && len > 7) {
            perq_int4_matrix m;
            perq_to_f32(t->dtype, t->data, w, perq_tensor_numel(t));
            assert_int_equal(perq_int4_rtn_as(w, (int)t->shape[0], (int)t->shape[1], 32, t->dtype, &m, &err), 0);
            char prefix[128];
            snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 7), t->name);
            assert_int_equal(perq_ct_add_linear(x, prefix, &m, t->dtype, &err), 0);
            perq_int4_free(&m);
        } else {
            assert_int_equal(perq_ct_add_tensor(x, t, &err), 0);
        }
    }
    perq_artifact_list files = {0};
    if (perq_ct_write(x, model_f32, out, &files, NULL, &err) != 0)
        fail_msg("%s", err.msg);
    perq_artifacts_free(&files);
    perq_ct_free(x);
    perq_ckpt_close(&ck);
    free(w);
}

static void test_sharded_export(void **state)
{
    (void)state;
    char one[256], many[256];
    make_temp_dir(one, sizeof one);
    make_temp_dir(many, sizeof many);
    export_with_shards(one, 0);
    export_with_shards(many, 100000);
    struct stat st;
    assert_int_equal(stat(path_in(many, "model.safetensors"), &st), -1);
    json_t *index = json_load_file(path_in(many, "model.safetensors.index.json"), 0, NULL);
    assert_non_null(index);
    json_t *map = json_object_get(index, "weight_map");
    const char *first = json_string_value(json_object_get(map, "model.embed_tokens.weight"));
    assert_non_null(first);
    assert_int_equal(strncmp(first, "model-00001-of-0000", 19), 0);
    int n_shards = atoi(first + 19);
    assert_true(n_shards >= 3);
    for (int k = 1; k <= n_shards; k++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k, n_shards);
        assert_int_equal(stat(path_in(many, name), &st), 0);
        assert_true((uint64_t)st.st_size <= 100000 + 8192 || k == 1); /* the embedding alone is 131 kB */
    }
    /* the sharded checkpoint holds the same tensors, byte for byte */
    perq_checkpoint a, b;
    perq_err err = {0};
    assert_int_equal(perq_ckpt_open(one, &a, &err), 0);
    if (perq_ckpt_open(many, &b, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(b.n_files, (size_t)n_shards);
    uint64_t total = 0;
    size_t n = 0;
    for (size_t i = 0; i < a.files[0].n_tensors; i++) {
        const perq_tensor *t = &a.files[0].tensors[i], *u = perq_ckpt_find(&b, t->name);
        assert_non_null(u);
        assert_int_equal(u->nbytes, t->nbytes);
        assert_memory_equal(u->data, t->data, t->nbytes);
        total += t->nbytes;
        n++;
    }
    assert_int_equal(json_object_size(map), n);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(index, "metadata"), "total_size")), total);
    json_decref(index);
    perq_ckpt_close(&a);
    perq_ckpt_close(&b);
    assert_int_equal(perq_remove_tree(one, &err), 0);
    assert_int_equal(perq_remove_tree(many, &err), 0);
}

/* ---- cancel and refusals ---------------------------------------------------- */

static void test_cancel_between_tensors(void **state)
{
    (void)state;
    char out[256];
    make_temp_dir(out, sizeof out);
    seen s = {.cancel_after = 5};
    json_t *metrics = NULL;
    perq_err err = {0};
    assert_int_equal(run("{\"method\": \"rtn\"}", model_f32, out, &s, &metrics, &err), -1);
    assert_int_equal(err.code, PERQ_E_CANCELLED);
    assert_null(metrics);
    assert_true(s.last_done < s.last_total);
    struct stat st;
    assert_int_equal(stat(path_in(out, "manifest.json"), &st), -1);
    assert_int_equal(perq_remove_tree(out, &err), 0);
}

static void test_refusals(void **state)
{
    (void)state;
    char out[256];
    make_temp_dir(out, sizeof out);
    seen s = {0};
    json_t *metrics = NULL;
    perq_err err = {0};
    assert_int_equal(run("{\"method\": \"perq\", \"calibration\": {\"dataset\": \"/x\"}}", model_f32, out, &s,
                         &metrics, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID); /* method perq: no calibration text, refused before any stage */
    assert_string_equal(err.msg, "calibration: no text file for dataset \"/x\"");
    assert_int_equal(s.n_stages, 0); /* refused before any stage */

    FILE *f = fopen(path_in(out, "stray"), "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(run("{\"method\": \"rtn\"}", model_f32, out, &s, &metrics, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_non_null(strstr(err.msg, "not empty"));

    char missing[512];
    snprintf(missing, sizeof missing, "%s/sub", out);
    assert_int_equal(run("{\"method\": \"rtn\"}", "/nonexistent/model", missing, &s, &metrics, &err), -1);
    assert_null(metrics);
    assert_int_equal(perq_remove_tree(out, &err), 0);
}

/* ---- evaluation of input and output ------------------------------------------ */

static void test_eval_stage(void **state)
{
    (void)state;
    char out[256];
    make_temp_dir(out, sizeof out);
    seen s = {0};
    json_t *metrics = NULL;
    perq_err err = {0};
    const char *spec = "{\"method\": \"rtn\", \"eval\": {\"dataset\": \"tinystories\", \"ctx\": 256, \"chunks\": 4}}";
    if (run(spec, model_f32, out, &s, &metrics, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(s.stages[3], "evaluating");
    double pf = json_real_value(json_object_get(metrics, "ppl_float"));
    double pq = json_real_value(json_object_get(metrics, "ppl_quantized"));
    assert_true(pf > 1.0 && pf < 20.0);
    assert_true(pq > pf * 0.95 && pq < pf * 3.0); /* 4-bit costs some perplexity, not all of it */
    json_t *r = json_load_file(path_in(out, "report.json"), 0, NULL);
    json_t *e = json_object_get(r, "eval");
    assert_int_equal(json_integer_value(json_object_get(e, "ctx")), 256);
    assert_int_equal(json_integer_value(json_object_get(e, "chunks")), 4);
    assert_int_equal(json_integer_value(json_object_get(e, "tokens_scored")), 4 * 127);
    assert_string_equal(json_string_value(json_object_get(e, "protocol")), "llama.cpp");
    assert_true(json_real_value(json_object_get(e, "ppl_float")) == pf);
    json_decref(r);
    json_decref(metrics);
    assert_int_equal(perq_remove_tree(out, &err), 0);
}

int main(void)
{
    const char *shared = getenv("PERQ_SHARED");
    if (!shared)
        shared = "../shared";
    snprintf(model_f32, sizeof model_f32, "%s/models/stories260K", shared);
    snprintf(model_bf16, sizeof model_bf16, "%s/models/stories260K-bf16", shared);
    snprintf(eval_text, sizeof eval_text, "%s/data/tinystories_valid_head.txt", shared);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtn_per_channel_f32),
        cmocka_unit_test(test_rtn_group32_bf16),
        cmocka_unit_test(test_sharded_export),
        cmocka_unit_test(test_cancel_between_tensors),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_eval_stage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
