/* The forward pass of a Llama-family decoder in fp32 over whole sequences
 * (prefill), and the hooks that calibration and quantized evaluation plug into.
 *
 * A batch is n_seqs sequences of seq_len tokens, each at positions
 * 0..seq_len-1, laid out sequence-major: row s*seq_len + t of every activation
 * matrix is token t of sequence s. Every linear layer is one sgemm over all
 * rows of the batch (weights [out][in], Y = X W^T). Per layer:
 *
 *   x  = rmsnorm(h) * attn_norm
 *   q, k, v = x Wq^T, x Wk^T, x Wv^T;  RoPE (rotate-half) on q and k
 *   a  = causal softmax(q k^T / sqrt(head_dim)) v   (query head j uses kv head
 *        j / (heads / kv_heads))
 *   h += a Wo^T
 *   x  = rmsnorm(h) * ffn_norm
 *   h += (silu(x Wgate^T) * (x Wup^T)) Wdown^T
 *
 * and at the end logits = (rmsnorm(h) * final_norm) Whead^T.
 *
 * HOOKS. Before each linear layer's sgemm the pass calls the hook, if any, with
 * the layer's input X [rows][in] (a perq_linear_site). The hook may
 *   - observe X: accumulate statistics, Hessians X^T X, ...;
 *   - transform X in place: rotate it, fake-quantize it per token, ...
 * and the sgemm then uses X as the hook left it. X is private to that one
 * linear layer: q, k and v read the same normalised activations, and so do gate
 * and up, but each of them gets its own copy when a hook is installed, so a
 * transformation made for one never reaches another. (A hook that only
 * observes can act on PERQ_LIN_Q and PERQ_LIN_GATE alone and skip the others'
 * identical inputs.) The hook sees the weight it precedes, read-only.
 * The math of the pass never changes with the hook: quantized evaluation is
 * "this forward pass + a transforming hook + quantized weights in the model".
 *
 * LAYER BY LAYER. perq_layerwise keeps the residual stream h of every
 * calibration sequence between layers and runs one decoder layer at a time
 * over all of them, in micro-batches of whole sequences: load a layer, run
 * passes through it (each pass with its own hook, each either observing only or
 * advancing h to the layer's output), free it, go on. Peak memory: one layer in
 * fp32 + h + one micro-batch's workspace. perq_layerwise_calibrate is the
 * ready-made loop; a plan's callbacks may run extra passes themselves. */
#ifndef PERQ_FORWARD_H
#define PERQ_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perq/error.h"
#include "perq/job.h"
#include "perq/llama_config.h"
#include "perq/model.h"

typedef enum {
    PERQ_LIN_Q, PERQ_LIN_K, PERQ_LIN_V, PERQ_LIN_O,
    PERQ_LIN_GATE, PERQ_LIN_UP, PERQ_LIN_DOWN,
    PERQ_LIN_HEAD,
    PERQ_LIN_COUNT
} perq_linear_kind;

/* "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head". */
const char *perq_linear_name(perq_linear_kind kind);

typedef struct perq_linear_site {
    int layer;              /* 0..num_hidden_layers-1; num_hidden_layers for lm_head */
    perq_linear_kind kind;
    float *x;               /* [rows][in], row-major: read it, change it in place */
    int rows;               /* tokens in this call */
    int in;                 /* input features (columns of x) */
    int out;                /* output features */
    const float *w;         /* the weight about to be applied, [out][in]; NULL for
                               an lm_head that perplexity walks block by block */
    int n_seqs, seq_len;    /* rows == n_seqs * seq_len; lm_head: the rows whose
                               logits are wanted, n_seqs = rows, seq_len = 1 */
    int pass;               /* the caller's tag (perq_layerwise_run); 0 otherwise */
} perq_linear_site;

typedef struct perq_linear_hook {
    void *ctx;
    /* Returns 0, or -1 with err set to stop the pass (the error is passed on). */
    int (*before)(void *ctx, const perq_linear_site *site, perq_err *err);
} perq_linear_hook;

/* ---- building blocks (exposed for tests) --------------------------------- */

/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for rows r; out may be x. */
void perq_rmsnorm(const float *x, const float *w, float *out, long long rows, int dim, float eps);

/* Inverse frequencies of RoPE for head_dim (head_dim/2 values), with
 * rope_theta and rope_scaling of cfg (default, linear, llama3) applied. */
void perq_rope_inv_freq(const perq_llama_config *cfg, int head_dim, double *inv_freq);
/* cos and sin tables [seq_len][head_dim/2] for positions 0..seq_len-1. */
void perq_rope_tables(const perq_llama_config *cfg, int head_dim, int seq_len, float *cos_t,
                      float *sin_t);
/* Rotate-half RoPE in place on x [n_seqs*seq_len][n_heads*head_dim]: in each
 * head, element i < head_dim/2 pairs with element i + head_dim/2. */
void perq_rope_apply(float *x, int n_seqs, int seq_len, int n_heads, int head_dim,
                     const float *cos_t, const float *sin_t);

/* Causal attention with GQA. q [n_seqs*seq_len][heads*head_dim], k and v
 * [n_seqs*seq_len][kv_heads*head_dim] (RoPE applied), out like q. scratch
 * holds scratch_floats floats, at least perq_attention_scratch_floats(seq_len)
 * (one score block per OpenMP thread; less than that runs fewer threads, but
 * never less than one thread's share). */
size_t perq_attention_scratch_floats(int seq_len);
void perq_attention(const float *q, const float *k, const float *v, float *out, int n_seqs, int seq_len,
                    int heads, int kv_heads, int head_dim, float *scratch, size_t scratch_floats);

/* ---- the pass ------------------------------------------------------------ */

/* Buffers for batches of up to max_seqs sequences of seq_len tokens. */
typedef struct perq_forward perq_forward;

int perq_forward_new(const perq_llama_config *cfg, int max_seqs, int seq_len, perq_forward **out,
                     perq_err *err);
void perq_forward_free(perq_forward *f);
/* Bytes perq_forward_new allocates for these sizes. */
size_t perq_forward_workspace_bytes(const perq_llama_config *cfg, int max_seqs, int seq_len);

/* One decoder layer (it must be loaded) on the residual stream h
 * [n_seqs*seq_len][hidden], in place. hook may be NULL; pass is handed to it. */
int perq_forward_layer(perq_forward *f, const perq_model *m, int layer, float *h, int n_seqs,
                       const perq_linear_hook *hook, int pass, perq_err *err);

/* Embeddings of ids [n_seqs][seq_len] into h, every layer (all loaded), then
 * the final norm: h holds the normalised last hidden states. */
int perq_forward_hidden(perq_forward *f, const perq_model *m, const int32_t *ids, int n_seqs, float *h,
                        const perq_linear_hook *hook, perq_err *err);

/* The final RMSNorm in place on rows of the residual stream. */
void perq_forward_final_norm(const perq_model *m, float *h, long long rows);

/* logits [rows][vocab] = x Whead^T for normalised hidden rows x [rows][hidden]
 * (the head must be loaded). The hook, if any, sees x as PERQ_LIN_HEAD and may
 * change it. */
int perq_forward_head(const perq_model *m, float *x, int rows, float *logits, const perq_linear_hook *hook,
                      perq_err *err);

/* Logits of every position: perq_forward_hidden then perq_forward_head;
 * logits is [n_seqs*seq_len][vocab]. */
int perq_forward_logits(perq_forward *f, const perq_model *m, const int32_t *ids, int n_seqs, float *logits,
                        const perq_linear_hook *hook, perq_err *err);

/* ---- layer by layer ---------------------------------------------------------- */

typedef struct perq_layerwise perq_layerwise;

/* Embeds n_seqs sequences of seq_len tokens (ids [n_seqs][seq_len]) into the
 * residual stream it keeps. batch_seqs: sequences per micro-batch (0: enough
 * for about 512 tokens). Needs no layer loaded. */
int perq_layerwise_begin(perq_model *m, const int32_t *ids, int n_seqs, int seq_len, int batch_seqs,
                         perq_layerwise **out, perq_err *err);
void perq_layerwise_free(perq_layerwise *lw);

perq_model *perq_layerwise_model(perq_layerwise *lw);
/* The residual stream [n_seqs*seq_len][hidden]: after begin, the embeddings
 * (a caller may transform them, e.g. fold a rotation); after layer l advanced,
 * that layer's output. */
float *perq_layerwise_hidden(perq_layerwise *lw);
int perq_layerwise_n_seqs(const perq_layerwise *lw);
int perq_layerwise_seq_len(const perq_layerwise *lw);
/* Bytes of the residual stream and of the micro-batch workspace. */
size_t perq_layerwise_activation_bytes(const perq_layerwise *lw);

/* Runs every sequence through decoder layer `layer` (loaded) with hook (may be
 * NULL) tagging its calls with pass. advance: the layer's outputs replace the
 * residual stream (the next layer's input); otherwise they are discarded and
 * the pass only feeds the hook. */
int perq_layerwise_run(perq_layerwise *lw, int layer, const perq_linear_hook *hook, bool advance, int pass,
                       perq_err *err);

/* What perq_layerwise_calibrate does at each layer, in this order:
 *   1. load the layer's weights in fp32;
 *   2. layer_loaded (optional): change the weights before any pass (fold
 *      norms, permutations, rotations);
 *   3. observe.before set: a pass with observe, pass tag 1, not advancing;
 *   4. layer_observed (optional): change the weights (quantize them); it may
 *      run further passes itself with perq_layerwise_run (advance false);
 *   5. a pass with propagate (hook may be NULL), pass tag 2, advancing: the
 *      next layer's input is what this layer computes now;
 *   6. free the layer.
 * When there is neither layer_observed nor propagate.before, 3 and 5 are one
 * pass (observe, advancing). */
typedef struct perq_layerwise_plan {
    void *ctx;
    int (*layer_loaded)(void *ctx, perq_layerwise *lw, int layer, perq_err *err);
    perq_linear_hook observe;
    int (*layer_observed)(void *ctx, perq_layerwise *lw, int layer, perq_err *err);
    perq_linear_hook propagate;
} perq_layerwise_plan;

#define PERQ_PASS_OBSERVE 1
#define PERQ_PASS_PROPAGATE 2

/* Runs the plan over every layer; rep (may be NULL) gets progress per layer
 * and is polled for cancellation between layers (PERQ_E_CANCELLED). Afterwards
 * the residual stream holds the last layer's output (before the final norm). */
int perq_layerwise_calibrate(perq_layerwise *lw, const perq_layerwise_plan *plan, const perq_reporter *rep,
                             perq_err *err);

#endif
