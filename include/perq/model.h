/* A Llama-family model whose weights are materialised in fp32, one decoder
 * layer at a time or all at once, from a Hugging Face checkpoint (F32, F16,
 * BF16) or a perq artifact (compressed-tensors pack-quantized INT4 weights,
 * dequantized on load).
 *
 * The checkpoint stays memory-mapped; only what is loaded lives in fp32:
 *   - the final norm always (hidden_size floats);
 *   - the token embedding is read row by row from the mapping on lookup, unless
 *     perq_model_load_embed materialises it (to fold a rotation into it, say);
 *   - each decoder layer after perq_model_load_layer, until perq_model_free_layer;
 *   - lm_head after perq_model_load_head (for a tied head: the embedding
 *     matrix); its rows can be read from the mapping without it
 *     (perq_model_head_rows).
 * So a layer-by-layer calibration pass holds one layer in fp32 plus its
 * activations. Mapped pages are given back to the page cache once a tensor has
 * been widened, so they do not count against the process either.
 *
 * Weights are row-major [out][in]; a linear layer computes y = x W^T. The fp32
 * weights belong to the model and may be modified in place (folding norms,
 * rotations, quantizing): the forward pass reads whatever they hold. */
#ifndef PERQ_MODEL_H
#define PERQ_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perq/dtype.h"
#include "perq/error.h"
#include "perq/llama_config.h"
#include "perq/safetensors.h"

/* One decoder layer in fp32; every pointer NULL while the layer is not loaded.
 * All of a layer's weights share one allocation. */
typedef struct perq_layer_weights {
    float *attn_norm;   /* [hidden]                input_layernorm */
    float *q;           /* [heads*head_dim][hidden] */
    float *k;           /* [kv_heads*head_dim][hidden] */
    float *v;           /* [kv_heads*head_dim][hidden] */
    float *o;           /* [hidden][heads*head_dim] */
    float *ffn_norm;    /* [hidden]                post_attention_layernorm */
    float *gate;        /* [intermediate][hidden] */
    float *up;          /* [intermediate][hidden] */
    float *down;        /* [hidden][intermediate] */
} perq_layer_weights;

/* quantization_config of a perq artifact (compressed-tensors, pack-quantized). */
typedef struct perq_quant_config {
    bool present;           /* config.json has a quantization_config */
    int weight_bits;        /* 4 */
    int group_size;         /* 0: one scale per output channel */
    int act_bits;           /* input_activations.num_bits; 0 when null (weights only) */
    bool act_dynamic;
    char act_strategy[16];  /* "token", ... ; empty when act_bits == 0 */
} perq_quant_config;

typedef struct perq_model {
    perq_llama_config cfg;
    perq_quant_config quant;
    char *dir;                  /* NULL for a model made by perq_model_alloc */
    perq_checkpoint ckpt;       /* open while the model is */
    bool has_ckpt;

    perq_layer_weights *layers; /* cfg.num_hidden_layers */
    float *final_norm;          /* [hidden], always loaded */
    float *head;                /* [vocab][hidden] after perq_model_load_head, else NULL */
    float *embed;               /* [vocab][hidden] after perq_model_load_embed, else NULL */

    /* Where embedding rows come from while embed is NULL (into the mapping). */
    const perq_tensor *embed_src;
    const perq_tensor *head_src;    /* NULL when tied or pack-quantized */
} perq_model;

/* Opens DIR: parses config.json (and its quantization_config), maps the
 * safetensors files, checks that every tensor the config implies is present
 * with its shape and a usable dtype, and loads the final norm. No layer is
 * loaded yet. */
int perq_model_open(const char *dir, perq_model **out, perq_err *err);
void perq_model_close(perq_model *m);

/* A model without a checkpoint: every weight allocated in fp32 and zeroed, all
 * layers, the embedding and the head loaded (the head a separate matrix even
 * when cfg->tie_word_embeddings). Load and free calls do nothing on it. For
 * tests and for weights computed in memory. */
int perq_model_alloc(const perq_llama_config *cfg, perq_model **out, perq_err *err);

int perq_model_load_layer(perq_model *m, int layer, perq_err *err);
void perq_model_free_layer(perq_model *m, int layer);
bool perq_model_layer_loaded(const perq_model *m, int layer);
/* Every layer and the head. */
int perq_model_load_all(perq_model *m, perq_err *err);
int perq_model_load_head(perq_model *m, perq_err *err);
void perq_model_free_head(perq_model *m);
int perq_model_load_embed(perq_model *m, perq_err *err);

/* Bytes of one decoder layer in fp32, of the head in fp32. */
size_t perq_model_layer_bytes(const perq_llama_config *cfg);
size_t perq_model_head_bytes(const perq_llama_config *cfg);

/* Embedding rows of ids[0..n) into out[n][hidden]. Every id must be in
 * [0, vocab_size): an id outside is a PERQ_E_INVALID error naming it. */
int perq_model_embed(const perq_model *m, const int32_t *ids, size_t n, float *out, perq_err *err);

/* Rows [row0, row0 + n) of lm_head in fp32 into out[n][hidden]: from the
 * loaded head when there is one, else for a tied head the embedding's rows
 * (loaded, or from the mapping), else lm_head.weight's rows from the mapping
 * (head_src). A pack-quantized head has no rows to read in place: it must be
 * loaded first (PERQ_E_UNSUPPORTED otherwise). Rows outside the vocabulary
 * are a PERQ_E_INVALID error. */
int perq_model_head_rows(const perq_model *m, int64_t row0, int64_t n, float *out, perq_err *err);

/* Gives every mapped page of the checkpoint back to the page cache: they stop
 * counting in this process's resident set and are read again on next use.
 * Worth it after looking up many embedding rows (each page fault maps its
 * neighbours too). */
void perq_model_drop_mapped(const perq_model *m);

/* Tensor names of a Llama checkpoint. */
void perq_layer_tensor_name(char *buf, size_t size, int layer, const char *what);

#endif
