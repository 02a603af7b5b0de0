/* Jobs that ask for GGUF (perq_job_run, stories260K):
 *   - rtn and perq W4A16 (full rotation, GPTQ) with outputs compressed-tensors
 *     and gguf write model.gguf, listed in manifest.json as format "gguf" with
 *     its bytes and sha256, summarised in report.json; the GGUF is byte for
 *     byte the one exported from the job's own compressed-tensors artifact
 *     (perq_gguf_* on its unpacked INT4 values and its float tensors), so both
 *     formats carry the same model: folded embedding, head and norms, GPTQ
 *     values, untied head;
 *   - outputs ["gguf"] alone with an evaluation: the same model.gguf, the same
 *     perplexity (from a scratch compressed-tensors folder that is gone
 *     afterwards), and only model.gguf and report.json as artifacts;
 *   - W4A4 with gguf is refused by the spec parser, and by the job itself
 *     before any stage;
 *   - a W4A4 artifact whose R3 width (86) has no Hadamard construction: the
 *     random orthogonal factor's seed is in transform_config, and `perq eval`
 *     of the artifact rebuilds R3 from it (the job's perplexity exactly);
 *     without the seed it is refused.
 * Skipped without the shared model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "export_gguf.h"
#include "perq/eval.h"
#include "perq/fsutil.h"
#include "perq/int4.h"
#include "perq/job.h"
#include "perq/jobspec.h"
#include "perq/llama_config.h"
#include "perq/safetensors.h"

static char *model, *text, *tmp;

static bool have_data(void)
{
    if (access(model, R_OK) == 0 && access(text, R_OK) == 0)
        return true;
    print_message("skipped: no shared stories260K\n");
    return false;
}

/* ---- running a job ------------------------------------------------------------ */

typedef struct seen {
    int n_stages;
} seen;

static void on_stage(void *ctx, const char *stage)
{
    (void)stage;
    ((seen *)ctx)->n_stages++;
}

static void parse_spec(const char *spec_text, perq_jobspec *spec)
{
    json_t *doc = json_loads(spec_text, 0, NULL);
    assert_non_null(doc);
    perq_err err = {0};
    if (perq_jobspec_parse(doc, false, spec, &err) != 0)
        fail_msg("spec %s: %s", spec_text, err.msg);
    json_decref(doc);
}

static int run_spec(const perq_jobspec *spec, const char *model_dir, const char *out, seen *s, json_t **metrics,
                    perq_err *err)
{
    perq_reporter rep = {s, on_stage, NULL, NULL, NULL};
    perq_job_paths paths = {model_dir, out, spec->calibration.present ? text : NULL, spec->eval.present ? text : NULL};
    return perq_job_run(spec, &paths, &rep, metrics, err);
}

/* Runs spec_text into tmp/name; returns the folder (caller frees). */
static char *run_job(const char *spec_text, const char *model_dir, const char *name)
{
    perq_jobspec spec;
    parse_spec(spec_text, &spec);
    char *out = in_dir(tmp, name);
    seen s = {0};
    json_t *metrics = NULL;
    perq_err err = {0};
    if (run_spec(&spec, model_dir, out, &s, &metrics, &err) != 0)
        fail_msg("job %s: %s", spec_text, err.msg);
    json_decref(metrics);
    return out;
}

static json_t *load_json(const char *dir, const char *name)
{
    char *p = in_dir(dir, name);
    json_t *doc = json_load_file(p, 0, NULL);
    free(p);
    assert_non_null(doc);
    return doc;
}

/* ---- checks --------------------------------------------------------------------- */

/* The manifest lists exactly want[0..n) (plus nothing else), each with the
 * bytes and sha256 of the file; model.gguf with format "gguf". */
static void check_manifest(const char *out, const char *const *want, size_t n)
{
    json_t *m = load_json(out, "manifest.json");
    json_t *files = json_object_get(m, "files");
    assert_int_equal(json_array_size(files), n);
    for (size_t k = 0; k < n; k++) {
        json_t *entry = NULL, *f;
        size_t i;
        json_array_foreach(files, i, f) if (!strcmp(json_string_value(json_object_get(f, "name")), want[k])) entry = f;
        if (!entry)
            fail_msg("%s is not in manifest.json", want[k]);
        char *path = in_dir(out, want[k]), hex[65];
        uint64_t bytes;
        perq_err err = {0};
        assert_int_equal(perq_sha256_file(path, hex, &bytes, &err), 0);
        free(path);
        assert_string_equal(hex, json_string_value(json_object_get(entry, "sha256")));
        assert_int_equal(bytes, json_integer_value(json_object_get(entry, "bytes")));
        if (!strcmp(want[k], PERQ_GGUF_FILE))
            assert_string_equal(json_string_value(json_object_get(entry, "format")), "gguf");
    }
    json_decref(m);
}

/* report.json's gguf summary of a stories260K export: 47 tensors (48 with
 * an untied head), every linear Q4_0 but the five down_proj (172 columns),
 * which it names. */
static void check_report_summary(const char *out, int tensors)
{
    json_t *r = load_json(out, "report.json");
    json_t *g = json_object_get(r, "gguf");
    assert_non_null(g);
    assert_string_equal(json_string_value(json_object_get(g, "file")), PERQ_GGUF_FILE);
    struct stat st;
    char *path = in_dir(out, PERQ_GGUF_FILE);
    assert_int_equal(stat(path, &st), 0);
    free(path);
    assert_int_equal(json_integer_value(json_object_get(g, "bytes")), st.st_size);
    assert_int_equal(json_integer_value(json_object_get(g, "tensors")), tensors);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(g, "types"), "Q4_0")), 30);
    assert_int_equal(json_array_size(json_object_get(g, "not_q4_0")), 5);
    json_decref(r);
}

static void read_whole(const char *path, char **data, size_t *len)
{
    perq_err err = {0};
    if (perq_read_file(path, (size_t)1 << 30, data, len, &err) != 0)
        fail_msg("%s", err.msg);
}

/* One quantized linear of a compressed-tensors artifact, unpacked. */
static void unpack_linear(const perq_checkpoint *ck, const char *prefix, int group, perq_int4_matrix *m)
{
    char name[300];
    snprintf(name, sizeof name, "%s.weight_packed", prefix);
    const perq_tensor *packed = perq_ckpt_find(ck, name);
    snprintf(name, sizeof name, "%s.weight_shape", prefix);
    const perq_tensor *shape = perq_ckpt_find(ck, name);
    snprintf(name, sizeof name, "%s.weight_scale", prefix);
    const perq_tensor *scale = perq_ckpt_find(ck, name);
    assert_non_null(packed);
    assert_non_null(shape);
    assert_non_null(scale);
    int64_t dims[2];
    memcpy(dims, shape->data, sizeof dims);
    perq_err err = {0};
    assert_int_equal(perq_int4_alloc(m, (int)dims[0], (int)dims[1], group, &err), 0);
    assert_int_equal(perq_tensor_numel(scale), (size_t)m->rows * m->n_groups);
    int32_t *words = malloc(packed->nbytes);
    assert_non_null(words);
    memcpy(words, packed->data, packed->nbytes);
    perq_int4_unpack(words, m->rows, m->cols, m->q);
    free(words);
    perq_to_f32(scale->dtype, scale->data, m->scales, perq_tensor_numel(scale));
}

/* The GGUF that the export API makes from the job's compressed-tensors
 * artifact art (config.json as the artifact says), named after model_dir. */
static void gguf_of_artifact(const char *art, const char *model_dir, int group, const char *path)
{
    perq_llama_config cfg;
    perq_checkpoint ck;
    perq_gguf_export *x;
    perq_err err = {0};
    char *cfg_path = in_dir(art, "config.json");
    assert_int_equal(perq_llama_config_load(cfg_path, &cfg, &err), 0);
    free(cfg_path);
    assert_int_equal(perq_ckpt_open(art, &ck, &err), 0);
    perq_gguf_options opt = {NULL, PERQ_GGUF_EMBED_F16};
    assert_int_equal(perq_gguf_new(&cfg, &opt, &x, &err), 0);
    for (size_t f = 0; f < ck.n_files; f++)
        for (size_t i = 0; i < ck.files[f].n_tensors; i++) {
            const perq_tensor *t = &ck.files[f].tensors[i];
            const char *suffix = strrchr(t->name, '.');
            if (!strcmp(suffix, ".weight_packed")) {
                char prefix[256];
                snprintf(prefix, sizeof prefix, "%.*s", (int)(suffix - t->name), t->name);
                perq_int4_matrix m;
                unpack_linear(&ck, prefix, group, &m);
                if (perq_gguf_add_linear(x, prefix, &m, &err) != 0)
                    fail_msg("%s", err.msg);
                perq_int4_free(&m);
            } else if (strcmp(suffix, ".weight_scale") != 0 && strcmp(suffix, ".weight_shape") != 0) {
                if (perq_gguf_add_tensor(x, t, &err) != 0)
                    fail_msg("%s", err.msg);
            }
        }
    if (perq_gguf_write(x, model_dir, path, &err) != 0)
        fail_msg("%s", err.msg);
    perq_gguf_free(x);
    perq_ckpt_close(&ck);
}

/* The job's model.gguf, byte for byte, is what its compressed-tensors
 * artifact exports to. */
static void check_same_model(const char *out, int group)
{
    char *rebuilt = in_dir(tmp, "rebuilt.gguf"), *mine = in_dir(out, PERQ_GGUF_FILE), *a, *b;
    gguf_of_artifact(out, model, group, rebuilt);
    size_t la, lb;
    read_whole(mine, &a, &la);
    read_whole(rebuilt, &b, &lb);
    assert_true(la > 1000);
    assert_memory_equal(a, "GGUF\3\0\0\0", 8);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
    unlink(rebuilt);
    free(rebuilt);
    free(mine);
}

static double eval_number(const char *out, const char *key)
{
    json_t *r = load_json(out, "report.json");
    json_t *v = json_object_get(json_object_get(r, "eval"), key);
    assert_true(json_is_real(v));
    double x = json_real_value(v);
    json_decref(r);
    return x;
}

static const char *const ct_and_gguf[] = {"model.safetensors", "config.json", "tokenizer.json",
                                          "tokenizer_config.json", "generation_config.json", PERQ_GGUF_FILE,
                                          "report.json", "report.html"};
static const char *const gguf_only[] = {PERQ_GGUF_FILE, "report.json", "report.html"};

/* The folder holds exactly the manifest and want[0..n). */
static void check_folder(const char *out, const char *const *want, size_t n)
{
    size_t count = 0;
    DIR *d = opendir(out);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "manifest.json"))
            continue;
        bool listed = false;
        for (size_t k = 0; k < n; k++)
            listed = listed || !strcmp(e->d_name, want[k]);
        if (!listed)
            fail_msg("%s/%s is not an artifact", out, e->d_name);
        count++;
    }
    closedir(d);
    assert_int_equal(count, n);
}

/* ---- the tests --------------------------------------------------------------------- */

static void test_rtn_with_gguf(void **state)
{
    (void)state;
    if (!have_data())
        return;
    char *both = run_job("{\"method\": \"rtn\", \"weights\": {\"group_size\": 32},"
                         " \"outputs\": [\"compressed-tensors\", \"gguf\"],"
                         " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 4}}",
                         model, "rtn-both");
    check_manifest(both, ct_and_gguf, 8);
    check_folder(both, ct_and_gguf, 8);
    check_report_summary(both, 47);
    check_same_model(both, 32);

    /* gguf alone: the same file, the same evaluation, no other artifact */
    char *alone = run_job("{\"method\": \"rtn\", \"weights\": {\"group_size\": 32}, \"outputs\": [\"gguf\"],"
                          " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 4}}",
                          model, "rtn-gguf");
    check_manifest(alone, gguf_only, 3);
    check_folder(alone, gguf_only, 3);
    char *a = in_dir(both, PERQ_GGUF_FILE), *b = in_dir(alone, PERQ_GGUF_FILE), *da, *db;
    size_t la, lb;
    read_whole(a, &da, &la);
    read_whole(b, &db, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    double pq = eval_number(both, "ppl_quantized");
    assert_true(pq > eval_number(both, "ppl_float"));
    assert_true(eval_number(alone, "ppl_quantized") == pq);
    free(da);
    free(db);
    free(a);
    free(b);
    free(both);
    free(alone);
}

static void test_gguf_alone_without_eval(void **state)
{
    (void)state;
    if (!have_data())
        return;
    char *out = run_job("{\"method\": \"rtn\", \"outputs\": [\"gguf\"]}", model, "rtn-gguf-noeval");
    check_manifest(out, gguf_only, 3);
    check_folder(out, gguf_only, 3);
    free(out);
}

static void test_perq_w4a16_with_gguf(void **state)
{
    (void)state;
    if (!have_data())
        return;
    char *out = run_job("{\"method\": \"perq\", \"activations\": {\"bits\": 16}, \"weights\": {\"algorithm\": \"gptq\"},"
                        " \"rotation\": {\"mode\": \"full\", \"permutation\": \"massdiff\"},"
                        " \"calibration\": {\"dataset\": \"c\", \"samples\": 4, \"seq_len\": 128, \"seed\": 3},"
                        " \"outputs\": [\"compressed-tensors\", \"gguf\"],"
                        " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 4}}",
                        model, "perq-w4a16");
    check_manifest(out, ct_and_gguf, 8);
    check_report_summary(out, 48); /* output.weight: the head folding changed */
    json_t *cfg = load_json(out, "config.json");
    assert_true(json_is_false(json_object_get(cfg, "tie_word_embeddings"))); /* the head changed by folding */
    assert_null(json_object_get(json_object_get(cfg, "quantization_config"), "transform_config"));
    json_decref(cfg);
    /* the folded embedding, head and norms, and the GPTQ values: the same in both formats */
    check_same_model(out, 0);
    double pf = eval_number(out, "ppl_float"), pq = eval_number(out, "ppl_quantized");
    assert_true(pq > pf && pq < 1.5 * pf);
    free(out);
}

#define GGUF_W4A4_MESSAGE                                                                                         \
    "outputs: gguf is for weight-only jobs (activations.bits 16): W4A4 needs online activation quantization and " \
    "the R3 rotation, which GGUF cannot describe"

static void test_w4a4_gguf_refused(void **state)
{
    (void)state;
    json_t *doc = json_loads("{\"calibration\": {\"dataset\": \"c\"}, \"outputs\": [\"compressed-tensors\", \"gguf\"]}",
                             0, NULL);
    perq_jobspec spec;
    perq_err err = {0};
    assert_int_equal(perq_jobspec_parse(doc, false, &spec, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_string_equal(err.msg, GGUF_W4A4_MESSAGE);
    json_decref(doc);

    /* a spec made by hand gets no further: refused before any stage, nothing written */
    parse_spec("{\"calibration\": {\"dataset\": \"c\"}}", &spec);
    spec.outputs |= PERQ_OUT_GGUF;
    char *out = in_dir(tmp, "refused");
    seen s = {0};
    json_t *metrics = NULL;
    assert_int_equal(run_spec(&spec, model, out, &s, &metrics, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_non_null(strstr(err.msg, "gguf is for weight-only jobs"));
    assert_int_equal(s.n_stages, 0);
    assert_null(metrics);
    struct stat st;
    assert_int_equal(stat(out, &st), -1);
    free(out);
}

/* ---- R3 with a random orthogonal factor ------------------------------------------------ */

/* stories260K cut to an intermediate size of 86 = 2 x 43, a width with no
 * Hadamard construction: gate/up keep their first 86 rows, down its first
 * 86 columns. */
static char *narrow_model(void)
{
    enum { INTER = 86 };
    char *dir = in_dir(tmp, "narrow"), *src_cfg = in_dir(model, "config.json");
    perq_err err = {0};
    assert_int_equal(perq_mkdirs(dir, &err), 0);
    json_t *cfg = json_load_file(src_cfg, 0, NULL);
    assert_non_null(cfg);
    free(src_cfg);
    json_object_set_new(cfg, "intermediate_size", json_integer(INTER));
    char *p = in_dir(dir, "config.json");
    assert_int_equal(json_dump_file(cfg, p, JSON_INDENT(2)), 0);
    free(p);
    json_decref(cfg);
    static const char *const copied[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char *from = in_dir(model, copied[i]), *to = in_dir(dir, copied[i]);
        assert_int_equal(perq_copy_file(from, to, &err), 0);
        free(from);
        free(to);
    }
    perq_checkpoint ck;
    assert_int_equal(perq_ckpt_open(model, &ck, &err), 0);
    perq_st_writer *w = perq_st_writer_new();
    float *downs[64] = {0};
    int n_downs = 0;
    for (size_t i = 0; i < ck.files[0].n_tensors; i++) {
        const perq_tensor *t = &ck.files[0].tensors[i];
        assert_int_equal(t->dtype, PERQ_DT_F32);
        int64_t shape[2] = {t->shape[0], t->ndim == 2 ? t->shape[1] : 0};
        const void *data = t->data;
        if (strstr(t->name, "gate_proj") || strstr(t->name, "up_proj")) {
            shape[0] = INTER; /* the first rows */
        } else if (strstr(t->name, "down_proj")) {
            float *d = malloc((size_t)t->shape[0] * INTER * sizeof *d);
            assert_non_null(d);
            for (int64_t r = 0; r < t->shape[0]; r++)
                memcpy(d + r * INTER, (const float *)t->data + r * t->shape[1], INTER * sizeof *d);
            shape[1] = INTER;
            data = downs[n_downs++] = d;
        }
        assert_int_equal(perq_st_writer_add(w, t->name, t->dtype, t->ndim, shape, data, &err), 0);
    }
    p = in_dir(dir, "model.safetensors");
    if (perq_st_write(w, p, &err) != 0)
        fail_msg("%s", err.msg);
    free(p);
    perq_st_writer_free(w);
    for (int i = 0; i < n_downs; i++)
        free(downs[i]);
    perq_ckpt_close(&ck);
    return dir;
}

static void test_random_r3_seed(void **state)
{
    (void)state;
    if (!have_data())
        return;
    char *narrow = narrow_model();
    char *out = run_job("{\"method\": \"perq\", \"activations\": {\"bits\": 4}, \"weights\": {\"algorithm\": \"rtn\"},"
                        " \"rotation\": {\"mode\": \"full\", \"permutation\": \"massdiff\"},"
                        " \"calibration\": {\"dataset\": \"c\", \"samples\": 4, \"seq_len\": 64, \"seed\": 11},"
                        " \"eval\": {\"dataset\": \"e\", \"ctx\": 128, \"chunks\": 2}}",
                        narrow, "perq-w4a4-narrow");
    json_t *cfg = load_json(out, "config.json");
    json_t *r3 = json_object_get(json_object_get(json_object_get(json_object_get(cfg, "quantization_config"),
                                                                 "transform_config"),
                                                 "config_groups"),
                                 "r3");
    assert_non_null(r3);
    assert_int_equal(json_integer_value(json_object_get(r3, "head_dim")), 86);
    assert_non_null(strstr(json_string_value(json_object_get(r3, "construction")), "random_orthogonal"));
    assert_true(json_is_integer(json_object_get(r3, "seed")));

    /* perq eval of the artifact rebuilds R3 from the seed: the job's figure exactly */
    perq_eval_options opt = {PERQ_PPL_LLAMACPP, 128, 2};
    perq_eval_result r;
    perq_err err = {0};
    if (perq_eval_perplexity(out, text, &opt, NULL, &r, &err) != 0)
        fail_msg("%s", err.msg);
    assert_true(r.ppl == eval_number(out, "ppl_quantized"));

    /* without the seed, the factor cannot be rebuilt: refused with the reason */
    json_object_del(r3, "seed");
    char *p = in_dir(out, "config.json");
    assert_int_equal(json_dump_file(cfg, p, JSON_INDENT(2)), 0);
    free(p);
    assert_int_equal(perq_eval_perplexity(out, text, &opt, NULL, &r, &err), -1);
    assert_int_equal(err.code, PERQ_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "no seed to rebuild it"));
    json_decref(cfg);
    free(out);
    free(narrow);
}

static int setup(void **state)
{
    (void)state;
    tmp = test_tmpdir("job-gguf");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = perq_remove_tree(tmp, NULL);
    free(tmp);
    free(model);
    free(text);
    return rc;
}

int main(void)
{
    model = shared_path("models/stories260K");
    text = shared_path("data/tinystories_valid_head.txt");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_w4a4_gguf_refused),
        cmocka_unit_test(test_rtn_with_gguf),
        cmocka_unit_test(test_gguf_alone_without_eval),
        cmocka_unit_test(test_perq_w4a16_with_gguf),
        cmocka_unit_test(test_random_r3_seed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
