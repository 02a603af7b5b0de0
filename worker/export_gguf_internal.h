/* The key-value section of a GGUF file being built (export_gguf.c), and the
 * tokenizer metadata that goes into it (export_gguf_vocab.c). Every value is
 * little-endian; strings are a u64 length and the bytes, without a NUL. */
#ifndef PERQ_EXPORT_GGUF_INTERNAL_H
#define PERQ_EXPORT_GGUF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "export_gguf.h"
#include "perq/error.h"

typedef struct gguf_kv {
    uint8_t *data;
    size_t len, cap;
    uint64_t count;     /* key-values written */
    bool failed;        /* an allocation failed: every later append is a no-op */
} gguf_kv;

void gguf_kv_free(gguf_kv *kv);
/* Raw bytes and scalars (for array elements). */
void gguf_put(gguf_kv *kv, const void *bytes, size_t n);
void gguf_put_u32(gguf_kv *kv, uint32_t v);
void gguf_put_u64(gguf_kv *kv, uint64_t v);
void gguf_put_str(gguf_kv *kv, const char *s, size_t len);

void gguf_kv_u32(gguf_kv *kv, const char *key, uint32_t v);
void gguf_kv_f32(gguf_kv *kv, const char *key, float v);
void gguf_kv_bool(gguf_kv *kv, const char *key, bool v);
void gguf_kv_str(gguf_kv *kv, const char *key, const char *v);
/* Starts an array of n elements of type; the caller then puts the elements. */
void gguf_kv_array(gguf_kv *kv, const char *key, perq_gguf_value_type type, uint64_t n);

/* The tokenizer.ggml.* key-values of the tokenizer in model_dir, for a model
 * whose embedding has n_vocab rows (ids the tokenizer lacks become [PADn]
 * tokens of type UNUSED, as llama.cpp's converter pads them). */
int gguf_vocab_kv(gguf_kv *kv, const char *model_dir, int n_vocab, int config_bos, int config_eos, perq_err *err);

#endif
