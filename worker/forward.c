/* The prefill forward pass (see perq/forward.h): one sgemm per linear layer
 * over every token of the batch, hooks before each of them. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "perq/forward.h"
#include "vecmath.h"

struct perq_forward {
    perq_llama_config cfg;
    int max_seqs, seq_len;
    float *x;          /* [rows][hidden]  normalised input of q/k/v and gate/up */
    float *x_private;  /* [rows][hidden]  a linear layer's own copy of x, for hooks */
    float *q, *k, *v;  /* [rows][q_dim], [rows][kv_dim] x2 */
    float *attn;       /* [rows][q_dim]   attention output, input of o_proj */
    float *gate, *up;  /* [rows][intermediate] */
    float *scores;     /* attention scratch */
    size_t scores_floats;
    float *rope_cos, *rope_sin;   /* [seq_len][head_dim/2] */
};

static const char *const linear_names[PERQ_LIN_COUNT] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head",
};

const char *perq_linear_name(perq_linear_kind kind)
{
    return kind >= 0 && kind < PERQ_LIN_COUNT ? linear_names[kind] : "?";
}

/* ---- workspace --------------------------------------------------------------- */

typedef struct buffer_sizes {
    size_t x, q, kv, inter, scores, rope;
} buffer_sizes;

static buffer_sizes sizes_for(const perq_llama_config *cfg, int max_seqs, int seq_len)
{
    size_t rows = (size_t)max_seqs * seq_len;
    buffer_sizes s = {
        rows * cfg->hidden_size,
        rows * cfg->num_attention_heads * cfg->head_dim,
        rows * cfg->num_key_value_heads * cfg->head_dim,
        rows * cfg->intermediate_size,
        perq_attention_scratch_floats(seq_len),
        (size_t)seq_len * (cfg->head_dim / 2),
    };
    return s;
}

static size_t total_floats(buffer_sizes s)
{
    return 2 * s.x + 2 * s.q + 2 * s.kv + 2 * s.inter + s.scores + 2 * s.rope;
}

size_t perq_forward_workspace_bytes(const perq_llama_config *cfg, int max_seqs, int seq_len)
{
    return total_floats(sizes_for(cfg, max_seqs, seq_len)) * sizeof(float);
}

int perq_forward_new(const perq_llama_config *cfg, int max_seqs, int seq_len, perq_forward **out, perq_err *err)
{
    *out = NULL;
    if (max_seqs < 1 || seq_len < 1)
        return perq_fail(err, PERQ_E_INVALID, "a batch needs at least one sequence of one token");
    perq_forward *f = calloc(1, sizeof *f);
    buffer_sizes s = sizes_for(cfg, max_seqs, seq_len);
    float *block = malloc(total_floats(s) * sizeof(float));
    if (!f || !block) {
        free(f);
        free(block);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for a batch of %d x %d tokens", max_seqs, seq_len);
    }
    f->cfg = *cfg;
    f->max_seqs = max_seqs;
    f->seq_len = seq_len;
    float *p = block;
    f->x = p, p += s.x;
    f->x_private = p, p += s.x;
    f->q = p, p += s.q;
    f->attn = p, p += s.q;
    f->k = p, p += s.kv;
    f->v = p, p += s.kv;
    f->gate = p, p += s.inter;
    f->up = p, p += s.inter;
    f->scores = p, p += s.scores;
    f->scores_floats = s.scores;
    f->rope_cos = p, p += s.rope;
    f->rope_sin = p;
    perq_rope_tables(cfg, cfg->head_dim, seq_len, f->rope_cos, f->rope_sin);
    *out = f;
    return 0;
}

void perq_forward_free(perq_forward *f)
{
    if (!f)
        return;
    free(f->x);
    free(f);
}

/* ---- linear layers ------------------------------------------------------------ */

/* What every linear layer of one layer call shares. */
typedef struct layer_call {
    perq_forward *f;
    const perq_linear_hook *hook;
    int layer, n_seqs, seq_len, pass;
} layer_call;

/* y (+)= x W^T, the hook first. x_shared: another linear reads the same x, so
 * the hook gets a private copy. beta 1 adds into y (the residual stream). */
static int linear(const layer_call *c, perq_linear_kind kind, float *x, int in, bool x_shared, const float *w,
                  int out, float *y, float beta, perq_err *err)
{
    int rows = c->n_seqs * c->seq_len;
    float *input = x;
    if (c->hook && c->hook->before) {
        if (x_shared) {
            memcpy(c->f->x_private, x, (size_t)rows * in * sizeof *x);
            input = c->f->x_private;
        }
        perq_linear_site site = {c->layer, kind, input, rows, in, out, w, c->n_seqs, c->seq_len, c->pass};
        if (c->hook->before(c->hook->ctx, &site, err) != 0)
            return perq_err_context(err, "layer %d %s", c->layer, perq_linear_name(kind));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, input, in, w, in, beta, y, out);
    return 0;
}

/* gate = silu(gate) * up, in slices over the threads. */
static void swiglu(float *gate, const float *up, size_t n)
{
    const size_t slice = 1 << 14;
#pragma omp parallel for schedule(static) if (n > 4 * slice)
    for (size_t at = 0; at < n; at += slice)
        perq_vswiglu(gate + at, up + at, n - at < slice ? n - at : slice);
}

static int attention_block(const layer_call *c, const perq_layer_weights *w, float *h, perq_err *err)
{
    perq_forward *f = c->f;
    const perq_llama_config *cfg = &f->cfg;
    int hidden = cfg->hidden_size, hd = cfg->head_dim;
    int q_dim = cfg->num_attention_heads * hd, kv_dim = cfg->num_key_value_heads * hd;
    long long rows = (long long)c->n_seqs * c->seq_len;

    perq_rmsnorm(h, w->attn_norm, f->x, rows, hidden, cfg->rms_norm_eps);
    if (linear(c, PERQ_LIN_Q, f->x, hidden, true, w->q, q_dim, f->q, 0.0f, err) ||
        linear(c, PERQ_LIN_K, f->x, hidden, true, w->k, kv_dim, f->k, 0.0f, err) ||
        linear(c, PERQ_LIN_V, f->x, hidden, false, w->v, kv_dim, f->v, 0.0f, err))
        return -1;
    perq_rope_apply(f->q, c->n_seqs, c->seq_len, cfg->num_attention_heads, hd, f->rope_cos, f->rope_sin);
    perq_rope_apply(f->k, c->n_seqs, c->seq_len, cfg->num_key_value_heads, hd, f->rope_cos, f->rope_sin);
    perq_attention(f->q, f->k, f->v, f->attn, c->n_seqs, c->seq_len, cfg->num_attention_heads,
                   cfg->num_key_value_heads, hd, f->scores, f->scores_floats);
    return linear(c, PERQ_LIN_O, f->attn, q_dim, false, w->o, hidden, h, 1.0f, err);
}

static int mlp_block(const layer_call *c, const perq_layer_weights *w, float *h, perq_err *err)
{
    perq_forward *f = c->f;
    const perq_llama_config *cfg = &f->cfg;
    int hidden = cfg->hidden_size, inter = cfg->intermediate_size;
    long long rows = (long long)c->n_seqs * c->seq_len;

    perq_rmsnorm(h, w->ffn_norm, f->x, rows, hidden, cfg->rms_norm_eps);
    if (linear(c, PERQ_LIN_GATE, f->x, hidden, true, w->gate, inter, f->gate, 0.0f, err) ||
        linear(c, PERQ_LIN_UP, f->x, hidden, false, w->up, inter, f->up, 0.0f, err))
        return -1;
    swiglu(f->gate, f->up, (size_t)rows * inter);
    return linear(c, PERQ_LIN_DOWN, f->gate, inter, false, w->down, hidden, h, 1.0f, err);
}

int perq_forward_layer(perq_forward *f, const perq_model *m, int layer, float *h, int n_seqs,
                       const perq_linear_hook *hook, int pass, perq_err *err)
{
    if (n_seqs < 1 || n_seqs > f->max_seqs)
        return perq_fail(err, PERQ_E_INVALID, "a batch of %d sequences (the workspace holds %d)", n_seqs,
                         f->max_seqs);
    if (!perq_model_layer_loaded(m, layer))
        return perq_fail(err, PERQ_E_INVALID, "layer %d is not loaded", layer);
    layer_call c = {f, hook, layer, n_seqs, f->seq_len, pass};
    const perq_layer_weights *w = &m->layers[layer];
    if (attention_block(&c, w, h, err) != 0 || mlp_block(&c, w, h, err) != 0)
        return -1;
    return 0;
}

/* ---- the whole model ------------------------------------------------------------ */

void perq_forward_final_norm(const perq_model *m, float *h, long long rows)
{
    perq_rmsnorm(h, m->final_norm, h, rows, m->cfg.hidden_size, m->cfg.rms_norm_eps);
}

int perq_forward_hidden(perq_forward *f, const perq_model *m, const int32_t *ids, int n_seqs, float *h,
                        const perq_linear_hook *hook, perq_err *err)
{
    long long rows = (long long)n_seqs * f->seq_len;
    if (perq_model_embed(m, ids, (size_t)rows, h, err) != 0)
        return -1;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (perq_forward_layer(f, m, l, h, n_seqs, hook, 0, err) != 0)
            return -1;
    perq_forward_final_norm(m, h, rows);
    return 0;
}

int perq_forward_head(const perq_model *m, float *x, int rows, float *logits, const perq_linear_hook *hook,
                      perq_err *err)
{
    if (!m->head)
        return perq_fail(err, PERQ_E_INVALID, "lm_head is not loaded");
    int hidden = m->cfg.hidden_size, vocab = m->cfg.vocab_size;
    int layer = m->cfg.num_hidden_layers;
    if (hook && hook->before) {
        perq_linear_site site = {layer, PERQ_LIN_HEAD, x, rows, hidden, vocab, m->head, rows, 1, 0};
        if (hook->before(hook->ctx, &site, err) != 0)
            return perq_err_context(err, "lm_head");
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, vocab, hidden, 1.0f, x, hidden, m->head, hidden, 0.0f,
                logits, vocab);
    return 0;
}

int perq_forward_logits(perq_forward *f, const perq_model *m, const int32_t *ids, int n_seqs, float *logits,
                        const perq_linear_hook *hook, perq_err *err)
{
    size_t rows = (size_t)n_seqs * f->seq_len;
    float *h = malloc(rows * m->cfg.hidden_size * sizeof *h);
    if (!h)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for %zu hidden states", rows);
    int rc = perq_forward_hidden(f, m, ids, n_seqs, h, hook, err);
    if (rc == 0)
        rc = perq_forward_head(m, h, (int)rows, logits, hook, err);
    free(h);
    return rc;
}
