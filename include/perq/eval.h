/* Perplexity, with the protocol named in every result. */
#ifndef PERQ_EVAL_H
#define PERQ_EVAL_H

#include <stddef.h>

#include "perq/error.h"
#include "perq/job.h"

typedef enum {
    PERQ_PPL_LLAMACPP,  /* whole text with BOS, chunks of ctx, BOS first, last ctx/2-1 scored */
    PERQ_PPL_PAPER      /* non-overlapping windows of ctx, second half scored */
} perq_ppl_protocol;

typedef struct perq_eval_options {
    perq_ppl_protocol protocol;
    int ctx;        /* 256 by default */
    int chunks;     /* 0: every whole chunk of the text */
} perq_eval_options;

typedef struct perq_eval_result {
    double ppl;
    double nll;                /* mean negative log-likelihood, nats */
    long long tokens_scored;
    int chunks;
    const char *protocol;      /* "llama.cpp" or "paper"; static string */
    int ctx;
} perq_eval_result;

/* model_dir: a Hugging Face checkpoint or a perq artifact (compressed-tensors
 * pack-quantized weights are dequantized; a W4A4 artifact is evaluated as it
 * runs, with INT4 per-token activations and its online R3, see perq/w4a4.h). text_path: the text file, read as
 * llama-perplexity reads it (one trailing newline dropped). rep may be NULL;
 * it receives progress per chunk. */
int perq_eval_perplexity(const char *model_dir, const char *text_path, const perq_eval_options *opt,
                         const perq_reporter *rep, perq_eval_result *out, perq_err *err);

#endif
