/* Calibration sequences and the layer-by-layer PeRQ loop (see calibrate.h). */
#include "calibrate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perq/actquant.h"
#include "perq/fold.h"
#include "perq/gptq.h"
#include "perq/permute.h"
#include "splitmix64.h"

/* Rows of the down_proj input kept per layer for the report's statistics:
 * one 2048-token sequence, as the paper's permutation statistics. */
#define SAMPLE_ROWS 2048
#define PASS_HESSIAN 3

int perq_calib_sequences(const int32_t *ids, size_t n_ids, int bos, int n_seqs, int seq_len, uint64_t seed,
                         int32_t **out, perq_err *err)
{
    *out = NULL;
    if (n_seqs < 1 || seq_len < 2)
        return perq_fail(err, PERQ_E_INVALID, "calibration: %d sequences of %d tokens", n_seqs, seq_len);
    size_t body = (size_t)seq_len - 1;
    if (n_ids < body)
        return perq_fail(err, PERQ_E_INVALID, "calibration: the text has %zu tokens, fewer than one sequence (%d)",
                         n_ids, seq_len);
    int32_t *s = malloc((size_t)n_seqs * seq_len * sizeof *s);
    if (!s)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for %d calibration sequences", n_seqs);
    uint64_t state = seed;
    size_t offsets = n_ids - body + 1;
    for (int i = 0; i < n_seqs; i++) {
        size_t at = (size_t)(splitmix64(&state) % offsets);
        int32_t *row = s + (size_t)i * seq_len;
        row[0] = bos;
        memcpy(row + 1, ids + at, body * sizeof *row);
    }
    *out = s;
    return 0;
}

/* ---- options ----------------------------------------------------------------- */

static int r3_width(const perq_llama_config *cfg, const perq_pipeline_opts *o)
{
    if (o->act_bits != 4 || o->mode == PERQ_ROT_NONE || !o->online)
        return 0;
    return o->block_size > 0 ? o->block_size : cfg->intermediate_size;
}

static int min_int(int a, int b)
{
    return a < b ? a : b;
}

int perq_pipeline_check(const perq_llama_config *cfg, const perq_pipeline_opts *o, perq_err *err)
{
    int b = r3_width(cfg, o);
    if (b > 0 && cfg->intermediate_size % b != 0)
        return perq_fail(err, PERQ_E_INVALID,
                         "rotation.block_size: %d does not divide intermediate_size %d (the down_proj input)", b,
                         cfg->intermediate_size);
    if (o->mode == PERQ_ROT_BLOCK) {
        int bh = min_int(o->block_size, cfg->hidden_size), bd = min_int(o->block_size, cfg->head_dim);
        if (cfg->hidden_size % bh != 0 || cfg->head_dim % bd != 0)
            return perq_fail(err, PERQ_E_INVALID, "rotation.block_size: %d does not tile hidden_size %d and head_dim %d",
                             o->block_size, cfg->hidden_size, cfg->head_dim);
    }
    if (o->act_bits != 4 && o->act_bits != 16)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "activations.bits: %d", o->act_bits);
    return 0;
}

/* ---- choosing permutations ------------------------------------------------------ */

typedef struct channel_stats {
    int d;
    double *sum_abs;    /* per channel */
    float *absmax;
    long long rows;
} channel_stats;

static int stats_init(channel_stats *s, int d, perq_err *err)
{
    s->d = d;
    s->rows = 0;
    s->sum_abs = calloc((size_t)d, sizeof *s->sum_abs);
    s->absmax = calloc((size_t)d, sizeof *s->absmax);
    return s->sum_abs && s->absmax ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory");
}

static void stats_free(channel_stats *s)
{
    free(s->sum_abs);
    free(s->absmax);
    s->sum_abs = NULL;
    s->absmax = NULL;
}

static void stats_add(channel_stats *s, const float *x, int rows)
{
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * s->d;
        for (int c = 0; c < s->d; c++) {
            float a = fabsf(row[c]);
            s->sum_abs[c] += a;
            s->absmax[c] = a > s->absmax[c] ? a : s->absmax[c];
        }
    }
    s->rows += rows;
}

static void stats_mass(const channel_stats *s, float *mass)
{
    for (int c = 0; c < s->d; c++)
        mass[c] = s->rows ? (float)(s->sum_abs[c] / (double)s->rows) : 0.0f;
}

static int choose_perm(perq_permutation kind, const channel_stats *s, int block, uint64_t seed, int *perm,
                       perq_err *err)
{
    int d = s->d;
    float *mass = malloc((size_t)d * sizeof *mass);
    if (!mass)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    stats_mass(s, mass);
    int rc = 0;
    switch (kind) {
    case PERQ_PERM_MASSDIFF: rc = perq_permute_massdiff(mass, d, block, perm, err); break;
    case PERQ_PERM_ZIGZAG: rc = perq_permute_zigzag(s->absmax, d, block, perm, err); break;
    case PERQ_PERM_RANDOM: perq_permute_random(perm, d, seed); break;
    case PERQ_PERM_IDENTITY: perq_permute_identity(perm, d); break;
    }
    free(mass);
    return rc;
}

/* ---- the pipeline's state ------------------------------------------------------- */

enum { H_QKV, H_O, H_GATEUP, H_DOWN, N_HESS };

typedef struct run {
    perq_pipeline *p;
    perq_model *m;
    const perq_reporter *rep;
    int stage;              /* perq_pipeline_stage now running, -1 before the first */
    double stage_began;
    long long tokens;       /* calibration rows per pass */
    perq_w4a4 w4a4;
    channel_stats down;     /* this layer's down_proj input */
    float *d3;              /* this layer's random signs at the down_proj input, NULL unless randomized */
    float *sample;          /* [SAMPLE_ROWS][intermediate], or the first rows of down_rows */
    int sample_rows;
    bool hessians_observed; /* GPTQ unless opts.hessian_pass: Hessians from the observing pass */
    bool keeps_rows;        /* hessians_observed with R3: down_rows are kept */
    float *down_rows;       /* [tokens][intermediate]: this layer's down_proj input rows of the
                               observing pass, from its first down_proj site until
                               down_hessian has used them, else NULL */
    long long down_rows_n;  /* rows kept so far this layer */
    int *p3;                /* this layer's P3 as permute_layer folded it, NULL before or without */
    channel_stats resid;    /* residual stream (P1) */
    perq_hessian hess[N_HESS];
} run;

static const perq_linear_kind hess_site[N_HESS] = {PERQ_LIN_Q, PERQ_LIN_O, PERQ_LIN_GATE, PERQ_LIN_DOWN};

/* ---- stages and costs ------------------------------------------------------------ */

static const char *const stage_names[PERQ_PIPELINE_STAGES] = {"calibrating", "permuting", "rotating", "quantizing"};

const char *perq_pipeline_stage_name(perq_pipeline_stage s)
{
    return s >= 0 && s < PERQ_PIPELINE_STAGES ? stage_names[s] : "?";
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Closes the running stage's clock and, when the stage changes, says so; the
 * progress is the layers finished. stage -1 only closes the clock. */
static void enter(run *r, int stage, int layers_done)
{
    double t = now_seconds();
    if (r->stage >= 0)
        r->p->costs.stage_seconds[r->stage] += t - r->stage_began;
    r->stage_began = t;
    if (stage < 0)
        return;
    if (stage != r->stage)
        perq_report_stage(r->rep, stage_names[stage]);
    r->stage = stage;
    perq_report_progress(r->rep, layers_done, r->p->n_layers);
}

/* Floating-point operations of one pass of the calibration rows through one
 * decoder layer: the seven linears and causal attention (scores and values
 * over the keys at or before each query). */
static double layer_pass_flops(const perq_llama_config *c, long long tokens, int seq_len)
{
    double q = (double)c->num_attention_heads * c->head_dim, kv = (double)c->num_key_value_heads * c->head_dim;
    double h = c->hidden_size, inter = c->intermediate_size;
    double linears = h * q * 2 + h * kv * 2 + h * inter * 3;
    double attention = 2.0 * q * (seq_len + 1) / 2.0 * 2.0;
    return 2.0 * (double)tokens * linears + (double)tokens * attention;
}

json_t *perq_pipeline_costs_json(const perq_pipeline_costs *c)
{
    json_t *stages = json_object();
    for (int s = 0; s < PERQ_PIPELINE_STAGES; s++)
        json_object_set_new(stages, stage_names[s], json_real(c->stage_seconds[s]));
    return json_pack("{so ss sf sf sf sf sf}", "stage_seconds", stages, "hessians_from",
                     c->hessian_pass ? "a pass of their own" : "the observing pass", "calibration_gflop",
                     c->calib_flops * 1e-9,
                     "gptq_update_gflop", c->gptq_update_flops * 1e-9, "gptq_update_seconds", c->gptq_update_seconds,
                     "gptq_factor_seconds", c->gptq_factor_seconds, "gptq_seconds", c->gptq_seconds);
}

/* ---- P1: the residual stream's statistics ------------------------------------------ */

static int fold_norms_loaded(void *ctx, perq_layerwise *lw, int layer, perq_err *err)
{
    (void)ctx;
    (void)err;
    perq_fold_layer_norms(perq_layerwise_model(lw), layer);
    return 0;
}

static int observe_residual(void *ctx, const perq_linear_site *site, perq_err *err)
{
    (void)err;
    run *r = ctx;
    if (site->kind == PERQ_LIN_Q || site->kind == PERQ_LIN_GATE)
        stats_add(&r->resid, site->x, site->rows);
    return 0;
}

static int choose_p1(run *r, const int32_t *ids, int n_seqs, int seq_len, perq_err *err)
{
    perq_model *m = r->m;
    perq_pipeline *p = r->p;
    int hidden = m->cfg.hidden_size, block = min_int(p->opts.block_size, hidden);
    perq_layerwise *lw = NULL;
    p->p1 = malloc((size_t)hidden * sizeof *p->p1);
    if (!p->p1)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    enter(r, PERQ_STAGE_CALIBRATING, 0);
    perq_layerwise_plan plan = {r, fold_norms_loaded, {r, observe_residual}, NULL, {NULL, NULL}};
    int rc = stats_init(&r->resid, hidden, err);
    if (rc == 0)
        rc = perq_layerwise_begin(m, ids, n_seqs, seq_len, 0, &lw, err);
    if (rc == 0)
        rc = perq_layerwise_calibrate(lw, &plan, r->rep, err);
    for (int l = 0; rc == 0 && l < p->n_layers; l++)
        p->costs.calib_flops += layer_pass_flops(&m->cfg, r->tokens, seq_len);
    if (rc == 0) {
        enter(r, PERQ_STAGE_PERMUTING, 0);
        rc = choose_perm(p->opts.permutation, &r->resid, block, p->opts.seed ^ 0x5031u, p->p1, err);
    }
    if (rc == 0) {
        float *mass = malloc((size_t)hidden * sizeof *mass);
        int *id = malloc((size_t)hidden * sizeof *id);
        if (mass && id) {
            stats_mass(&r->resid, mass);
            perq_permute_identity(id, hidden);
            json_object_set_new(p->rotations, "p1",
                                json_pack("{ss si sf sf}", "permutation", perq_permutation_name(p->opts.permutation),
                                          "block_size", block, "mass_ratio_before",
                                          perq_permute_mass_ratio(mass, id, hidden, block), "mass_ratio_after",
                                          perq_permute_mass_ratio(mass, p->p1, hidden, block)));
        }
        free(mass);
        free(id);
    }
    perq_layerwise_free(lw);
    stats_free(&r->resid);
    return rc;
}

/* ---- one layer --------------------------------------------------------------------- */

static int layer_loaded(void *ctx, perq_layerwise *lw, int layer, perq_err *err)
{
    run *r = ctx;
    perq_pipeline *p = r->p;
    perq_model *m = perq_layerwise_model(lw);
    if (p->p1 || p->has_r1 || p->has_r2)
        enter(r, PERQ_STAGE_ROTATING, layer);
    if (p->norms_folded) {
        perq_fold_layer_norms(m, layer);
    } else {
        int hidden = m->cfg.hidden_size;
        float *keep = p->layer_norms + (size_t)layer * 2 * hidden;
        memcpy(keep, m->layers[layer].attn_norm, (size_t)hidden * sizeof *keep);
        memcpy(keep + hidden, m->layers[layer].ffn_norm, (size_t)hidden * sizeof *keep);
    }
    if ((p->p1 || p->has_r1) &&
        perq_fold_residual_layer(m, layer, p->p1, p->has_r1 ? &p->r1 : NULL, err) != 0)
        return -1;
    if (p->has_r2 && perq_fold_r2(m, layer, &p->r2, err) != 0)
        return -1;
    r->down.rows = 0;
    memset(r->down.sum_abs, 0, (size_t)r->down.d * sizeof *r->down.sum_abs);
    memset(r->down.absmax, 0, (size_t)r->down.d * sizeof *r->down.absmax);
    r->sample_rows = 0;
    enter(r, PERQ_STAGE_CALIBRATING, layer);
    return 0;
}

static int add_hessian(run *r, const perq_linear_site *site, perq_err *err)
{
    for (int i = 0; i < N_HESS; i++)
        if (site->kind == hess_site[i])
            return perq_hessian_add(&r->hess[i], site->x, site->rows, err);
    return 0;
}

/* Fresh Hessians for this layer's linear inputs. */
static int hessians_init(run *r, perq_err *err)
{
    const perq_llama_config *c = &r->m->cfg;
    const int widths[N_HESS] = {c->hidden_size, c->num_attention_heads * c->head_dim, c->hidden_size,
                                c->intermediate_size};
    for (int h = 0; h < N_HESS; h++) {
        perq_hessian_free(&r->hess[h]);
        if (perq_hessian_init(&r->hess[h], widths[h], err) != 0)
            return -1;
    }
    return 0;
}

/* Keeps the down_proj input rows of the observing pass, in order; the sample
 * is their beginning. */
static int keep_down_rows(run *r, const perq_linear_site *site, perq_err *err)
{
    if (!r->down_rows) {
        r->down_rows = malloc((size_t)r->tokens * site->in * sizeof *r->down_rows);
        if (!r->down_rows)
            return perq_fail(err, PERQ_E_NOMEM, "out of memory for %lld down_proj input rows", r->tokens);
        r->sample = r->down_rows;
    }
    if (r->down_rows_n + site->rows > r->tokens)
        return perq_fail(err, PERQ_E_INVALID, "layer %d: more down_proj input rows than calibration tokens (%lld)",
                         site->layer, r->tokens);
    memcpy(r->down_rows + (size_t)r->down_rows_n * site->in, site->x, (size_t)site->rows * site->in * sizeof *site->x);
    r->down_rows_n += site->rows;
    r->sample_rows = (int)(r->down_rows_n < SAMPLE_ROWS ? r->down_rows_n : SAMPLE_ROWS);
    return 0;
}

/* Adds the site's rows to its Hessian, the layer's Hessians made on its first site. */
static int observe_hessian(run *r, const perq_linear_site *site, perq_err *err)
{
    if (!r->hess[H_QKV].h && hessians_init(r, err) != 0)
        return -1;
    return add_hessian(r, site, err);
}

/* Pass 1: statistics of the down_proj input before P3 and R3, and a sample of
 * it; the other linears see their activations quantized as in the quantized
 * model. With hessians_observed it also gathers the q/k/v, o and gate/up
 * Hessians, which P3 and R3 leave as they are (P3 permutes only gate/up's
 * outputs), and the down_proj one: with R3 from the rows kept for
 * down_hessian; without R3 (permute_layer then folds no P3 either) from the
 * rows as they are, activation-quantized. */
static int observe(void *ctx, const perq_linear_site *site, perq_err *err)
{
    run *r = ctx;
    perq_w4a4 plain = {NULL, r->w4a4.act_bits};
    if (site->kind != PERQ_LIN_DOWN) {
        if (perq_w4a4_before(&plain, site, err) != 0)
            return -1;
        return r->hessians_observed ? observe_hessian(r, site, err) : 0;
    }
    stats_add(&r->down, site->x, site->rows);
    if (r->keeps_rows)
        return keep_down_rows(r, site, err);
    int take = min_int(site->rows, SAMPLE_ROWS - r->sample_rows);
    if (take > 0) {
        memcpy(r->sample + (size_t)r->sample_rows * site->in, site->x, (size_t)take * site->in * sizeof *site->x);
        r->sample_rows += take;
    }
    if (!r->hessians_observed)
        return 0;
    if (perq_w4a4_before(&plain, site, err) != 0)
        return -1;
    return observe_hessian(r, site, err);
}

/* opts.hessian_pass: a pass after P3 and R3 are folded, gathering every
 * Hessian through the W4A4 hook. */
static int gather_hessians(void *ctx, const perq_linear_site *site, perq_err *err)
{
    run *r = ctx;
    if (perq_w4a4_before(&r->w4a4, site, err) != 0)
        return -1;
    return add_hessian(r, site, err);
}

/* Rows x [rows][intermediate] of the down_proj input as this layer's folded
 * weights will see them: permuted by perm (NULL: none), times the random
 * signs D3 (randomized), then R3. */
static int transform_down_rows(const run *r, const int *perm, float *x, size_t rows, perq_err *err)
{
    int d = r->down.d;
    int rc = perm ? perq_permute_columns(x, rows, d, perm, err) : 0;
    for (size_t i = 0; rc == 0 && r->d3 && i < rows; i++)
        for (int c = 0; c < d; c++)
            x[i * d + c] *= r->d3[c];
    if (rc == 0 && r->p->has_r3)
        rc = perq_fold_rotate_down_input(&r->p->r3, x, rows, d, err);
    return rc;
}

/* max |x| and the mean per-token INT4 error of the sample after P (NULL:
 * none) and R3. */
static int rotated_figures(run *r, const int *perm, double *max_abs, double *act_err, perq_err *err)
{
    int d = r->down.d;
    size_t n = (size_t)r->sample_rows * d;
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (!x)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    memcpy(x, r->sample, n * sizeof *x);
    int rc = transform_down_rows(r, perm, x, (size_t)r->sample_rows, err);
    double mx = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        mx = fmax(mx, fabs((double)x[i]));
    *max_abs = mx;
    *act_err = rc == 0 ? perq_actquant_error(x, r->sample_rows, d, PERQ_ACTQUANT_CLIP) : 0;
    free(x);
    return rc;
}

static int permute_layer(run *r, int layer, json_t *entry, perq_err *err)
{
    perq_pipeline *p = r->p;
    int d = r->down.d, block = p->r3_block;
    if (!p->has_r3)
        return 0;
    enter(r, PERQ_STAGE_PERMUTING, layer);
    int *perm = malloc((size_t)d * sizeof *perm), *id = malloc((size_t)d * sizeof *id);
    float *mass = malloc((size_t)d * sizeof *mass);
    int rc = perm && id && mass ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (rc == 0)
        rc = choose_perm(block < d ? p->opts.permutation : PERQ_PERM_IDENTITY, &r->down, block,
                         p->opts.seed + (uint64_t)layer, perm, err);
    if (r->d3)
        perq_random_signs(r->d3, d, (p->opts.seed ^ 0x5333u) + (uint64_t)layer);
    double max_before = 0, max_after = 0, err_before = 0, err_after = 0;
    if (rc == 0)
        rc = rotated_figures(r, NULL, &max_before, &err_before, err);
    if (rc == 0)
        rc = rotated_figures(r, perm, &max_after, &err_after, err);
    if (rc == 0) {
        stats_mass(&r->down, mass);
        perq_permute_identity(id, d);
        json_object_set_new(entry, "down_proj_input",
                            json_pack("{si ss sf sf sf sf sf sf si}", "block_size", block, "permutation",
                                      perq_permutation_name(block < d ? p->opts.permutation : PERQ_PERM_IDENTITY),
                                      "mass_ratio_before", perq_permute_mass_ratio(mass, id, d, block),
                                      "mass_ratio_after", perq_permute_mass_ratio(mass, perm, d, block),
                                      "max_abs_rotated_before", max_before, "max_abs_rotated_after", max_after,
                                      "act_error_before", err_before, "act_error_after", err_after, "sample_tokens",
                                      r->sample_rows));
        rc = perq_fold_p3(r->m, layer, perm, err);
        if (rc == 0 && r->d3)
            perq_fold_down_input_signs(r->m, layer, r->d3);
    }
    if (rc == 0) {
        enter(r, PERQ_STAGE_ROTATING, layer);
        rc = perq_fold_r3(r->m, layer, &p->r3, err);
    }
    r->p3 = perm; /* down_hessian transforms the kept rows with it; layer_observed frees it */
    free(id);
    free(mass);
    return rc;
}

static float *layer_weight(perq_layer_weights *w, int k)
{
    float *const all[PERQ_PIPELINE_LINEARS] = {w->q, w->k, w->v, w->o, w->gate, w->up, w->down};
    return all[k];
}

static void linear_shape(const perq_llama_config *c, int k, int *rows, int *cols)
{
    int q = c->num_attention_heads * c->head_dim, kv = c->num_key_value_heads * c->head_dim;
    const int r[PERQ_PIPELINE_LINEARS] = {q, kv, kv, c->hidden_size, c->intermediate_size, c->intermediate_size,
                                          c->hidden_size};
    const int cl[PERQ_PIPELINE_LINEARS] = {c->hidden_size, c->hidden_size, c->hidden_size, q, c->hidden_size,
                                           c->hidden_size, c->intermediate_size};
    *rows = r[k];
    *cols = cl[k];
}

static const int hessian_of[PERQ_PIPELINE_LINEARS] = {H_QKV, H_QKV, H_QKV, H_O, H_GATEUP, H_GATEUP, H_DOWN};

static double rel_error(const float *w, const float *wq, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)w[i] - wq[i];
        num += d * d;
        den += (double)w[i] * w[i];
    }
    return den > 0 ? sqrt(num / den) : 0;
}

/* Quantizes the seven linears of the layer; their weights become q * scale. */
static int quantize_layer(run *r, int layer, json_t *entry, perq_err *err)
{
    perq_pipeline *p = r->p;
    const perq_llama_config *c = &r->m->cfg;
    perq_layer_weights *w = &r->m->layers[layer];
    perq_gptq_opts go;
    perq_gptq_opts_default(&go);
    go.group = p->opts.group_size;
    go.scale_dtype = p->opts.scale_dtype;
    perq_gptq_factor f[N_HESS];
    memset(f, 0, sizeof f);
    int rc = 0;
    json_t *linears = json_object();
    for (int h = 0; rc == 0 && p->opts.algorithm == PERQ_WALGO_GPTQ && h < N_HESS; h++) {
        rc = perq_hessian_finalize(&r->hess[h], err);
        if (rc == 0)
            rc = perq_gptq_factor_init(&f[h], r->hess[h].h, r->hess[h].n, &go, err);
        if (rc == 0) {
            p->costs.gptq_factor_seconds += f[h].seconds;
            p->costs.gptq_seconds += f[h].seconds;
        }
    }
    for (int k = 0; rc == 0 && k < PERQ_PIPELINE_LINEARS; k++) {
        int rows, cols;
        linear_shape(c, k, &rows, &cols);
        float *wk = layer_weight(w, k);
        perq_int4_matrix *out = &p->linears[(size_t)layer * PERQ_PIPELINE_LINEARS + k];
        float *deq = malloc((size_t)rows * cols * sizeof *deq);
        if (!deq) {
            rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
            break;
        }
        perq_gptq_stats st;
        if (p->opts.algorithm == PERQ_WALGO_GPTQ &&
            (rc = perq_gptq_quantize_factored(&f[hessian_of[k]], wk, rows, cols, &go, out, deq, &st, err)) == 0) {
            p->costs.gptq_update_flops += st.update_flops;
            p->costs.gptq_update_seconds += st.update_seconds;
            p->costs.gptq_seconds += st.seconds;
        }
        else if ((rc = perq_int4_rtn_as(wk, rows, cols, p->opts.group_size, p->opts.scale_dtype, out, err)) == 0)
            perq_int4_dequantize(out, deq);
        if (rc == 0) {
            double rel = rel_error(wk, deq, (size_t)rows * cols);
            json_object_set_new(linears, perq_linear_name((perq_linear_kind)k),
                                json_pack("{s[ii] sf}", "shape", rows, cols, "rel_error", rel));
            memcpy(wk, deq, (size_t)rows * cols * sizeof *wk);
        } else {
            perq_err_context(err, "layer %d %s", layer, perq_linear_name((perq_linear_kind)k));
        }
        free(deq);
    }
    for (int h = 0; h < N_HESS; h++)
        perq_gptq_factor_free(&f[h]);
    json_object_set_new(entry, "linears", linears);
    return rc;
}

/* The down_proj Hessian from the kept rows as the quantized model will see
 * them: this layer's P3 and R3 (transform_down_rows), then what the W4A4 hook
 * does after R3. The rows are transformed in place. */
static int down_hessian(run *r, int layer, perq_err *err)
{
    if (r->down_rows_n != r->tokens)
        return perq_fail(err, PERQ_E_INVALID, "layer %d: %lld down_proj input rows kept of %lld", layer,
                         r->down_rows_n, r->tokens);
    perq_w4a4 after_r3 = {NULL, r->w4a4.act_bits};
    perq_linear_site site = {.layer = layer, .kind = PERQ_LIN_DOWN, .x = r->down_rows, .rows = (int)r->tokens,
                             .in = r->down.d, .out = r->m->cfg.hidden_size};
    if (transform_down_rows(r, r->p3, r->down_rows, (size_t)r->tokens, err) != 0 ||
        perq_w4a4_before(&after_r3, &site, err) != 0)
        return -1;
    return add_hessian(r, &site, err);
}

/* The kept rows go once down_hessian has used them: the run's memory peaks
 * while quantizing (Hessians and GPTQ factors), not with them. */
static void release_down_rows(run *r)
{
    if (r->keeps_rows) {
        free(r->down_rows);
        r->down_rows = NULL;
        r->sample = NULL;
    }
    r->down_rows_n = 0;
}

/* opts.hessian_pass: every Hessian from a pass of its own. */
static int hessian_pass(run *r, perq_layerwise *lw, int layer, perq_err *err)
{
    perq_linear_hook hook = {r, gather_hessians};
    if (hessians_init(r, err) != 0 || perq_layerwise_run(lw, layer, &hook, false, PASS_HESSIAN, err) != 0)
        return -1;
    r->p->costs.calib_flops += layer_pass_flops(&r->m->cfg, r->tokens, perq_layerwise_seq_len(lw));
    return 0;
}

static int layer_observed(void *ctx, perq_layerwise *lw, int layer, perq_err *err)
{
    run *r = ctx;
    json_t *entry = json_pack("{si}", "index", layer);
    json_array_append_new(r->p->layers, entry);
    int rc = permute_layer(r, layer, entry, err);
    const perq_llama_config *c = &r->m->cfg;
    int seq_len = perq_layerwise_seq_len(lw);
    perq_pipeline_costs *costs = &r->p->costs;
    costs->calib_flops += layer_pass_flops(c, r->tokens, seq_len); /* the observing pass */
    if (rc == 0 && r->p->opts.algorithm == PERQ_WALGO_GPTQ) {
        enter(r, PERQ_STAGE_CALIBRATING, layer);
        if (r->keeps_rows)
            rc = down_hessian(r, layer, err);
        else if (!r->hessians_observed)
            rc = hessian_pass(r, lw, layer, err);
        for (int h = 0; h < N_HESS; h++)
            costs->calib_flops += (double)r->tokens * r->hess[h].n * r->hess[h].n;
    }
    release_down_rows(r);
    if (rc == 0) {
        enter(r, PERQ_STAGE_QUANTIZING, layer);
        rc = quantize_layer(r, layer, entry, err);
    }
    const perq_pipeline_sink *sink = &r->p->opts.sink;
    if (rc == 0 && sink->take)
        rc = sink->take(sink->ctx, layer, &r->p->linears[(size_t)layer * PERQ_PIPELINE_LINEARS], err);
    for (int h = 0; h < N_HESS; h++)
        perq_hessian_free(&r->hess[h]);
    free(r->p3);
    r->p3 = NULL;
    if (rc == 0)
        perq_report_event(r->rep, PERQ_LOG_INFO, entry, "layer %d quantized", layer);
    /* What follows is the pass that feeds the next layer through this one. */
    enter(r, PERQ_STAGE_CALIBRATING, layer + 1);
    costs->calib_flops += layer_pass_flops(c, r->tokens, seq_len);
    return rc;
}

/* ---- the whole run ------------------------------------------------------------- */

/* Kept down_proj rows below this never matter, whatever the model. */
#define DOWN_ROWS_FREE_BYTES (1024.0 * 1024 * 1024)

/* Keeping every down_proj input row of a layer (to gather its Hessian after
 * P3 and R3 without another pass) is worth it while those rows take no more
 * than what calibration holds anyway (one layer in fp32 plus the residual
 * stream) or little at all. Beyond that (many tokens, wide MLPs: 128 x 2048
 * tokens of Llama-3.2-1B would keep 8.6 GB) a separate pass costs time
 * instead of memory. */
static bool down_rows_fit(const perq_llama_config *c, long long tokens)
{
    double rows = (double)tokens * c->intermediate_size * sizeof(float);
    double held = (double)perq_model_layer_bytes(c) + (double)tokens * c->hidden_size * sizeof(float);
    return rows <= held || rows <= DOWN_ROWS_FREE_BYTES;
}

static int init_rotations(perq_pipeline *p, const perq_llama_config *c, perq_err *err)
{
    const perq_pipeline_opts *o = &p->opts;
    int block = o->mode == PERQ_ROT_BLOCK;
    if (o->mode != PERQ_ROT_NONE) {
        int n1 = block ? min_int(o->block_size, c->hidden_size) : c->hidden_size;
        int n2 = block ? min_int(o->block_size, c->head_dim) : c->head_dim;
        if (perq_rotation_init(&p->r1, n1, o->seed ^ 0x5231u, err) != 0)
            return -1;
        p->has_r1 = true;
        if (perq_rotation_init(&p->r2, n2, o->seed ^ 0x5232u, err) != 0)
            return -1;
        p->has_r2 = true;
        if (o->randomized && (perq_rotation_randomize(&p->r1, o->seed ^ 0x5331u, err) != 0 ||
                              perq_rotation_randomize(&p->r2, o->seed ^ 0x5332u, err) != 0))
            return -1;
    }
    p->r3_block = r3_width(c, o);
    if (p->r3_block > 0) {
        if (perq_rotation_init(&p->r3, p->r3_block, o->seed ^ 0x5233u, err) != 0)
            return -1;
        p->has_r3 = true;
    }
    json_object_set_new(p->rotations, "mode", json_string(perq_rotation_mode_name(o->mode)));
    json_object_set_new(p->rotations, "random_signs",
                        o->randomized && o->mode != PERQ_ROT_NONE ? json_integer((json_int_t)o->seed) : json_null());
    const perq_rotation *rs[3] = {&p->r1, &p->r2, &p->r3};
    const bool has[3] = {p->has_r1, p->has_r2, p->has_r3};
    const char *names[3] = {"r1", "r2", "r3"};
    for (int i = 0; i < 3; i++)
        json_object_set_new(p->rotations, names[i],
                            has[i] ? json_pack("{si ss ss sb}", "width", rs[i]->n, "kind",
                                               perq_rotation_kind_name(rs[i]->kind), "how", rs[i]->how, "online",
                                               i == 2)
                                   : json_null());
    return 0;
}

perq_w4a4 perq_pipeline_w4a4(const perq_pipeline *p)
{
    perq_w4a4 h = {p->has_r3 ? &p->r3 : NULL, p->opts.act_bits};
    return h;
}

int perq_pipeline_fold_ends(const perq_pipeline *p, perq_model *m, perq_err *err)
{
    /* The head first: a tied one is copied from the embedding as it was. */
    if (perq_model_load_head(m, err) != 0 || perq_fold_head_norm(m, err) != 0 || perq_model_load_embed(m, err) != 0)
        return -1;
    if (!p->p1 && !p->has_r1)
        return 0;
    const perq_rotation *r1 = p->has_r1 ? &p->r1 : NULL;
    if (perq_fold_residual_embed(m, p->p1, r1, err) != 0 || perq_fold_residual_head(m, p->p1, r1, err) != 0)
        return -1;
    return 0;
}

static int embed_rows(const perq_model *m, int64_t row0, int64_t n, float *out, perq_err *err)
{
    int32_t *ids = malloc((size_t)n * sizeof *ids + 1);
    if (!ids)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)(row0 + i);
    int rc = perq_model_embed(m, ids, (size_t)n, out, err);
    free(ids);
    return rc;
}

int perq_pipeline_end_rows(const perq_pipeline *p, const perq_model *m, bool head, int64_t row0, int64_t n,
                           float *out, perq_err *err)
{
    if (head ? perq_model_head_rows(m, row0, n, out, err) != 0 : embed_rows(m, row0, n, out, err) != 0)
        return -1;
    if (head)
        perq_fold_head_norm_rows(m, out, (size_t)n);
    if (!p->p1 && !p->has_r1)
        return 0;
    return perq_fold_residual_rows(m, out, (size_t)n, p->p1, p->has_r1 ? &p->r1 : NULL, err);
}

/* The calibration residual stream, just embedded, as the folded model's
 * embedding gives it: x P1 R1. The embedding itself is never loaded. */
static int rotate_residual_stream(run *r, perq_layerwise *lw, perq_err *err)
{
    perq_pipeline *p = r->p;
    return perq_fold_residual_rows(r->m, perq_layerwise_hidden(lw), (size_t)r->tokens, p->p1,
                                   p->has_r1 ? &p->r1 : NULL, err);
}

int perq_pipeline_run(perq_model *m, const int32_t *ids, int n_seqs, int seq_len, const perq_pipeline_opts *opts,
                      const perq_reporter *rep, perq_pipeline *p, perq_err *err)
{
    memset(p, 0, sizeof *p);
    p->opts = *opts;
    p->n_layers = m->cfg.num_hidden_layers;
    p->layers = json_array();
    p->rotations = json_object();
    p->linears = calloc((size_t)p->n_layers * PERQ_PIPELINE_LINEARS, sizeof *p->linears);
    p->norms_folded = opts->mode != PERQ_ROT_NONE || opts->fold_norms;
    if (!p->norms_folded)
        p->layer_norms = malloc((size_t)p->n_layers * 2 * m->cfg.hidden_size * sizeof *p->layer_norms);
    if (!p->layers || !p->rotations || !p->linears || (!p->norms_folded && !p->layer_norms))
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (perq_pipeline_check(&m->cfg, opts, err) != 0)
        return -1;
    run r = {.p = p, .m = m, .rep = rep, .stage = -1, .tokens = (long long)n_seqs * seq_len};
    enter(&r, opts->mode != PERQ_ROT_NONE ? PERQ_STAGE_ROTATING : PERQ_STAGE_CALIBRATING, 0);
    int rc = stats_init(&r.down, m->cfg.intermediate_size, err);
    if (rc == 0)
        rc = init_rotations(p, &m->cfg, err);
    /* Kept down_proj rows (observe) hold the sample; otherwise it has its own buffer. */
    r.hessians_observed = opts->algorithm == PERQ_WALGO_GPTQ && !opts->hessian_pass &&
                          (!p->has_r3 || down_rows_fit(&m->cfg, r.tokens));
    r.keeps_rows = r.hessians_observed && p->has_r3;
    p->costs.hessian_pass = opts->algorithm == PERQ_WALGO_GPTQ && !r.hessians_observed;
    if (rc == 0 && !r.keeps_rows &&
        !(r.sample = malloc((size_t)SAMPLE_ROWS * m->cfg.intermediate_size * sizeof *r.sample)))
        rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (rc == 0 && p->has_r3 && opts->randomized && !(r.d3 = malloc((size_t)m->cfg.intermediate_size * sizeof *r.d3)))
        rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (rc == 0 && opts->mode == PERQ_ROT_BLOCK)
        rc = choose_p1(&r, ids, n_seqs, seq_len, err);
    r.w4a4 = perq_pipeline_w4a4(p);
    perq_layerwise *lw = NULL;
    enter(&r, PERQ_STAGE_CALIBRATING, 0);
    if (rc == 0)
        rc = perq_layerwise_begin(m, ids, n_seqs, seq_len, 0, &lw, err);
    if (rc == 0 && (p->p1 || p->has_r1)) {
        enter(&r, PERQ_STAGE_ROTATING, 0);
        rc = rotate_residual_stream(&r, lw, err);
    }
    if (rc == 0) {
        perq_linear_hook prop = perq_w4a4_hook(&r.w4a4);
        perq_layerwise_plan plan = {&r, layer_loaded, {&r, observe}, layer_observed, prop};
        rc = perq_layerwise_calibrate(lw, &plan, rep, err);
    }
    enter(&r, -1, 0);
    perq_layerwise_free(lw);
    stats_free(&r.down);
    if (r.sample != r.down_rows)
        free(r.sample);
    free(r.down_rows);
    free(r.p3);
    for (int h = 0; h < N_HESS; h++)
        perq_hessian_free(&r.hess[h]);
    free(r.d3);
    return rc;
}

void perq_pipeline_free(perq_pipeline *p)
{
    if (p->linears)
        for (int i = 0; i < p->n_layers * PERQ_PIPELINE_LINEARS; i++)
            perq_int4_free(&p->linears[i]);
    free(p->linears);
    free(p->p1);
    free(p->layer_norms);
    if (p->has_r1)
        perq_rotation_free(&p->r1);
    if (p->has_r2)
        perq_rotation_free(&p->r2);
    if (p->has_r3)
        perq_rotation_free(&p->r3);
    json_decref(p->layers);
    json_decref(p->rotations);
    memset(p, 0, sizeof *p);
}
