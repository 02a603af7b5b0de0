/* Perplexity of a model already open, over token ids already made, with an
 * optional hook in every linear layer: what perq_eval_perplexity (perq/eval.h)
 * runs after loading and tokenizing, and what a quantized evaluation (W4A4:
 * rotations and per-token activation quantization in a hook) calls directly.
 *
 * Protocols (perq_eval_options.protocol):
 *   llama.cpp  ids are the whole text with BOS first; floor(n / ctx) chunks
 *              of ctx tokens, token 0 of each replaced by bos_id; scored: the
 *              predictions at positions ctx/2 .. ctx-2 of every chunk
 *              (ctx - 1 - ctx/2 per chunk), as llama-perplexity does.
 *   paper      the same non-overlapping windows, nothing replaced; scored: the
 *              second half of each window's tokens, positions ctx/2 .. ctx-1,
 *              each predicted from the position before it (ctx - ctx/2 per
 *              window).
 * opt->chunks > 0 takes the first that many chunks only.
 *
 * Chunks run several at a time (each linear layer one sgemm over all of them),
 * in one of two ways:
 *   resident    every layer loaded once, the chunks streaming through them;
 *   layerwise   one layer at a time over the hidden states of every chunk
 *               (one layer in fp32 plus those hidden states).
 * PERQ_EVAL_AUTO picks resident when the layers are all loaded already or fit
 * in PERQ_EVAL_RESIDENT_BYTES in fp32, layerwise otherwise. Layers the
 * evaluation loads itself in layerwise mode are freed again. lm_head is never
 * loaded for it: the scored predictions walk the head in blocks of vocab rows
 * (head_nll.h), unless it is loaded already or pack-quantized. */
#ifndef PERQ_PERPLEXITY_H
#define PERQ_PERPLEXITY_H

#include <stddef.h>
#include <stdint.h>

#include "perq/eval.h"
#include "perq/forward.h"

#define PERQ_EVAL_RESIDENT_BYTES ((size_t)2 << 30)

typedef enum { PERQ_EVAL_AUTO, PERQ_EVAL_RESIDENT, PERQ_EVAL_LAYERWISE } perq_eval_mode;

/* hook may be NULL. rep may be NULL; it gets progress in chunks and is polled
 * for cancellation between batches. */
int perq_perplexity_ids(perq_model *m, const int32_t *ids, size_t n_ids, int bos_id, const perq_eval_options *opt,
                        perq_eval_mode mode, const perq_linear_hook *hook, const perq_reporter *rep,
                        perq_eval_result *out, perq_err *err);

/* "ppl 4.8752 (llama.cpp protocol, ctx 256, 1535 chunks, 194945 tokens scored)" */
void perq_eval_describe(const perq_eval_result *r, char *buf, size_t size);

#endif
