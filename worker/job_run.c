/* perq_job_run: one job spec on one model, stage by stage.
 *
 * method rtn: loading (config, checkpoint, every expected tensor checked) ->
 * quantizing (one linear at a time: widen to fp32 from the mapping, RTN with
 * scales in the weight's dtype, keep only packed words and scales, and the
 * Q4_0 blocks when the spec asks for GGUF) -> exporting (compressed-tensors
 * folder, model.gguf) -> evaluating (when the spec asks: perplexity of the
 * input and of the compressed-tensors folder just written, job_outputs.h) ->
 * report.json, then manifest.json last. method perq runs the PeRQ pipeline
 * (perq_job_run_perq, worker/perq_pipeline.c) after the same checks. */
#include "perq/job.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "calibrate.h"
#include "export_ct.h"
#include "export_gguf.h"
#include "job_outputs.h"
#include "manifest.h"
#include "report_files.h"
#include "perq/eval.h"
#include "perq/fsutil.h"
#include "perq/int4.h"
#include "perq/llama_config.h"
#include "perq/safetensors.h"

static const char *const linear_parts[] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};
#define N_LINEAR_PARTS ((int)(sizeof linear_parts / sizeof linear_parts[0]))

typedef struct rtn_job {
    const perq_jobspec *spec;
    const perq_job_paths *paths;
    const perq_reporter *rep;
    perq_llama_config cfg;
    perq_checkpoint ckpt;
    int ckpt_open;
    perq_ct_export *ct;         /* NULL when no compressed-tensors folder is needed */
    const char *ct_dir;         /* where it goes (job_outputs.h) */
    bool ct_scratch;
    char scratch_dir[4096];
    perq_gguf_export *gguf;     /* NULL unless outputs has gguf */
    perq_artifact_list files;
    json_t *layers;        /* report: one object per decoder layer */
    json_t *timings;       /* stage -> seconds */
    json_t *eval;          /* report.eval, or NULL */
    float *wbuf;           /* one linear widened to fp32 */
    size_t wbuf_len;
    unsigned long long bytes_in, weight_bytes, weights_quantized;
    int linears;
    double err_sum, err_max;
} rtn_job;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int check_cancel(const rtn_job *j, perq_err *err)
{
    return perq_report_cancelled(j->rep) ? perq_fail(err, PERQ_E_CANCELLED, "cancelled") : 0;
}

/* ---- before any work ------------------------------------------------------ */

static int check_supported(const perq_jobspec *spec, const perq_job_paths *paths, perq_err *err)
{
    if (!(spec->outputs & (PERQ_OUT_COMPRESSED_TENSORS | PERQ_OUT_GGUF)))
        return perq_fail(err, PERQ_E_INVALID, "outputs: no format requested");
    if ((spec->outputs & PERQ_OUT_GGUF) && spec->activations.bits != 16) /* perq_jobspec_parse refuses it too */
        return perq_fail(err, PERQ_E_INVALID, "outputs: gguf is for weight-only jobs (activations.bits 16)");
    if (spec->weights.bits != 4)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "weights.bits: %d", spec->weights.bits);
    if (spec->eval.present && !paths->eval_text)
        return perq_fail(err, PERQ_E_INVALID, "eval: no text file for dataset \"%s\"", spec->eval.dataset);
    if (!paths->model_dir || !paths->out_dir)
        return perq_fail(err, PERQ_E_INVALID, "a job needs a model folder and an output folder");
    return 0;
}

/* The output folder is created, or must be empty: a manifest lists every file
 * of its folder, so leftovers of another run must not mix in. */
static int prepare_out_dir(const char *dir, perq_err *err)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT)
            return perq_fail_errno(err, "opening %s", dir);
        return perq_mkdirs(dir, err);
    }
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)) != NULL)
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty ? 0 : perq_fail(err, PERQ_E_INVALID, "output folder %s is not empty", dir);
}

/* ---- loading --------------------------------------------------------------- */

static int check_expected(const rtn_job *j, perq_err *err)
{
    perq_expected_tensor *want;
    size_t n;
    if (perq_llama_expected_tensors(&j->cfg, &want, &n, err) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const perq_tensor *t = perq_ckpt_find(&j->ckpt, want[i].name);
        if (!t) {
            rc = perq_fail(err, PERQ_E_FORMAT, "%s: missing from the checkpoint", want[i].name);
            break;
        }
        int same = t->ndim == want[i].ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = t->shape[d] == want[i].shape[d];
        if (!same)
            rc = perq_fail(err, PERQ_E_FORMAT, "%s: shape does not match config.json", want[i].name);
        else if (t->dtype != PERQ_DT_F32 && t->dtype != PERQ_DT_F16 && t->dtype != PERQ_DT_BF16)
            rc = perq_fail(err, PERQ_E_UNSUPPORTED, "%s: dtype %s (F32, F16 or BF16 expected)", want[i].name,
                           perq_dtype_name(t->dtype));
    }
    free(want);
    return rc;
}

static int load(rtn_job *j, perq_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", j->paths->model_dir);
    if (perq_llama_config_load(path, &j->cfg, err) != 0)
        return perq_err_context(err, "loading %s", j->paths->model_dir);
    if (perq_ckpt_open(j->paths->model_dir, &j->ckpt, err) != 0)
        return perq_err_context(err, "loading %s", j->paths->model_dir);
    j->ckpt_open = 1;
    if (check_expected(j, err) != 0)
        return perq_err_context(err, "loading %s", j->paths->model_dir);
    for (size_t i = 0; i < j->ckpt.n_files; i++)
        j->bytes_in += j->ckpt.files[i].map_len;
    perq_gguf_options gguf_opt = {NULL, PERQ_GGUF_EMBED_F16};
    if ((j->spec->outputs & PERQ_OUT_GGUF) && perq_gguf_new(&j->cfg, &gguf_opt, &j->gguf, err) != 0)
        return -1;
    const perq_tensor *embed = perq_ckpt_find(&j->ckpt, "model.embed_tokens.weight");
    perq_report_event(j->rep, PERQ_LOG_INFO, NULL, "loaded %s: %d layers, hidden %d, intermediate %d, %s",
                      j->cfg.architecture, j->cfg.num_hidden_layers, j->cfg.hidden_size, j->cfg.intermediate_size,
                      embed ? perq_dtype_name(embed->dtype) : "?");
    return 0;
}

/* ---- quantizing ------------------------------------------------------------ */

/* "model.layers.N.PART.weight" -> layer N and the index of PART; 0 otherwise. */
static int linear_of(const char *name, int n_layers, int *layer, int *part)
{
    static const char prefix[] = "model.layers.";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0)
        return 0;
    const char *p = name + sizeof prefix - 1;
    if (*p < '0' || *p > '9')
        return 0;
    char *end;
    long n = strtol(p, &end, 10);
    if (*end != '.' || n >= n_layers)
        return 0;
    for (int k = 0; k < N_LINEAR_PARTS; k++) {
        char want[256];
        snprintf(want, sizeof want, "model.layers.%ld.%s.weight", n, linear_parts[k]);
        if (!strcmp(name, want)) {
            *layer = (int)n;
            *part = k;
            return 1;
        }
    }
    return 0;
}

/* ||W - Q||_F / ||W||_F with Q as a loader rebuilds it (q * scale in fp32). */
static double relative_error(const float *w, const perq_int4_matrix *m)
{
    double num = 0, den = 0;
#pragma omp parallel for reduction(+ : num, den) schedule(static) if ((size_t)m->rows * m->cols > 65536)
    for (int r = 0; r < m->rows; r++) {
        const float *row = w + (size_t)r * m->cols;
        const int8_t *q = m->q + (size_t)r * m->cols;
        const float *s = m->scales + (size_t)r * m->n_groups;
        for (int c = 0; c < m->cols; c++) {
            double d = (double)row[c] - (double)((float)q[c] * s[c / m->group]);
            num += d * d;
            den += (double)row[c] * row[c];
        }
    }
    return den > 0 ? sqrt(num / den) : 0.0;
}

static int widen(rtn_job *j, const perq_tensor *t, perq_err *err)
{
    size_t n = perq_tensor_numel(t);
    if (n > j->wbuf_len) {
        float *b = realloc(j->wbuf, n * sizeof *b);
        if (!b)
            return perq_fail(err, PERQ_E_NOMEM, "out of memory widening %s", t->name);
        j->wbuf = b;
        j->wbuf_len = n;
    }
    perq_to_f32(t->dtype, t->data, j->wbuf, n);
    return 0;
}

/* The pages of a tensor already widened leave this process's resident set
 * (they stay in the page cache): quantizing a model never holds all of it. */
static void release_pages(const perq_tensor *t)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t begin = ((uintptr_t)t->data + page - 1) / page * page;
    uintptr_t end = ((uintptr_t)t->data + t->nbytes) / page * page;
    if (end > begin)
        madvise((void *)begin, end - begin, MADV_DONTNEED);
}

static int quantize_linear(rtn_job *j, const perq_tensor *t, int layer, int part, perq_err *err)
{
    int rows = (int)t->shape[0], cols = (int)t->shape[1];
    if (widen(j, t, err) != 0)
        return -1;
    release_pages(t);
    perq_int4_matrix m;
    if (perq_int4_rtn_as(j->wbuf, rows, cols, j->spec->weights.group_size, t->dtype, &m, err) != 0)
        return perq_err_context(err, "%s", t->name);
    double rel = relative_error(j->wbuf, &m);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "model.layers.%d.%s", layer, linear_parts[part]);
    int rc = j->ct ? perq_ct_add_linear(j->ct, prefix, &m, t->dtype, err) : 0;
    if (rc == 0 && j->gguf)
        rc = perq_gguf_add_linear(j->gguf, prefix, &m, err);
    perq_int4_free(&m);
    if (rc != 0)
        return -1;
    json_t *linears = json_object_get(json_array_get(j->layers, (size_t)layer), "linears");
    json_object_set_new(linears, strchr(linear_parts[part], '.') + 1,
                        json_pack("{s[ii] sf}", "shape", rows, cols, "rel_error", rel));
    j->linears++;
    j->err_sum += rel;
    j->err_max = rel > j->err_max ? rel : j->err_max;
    j->weights_quantized += (unsigned long long)rows * (unsigned long long)cols;
    j->weight_bytes += t->nbytes;
    return 0;
}

/* A tensor that is not a quantized linear, to every export (borrowed). */
static int add_tensor(rtn_job *j, const perq_tensor *t, perq_err *err)
{
    bool tied_head = j->cfg.tie_word_embeddings && !strcmp(t->name, "lm_head.weight");
    if (j->ct && !tied_head && perq_ct_add_tensor(j->ct, t, err) != 0)
        return -1;
    return j->gguf ? perq_gguf_add_tensor(j->gguf, t, err) : 0; /* skips a tied head itself */
}

static int quantize(rtn_job *j, perq_err *err)
{
    int n_layers = j->cfg.num_hidden_layers;
    long long total = (long long)n_layers * N_LINEAR_PARTS, done = 0;
    for (int l = 0; l < n_layers; l++)
        json_array_append_new(j->layers, json_pack("{si sn sn s{}}", "index", l, "permutation", "rotation", "linears"));
    perq_report_progress(j->rep, 0, total);
    for (size_t f = 0; f < j->ckpt.n_files; f++)
        for (size_t i = 0; i < j->ckpt.files[f].n_tensors; i++) {
            const perq_tensor *t = &j->ckpt.files[f].tensors[i];
            int layer, part;
            if (check_cancel(j, err) != 0)
                return -1;
            if (linear_of(t->name, n_layers, &layer, &part) && t->ndim == 2) {
                if (quantize_linear(j, t, layer, part, err) != 0)
                    return -1;
                perq_report_progress(j->rep, ++done, total);
            } else if (add_tensor(j, t, err) != 0) {
                return -1;
            }
        }
    free(j->wbuf);
    j->wbuf = NULL;
    j->wbuf_len = 0;
    perq_report_event(j->rep, PERQ_LOG_INFO, NULL,
                      "quantized %d linear layers (%llu weights): relative error mean %.4f, max %.4f", j->linears,
                      j->weights_quantized, j->linears ? j->err_sum / j->linears : 0.0, j->err_max);
    return 0;
}

/* ---- evaluating ------------------------------------------------------------ */

/* The two passes (float, quantized) report as one stage: pass p maps its
 * progress onto [p*total, (p+1)*total) of 2*total. */
typedef struct eval_pass {
    const perq_reporter *outer;
    int pass;
} eval_pass;

static void eval_progress(void *ctx, long long done, long long total)
{
    const eval_pass *e = ctx;
    perq_report_progress(e->outer, e->pass * total + done, 2 * total);
}
static void eval_event(void *ctx, perq_log_level level, const char *message, json_t *data)
{
    const eval_pass *e = ctx;
    perq_report_event(e->outer, level, data, "%s", message);
}
static int eval_cancelled(void *ctx)
{
    const eval_pass *e = ctx;
    return perq_report_cancelled(e->outer);
}

/* JSON has no infinity: a perplexity that overflowed is null. */
static json_t *real_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static int evaluate(rtn_job *j, perq_err *err)
{
    perq_eval_options opt = {PERQ_PPL_LLAMACPP, j->spec->eval.ctx, j->spec->eval.chunks};
    perq_eval_result r[2];
    const char *dirs[2] = {j->paths->model_dir, j->ct_dir};
    for (int pass = 0; pass < 2; pass++) {
        eval_pass e = {j->rep, pass};
        perq_reporter rep = {&e, NULL, eval_progress, eval_event, eval_cancelled};
        if (perq_eval_perplexity(dirs[pass], j->paths->eval_text, &opt, &rep, &r[pass], err) != 0)
            return perq_err_context(err, "evaluating %s", pass ? "the quantized model" : "the input model");
    }
    j->eval = json_pack("{ss ss si si sI so so so so}", "dataset", j->spec->eval.dataset, "protocol",
                        r[0].protocol, "ctx", r[0].ctx, "chunks", r[0].chunks, "tokens_scored",
                        (json_int_t)r[0].tokens_scored, "ppl_float", real_or_null(r[0].ppl), "ppl_quantized",
                        real_or_null(r[1].ppl), "nll_float", real_or_null(r[0].nll), "nll_quantized",
                        real_or_null(r[1].nll));
    perq_report_event(j->rep, PERQ_LOG_INFO, NULL, "perplexity (%s, ctx %d, %d chunks): float %.4f, quantized %.4f",
                      r[0].protocol, r[0].ctx, r[0].chunks, r[0].ppl, r[1].ppl);
    return j->eval ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory");
}

/* ---- report, manifest, metrics --------------------------------------------- */

/* report.json, report.html, then manifest.json. */
static int close_artifacts(rtn_job *j, perq_err *err)
{
    json_t *report = json_pack("{si ss s{si so ss ss si} s{si sf sf} sO}", "format_version", 1, "method",
                               perq_method_name(j->spec->method), "weights", "bits", 4, "group_size",
                               j->spec->weights.group_size ? json_integer(j->spec->weights.group_size) : json_null(),
                               "algorithm", perq_walgo_name(j->spec->weights.algorithm), "scale_search",
                               "mse over clipping ratios 1.00, 0.99, ..., 0.50", "clip_steps", PERQ_INT4_CLIP_STEPS,
                               "summary", "linears", j->linears, "rel_error_mean",
                               j->linears ? j->err_sum / j->linears : 0.0, "rel_error_max", j->err_max, "layers",
                               j->layers);
    if (!report)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (j->eval)
        json_object_set(report, "eval", j->eval);
    if (j->gguf)
        json_object_set_new(report, "gguf", perq_gguf_summary(j->gguf));
    int rc = perq_job_close_artifacts(j->paths->out_dir, j->spec, report, j->timings, &j->files, err);
    json_decref(report);
    return rc;
}

static unsigned long long bytes_out(const rtn_job *j)
{
    unsigned long long sum = 0;
    for (size_t i = 0; i < j->files.n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", j->paths->out_dir, j->files.items[i].name);
        if (stat(path, &st) == 0)
            sum += (unsigned long long)st.st_size;
    }
    return sum;
}

static json_t *metrics_of(const rtn_job *j)
{
    json_t *m = json_pack("{sI sI sI sI si sf sf sO}", "bytes_in", (json_int_t)j->bytes_in, "bytes_out",
                          (json_int_t)bytes_out(j), "weight_bytes_quantized", (json_int_t)j->weight_bytes,
                          "weights_quantized", (json_int_t)j->weights_quantized, "linears", j->linears,
                          "rel_error_mean", j->linears ? j->err_sum / j->linears : 0.0, "rel_error_max", j->err_max,
                          "seconds", j->timings);
    if (m && j->eval) {
        json_object_set(m, "ppl_float", json_object_get(j->eval, "ppl_float"));
        json_object_set(m, "ppl_quantized", json_object_get(j->eval, "ppl_quantized"));
        json_object_set(m, "tokens_scored", json_object_get(j->eval, "tokens_scored"));
    }
    return m;
}

/* ---- the stages ------------------------------------------------------------- */

typedef int (*stage_fn)(rtn_job *j, perq_err *err);

static int run_stage(rtn_job *j, const char *name, stage_fn fn, perq_err *err)
{
    if (check_cancel(j, err) != 0)
        return -1;
    perq_report_stage(j->rep, name);
    double t0 = now_seconds();
    int rc = fn(j, err);
    json_object_set_new(j->timings, name, json_real(now_seconds() - t0));
    return rc;
}

/* The scratch folder's files are not artifacts: listed apart and forgotten. */
static int write_ct(rtn_job *j, perq_err *err)
{
    if (!j->ct_scratch)
        return perq_ct_write(j->ct, j->paths->model_dir, j->ct_dir, &j->files, j->rep, err);
    perq_artifact_list scratch = {0};
    int rc = perq_mkdirs(j->ct_dir, err);
    if (rc == 0)
        rc = perq_ct_write(j->ct, j->paths->model_dir, j->ct_dir, &scratch, j->rep, err);
    perq_artifacts_free(&scratch);
    return rc;
}

static int export_stage(rtn_job *j, perq_err *err)
{
    if (j->ct && write_ct(j, err) != 0)
        return -1;
    return j->gguf ? perq_gguf_write_artifact(j->gguf, j->paths->model_dir, j->paths->out_dir, &j->files, j->rep, err)
                   : 0;
}

static int run_rtn(rtn_job *j, json_t **metrics, perq_err *err)
{
    double t0 = now_seconds();
    if (run_stage(j, "loading", load, err) != 0 || run_stage(j, "quantizing", quantize, err) != 0 ||
        run_stage(j, "exporting", export_stage, err) != 0)
        return -1;
    if (j->spec->eval.present && run_stage(j, "evaluating", evaluate, err) != 0)
        return -1;
    if (j->ct_scratch && perq_job_remove_scratch(j->paths, err) != 0)
        return -1;
    if (check_cancel(j, err) != 0)
        return -1;
    json_object_set_new(j->timings, "total", json_real(now_seconds() - t0));
    if (close_artifacts(j, err) != 0)
        return -1;
    *metrics = metrics_of(j);
    return *metrics ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory");
}

int perq_job_run(const perq_jobspec *spec, const perq_job_paths *paths, const perq_reporter *rep,
                 json_t **metrics, perq_err *err)
{
    *metrics = NULL;
    if (check_supported(spec, paths, err) != 0 || prepare_out_dir(paths->out_dir, err) != 0)
        return -1;
    if (spec->method == PERQ_METHOD_PERQ)
        return perq_job_run_perq(spec, paths, rep, metrics, err);
    perq_ct_options opt = {spec->weights.group_size, spec->activations.bits, 0};
    rtn_job j = {.spec = spec, .paths = paths, .rep = rep};
    j.ct_dir = perq_job_ct_dir(spec, paths, j.scratch_dir, sizeof j.scratch_dir, &j.ct_scratch);
    j.ct = j.ct_dir ? perq_ct_new(&opt) : NULL;
    j.layers = json_array();
    j.timings = json_object();
    int rc = (j.ct || !j.ct_dir) && j.layers && j.timings ? run_rtn(&j, metrics, err)
                                                          : perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (rc != 0 && j.ct_scratch) {
        perq_err ignored = {0};
        perq_job_remove_scratch(paths, &ignored);
    }
    perq_ct_free(j.ct); /* both before the checkpoint: they borrow from the mapping */
    perq_gguf_free(j.gguf);
    if (j.ckpt_open)
        perq_ckpt_close(&j.ckpt);
    perq_artifacts_free(&j.files);
    json_decref(j.layers);
    json_decref(j.timings);
    json_decref(j.eval);
    free(j.wbuf);
    return rc;
}
