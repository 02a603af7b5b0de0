/* GGUF v3 export: one file that llama.cpp loads unchanged.
 *
 * Layout (PERQ-NOTES section 5): "GGUF", version 3, tensor count, key-value
 * count, the key-values, the tensor infos (name, dims with the contiguous
 * dimension first, ggml type, offset), padding to general.alignment (32), the
 * tensor data, each tensor starting at a multiple of 32.
 *
 * Tensors, named as llama.cpp's llama architecture expects:
 *   token_embd.weight                 embedding      opt.embed (F16)
 *   blk.N.attn_norm / ffn_norm        norms          F32
 *   blk.N.attn_q/k/v/output.weight    linears        Q4_0
 *   blk.N.ffn_gate/up/down.weight     linears        Q4_0
 *   output_norm.weight                               F32
 *   output.weight                     untied head    opt.embed (F16)
 *   rope_freqs.weight                 llama3 RoPE    F32 [head_dim/2], factors
 *                                                    as llama.cpp's converter
 *                                                    computes them
 * A linear's INT4 values go into Q4_0 blocks unchanged: block = fp16 d + 16
 * bytes, element j of the block in the low nibble of byte j and element j+16
 * in the high nibble, value q + 8, d = the scale of the group holding the
 * block (any group size that is a multiple of 32, or one scale per output
 * channel, copied into every block of the row). Only d changes, by its
 * rounding to fp16 (measured: perq_gguf_summary). A linear whose width is not
 * a multiple of 32 (no Q4_0 block fits, nor Q8_0) is written as F16 of the
 * dequantized values q * scale, and the summary names it.
 *
 * q_proj and k_proj rows are permuted per head from Hugging Face's rotate-half
 * RoPE layout to llama.cpp's interleaved pairs: GGUF row h*D + 2i + j is
 * Hugging Face row h*D + j*D/2 + i (D = head_dim, i < D/2, j in {0, 1}),
 * which undoes convert_llama_weights_to_hf's permutation. This is valid only
 * while the job left the output rows of q_proj and k_proj in the checkpoint's
 * order (weight-only jobs: rotations act on their inputs).
 *
 * Metadata: general.* (architecture llama, name, alignment, file_type
 * MOSTLY_Q4_0, quantization_version 2), the llama.* hyperparameters of
 * config.json (rope scaling: linear as llama.rope.scaling.type/factor, llama3
 * as the rope_freqs tensor, as llama.cpp's converter writes them), and the
 * tokenizer (export_gguf_vocab.c): SentencePiece-style BPE (byte_fallback) as
 * tokenizer.ggml.model "llama" with scores, byte-level BPE as "gpt2" with
 * merges and tokenizer.ggml.pre ("llama-bpe" for Llama 3's pre-tokenizer).
 *
 * Typical use (a weight-only job):
 *   perq_gguf_export *g;  perq_gguf_new(&cfg, &opt, &g, err);
 *   for every tensor of the checkpoint that is not a quantized linear:
 *       perq_gguf_add_tensor(g, t, err);          // borrowed until write
 *   for every quantized linear: perq_gguf_add_linear(g, prefix, &m, err);
 *   perq_gguf_write_artifact(g, model_dir, out_dir, &files, rep, err);
 *   json_t *s = perq_gguf_summary(g);  // into report.json
 *   perq_gguf_free(g); */
#ifndef PERQ_EXPORT_GGUF_H
#define PERQ_EXPORT_GGUF_H

#include <stdint.h>

#include <jansson.h>

#include "export_rows.h"
#include "manifest.h"
#include "perq/error.h"
#include "perq/int4.h"
#include "perq/job.h"
#include "perq/llama_config.h"
#include "perq/safetensors.h"

#define PERQ_GGUF_FORMAT "gguf"
#define PERQ_GGUF_FILE "model.gguf"
#define PERQ_GGUF_ALIGNMENT 32
#define PERQ_GGUF_VERSION 3

/* ggml tensor types written here (ggml.h numbering). */
typedef enum {
    PERQ_GGML_F32 = 0,
    PERQ_GGML_F16 = 1,
    PERQ_GGML_Q4_0 = 2,
    PERQ_GGML_Q8_0 = 8,
} perq_ggml_type;

/* GGUF metadata value types. */
typedef enum {
    PERQ_GGUF_UINT8 = 0, PERQ_GGUF_INT8 = 1, PERQ_GGUF_UINT16 = 2, PERQ_GGUF_INT16 = 3,
    PERQ_GGUF_UINT32 = 4, PERQ_GGUF_INT32 = 5, PERQ_GGUF_FLOAT32 = 6, PERQ_GGUF_BOOL = 7,
    PERQ_GGUF_STRING = 8, PERQ_GGUF_ARRAY = 9, PERQ_GGUF_UINT64 = 10, PERQ_GGUF_INT64 = 11,
    PERQ_GGUF_FLOAT64 = 12,
} perq_gguf_value_type;

/* llama.cpp's token types (tokenizer.ggml.token_type). */
enum {
    PERQ_GGUF_TOKEN_NORMAL = 1, PERQ_GGUF_TOKEN_UNKNOWN = 2, PERQ_GGUF_TOKEN_CONTROL = 3,
    PERQ_GGUF_TOKEN_USER_DEFINED = 4, PERQ_GGUF_TOKEN_UNUSED = 5, PERQ_GGUF_TOKEN_BYTE = 6,
};

#define PERQ_GGUF_Q4_0_BLOCK 32
#define PERQ_GGUF_Q4_0_BYTES 18 /* fp16 d + 16 bytes */
#define PERQ_GGUF_Q8_0_BYTES 34 /* fp16 d + 32 int8 */

/* The type of token_embd and output (the untied head). Q8_0 needs a hidden
 * size that is a multiple of 32; F16 is used otherwise. */
typedef enum { PERQ_GGUF_EMBED_F16 = 0, PERQ_GGUF_EMBED_Q8_0, PERQ_GGUF_EMBED_F32 } perq_gguf_embed;

typedef struct perq_gguf_options {
    const char *name;              /* general.name; NULL: the model folder's name */
    perq_gguf_embed embed;
} perq_gguf_options;

typedef struct perq_gguf_export perq_gguf_export;

/* cfg is copied; opt may be NULL (defaults). */
int perq_gguf_new(const perq_llama_config *cfg, const perq_gguf_options *opt, perq_gguf_export **out,
                  perq_err *err);
void perq_gguf_free(perq_gguf_export *x);

/* A tensor of the checkpoint (embedding, norms, an untied lm_head), by its
 * Hugging Face name; converted to its GGUF type while the file is written, so
 * t->data must stay valid until then. lm_head.weight of a tied model and
 * rotary inv_freq buffers are skipped; any other name is an error. */
int perq_gguf_add_tensor(perq_gguf_export *x, const perq_tensor *t, perq_err *err);
/* The same from fp32 values in memory (an embedding a job changed, say):
 * converted now, w can be freed afterwards. shape as in the checkpoint. */
int perq_gguf_add_f32(perq_gguf_export *x, const char *hf_name, int ndim, const int64_t *shape, const float *w,
                      perq_err *err);
/* A [rows][cols] float tensor (embedding, untied head) made while the file
 * is written (export_rows.h): blocks of rows from src, converted to the
 * tensor's GGUF type as they go into the file, the same bytes
 * perq_gguf_add_f32 would write for those values. ctx is borrowed until the
 * write returns. A tied model's lm_head.weight is skipped (src never called). */
int perq_gguf_add_rows(perq_gguf_export *x, const char *hf_name, int64_t rows, int64_t cols, perq_row_source src,
                       void *ctx, perq_err *err);
/* A quantized linear, by its prefix ("model.layers.3.self_attn.q_proj"):
 * transcoded now (Q4_0, or F16 when the width is not a multiple of 32); m can
 * be freed afterwards. */
int perq_gguf_add_linear(perq_gguf_export *x, const char *prefix, const perq_int4_matrix *m, perq_err *err);

/* Writes the GGUF file at path (it appears complete or not at all), with the
 * tokenizer of model_dir (tokenizer.json, tokenizer_config.json, config.json).
 * Fails when a tensor the config implies was never added. */
int perq_gguf_write(perq_gguf_export *x, const char *model_dir, const char *path, perq_err *err);
/* perq_gguf_write to out_dir/model.gguf, listed in files as format "gguf";
 * progress: one unit per tensor. */
int perq_gguf_write_artifact(perq_gguf_export *x, const char *model_dir, const char *out_dir,
                             perq_artifact_list *files, const perq_reporter *rep, perq_err *err);

/* What the export did, for report.json (new reference):
 *   {file, bytes, tensors, types {Q4_0: n, F16: n, F32: n, ...},
 *    not_q4_0 [{tensor, type, reason}],
 *    scale_fp16 {scales, changed, max_rel_change, rel_weight_change}}
 * scale_fp16: the Q4_0 scales rounded to fp16 (d): how many changed, the
 * largest relative change of one scale, and ||W_gguf - W_int4||_F / ||W_int4||_F
 * over all Q4_0 linears. */
json_t *perq_gguf_summary(const perq_gguf_export *x);

/* Building blocks, exposed for tests. */
/* Q4_0 blocks of one row of INT4 values: cols / 32 blocks, scales[c / group]. */
void perq_gguf_q4_0_row(const int8_t *q, const float *scales, int cols, int group, uint8_t *blocks);
/* GGUF row of a permuted q_proj/k_proj (rows = heads * head_dim) -> its
 * Hugging Face row. */
int perq_gguf_rope_source_row(int row, int head_dim);
/* Q8_0 of one row of floats (cols a multiple of 32), as ggml rounds it. */
void perq_gguf_q8_0_row(const float *x, int cols, uint8_t *blocks);

#endif
