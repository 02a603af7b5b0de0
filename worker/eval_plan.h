/* What the perplexity protocols read and score (perq/perplexity.h), shared by
 * perplexity and KL evaluation so that both score the same predictions. */
#ifndef PERQ_EVAL_PLAN_H
#define PERQ_EVAL_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perq/eval.h"
#include "perq/tokenizer.h"

typedef struct perq_chunk_plan {
    int ctx, n_chunks;
    int first;          /* position of the first scored prediction in a chunk */
    int n_scored;       /* predictions scored per chunk */
    bool replace_bos;   /* token 0 of every chunk becomes BOS (llama.cpp) */
} perq_chunk_plan;

/* The chunks of a text of n_ids tokens under opt's protocol, ctx and chunk limit. */
int perq_chunk_plan_make(size_t n_ids, const perq_eval_options *opt, perq_chunk_plan *p, perq_err *err);

/* The text of text_path as llama-perplexity reads it (one trailing newline
 * dropped), tokenized with BOS by model_dir's tokenizer (*tok: caller frees). */
int perq_eval_text_ids(const char *model_dir, const char *text_path, perq_tokenizer **tok, int32_t **ids,
                       size_t *n_ids, perq_err *err);

#endif
