/* The forward pass: its building blocks against hand-computed values and naive
 * loops, the causal mask, the hooks, loading, and layer-by-layer execution. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "perq/forward.h"
#include "perq/fsutil.h"
#include "perq/int4.h"
#include "perq/model.h"
#include "perq/perplexity.h"
#include "perq/safetensors.h"
#include "testutil.h"
#include "vecmath.h"

/* ---- helpers -------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((xorshift64(&rng_state) >> 11) * (1.0 / 9007199254740992.0));
}

static void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = uniform(-scale, scale);
}

static void fill_norm(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = uniform(0.8f, 1.2f);
}

static perq_llama_config small_config(int kv_heads)
{
    perq_llama_config c;
    memset(&c, 0, sizeof c);
    strcpy(c.architecture, "LlamaForCausalLM");
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = kv_heads;
    c.head_dim = 8;
    c.vocab_size = 50;
    c.max_position_embeddings = 256;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_scaling.type = PERQ_ROPE_DEFAULT;
    c.tie_word_embeddings = false;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    c.torch_dtype = PERQ_DT_F32;
    return c;
}

static perq_model *random_model(const perq_llama_config *cfg)
{
    perq_model *m;
    perq_err err;
    assert_int_equal(perq_model_alloc(cfg, &m, &err), 0);
    int h = cfg->hidden_size, inter = cfg->intermediate_size;
    int q = cfg->num_attention_heads * cfg->head_dim, kv = cfg->num_key_value_heads * cfg->head_dim;
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        perq_layer_weights *w = &m->layers[l];
        fill_norm(w->attn_norm, h);
        fill_norm(w->ffn_norm, h);
        fill(w->q, (size_t)q * h, 0.5f);
        fill(w->k, (size_t)kv * h, 0.5f);
        fill(w->v, (size_t)kv * h, 0.3f);
        fill(w->o, (size_t)h * q, 0.3f);
        fill(w->gate, (size_t)inter * h, 0.3f);
        fill(w->up, (size_t)inter * h, 0.3f);
        fill(w->down, (size_t)h * inter, 0.2f);
    }
    fill(m->embed, (size_t)cfg->vocab_size * h, 1.0f);
    fill(m->head, (size_t)cfg->vocab_size * h, 0.3f);
    fill_norm(m->final_norm, h);
    return m;
}

static void random_ids(int32_t *ids, size_t n, int vocab)
{
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)(uniform(0, 1) * vocab) % vocab;
}

static float *logits_of(const perq_model *m, const int32_t *ids, int n_seqs, int seq_len,
                        const perq_linear_hook *hook)
{
    perq_forward *f;
    perq_err err;
    assert_int_equal(perq_forward_new(&m->cfg, n_seqs, seq_len, &f, &err), 0);
    float *logits = malloc((size_t)n_seqs * seq_len * m->cfg.vocab_size * sizeof *logits);
    assert_non_null(logits);
    int rc = perq_forward_logits(f, m, ids, n_seqs, logits, hook, &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    perq_forward_free(f);
    return logits;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        worst = d > worst ? d : worst;
    }
    return worst;
}

/* ---- RMSNorm ------------------------------------------------------------------------ */

static void test_rmsnorm_hand_values(void **state)
{
    (void)state;
    /* Row 0: mean square (1 + 4 + 9 + 16) / 4 = 7.5, 1/sqrt(7.5) = 0.365148372.
     * Row 1: mean square 9 / 4 = 2.25, rms 1.5. */
    const float x[8] = {1, 2, 3, 4, 0, 0, 0, 3};
    const float w[4] = {1, 1, 2, 0.5f};
    float y[8];
    perq_rmsnorm(x, w, y, 2, 4, 0.0f);
    const float want[8] = {0.365148372f, 0.730296743f, 2.190890230f, 0.730296743f, 0, 0, 0, 1.0f};
    for (int i = 0; i < 8; i++)
        assert_float_equal(y[i], want[i], 1e-6);
    /* eps is added to the mean square: sqrt(2.25 + 1.75) = 2. */
    perq_rmsnorm(x + 4, w, y, 1, 4, 1.75f);
    assert_float_equal(y[3], 3.0f / 2.0f * 0.5f, 1e-6);
    /* In place gives the same. */
    float z[8];
    memcpy(z, x, sizeof z);
    perq_rmsnorm(z, w, z, 2, 4, 0.0f);
    for (int i = 0; i < 8; i++)
        assert_float_equal(z[i], want[i], 1e-6);
}

/* ---- RoPE ------------------------------------------------------------------------------ */

static void test_rope_default_hand_values(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    /* head_dim 4, theta 10000: inv_freq = {1, 10000^-0.5 = 0.01}. */
    double inv[2];
    perq_rope_inv_freq(&cfg, 4, inv);
    assert_float_equal(inv[0], 1.0, 1e-12);
    assert_float_equal(inv[1], 0.01, 1e-12);

    float cos_t[3 * 2], sin_t[3 * 2];
    perq_rope_tables(&cfg, 4, 3, cos_t, sin_t);
    /* One head [1, 2, 3, 4] at positions 0, 1, 2: pairs (x0, x2) and (x1, x3)
     * turn by p*1 and p*0.01 radians. */
    float x[3 * 4] = {1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4};
    perq_rope_apply(x, 1, 3, 1, 4, cos_t, sin_t);
    const float want[12] = {
        1, 2, 3, 4,
        /* 1cos1 - 3sin1, 2cos.01 - 4sin.01, 3cos1 + 1sin1, 4cos.01 + 2sin.01 */
        -1.98411065f, 1.95990067f, 2.46237790f, 4.01979967f,
        -3.14403912f, 1.91960535f, -0.33914308f, 4.03919736f,
    };
    for (int i = 0; i < 12; i++)
        assert_float_equal(x[i], want[i], 2e-6);
}

static void test_rope_two_sequences_restart_positions(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    float cos_t[2 * 2], sin_t[2 * 2];
    perq_rope_tables(&cfg, 4, 2, cos_t, sin_t);
    /* Two sequences of two tokens, two heads: both sequences turn alike. */
    float x[2 * 2 * 8];
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i % 16) * 0.25f - 1.0f;
    perq_rope_apply(x, 2, 2, 2, 4, cos_t, sin_t);
    for (int i = 0; i < 16; i++)
        assert_float_equal(x[i], x[16 + i], 0);
    for (int i = 0; i < 8; i++) /* position 0 is unchanged */
        assert_float_equal(x[i], (float)i * 0.25f - 1.0f, 0);
}

static void test_rope_llama3_scaling(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    cfg.rope_theta = 500000.0f;
    cfg.rope_scaling.type = PERQ_ROPE_LLAMA3;
    cfg.rope_scaling.factor = 32;
    cfg.rope_scaling.low_freq_factor = 1;
    cfg.rope_scaling.high_freq_factor = 4;
    cfg.rope_scaling.original_max_position_embeddings = 8192;
    double inv[8];
    perq_rope_inv_freq(&cfg, 16, inv);
    /* inv_i = 500000^(-i/8); wavelength 2*pi/inv_i. Below 8192/4 = 2048: kept.
     * Above 8192/1: divided by 32. Between: blended. */
    assert_float_equal(inv[0], 1.0, 1e-12);
    assert_float_equal(inv[3], 0.0072926647, 1e-9);         /* wavelength 861.6: kept */
    /* i = 4: inv = 1/sqrt(500000) = 1.41421356e-3, wavelength 4442.88;
     * smooth = (8192/4442.88 - 1) / 3 = 0.281280; 0.718720 * inv / 32 + 0.281280 * inv */
    assert_float_equal(inv[4], 4.2955680e-4, 1e-9);
    assert_float_equal(inv[5], 2.742481757e-4 / 32, 1e-12);   /* wavelength 22911: / 32 */
    assert_float_equal(inv[7], 1.031338538e-5 / 32, 1e-13);

    cfg.rope_scaling.type = PERQ_ROPE_LINEAR;
    cfg.rope_scaling.factor = 4;
    perq_rope_inv_freq(&cfg, 16, inv);
    assert_float_equal(inv[0], 0.25, 1e-12);
    assert_float_equal(inv[4], 1.41421356e-3 / 4, 1e-10);
}

/* ---- attention ------------------------------------------------------------------------------- */

/* Softmax attention over keys 0..i for every query i, head by head, in double. */
static void naive_attention(const float *q, const float *k, const float *v, float *out, int n_seqs, int seq_len,
                            int heads, int kv_heads, int hd)
{
    int qs = heads * hd, ks = kv_heads * hd;
    double *p = malloc((size_t)seq_len * sizeof *p);
    for (int s = 0; s < n_seqs; s++)
        for (int h = 0; h < heads; h++) {
            int kvh = h / (heads / kv_heads);
            for (int i = 0; i < seq_len; i++) {
                const float *qi = q + ((size_t)s * seq_len + i) * qs + h * hd;
                double max = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const float *kj = k + ((size_t)s * seq_len + j) * ks + kvh * hd;
                    double dot = 0;
                    for (int d = 0; d < hd; d++)
                        dot += (double)qi[d] * kj[d];
                    p[j] = dot / sqrt(hd);
                    max = p[j] > max ? p[j] : max;
                }
                for (int j = 0; j <= i; j++)
                    sum += p[j] = exp(p[j] - max);
                for (int d = 0; d < hd; d++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++)
                        acc += p[j] / sum * v[((size_t)s * seq_len + j) * ks + kvh * hd + d];
                    out[((size_t)s * seq_len + i) * qs + h * hd + d] = (float)acc;
                }
            }
        }
    free(p);
}

static void check_gqa(int heads, int kv_heads)
{
    /* 150 tokens: more than one query block. */
    int n_seqs = 2, seq_len = 150, hd = 16;
    size_t rows = (size_t)n_seqs * seq_len;
    float *q = malloc(rows * heads * hd * sizeof *q), *out = malloc(rows * heads * hd * sizeof *out);
    float *want = malloc(rows * heads * hd * sizeof *want);
    float *k = malloc(rows * kv_heads * hd * sizeof *k), *v = malloc(rows * kv_heads * hd * sizeof *v);
    float *scratch = malloc(perq_attention_scratch_floats(seq_len) * sizeof *scratch);
    fill(q, rows * heads * hd, 1.0f);
    fill(k, rows * kv_heads * hd, 1.0f);
    fill(v, rows * kv_heads * hd, 1.0f);
    perq_attention(q, k, v, out, n_seqs, seq_len, heads, kv_heads, hd, scratch,
                   perq_attention_scratch_floats(seq_len));
    naive_attention(q, k, v, want, n_seqs, seq_len, heads, kv_heads, hd);
    double diff = max_abs_diff(out, want, rows * heads * hd);
    if (diff > 1e-5)
        fail_msg("heads %d, kv heads %d: max difference %g", heads, kv_heads, diff);
    free(q), free(k), free(v), free(out), free(want), free(scratch);
}

static void test_gqa_matches_naive_loop(void **state)
{
    (void)state;
    check_gqa(8, 8);   /* one query head per kv head */
    check_gqa(8, 4);   /* 2 */
    check_gqa(8, 2);
    check_gqa(8, 1);   /* 8 */
}

static void test_attention_first_token_sees_only_itself(void **state)
{
    (void)state;
    /* Position 0 attends to itself alone: its output is its own v. */
    int seq_len = 5, hd = 4;
    float q[5 * 4], k[5 * 4], v[5 * 4], out[5 * 4];
    float *scratch = malloc(perq_attention_scratch_floats(seq_len) * sizeof *scratch);
    fill(q, 20, 2.0f);
    fill(k, 20, 2.0f);
    for (int i = 0; i < 20; i++)
        v[i] = (float)i;
    perq_attention(q, k, v, out, 1, seq_len, 1, 1, hd, scratch, perq_attention_scratch_floats(seq_len));
    for (int d = 0; d < hd; d++)
        assert_float_equal(out[d], v[d], 0);
    /* Equal keys: every earlier value weighs the same, the output is their mean. */
    for (int i = 0; i < 20; i++)
        k[i] = 1.0f;
    perq_attention(q, k, v, out, 1, seq_len, 1, 1, hd, scratch, perq_attention_scratch_floats(seq_len));
    for (int d = 0; d < hd; d++)
        assert_float_equal(out[4 * 4 + d], (v[d] + v[4 + d] + v[8 + d] + v[12 + d] + v[16 + d]) / 5, 1e-5);
    free(scratch);
}

static void test_causal_mask_later_tokens_change_nothing_earlier(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    perq_model *m = random_model(&cfg);
    enum { T = 140 };
    int32_t a[T], b[T];
    random_ids(a, T, cfg.vocab_size);
    memcpy(b, a, sizeof a);
    for (int t = 100; t < T; t++)
        b[t] = (a[t] + 7) % cfg.vocab_size;
    float *la = logits_of(m, a, 1, T, NULL), *lb = logits_of(m, b, 1, T, NULL);
    size_t v = (size_t)cfg.vocab_size;
    assert_true(max_abs_diff(la, lb, 100 * v) <= 1e-6);
    assert_true(max_abs_diff(la + 100 * v, lb + 100 * v, (T - 100) * v) > 1e-3);
    free(la), free(lb);
    perq_model_close(m);
}

static void test_batch_equals_sequences_one_by_one(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(1);
    perq_model *m = random_model(&cfg);
    enum { T = 33 };
    int32_t ids[3 * T];
    random_ids(ids, 3 * T, cfg.vocab_size);
    float *all = logits_of(m, ids, 3, T, NULL);
    size_t v = (size_t)cfg.vocab_size;
    for (int s = 0; s < 3; s++) {
        float *one = logits_of(m, ids + s * T, 1, T, NULL);
        assert_true(max_abs_diff(one, all + (size_t)s * T * v, T * v) <= 1e-5);
        free(one);
    }
    free(all);
    perq_model_close(m);
}

/* ---- hooks --------------------------------------------------------------------------- */

typedef struct call_log {
    int n;
    struct {
        int layer, kind, rows, in, out;
        const float *w;
    } calls[32];
} call_log;

static int log_call(void *ctx, const perq_linear_site *site, perq_err *err)
{
    (void)err;
    call_log *log = ctx;
    assert_true(log->n < 32);
    log->calls[log->n].layer = site->layer;
    log->calls[log->n].kind = site->kind;
    log->calls[log->n].rows = site->rows;
    log->calls[log->n].in = site->in;
    log->calls[log->n].out = site->out;
    log->calls[log->n].w = site->w;
    assert_int_equal(site->rows, site->n_seqs * site->seq_len);
    log->n++;
    return 0;
}

static void test_hook_called_once_per_linear_with_shapes(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    perq_model *m = random_model(&cfg);
    int32_t ids[2 * 7];
    random_ids(ids, 14, cfg.vocab_size);
    call_log log = {0};
    perq_linear_hook hook = {&log, log_call};
    free(logits_of(m, ids, 2, 7, &hook));

    int h = cfg.hidden_size, in = cfg.intermediate_size, q = 4 * 8, kv = 2 * 8;
    assert_int_equal(log.n, 2 * 7 + 1);
    for (int l = 0; l < 2; l++) {
        const perq_layer_weights *w = &m->layers[l];
        struct { int kind, in, out; const float *w; } want[7] = {
            {PERQ_LIN_Q, h, q, w->q}, {PERQ_LIN_K, h, kv, w->k}, {PERQ_LIN_V, h, kv, w->v},
            {PERQ_LIN_O, q, h, w->o}, {PERQ_LIN_GATE, h, in, w->gate}, {PERQ_LIN_UP, h, in, w->up},
            {PERQ_LIN_DOWN, in, h, w->down},
        };
        for (int i = 0; i < 7; i++) {
            int c = l * 7 + i;
            assert_int_equal(log.calls[c].layer, l);
            assert_int_equal(log.calls[c].kind, want[i].kind);
            assert_int_equal(log.calls[c].rows, 14);
            assert_int_equal(log.calls[c].in, want[i].in);
            assert_int_equal(log.calls[c].out, want[i].out);
            assert_ptr_equal(log.calls[c].w, want[i].w);
        }
    }
    assert_int_equal(log.calls[14].layer, 2);
    assert_int_equal(log.calls[14].kind, PERQ_LIN_HEAD);
    assert_int_equal(log.calls[14].in, h);
    assert_int_equal(log.calls[14].out, cfg.vocab_size);
    assert_string_equal(perq_linear_name(PERQ_LIN_DOWN), "down_proj");
    perq_model_close(m);
}

/* Scales the input of one kind of linear layer by 2. */
static int double_input(void *ctx, const perq_linear_site *site, perq_err *err)
{
    (void)err;
    if ((int)site->kind == *(int *)ctx)
        for (size_t i = 0; i < (size_t)site->rows * site->in; i++)
            site->x[i] *= 2.0f;
    return 0;
}

static void scale(float *w, size_t n, float s)
{
    for (size_t i = 0; i < n; i++)
        w[i] *= s;
}

/* Doubling a linear layer's input through the hook is doubling its weight, and
 * touches no other layer that reads the same activations. */
static void check_transforming_hook(perq_linear_kind kind)
{
    perq_llama_config cfg = small_config(2);
    perq_model *m = random_model(&cfg);
    int32_t ids[2 * 20];
    random_ids(ids, 40, cfg.vocab_size);
    float *plain = logits_of(m, ids, 2, 20, NULL);
    int target = kind;
    perq_linear_hook hook = {&target, double_input};
    float *hooked = logits_of(m, ids, 2, 20, &hook);

    int h = cfg.hidden_size, in = cfg.intermediate_size, kv = 2 * 8;
    for (int l = 0; l < 2; l++) {
        perq_layer_weights *w = &m->layers[l];
        if (kind == PERQ_LIN_K)
            scale(w->k, (size_t)kv * h, 2.0f);
        if (kind == PERQ_LIN_GATE)
            scale(w->gate, (size_t)in * h, 2.0f);
        if (kind == PERQ_LIN_DOWN)
            scale(w->down, (size_t)h * in, 2.0f);
    }
    if (kind == PERQ_LIN_HEAD)
        scale(m->head, (size_t)cfg.vocab_size * h, 2.0f);
    float *scaled = logits_of(m, ids, 2, 20, NULL);
    size_t n = (size_t)40 * cfg.vocab_size;
    if (max_abs_diff(hooked, plain, n) < 1e-2)
        fail_msg("%s: the hook did not change the output", perq_linear_name(kind));
    double diff = max_abs_diff(hooked, scaled, n);
    if (diff > 1e-4)
        fail_msg("%s: hooked output differs from scaled weights by %g", perq_linear_name(kind), diff);
    free(plain), free(hooked), free(scaled);
    perq_model_close(m);
}

static void test_transforming_hook_changes_only_its_layer(void **state)
{
    (void)state;
    check_transforming_hook(PERQ_LIN_K);    /* q and v share its input */
    check_transforming_hook(PERQ_LIN_GATE); /* up shares its input */
    check_transforming_hook(PERQ_LIN_DOWN);
    check_transforming_hook(PERQ_LIN_HEAD);
}

static int fail_on_up(void *ctx, const perq_linear_site *site, perq_err *err)
{
    (void)ctx;
    if (site->kind == PERQ_LIN_UP && site->layer == 1)
        return perq_fail(err, PERQ_E_INTERNAL, "stop here");
    return 0;
}

static void test_hook_error_stops_the_pass(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    perq_model *m = random_model(&cfg);
    int32_t ids[8];
    random_ids(ids, 8, cfg.vocab_size);
    perq_forward *f;
    perq_err err;
    assert_int_equal(perq_forward_new(&cfg, 1, 8, &f, &err), 0);
    float logits[8 * 50];
    perq_linear_hook hook = {NULL, fail_on_up};
    assert_int_equal(perq_forward_logits(f, m, ids, 1, logits, &hook, &err), -1);
    assert_int_equal(err.code, PERQ_E_INTERNAL);
    assert_non_null(strstr(err.msg, "layer 1 up_proj: stop here"));
    ids[3] = 50; /* outside the vocabulary */
    assert_int_equal(perq_forward_logits(f, m, ids, 1, logits, NULL, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    perq_forward_free(f);
    perq_model_close(m);
}

/* ---- checkpoints on disk ------------------------------------------------------------------ */

static char tmp_dir[64];

static int make_tmp_dir(void **state)
{
    (void)state;
    strcpy(tmp_dir, "/tmp/perq-test-forward-XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int remove_tmp_dir(void **state)
{
    (void)state;
    perq_err err;
    return perq_remove_tree(tmp_dir, &err);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[256];
    perq_err err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (perq_write_file_atomic(path, text, strlen(text), &err) != 0)
        fail_msg("%s", err.msg);
}

static void write_config(const char *dir, const perq_llama_config *c, const char *dtype, const char *extra)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d,"
             " \"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,"
             " \"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, \"max_position_embeddings\": %d,"
             " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"rope_scaling\": null,"
             " \"tie_word_embeddings\": %s, \"torch_dtype\": \"%s\", \"bos_token_id\": 1, \"eos_token_id\": 2%s}",
             c->hidden_size, c->intermediate_size, c->num_hidden_layers, c->num_attention_heads,
             c->num_key_value_heads, c->head_dim, c->vocab_size, c->max_position_embeddings,
             c->tie_word_embeddings ? "true" : "false", dtype, extra ? extra : "");
    write_text(dir, "config.json", text);
}

typedef struct narrowed {
    void *data[64];
    int n;
} narrowed;

/* Adds w [d0][d1] (d1 0: a vector) in dtype. */
static void add_tensor(perq_st_writer *wr, narrowed *keep, const char *name, perq_dtype dt, const float *w, int d0,
                       int d1)
{
    int64_t shape[2] = {d0, d1};
    size_t n = (size_t)d0 * (d1 ? d1 : 1);
    void *data = malloc(n * perq_dtype_size(dt));
    perq_from_f32(dt, w, data, n);
    keep->data[keep->n++] = data;
    perq_err err;
    if (perq_st_writer_add(wr, name, dt, d1 ? 2 : 1, shape, data, &err) != 0)
        fail_msg("%s", err.msg);
}

/* Writes the model as a checkpoint (every linear in dtype dt); the linears
 * named in packed (a suffix like "mlp.down_proj", or NULL) pack-quantized. */
static void write_checkpoint(const char *dir, const perq_model *m, perq_dtype dt, const char *packed, int group)
{
    const perq_llama_config *c = &m->cfg;
    perq_st_writer *wr = perq_st_writer_new();
    narrowed keep = {.n = 0};
    int h = c->hidden_size, in = c->intermediate_size, q = c->num_attention_heads * c->head_dim;
    int kv = c->num_key_value_heads * c->head_dim;
    add_tensor(wr, &keep, "model.embed_tokens.weight", dt, m->embed, c->vocab_size, h);
    add_tensor(wr, &keep, "model.norm.weight", dt, m->final_norm, h, 0);
    if (!c->tie_word_embeddings)
        add_tensor(wr, &keep, "lm_head.weight", dt, m->head, c->vocab_size, h);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const perq_layer_weights *w = &m->layers[l];
        struct { const char *what; const float *w; int out, in; } lin[7] = {
            {"self_attn.q_proj", w->q, q, h}, {"self_attn.k_proj", w->k, kv, h}, {"self_attn.v_proj", w->v, kv, h},
            {"self_attn.o_proj", w->o, h, q}, {"mlp.gate_proj", w->gate, in, h}, {"mlp.up_proj", w->up, in, h},
            {"mlp.down_proj", w->down, h, in},
        };
        char name[128];
        for (int i = 0; i < 7; i++) {
            perq_layer_tensor_name(name, sizeof name, l, lin[i].what);
            if (packed && !strcmp(lin[i].what, packed)) {
                perq_int4_matrix qm;
                perq_err err;
                assert_int_equal(perq_int4_rtn_as(lin[i].w, lin[i].out, lin[i].in, group, dt, &qm, &err), 0);
                int32_t *words = malloc((size_t)lin[i].out * perq_int4_packed_cols(lin[i].in) * sizeof *words);
                perq_int4_pack(qm.q, lin[i].out, lin[i].in, words);
                keep.data[keep.n++] = words;
                int64_t pshape[2] = {lin[i].out, (int64_t)perq_int4_packed_cols(lin[i].in)};
                char part[160];
                snprintf(part, sizeof part, "%s.weight_packed", name);
                assert_int_equal(perq_st_writer_add(wr, part, PERQ_DT_I32, 2, pshape, words, &err), 0);
                snprintf(part, sizeof part, "%s.weight_scale", name);
                add_tensor(wr, &keep, part, dt, qm.scales, lin[i].out, qm.n_groups);
                int64_t *dims = malloc(2 * sizeof *dims);
                dims[0] = lin[i].out, dims[1] = lin[i].in;
                keep.data[keep.n++] = dims;
                int64_t two = 2;
                snprintf(part, sizeof part, "%s.weight_shape", name);
                assert_int_equal(perq_st_writer_add(wr, part, PERQ_DT_I64, 1, &two, dims, &err), 0);
                perq_int4_free(&qm);
            } else {
                snprintf(name + strlen(name), sizeof name - strlen(name), ".weight");
                add_tensor(wr, &keep, name, dt, lin[i].w, lin[i].out, lin[i].in);
            }
        }
        perq_layer_tensor_name(name, sizeof name, l, "input_layernorm.weight");
        add_tensor(wr, &keep, name, dt, w->attn_norm, h, 0);
        perq_layer_tensor_name(name, sizeof name, l, "post_attention_layernorm.weight");
        add_tensor(wr, &keep, name, dt, w->ffn_norm, h, 0);
    }
    char path[256];
    perq_err err;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (perq_st_write(wr, path, &err) != 0)
        fail_msg("%s", err.msg);
    perq_st_writer_free(wr);
    for (int i = 0; i < keep.n; i++)
        free(keep.data[i]);
}

static perq_model *open_model(const char *dir)
{
    perq_model *m;
    perq_err err;
    if (perq_model_open(dir, &m, &err) != 0)
        fail_msg("%s", err.msg);
    return m;
}

static void test_checkpoint_round_trip_f32_and_bf16(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    perq_model *mem = random_model(&cfg);
    enum { T = 24 };
    int32_t ids[2 * T];
    random_ids(ids, 2 * T, cfg.vocab_size);
    float *want = logits_of(mem, ids, 2, T, NULL);
    size_t n = (size_t)2 * T * cfg.vocab_size;

    write_config(tmp_dir, &cfg, "float32", NULL);
    write_checkpoint(tmp_dir, mem, PERQ_DT_F32, NULL, 0);
    perq_model *disk = open_model(tmp_dir);
    perq_err err;
    assert_false(perq_model_layer_loaded(disk, 0));
    assert_int_equal(perq_model_load_all(disk, &err), 0);
    assert_true(perq_model_layer_loaded(disk, 1));
    float *got = logits_of(disk, ids, 2, T, NULL);
    assert_true(max_abs_diff(got, want, n) == 0);
    free(got);
    perq_model_close(disk);

    /* BF16 on disk is the in-memory model with every weight rounded to BF16. */
    write_config(tmp_dir, &cfg, "bfloat16", NULL);
    write_checkpoint(tmp_dir, mem, PERQ_DT_BF16, NULL, 0);
    disk = open_model(tmp_dir);
    assert_int_equal(disk->embed_src->dtype, PERQ_DT_BF16);
    assert_int_equal(perq_model_load_all(disk, &err), 0);
    got = logits_of(disk, ids, 2, T, NULL);
    assert_true(max_abs_diff(got, want, n) > 1e-4); /* rounding is visible */
    float *w = mem->layers[1].up;
    for (size_t i = 0; i < (size_t)cfg.intermediate_size * cfg.hidden_size; i++)
        w[i] = perq_bf16_to_f32(perq_f32_to_bf16(w[i]));
    assert_true(disk->layers[1].up[5] == w[5]);
    free(got);
    perq_model_close(disk);
    free(want);
    perq_model_close(mem);
}

static void test_pack_quantized_weights_dequantize(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    cfg.tie_word_embeddings = true;
    perq_model *mem = random_model(&cfg);
    /* 48 columns in groups of 32: the last group of each row is 16 wide. */
    write_config(tmp_dir, &cfg, "float32",
                 ", \"quantization_config\": {\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\","
                 " \"config_groups\": {\"group_0\": {\"targets\": [\"Linear\"], \"weights\": {\"num_bits\": 4,"
                 " \"type\": \"int\", \"symmetric\": true, \"strategy\": \"group\", \"group_size\": 32},"
                 " \"input_activations\": {\"num_bits\": 4, \"type\": \"int\", \"symmetric\": false,"
                 " \"strategy\": \"token\", \"dynamic\": true}}}, \"ignore\": [\"lm_head\"]}");
    write_checkpoint(tmp_dir, mem, PERQ_DT_F32, "mlp.down_proj", 32);
    perq_model *disk = open_model(tmp_dir);
    assert_true(disk->quant.present);
    assert_int_equal(disk->quant.group_size, 32);
    assert_int_equal(disk->quant.act_bits, 4);
    assert_string_equal(disk->quant.act_strategy, "token");
    perq_err err;
    assert_int_equal(perq_model_load_layer(disk, 1, &err), 0);
    assert_int_equal(perq_model_load_head(disk, &err), 0);
    /* The tied head is the embedding. */
    assert_true(max_abs_diff(disk->head, mem->embed, (size_t)cfg.vocab_size * cfg.hidden_size) == 0);

    perq_int4_matrix qm;
    int rows = cfg.hidden_size, cols = cfg.intermediate_size;
    assert_int_equal(perq_int4_rtn_as(mem->layers[1].down, rows, cols, 32, PERQ_DT_F32, &qm, &err), 0);
    assert_int_equal(qm.n_groups, 2);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float want = qm.q[(size_t)r * cols + c] * qm.scales[r * 2 + c / 32];
            assert_float_equal(disk->layers[1].down[(size_t)r * cols + c], want, 0);
        }
    /* Unquantized linears load as they are. */
    assert_true(max_abs_diff(disk->layers[1].up, mem->layers[1].up, (size_t)cols * rows) == 0);
    perq_int4_free(&qm);
    perq_model_close(disk);
    perq_model_close(mem);
}

static void test_missing_tensor_is_named(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    perq_model *mem = random_model(&cfg);
    write_checkpoint(tmp_dir, mem, PERQ_DT_F32, NULL, 0);
    cfg.num_hidden_layers = 3; /* the config now asks for a layer the file lacks */
    write_config(tmp_dir, &cfg, "float32", NULL);
    perq_model *m;
    perq_err err;
    assert_int_equal(perq_model_open(tmp_dir, &m, &err), -1);
    assert_non_null(strstr(err.msg, "model.layers.2.self_attn.q_proj.weight"));
    cfg.num_hidden_layers = 2;
    cfg.hidden_size = 16; /* shapes no longer match */
    write_config(tmp_dir, &cfg, "float32", NULL);
    assert_int_equal(perq_model_open(tmp_dir, &m, &err), -1);
    assert_int_equal(err.code, PERQ_E_FORMAT);
    perq_model_close(mem);
}

/* ---- layer by layer ------------------------------------------------------------------------- */

typedef struct plan_log {
    int loaded[4], observed[4];
    int observe_calls, propagate_calls;
    float down_scale;
} plan_log;

static int on_loaded(void *ctx, perq_layerwise *lw, int layer, perq_err *err)
{
    (void)err;
    plan_log *log = ctx;
    log->loaded[layer]++;
    assert_true(perq_model_layer_loaded(perq_layerwise_model(lw), layer));
    if (layer > 0)
        assert_false(perq_model_layer_loaded(perq_layerwise_model(lw), layer - 1));
    return 0;
}

static int on_observed(void *ctx, perq_layerwise *lw, int layer, perq_err *err)
{
    (void)err;
    plan_log *log = ctx;
    log->observed[layer]++;
    perq_model *m = perq_layerwise_model(lw);
    scale(m->layers[layer].down, (size_t)m->cfg.hidden_size * m->cfg.intermediate_size, log->down_scale);
    return 0;
}

static int count_pass(void *ctx, const perq_linear_site *site, perq_err *err)
{
    (void)err;
    plan_log *log = ctx;
    if (site->pass == PERQ_PASS_OBSERVE)
        log->observe_calls++;
    else if (site->pass == PERQ_PASS_PROPAGATE)
        log->propagate_calls++;
    return 0;
}

/* Logits from the residual stream that a layer-by-layer run leaves. */
static float *layerwise_logits(perq_model *m, const int32_t *ids, int n_seqs, int seq_len, int batch_seqs,
                               const perq_layerwise_plan *plan)
{
    perq_layerwise *lw;
    perq_err err;
    assert_int_equal(perq_layerwise_begin(m, ids, n_seqs, seq_len, batch_seqs, &lw, &err), 0);
    if (perq_layerwise_calibrate(lw, plan, NULL, &err) != 0)
        fail_msg("%s", err.msg);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        assert_false(perq_model_layer_loaded(m, l));
    size_t rows = (size_t)n_seqs * seq_len;
    float *h = perq_layerwise_hidden(lw);
    perq_forward_final_norm(m, h, (long long)rows);
    float *logits = malloc(rows * m->cfg.vocab_size * sizeof *logits);
    assert_int_equal(perq_model_load_head(m, &err), 0);
    assert_int_equal(perq_forward_head(m, h, (int)rows, logits, NULL, &err), 0);
    perq_model_free_head(m);
    perq_layerwise_free(lw);
    return logits;
}

static void test_layer_by_layer_equals_whole_model(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    cfg.num_hidden_layers = 3;
    perq_model *mem = random_model(&cfg);
    write_config(tmp_dir, &cfg, "bfloat16", NULL);
    write_checkpoint(tmp_dir, mem, PERQ_DT_BF16, NULL, 0);
    perq_model_close(mem);

    enum { S = 5, T = 19 };
    int32_t ids[S * T];
    random_ids(ids, S * T, cfg.vocab_size);
    size_t n = (size_t)S * T * cfg.vocab_size;
    perq_model *m = open_model(tmp_dir);
    perq_err err;
    assert_int_equal(perq_model_load_all(m, &err), 0);
    float *whole = logits_of(m, ids, S, T, NULL);
    perq_model_close(m);

    /* Nothing but passes, all sequences in one micro-batch: the same sgemms as
     * the whole model's, so the same bits. */
    m = open_model(tmp_dir);
    perq_layerwise_plan none = {0};
    float *by_layer = layerwise_logits(m, ids, S, T, S, &none);
    assert_true(max_abs_diff(whole, by_layer, n) == 0);
    free(by_layer);
    /* Micro-batches of 2 sequences (the last one short): sgemms of other
     * shapes may sum in another order, so equal to float rounding. */
    by_layer = layerwise_logits(m, ids, S, T, 2, &none);
    assert_true(max_abs_diff(whole, by_layer, n) <= 1e-5);
    free(by_layer);

    /* Observation alone: one pass per layer, the same result. */
    plan_log log = {.down_scale = 1.0f};
    perq_layerwise_plan observe = {&log, on_loaded, {&log, count_pass}, NULL, {NULL, NULL}};
    by_layer = layerwise_logits(m, ids, S, T, 0, &observe);
    assert_true(max_abs_diff(whole, by_layer, n) <= 1e-5);
    assert_int_equal(log.observe_calls, 3 * 7);
    assert_int_equal(log.loaded[2], 1);
    free(by_layer);
    perq_model_close(m);

    /* Weights changed after observation feed the next layer: as if the model
     * had had them from the start. */
    m = open_model(tmp_dir);
    memset(&log, 0, sizeof log);
    log.down_scale = 0.5f;
    perq_layerwise_plan quantize = {&log, on_loaded, {&log, count_pass}, on_observed, {&log, count_pass}};
    by_layer = layerwise_logits(m, ids, S, T, 3, &quantize);
    assert_int_equal(log.observe_calls, 3 * 7 * 2); /* 2 micro-batches */
    assert_int_equal(log.propagate_calls, 3 * 7 * 2);
    assert_int_equal(log.observed[1], 1);
    assert_int_equal(perq_model_load_all(m, &err), 0);
    for (int l = 0; l < 3; l++)
        scale(m->layers[l].down, (size_t)cfg.hidden_size * cfg.intermediate_size, 0.5f);
    float *changed = logits_of(m, ids, S, T, NULL);
    assert_true(max_abs_diff(changed, by_layer, n) <= 1e-5);
    assert_true(max_abs_diff(changed, whole, n) > 1e-3);
    free(changed), free(by_layer), free(whole);
    perq_model_close(m);
}

static int cancel_now(void *ctx)
{
    (void)ctx;
    return 1;
}

static void test_layerwise_cancel(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    perq_model *m = random_model(&cfg);
    int32_t ids[10];
    random_ids(ids, 10, cfg.vocab_size);
    perq_layerwise *lw;
    perq_err err;
    assert_int_equal(perq_layerwise_begin(m, ids, 2, 5, 0, &lw, &err), 0);
    perq_reporter rep = {.cancelled = cancel_now};
    perq_layerwise_plan none = {0};
    assert_int_equal(perq_layerwise_calibrate(lw, &none, &rep, &err), -1);
    assert_int_equal(err.code, PERQ_E_CANCELLED);
    perq_layerwise_free(lw);
    perq_model_close(m);
}

/* ---- elementwise kernels ---------------------------------------------------------------- */

static void test_vexp_accuracy(void **state)
{
    (void)state;
    enum { N = 20001 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++)
        x[i] = -87.0f + 175.0f * i / (N - 1);
    float *y = malloc(N * sizeof *y);
    memcpy(y, x, N * sizeof *y);
    perq_vexp(y, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double want = exp((double)x[i]);
        double rel = fabs(y[i] - want) / want;
        worst = rel > worst ? rel : worst;
    }
    if (worst > 4e-7)
        fail_msg("exp: relative error %g", worst);
    float edge[3] = {-1e4f, 0.0f, 1e4f};
    perq_vexp(edge, 3);
    assert_true(edge[0] >= 0 && edge[0] < 1e-37f);
    assert_float_equal(edge[1], 1.0f, 0);
    assert_true(isfinite(edge[2]));
    free(x), free(y);
}

static void test_vsoftmax_and_swiglu(void **state)
{
    (void)state;
    /* softmax(ln 1, ln 2, ln 3, ln 4) = (1, 2, 3, 4) / 10, also shifted by a constant */
    float s[4] = {0.0f, 0.693147181f, 1.098612289f, 1.386294361f};
    float t[4];
    for (int i = 0; i < 4; i++)
        t[i] = s[i] - 300.0f;
    perq_vsoftmax(s, 4);
    perq_vsoftmax(t, 4);
    for (int i = 0; i < 4; i++) {
        assert_float_equal(s[i], (i + 1) / 10.0f, 1e-6);
        assert_float_equal(t[i], (i + 1) / 10.0f, 1e-4);
    }
    /* silu(g) = g / (1 + e^-g): silu(0) = 0, silu(2) = 1.761594156, silu(-2) = -0.238405844 */
    float g[3] = {0.0f, 2.0f, -2.0f}, u[3] = {5.0f, 0.5f, 2.0f};
    perq_vswiglu(g, u, 3);
    assert_float_equal(g[0], 0.0f, 0);
    assert_float_equal(g[1], 0.880797078f, 1e-6);
    assert_float_equal(g[2], -0.476811688f, 1e-6);
}

/* ---- perplexity protocols ------------------------------------------------------------------- */

/* -log p(target) from logits, in double. */
static double nll_at(const float *logits, int vocab, int target)
{
    double max = logits[0], sum = 0;
    for (int i = 1; i < vocab; i++)
        max = logits[i] > max ? logits[i] : max;
    for (int i = 0; i < vocab; i++)
        sum += exp(logits[i] - max);
    return log(sum) + max - logits[target];
}

/* The protocol by hand: every chunk on its own, its scored positions summed. */
static double naive_nll(const perq_model *m, const int32_t *ids, int ctx, int chunks, bool llamacpp, long long *n)
{
    int vocab = m->cfg.vocab_size;
    int32_t *chunk = malloc((size_t)ctx * sizeof *chunk);
    double total = 0;
    *n = 0;
    for (int c = 0; c < chunks; c++) {
        memcpy(chunk, ids + (size_t)c * ctx, (size_t)ctx * sizeof *chunk);
        if (llamacpp)
            chunk[0] = 1;
        float *logits = logits_of(m, chunk, 1, ctx, NULL);
        /* llama.cpp: predictions at ctx/2 .. ctx-2; paper: targets ctx/2 .. ctx-1 */
        int from = llamacpp ? ctx / 2 : ctx / 2 - 1;
        for (int pos = from; pos <= ctx - 2; pos++, (*n)++)
            total += nll_at(logits + (size_t)pos * vocab, vocab, chunk[pos + 1]);
        free(logits);
    }
    free(chunk);
    return total / *n;
}

static void test_perplexity_protocols_by_hand(void **state)
{
    (void)state;
    perq_llama_config cfg = small_config(2);
    perq_model *m = random_model(&cfg);
    enum { CTX = 20, N = 3 * CTX + 7 };
    int32_t ids[N];
    random_ids(ids, N, cfg.vocab_size);
    ids[0] = 1;
    perq_eval_result r;
    perq_err err;
    long long n;

    perq_eval_options opt = {PERQ_PPL_LLAMACPP, CTX, 0};
    assert_int_equal(perq_perplexity_ids(m, ids, N, 1, &opt, PERQ_EVAL_AUTO, NULL, NULL, &r, &err), 0);
    double want = naive_nll(m, ids, CTX, 3, true, &n);
    assert_int_equal(r.chunks, 3);
    assert_int_equal(r.tokens_scored, 3 * (CTX - 1 - CTX / 2));
    assert_int_equal(r.tokens_scored, n);
    assert_float_equal(r.nll, want, 1e-5);
    assert_float_equal(r.ppl, exp(want), 1e-4 * exp(want));
    assert_string_equal(r.protocol, "llama.cpp");
    assert_int_equal(r.ctx, CTX);
    char line[256];
    perq_eval_describe(&r, line, sizeof line);
    assert_non_null(strstr(line, "(llama.cpp protocol, ctx 20, 3 chunks, 27 tokens scored)"));

    opt.protocol = PERQ_PPL_PAPER;
    opt.chunks = 2;
    assert_int_equal(perq_perplexity_ids(m, ids, N, 1, &opt, PERQ_EVAL_AUTO, NULL, NULL, &r, &err), 0);
    want = naive_nll(m, ids, CTX, 2, false, &n);
    assert_int_equal(r.chunks, 2);
    assert_int_equal(r.tokens_scored, 2 * CTX / 2);
    assert_int_equal(r.tokens_scored, n);
    assert_float_equal(r.nll, want, 1e-5);
    assert_string_equal(r.protocol, "paper");

    /* Layer by layer over all chunks: the same figure. */
    double resident_nll = r.nll;
    assert_int_equal(perq_perplexity_ids(m, ids, N, 1, &opt, PERQ_EVAL_LAYERWISE, NULL, NULL, &r, &err), 0);
    assert_float_equal(r.nll, resident_nll, 1e-6);
    assert_int_equal(r.tokens_scored, n);

    opt.ctx = 80; /* longer than the text */
    assert_int_equal(perq_perplexity_ids(m, ids, N, 1, &opt, PERQ_EVAL_AUTO, NULL, NULL, &r, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    perq_model_close(m);
}

/* ---- the references of shared/models/stories260K/REFERENCE.md --------------------------- */

/* BOS and the first 64 ids of ref_tokens.json. */
static int reference_ids(const char *shared, int32_t ids[65])
{
    char path[512];
    snprintf(path, sizeof path, "%s/models/stories260K/ref_tokens.json", shared);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return -1;
    json_t *list = json_object_get(root, "ids");
    ids[0] = 1;
    for (int i = 0; i < 64; i++)
        ids[i + 1] = (int32_t)json_integer_value(json_array_get(list, (size_t)i));
    json_decref(root);
    return 0;
}

static void check_reference_logits(const char *model, const char *ref_file)
{
    const char *shared = getenv("PERQ_SHARED");
    char dir[512], path[512];
    if (!shared)
        skip();
    snprintf(dir, sizeof dir, "%s/models/%s", shared, model);
    snprintf(path, sizeof path, "%s/models/stories260K/%s", shared, ref_file);
    int32_t ids[65];
    if (reference_ids(shared, ids) != 0)
        fail_msg("PERQ_SHARED is set but %s/models/stories260K/ref_tokens.json cannot be read", shared);
    char *ref;
    size_t len;
    perq_err err;
    assert_int_equal(perq_read_file(path, 0, &ref, &len, &err), 0);
    assert_int_equal(len, 65 * 512 * sizeof(float));

    perq_model *m = open_model(dir);
    assert_int_equal(perq_model_load_all(m, &err), 0);
    float *logits = logits_of(m, ids, 1, 65, NULL);
    double diff = max_abs_diff(logits, (const float *)ref, 65 * 512);
    printf("# %s: max |logit - reference| = %.3g\n", model, diff);
    assert_true(diff <= 1e-4);
    free(logits);
    free(ref);
    perq_model_close(m);
}

static void test_reference_logits_f32(void **state)
{
    (void)state;
    check_reference_logits("stories260K", "ref_logits_f32.bin");
}

static void test_reference_logits_bf16(void **state)
{
    (void)state;
    check_reference_logits("stories260K-bf16", "ref_logits_bf16.bin");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_hand_values),
        cmocka_unit_test(test_rope_default_hand_values),
        cmocka_unit_test(test_rope_two_sequences_restart_positions),
        cmocka_unit_test(test_rope_llama3_scaling),
        cmocka_unit_test(test_gqa_matches_naive_loop),
        cmocka_unit_test(test_attention_first_token_sees_only_itself),
        cmocka_unit_test(test_causal_mask_later_tokens_change_nothing_earlier),
        cmocka_unit_test(test_batch_equals_sequences_one_by_one),
        cmocka_unit_test(test_hook_called_once_per_linear_with_shapes),
        cmocka_unit_test(test_transforming_hook_changes_only_its_layer),
        cmocka_unit_test(test_hook_error_stops_the_pass),
        cmocka_unit_test(test_checkpoint_round_trip_f32_and_bf16),
        cmocka_unit_test(test_pack_quantized_weights_dequantize),
        cmocka_unit_test(test_missing_tensor_is_named),
        cmocka_unit_test(test_layer_by_layer_equals_whole_model),
        cmocka_unit_test(test_layerwise_cancel),
        cmocka_unit_test(test_vexp_accuracy),
        cmocka_unit_test(test_vsoftmax_and_swiglu),
        cmocka_unit_test(test_perplexity_protocols_by_hand),
        cmocka_unit_test(test_reference_logits_f32),
        cmocka_unit_test(test_reference_logits_bf16),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
