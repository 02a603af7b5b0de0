/* method perq as a job (see calibrate.h). */
#include "calibrate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "export_ct.h"
#include "export_gguf.h"
#include "job_outputs.h"
#include "manifest.h"
#include "report_files.h"
#include "perq/fsutil.h"
#include "perq/perplexity.h"
#include "perq/tokenizer.h"

#define MAX_TEXT_BYTES ((size_t)1 << 30)

static const char *const linear_parts[PERQ_PIPELINE_LINEARS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

/* The embedding or lm_head of the folded model, made block of rows by block
 * of rows while an export writes it (export_rows.h), so that neither is ever
 * held whole in fp32 (perq_pipeline_end_rows). */
typedef struct folded_end {
    const perq_pipeline *p;
    const perq_model *m;
    bool head;
} folded_end;

static int folded_end_rows(void *ctx, int64_t row0, int64_t n, float *out, perq_err *err)
{
    const folded_end *e = ctx;
    int rc = perq_pipeline_end_rows(e->p, e->m, e->head, row0, n, out, err);
    perq_model_drop_mapped(e->m); /* the rows read stay in the page cache, not in this process */
    return rc;
}

/* The exports the folded, quantized model goes to (either may be NULL), and
 * the sources of its embedding and head, read while the files are written. */
typedef struct exports {
    perq_ct_export *ct;
    perq_gguf_export *gguf;
    folded_end embed, head;
} exports;

typedef struct perq_job {
    const perq_jobspec *spec;
    const perq_job_paths *paths;
    const perq_reporter *rep;
    perq_model *model;
    perq_tokenizer *tok;
    int32_t *calib;         /* [samples][seq_len] */
    perq_pipeline pipe;
    bool pipe_done;
    perq_artifact_list files;
    const char *ct_dir;         /* compressed-tensors folder, or NULL (job_outputs.h) */
    bool ct_scratch;
    char scratch_dir[4096];
    json_t *timings, *eval, *gguf_summary;
    exports x;                  /* open from before calibration until the files are written */
} perq_job;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int tokenize_file(const perq_tokenizer *tok, const char *path, bool bos, int32_t **ids, size_t *n,
                         perq_err *err)
{
    char *text;
    size_t len;
    if (perq_read_file(path, MAX_TEXT_BYTES, &text, &len, err) != 0)
        return -1;
    if (len > 0 && text[len - 1] == '\n')
        len--;
    int rc = perq_tokenizer_encode(tok, text, len, bos, ids, n, err);
    free(text);
    return rc == 0 ? 0 : perq_err_context(err, "tokenizing %s", path);
}

static int bos_of(const perq_job *j)
{
    int bos = perq_tokenizer_bos_id(j->tok);
    return bos >= 0 ? bos : j->model->cfg.bos_token_id;
}

static perq_dtype tensor_dtype(const perq_model *m, const char *name)
{
    const perq_tensor *t = m->has_ckpt ? perq_ckpt_find(&m->ckpt, name) : NULL;
    return t ? t->dtype : PERQ_DT_F32;
}

/* ---- stages ------------------------------------------------------------------- */

static int load(perq_job *j, perq_err *err)
{
    if (perq_model_open(j->paths->model_dir, &j->model, err) != 0 ||
        perq_tokenizer_load(j->paths->model_dir, &j->tok, err) != 0)
        return perq_err_context(err, "loading %s", j->paths->model_dir);
    int32_t *ids;
    size_t n;
    if (tokenize_file(j->tok, j->paths->calibration_text, false, &ids, &n, err) != 0)
        return -1;
    int rc = perq_calib_sequences(ids, n, bos_of(j), j->spec->calibration.samples, j->spec->calibration.seq_len,
                                  (uint64_t)j->spec->calibration.seed, &j->calib, err);
    free(ids);
    if (rc == 0)
        perq_report_event(j->rep, PERQ_LOG_INFO, NULL, "calibration: %d sequences of %d tokens from %zu tokens",
                          j->spec->calibration.samples, j->spec->calibration.seq_len, n);
    return rc;
}

static int add_f32(const exports *x, const char *name, perq_dtype dt, int ndim, const int64_t *shape, const float *v,
                   perq_err *err)
{
    if (x->ct && perq_ct_add_f32(x->ct, name, dt, ndim, shape, v, err) != 0)
        return -1;
    return x->gguf ? perq_gguf_add_f32(x->gguf, name, ndim, shape, v, err) : 0;
}

static int add_vector(const exports *x, const char *name, perq_dtype dt, int n, const float *v, perq_err *err)
{
    const int64_t shape[1] = {n};
    return add_f32(x, name, dt, 1, shape, v, err);
}

static int add_ones(const exports *x, const char *name, perq_dtype dt, int n, perq_err *err)
{
    float *ones = malloc((size_t)n * sizeof *ones);
    if (!ones)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        ones[i] = 1.0f;
    int rc = add_vector(x, name, dt, n, ones, err);
    free(ones);
    return rc;
}

static int add_folded_end(exports *x, const char *name, perq_dtype dt, folded_end *e, perq_err *err)
{
    int64_t rows = e->m->cfg.vocab_size, cols = e->m->cfg.hidden_size;
    if (x->ct && perq_ct_add_rows(x->ct, name, dt, rows, cols, folded_end_rows, e, err) != 0)
        return -1;
    return x->gguf ? perq_gguf_add_rows(x->gguf, name, rows, cols, folded_end_rows, e, err) : 0;
}

static int add_linear(const exports *x, const char *prefix, const perq_int4_matrix *m, perq_dtype scale_dtype,
                      perq_err *err)
{
    if (x->ct && perq_ct_add_linear(x->ct, prefix, m, scale_dtype, err) != 0)
        return -1;
    return x->gguf ? perq_gguf_add_linear(x->gguf, prefix, m, err) : 0;
}

/* R3 as the artifact reader (perq/w4a4.h) rebuilds it: a width with no
 * Hadamard construction has a random orthogonal factor, so its seed too. */
static json_t *transform_config(const perq_pipeline *p)
{
    if (!p->has_r3)
        return NULL;
    json_t *tc = json_pack("{s{s{s{ss sb si s[{s[s] ss sb}] ss}}}}", "transform_config", "config_groups", "r3",
                           "type", "hadamard", "randomize", 0, "head_dim", p->r3_block, "apply", "targets",
                           "re:.*mlp.down_proj$", "location", "input", "inverse", 0, "construction", p->r3.how);
    if (tc && p->r3.kind == PERQ_ROT_RANDOM_ORTHOGONAL) {
        json_t *r3 = json_object_get(json_object_get(json_object_get(tc, "transform_config"), "config_groups"), "r3");
        json_object_set_new(r3, "seed", json_integer((json_int_t)p->r3.seed));
    }
    return tc;
}

/* The pipeline's sink: a layer's quantized linears go to the exports as soon
 * as they exist and are freed, so the job holds their packed form only. */
static int take_layer(void *ctx, int layer, perq_int4_matrix *linears, perq_err *err)
{
    perq_job *j = ctx;
    for (int k = 0; k < PERQ_PIPELINE_LINEARS; k++) {
        char prefix[256], wname[300];
        snprintf(prefix, sizeof prefix, "model.layers.%d.%s", layer, linear_parts[k]);
        snprintf(wname, sizeof wname, "%s.weight", prefix);
        if (add_linear(&j->x, prefix, &linears[k], tensor_dtype(j->model, wname), err) != 0)
            return -1;
        perq_int4_free(&linears[k]);
    }
    return 0;
}

static int calibrate(perq_job *j, perq_err *err)
{
    const perq_jobspec *s = j->spec;
    char name[256];
    perq_layer_tensor_name(name, sizeof name, 0, "self_attn.q_proj.weight");
    perq_pipeline_opts o = {.mode = s->rotation.mode,
                            .block_size = s->rotation.block_size,
                            .permutation = s->rotation.permutation,
                            .act_bits = s->activations.bits,
                            .algorithm = s->weights.algorithm,
                            .group_size = s->weights.group_size,
                            .scale_dtype = tensor_dtype(j->model, name),
                            .seed = (uint64_t)s->calibration.seed,
                            .randomized = s->rotation.randomized,
                            .online = s->rotation.online,
                            .fold_norms = s->rotation.fold_norms,
                            .sink = {j, take_layer}};
    if (perq_pipeline_check(&j->model->cfg, &o, err) != 0)
        return -1;
    j->pipe_done = true;
    int rc = perq_pipeline_run(j->model, j->calib, s->calibration.samples, s->calibration.seq_len, &o, j->rep,
                               &j->pipe, err);
    for (int st = 0; st < PERQ_PIPELINE_STAGES; st++)
        json_object_set_new(j->timings, perq_pipeline_stage_name((perq_pipeline_stage)st),
                            json_real(j->pipe.costs.stage_seconds[st]));
    return rc;
}

/* Everything but the quantized linears (take_layer added those). */
static int fill_export(perq_job *j, exports *x, perq_err *err)
{
    perq_model *m = j->model;
    const perq_llama_config *c = &m->cfg;
    perq_dtype edt = tensor_dtype(m, "model.embed_tokens.weight");
    perq_dtype ndt = tensor_dtype(m, "model.norm.weight");
    /* A pack-quantized head (head_src NULL) has no rows to read in place. */
    if (!m->head && !c->tie_word_embeddings && !m->head_src && perq_model_load_head(m, err) != 0)
        return -1;
    x->embed = (folded_end){&j->pipe, m, false};
    x->head = (folded_end){&j->pipe, m, true};
    if (add_folded_end(x, "model.embed_tokens.weight", edt, &x->embed, err) != 0 ||
        add_ones(x, "model.norm.weight", ndt, c->hidden_size, err) != 0)
        return -1;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char name[256];
        const char *norm_names[2] = {"input_layernorm.weight", "post_attention_layernorm.weight"};
        for (int k = 0; k < 2; k++) {
            perq_layer_tensor_name(name, sizeof name, l, norm_names[k]);
            int rc = j->pipe.norms_folded
                         ? add_ones(x, name, ndt, c->hidden_size, err)
                         : add_vector(x, name, ndt, c->hidden_size,
                                      j->pipe.layer_norms + ((size_t)l * 2 + k) * c->hidden_size, err);
            if (rc != 0)
                return -1;
        }
    }
    return add_folded_end(x, "lm_head.weight", edt, &x->head, err);
}

/* The compressed-tensors folder; a scratch one's files are not artifacts. */
static int write_ct(perq_job *j, perq_ct_export *ct, perq_err *err)
{
    if (!j->ct_scratch)
        return perq_ct_write(ct, j->paths->model_dir, j->ct_dir, &j->files, j->rep, err);
    perq_artifact_list scratch = {0};
    int rc = perq_mkdirs(j->ct_dir, err);
    if (rc == 0)
        rc = perq_ct_write(ct, j->paths->model_dir, j->ct_dir, &scratch, j->rep, err);
    perq_artifacts_free(&scratch);
    return rc;
}

/* GGUF (weight-only jobs: perq_jobspec_parse refuses it with W4A4, so every
 * rotation is folded): the head is always its own matrix after folding, and
 * q_proj/k_proj keep their output rows in the checkpoint's order (R1 and P1
 * act on their inputs, R2 on v and o), as the RoPE row permutation needs. */
static int new_gguf(const perq_job *j, perq_gguf_export **out, perq_err *err)
{
    perq_llama_config cfg = j->model->cfg;
    cfg.tie_word_embeddings = false;
    perq_gguf_options opt = {NULL, PERQ_GGUF_EMBED_F16};
    return perq_gguf_new(&cfg, &opt, out, err);
}

/* The exports, made before calibration so that each layer goes in as soon
 * as it is quantized (take_layer). */
static int open_exports(perq_job *j, perq_err *err)
{
    perq_ct_options opt = {j->spec->weights.group_size, j->spec->activations.bits, 0};
    if (j->ct_dir && !(j->x.ct = perq_ct_new(&opt)))
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (j->spec->outputs & PERQ_OUT_GGUF)
        return new_gguf(j, &j->x.gguf, err);
    return 0;
}

static int export_stage(perq_job *j, perq_err *err)
{
    exports *x = &j->x;
    json_t *config_patch = json_pack("{sb}", "tie_word_embeddings", 0);
    json_t *quant_patch = transform_config(&j->pipe);
    int rc = config_patch ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (rc == 0 && x->ct)
        perq_ct_set_patches(x->ct, config_patch, quant_patch);
    if (rc == 0)
        rc = fill_export(j, x, err);
    if (rc == 0 && x->ct)
        rc = write_ct(j, x->ct, err);
    if (rc == 0 && x->gguf)
        rc = perq_gguf_write_artifact(x->gguf, j->paths->model_dir, j->paths->out_dir, &j->files, j->rep, err);
    if (rc == 0 && x->gguf && !(j->gguf_summary = perq_gguf_summary(x->gguf)))
        rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
    perq_ct_free(x->ct);
    perq_gguf_free(x->gguf);
    x->ct = NULL;
    x->gguf = NULL;
    json_decref(config_patch);
    json_decref(quant_patch);
    return rc;
}

static json_t *real_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* Perplexity of the exported folder, through the W4A4 hook. */
static int eval_quantized(perq_job *j, const perq_eval_options *opt, perq_eval_result *r, perq_err *err)
{
    perq_model *q = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = perq_model_open(j->ct_dir, &q, err);
    if (rc == 0)
        rc = tokenize_file(j->tok, j->paths->eval_text, true, &ids, &n, err);
    if (rc == 0) {
        perq_w4a4 h = perq_pipeline_w4a4(&j->pipe);
        perq_linear_hook hook = perq_w4a4_hook(&h);
        rc = perq_perplexity_ids(q, ids, n, bos_of(j), opt, PERQ_EVAL_AUTO, hook.before ? &hook : NULL, j->rep, r,
                                 err);
    }
    free(ids);
    perq_model_close(q);
    return rc == 0 ? 0 : perq_err_context(err, "evaluating the quantized model");
}

static int evaluate(perq_job *j, perq_err *err)
{
    perq_eval_options opt = {PERQ_PPL_LLAMACPP, j->spec->eval.ctx, j->spec->eval.chunks};
    perq_eval_result f, q;
    if (perq_eval_perplexity(j->paths->model_dir, j->paths->eval_text, &opt, j->rep, &f, err) != 0)
        return perq_err_context(err, "evaluating the input model");
    if (eval_quantized(j, &opt, &q, err) != 0)
        return -1;
    j->eval = json_pack("{ss ss si si sI so so so so ss}", "dataset", j->spec->eval.dataset, "protocol", f.protocol,
                        "ctx", f.ctx, "chunks", f.chunks, "tokens_scored", (json_int_t)f.tokens_scored, "ppl_float",
                        real_or_null(f.ppl), "ppl_quantized", real_or_null(q.ppl), "nll_float", real_or_null(f.nll),
                        "nll_quantized", real_or_null(q.nll), "quantized_activations",
                        j->spec->activations.bits == 4 ? "int4 per token, asymmetric, dynamic (fake-quantized)"
                                                       : "fp32");
    perq_report_event(j->rep, PERQ_LOG_INFO, NULL, "perplexity (%s, ctx %d, %d chunks): float %.4f, quantized %.4f",
                      f.protocol, f.ctx, f.chunks, f.ppl, q.ppl);
    return j->eval ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory");
}

/* report.json, report.html, then manifest.json. */
static int close_artifacts(perq_job *j, perq_err *err)
{
    json_t *spec = perq_jobspec_to_json(j->spec);
    json_t *report = json_pack("{si ss so sO sO so}", "format_version", 1, "method", "perq", "spec", spec,
                               "rotations", j->pipe.rotations, "layers", j->pipe.layers, "compute",
                               perq_pipeline_costs_json(&j->pipe.costs));
    if (!report)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (j->eval)
        json_object_set(report, "eval", j->eval);
    if (j->gguf_summary)
        json_object_set(report, "gguf", j->gguf_summary);
    int rc = perq_job_close_artifacts(j->paths->out_dir, j->spec, report, j->timings, &j->files, err);
    json_decref(report);
    return rc;
}

typedef int (*stage_fn)(perq_job *j, perq_err *err);

static int run_stage(perq_job *j, const char *name, stage_fn fn, perq_err *err)
{
    if (perq_report_cancelled(j->rep))
        return perq_fail(err, PERQ_E_CANCELLED, "cancelled");
    perq_report_stage(j->rep, name);
    double t0 = now_seconds();
    int rc = fn(j, err);
    json_object_set_new(j->timings, name, json_real(now_seconds() - t0));
    return rc;
}

static int run(perq_job *j, json_t **metrics, perq_err *err)
{
    double t0 = now_seconds();
    /* The pipeline reports its own stages (calibrating, permuting, rotating,
     * quantizing) layer by layer and times each. */
    if (run_stage(j, "loading", load, err) != 0)
        return -1;
    if (perq_report_cancelled(j->rep))
        return perq_fail(err, PERQ_E_CANCELLED, "cancelled");
    if (open_exports(j, err) != 0 || calibrate(j, err) != 0 || run_stage(j, "exporting", export_stage, err) != 0)
        return -1;
    if (j->spec->eval.present && run_stage(j, "evaluating", evaluate, err) != 0)
        return -1;
    if (j->ct_scratch && perq_job_remove_scratch(j->paths, err) != 0)
        return -1;
    json_object_set_new(j->timings, "total", json_real(now_seconds() - t0));
    if (close_artifacts(j, err) != 0)
        return -1;
    *metrics = json_pack("{sO so}", "seconds", j->timings, "compute", perq_pipeline_costs_json(&j->pipe.costs));
    if (*metrics && j->eval) {
        json_object_set(*metrics, "ppl_float", json_object_get(j->eval, "ppl_float"));
        json_object_set(*metrics, "ppl_quantized", json_object_get(j->eval, "ppl_quantized"));
        json_object_set(*metrics, "tokens_scored", json_object_get(j->eval, "tokens_scored"));
    }
    return *metrics ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory");
}

int perq_job_run_perq(const perq_jobspec *spec, const perq_job_paths *paths, const perq_reporter *rep,
                      json_t **metrics, perq_err *err)
{
    *metrics = NULL;
    if (!paths->calibration_text)
        return perq_fail(err, PERQ_E_INVALID, "calibration: no text file for dataset \"%s\"",
                         spec->calibration.dataset);
    if (access(paths->calibration_text, R_OK) != 0)
        return perq_fail(err, PERQ_E_INVALID, "calibration: cannot read %s", paths->calibration_text);
    perq_job j = {.spec = spec, .paths = paths, .rep = rep};
    j.ct_dir = perq_job_ct_dir(spec, paths, j.scratch_dir, sizeof j.scratch_dir, &j.ct_scratch);
    j.timings = json_object();
    int rc = j.timings ? run(&j, metrics, err) : perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (rc != 0 && j.ct_scratch) {
        perq_err ignored = {0};
        perq_job_remove_scratch(paths, &ignored);
    }
    perq_ct_free(j.x.ct);   /* left open by a failure */
    perq_gguf_free(j.x.gguf);
    if (j.pipe_done)
        perq_pipeline_free(&j.pipe);
    perq_model_close(j.model);
    if (j.tok)
        perq_tokenizer_free(j.tok);
    free(j.calib);
    perq_artifacts_free(&j.files);
    json_decref(j.timings);
    json_decref(j.eval);
    json_decref(j.gguf_summary);
    return rc;
}
