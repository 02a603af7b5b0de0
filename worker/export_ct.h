/* compressed-tensors pack-quantized export: a model folder that vLLM (and
 * perq's own engine) loads.
 *
 * For each quantized linear PREFIX (model.layers.N.self_attn.q_proj, ...):
 *   PREFIX.weight_packed  I32 [out][ceil(in/8)]   q+8 of element 8i+k in bits 4k..4k+3
 *   PREFIX.weight_scale   [out][n_groups]         in the weight's float dtype
 *   PREFIX.weight_shape   I64 [2] = {out, in}
 * Groups follow perq/int4.h: when the group size does not divide `in`, the
 * last group of each row is shorter and has its own scale (n_groups =
 * ceil(in/group)). Every other tensor (embeddings, norms, an untied lm_head)
 * is copied byte for byte. Tensors go to model.safetensors, or, when they
 * exceed the shard size (5 GB, as Hugging Face shards), to
 * model-0000k-of-0000n.safetensors with model.safetensors.index.json.
 * config.json is the input's plus quantization_config; the tokenizer and
 * generation files present in the input folder are copied. */
#ifndef PERQ_EXPORT_CT_H
#define PERQ_EXPORT_CT_H

#include <stdint.h>

#include "export_rows.h"
#include "manifest.h"
#include "perq/error.h"
#include "perq/int4.h"
#include "perq/job.h"
#include "perq/safetensors.h"

#define PERQ_CT_FORMAT "compressed-tensors"
#define PERQ_CT_SHARD_BYTES 5000000000ull
/* The compressed-tensors release whose config layout this export follows. */
#define PERQ_CT_VERSION "0.9.4"

typedef struct perq_ct_options {
    int group_size;         /* 0: one scale per output channel */
    int act_bits;           /* 16: input_activations null (weight only) */
    uint64_t shard_bytes;   /* 0: PERQ_CT_SHARD_BYTES */
} perq_ct_options;

typedef struct perq_ct_export perq_ct_export;

perq_ct_export *perq_ct_new(const perq_ct_options *opt);
void perq_ct_free(perq_ct_export *x);
/* Keys set on config.json (e.g. tie_word_embeddings false for an untied head)
 * and on its quantization_config (e.g. transform_config for an online
 * rotation). Either may be NULL; both are borrowed until perq_ct_write returns. */
void perq_ct_set_patches(perq_ct_export *x, const json_t *config_patch, const json_t *quant_patch);

/* A tensor written as it is. Borrowed: t->data must stay valid until
 * perq_ct_write returns (the input checkpoint stays open). */
int perq_ct_add_tensor(perq_ct_export *x, const perq_tensor *t, perq_err *err);
/* A tensor computed in memory (a folded embedding, norm or head): fp32 values
 * converted to dtype and kept by the export. */
int perq_ct_add_f32(perq_ct_export *x, const char *name, perq_dtype dtype, int ndim, const int64_t *shape,
                    const float *values, perq_err *err);
/* A [rows][cols] tensor made while perq_ct_write writes it (export_rows.h):
 * blocks of rows from src, converted to dtype as they go into the file, the
 * same bytes perq_ct_add_f32 would write for those values. ctx is borrowed
 * until perq_ct_write returns. */
int perq_ct_add_rows(perq_ct_export *x, const char *name, perq_dtype dtype, int64_t rows, int64_t cols,
                     perq_row_source src, void *ctx, perq_err *err);
/* A quantized linear: packs m->q and converts m->scales to scale_dtype (they
 * must be representable there: perq_int4_rtn_as). m can be freed afterwards;
 * the export keeps only the packed words and the scales. */
int perq_ct_add_linear(perq_ct_export *x, const char *prefix, const perq_int4_matrix *m,
                       perq_dtype scale_dtype, perq_err *err);

/* The quantization_config object for config.json (new reference). */
json_t *perq_ct_quantization_config(const perq_ct_options *opt);

/* Writes everything into out_dir (which must exist) and adds each file written
 * to files. Progress: one unit per file. */
int perq_ct_write(perq_ct_export *x, const char *in_dir, const char *out_dir, perq_artifact_list *files,
                  const perq_reporter *rep, perq_err *err);

#endif
