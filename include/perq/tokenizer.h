/* Tokenizers of tokenizer.json (Hugging Face): SentencePiece-style BPE with byte
 * fallback (Llama 2, TinyLlama, Mistral) and byte-level BPE (Llama 3, Qwen). */
#ifndef PERQ_TOKENIZER_H
#define PERQ_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perq/error.h"

typedef struct perq_tokenizer perq_tokenizer;

/* Reads DIR/tokenizer.json and, where present, DIR/tokenizer_config.json and
 * DIR/config.json (BOS/EOS ids). An unsupported feature is an error naming it. */
int perq_tokenizer_load(const char *dir, perq_tokenizer **out, perq_err *err);
/* From the text of a tokenizer.json held in memory (for tests and fuzzing). */
int perq_tokenizer_parse(const char *json_text, size_t len, perq_tokenizer **out, perq_err *err);
void perq_tokenizer_free(perq_tokenizer *t);

/* Encodes text (no special-token parsing unless the tokenizer's added tokens
 * say so); add_bos prepends the BOS id. *ids is newly allocated (caller frees). */
int perq_tokenizer_encode(const perq_tokenizer *t, const char *text, size_t len, bool add_bos,
                          int32_t **ids, size_t *n_ids, perq_err *err);
/* Decodes ids to a newly allocated NUL-terminated string (caller frees). */
int perq_tokenizer_decode(const perq_tokenizer *t, const int32_t *ids, size_t n_ids, char **text,
                          perq_err *err);

int perq_tokenizer_bos_id(const perq_tokenizer *t); /* -1 when none */
int perq_tokenizer_eos_id(const perq_tokenizer *t);
size_t perq_tokenizer_vocab_size(const perq_tokenizer *t);

#endif
