/* Prefill and layer-by-layer calibration figures of the engine (built and run
 * by bench_prefill.sh).
 *
 *   prefill_bench prefill DIR TOKENS ROUNDS
 *     Every decoder layer loaded in fp32; one sequence of TOKENS tokens through
 *     them (embedding, layers, final norm; lm_head left out, the evaluation
 *     applies it to scored positions only). Alternates with the same sgemms the
 *     layers run (every linear layer at M = TOKENS, on its own weights), best of
 *     ROUNDS each, so both figures see the same machine load.
 *   prefill_bench calib DIR SEQS SEQ_LEN
 *     A layer-by-layer calibration pass (per-channel mean |x| of every linear
 *     input, as MassDiff needs) over SEQS x SEQ_LEN tokens; peak RSS against one
 *     layer's fp32 size plus the pass's activations. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perq/blas.h"
#include "perq/forward.h"
#include "perq/model.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':')
            kb = atol(line + n + 1);
    if (f)
        fclose(f);
    return kb;
}

static perq_model *open_or_die(const char *dir)
{
    perq_model *m;
    perq_err err;
    if (perq_model_open(dir, &m, &err) != 0) {
        fprintf(stderr, "prefill_bench: %s\n", err.msg);
        exit(1);
    }
    return m;
}

static void die(const perq_err *err)
{
    fprintf(stderr, "prefill_bench: %s\n", err->msg);
    exit(1);
}

static void some_ids(int32_t *ids, int n, int vocab)
{
    uint32_t x = 12345;
    for (int i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        ids[i] = (int32_t)((x >> 8) % (uint32_t)vocab);
    }
}

/* ---- prefill ---------------------------------------------------------------------- */

typedef struct shape {
    int out, in;
    const float *w;
} shape;

static int layer_shapes(const perq_model *m, int l, shape s[7])
{
    const perq_llama_config *c = &m->cfg;
    const perq_layer_weights *w = &m->layers[l];
    int h = c->hidden_size, in = c->intermediate_size;
    int q = c->num_attention_heads * c->head_dim, kv = c->num_key_value_heads * c->head_dim;
    shape all[7] = {{q, h, w->q}, {kv, h, w->k}, {kv, h, w->v}, {h, q, w->o},
                    {in, h, w->gate}, {in, h, w->up}, {h, in, w->down}};
    memcpy(s, all, sizeof all);
    return 7;
}

static double linear_flops(const perq_model *m, int tokens)
{
    shape s[7];
    double flops = 0;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int i = 0; i < layer_shapes(m, l, s); i++)
            flops += 2.0 * tokens * s[i].out * s[i].in;
    return flops;
}

/* Useful attention flops (the causal half): QK^T and PV, 2*T(T+1)/2*d each. */
static double attention_flops(const perq_model *m, int tokens)
{
    const perq_llama_config *c = &m->cfg;
    double per_head = 2.0 * 2.0 * tokens * (tokens + 1) / 2.0 * c->head_dim;
    return per_head * c->num_attention_heads * c->num_hidden_layers;
}

/* Seconds for the layers' sgemms at M = tokens. */
static double time_sgemms(const perq_model *m, int tokens, float *x, float *y)
{
    shape s[7];
    double t0 = now();
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int i = 0; i < layer_shapes(m, l, s); i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, s[i].out, s[i].in, 1.0f, x, s[i].in, s[i].w,
                        s[i].in, 0.0f, y, s[i].out);
    return now() - t0;
}

static int run_prefill(const char *dir, int tokens, int rounds)
{
    perq_model *m = open_or_die(dir);
    perq_err err;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (perq_model_load_layer(m, l, &err) != 0)
            die(&err);
    const perq_llama_config *c = &m->cfg;
    int widest = c->intermediate_size > c->hidden_size ? c->intermediate_size : c->hidden_size;
    int q_dim = c->num_attention_heads * c->head_dim;
    widest = q_dim > widest ? q_dim : widest;
    float *x = malloc((size_t)tokens * widest * sizeof *x);
    float *y = malloc((size_t)tokens * widest * sizeof *y);
    float *h = malloc((size_t)tokens * c->hidden_size * sizeof *h);
    int32_t *ids = malloc((size_t)tokens * sizeof *ids);
    for (size_t i = 0; i < (size_t)tokens * widest; i++)
        x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    some_ids(ids, tokens, c->vocab_size);
    perq_forward *f;
    if (perq_forward_new(c, 1, tokens, &f, &err) != 0)
        die(&err);

    double best_gemm = INFINITY, best_prefill = INFINITY;
    time_sgemms(m, tokens, x, y); /* warm up */
    if (perq_forward_hidden(f, m, ids, 1, h, NULL, &err) != 0)
        die(&err);
    for (int r = 0; r < rounds; r++) {
        double t = time_sgemms(m, tokens, x, y);
        best_gemm = t < best_gemm ? t : best_gemm;
        double t0 = now();
        if (perq_forward_hidden(f, m, ids, 1, h, NULL, &err) != 0)
            die(&err);
        t = now() - t0;
        best_prefill = t < best_prefill ? t : best_prefill;
    }
    double lin = linear_flops(m, tokens), att = attention_flops(m, tokens);
    double sgemm_gflops = lin / best_gemm * 1e-9;
    double prefill_gflops = (lin + att) / best_prefill * 1e-9;
    printf("prefill %d tokens, %d layers (hidden %d, intermediate %d, heads %d/%d): %.0f tokens/s, %.1f GFLOP/s\n",
           tokens, c->num_hidden_layers, c->hidden_size, c->intermediate_size, c->num_attention_heads,
           c->num_key_value_heads, tokens / best_prefill, prefill_gflops);
    printf("sgemm of the same linear layers at M=%d: %.1f GFLOP/s (OpenBLAS %s, %d threads)\n", tokens,
           sgemm_gflops, perq_blas_core(), perq_blas_threads());
    printf("prefill / sgemm: %.2f (target >= 0.70); attention is %.1f%% of the flops\n",
           prefill_gflops / sgemm_gflops, 100.0 * att / (lin + att));
    perq_forward_free(f);
    free(x), free(y), free(h), free(ids);
    perq_model_close(m);
    return 0;
}

/* ---- calibration memory ---------------------------------------------------------------- */

typedef struct channel_mass {
    double *sum[PERQ_LIN_COUNT];
    int width[PERQ_LIN_COUNT];
    long long rows[PERQ_LIN_COUNT];
} channel_mass;

static int accumulate_mass(void *ctx, const perq_linear_site *site, perq_err *err)
{
    channel_mass *cm = ctx;
    if (!cm->sum[site->kind]) {
        cm->sum[site->kind] = calloc((size_t)site->in, sizeof(double));
        cm->width[site->kind] = site->in;
        if (!cm->sum[site->kind])
            return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    double *sum = cm->sum[site->kind];
#pragma omp parallel for schedule(static)
    for (int i0 = 0; i0 < site->in; i0 += 256) {
        int i1 = i0 + 256 < site->in ? i0 + 256 : site->in;
        float part[256] = {0};
        for (int r = 0; r < site->rows; r++) {
            const float *x = site->x + (size_t)r * site->in;
            for (int i = i0; i < i1; i++)
                part[i - i0] += fabsf(x[i]);
        }
        for (int i = i0; i < i1; i++)
            sum[i] += part[i - i0];
    }
    cm->rows[site->kind] += site->rows;
    return 0;
}

static int run_calib(const char *dir, int seqs, int seq_len)
{
    perq_model *m = open_or_die(dir);
    perq_err err;
    long base_kb = status_kb("VmRSS");
    int32_t *ids = malloc((size_t)seqs * seq_len * sizeof *ids);
    some_ids(ids, seqs * seq_len, m->cfg.vocab_size);
    perq_layerwise *lw;
    if (perq_layerwise_begin(m, ids, seqs, seq_len, 0, &lw, &err) != 0)
        die(&err);
    channel_mass cm = {0};
    perq_layerwise_plan plan = {0};
    plan.observe.ctx = &cm;
    plan.observe.before = accumulate_mass;
    double t0 = now();
    if (perq_layerwise_calibrate(lw, &plan, NULL, &err) != 0)
        die(&err);
    double seconds = now() - t0;
    double layer = (double)perq_model_layer_bytes(&m->cfg);
    double acts = (double)perq_layerwise_activation_bytes(lw);
    double peak = status_kb("VmHWM") * 1024.0;
    printf("calibration pass, layer by layer: %d x %d tokens, %d layers in %.1f s\n", seqs, seq_len,
           m->cfg.num_hidden_layers, seconds);
    printf("peak RSS %.0f MB; one layer in fp32 %.0f MB + activations %.0f MB = %.0f MB; "
           "ratio %.2f (target <= 1.50); RSS before the pass %.0f MB\n",
           peak / 1e6, layer / 1e6, acts / 1e6, (layer + acts) / 1e6, peak / (layer + acts), base_kb * 1024.0 / 1e6);
    perq_layerwise_free(lw);
    for (int k = 0; k < PERQ_LIN_COUNT; k++)
        free(cm.sum[k]);
    free(ids);
    perq_model_close(m);
    return 0;
}

int main(int argc, char **argv)
{
    perq_blas_choose_kernel(argc, argv);
    if (argc == 5 && !strcmp(argv[1], "prefill"))
        return run_prefill(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 5 && !strcmp(argv[1], "calib"))
        return run_calib(argv[2], atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: prefill_bench prefill DIR TOKENS ROUNDS | calib DIR SEQS SEQ_LEN\n");
    return 2;
}
