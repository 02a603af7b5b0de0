/* How far one model's next-token distributions are from another's on a text:
 * the mean over scored positions of KL(p_reference || p_model), in nats.
 *
 * On a model with random weights (perq synth) perplexity on real text says
 * nothing about quantization; what matters is how far the quantized model
 * moves from the float one. exp(KL) is the perplexity of the model on text
 * drawn from the reference, divided by the reference's own.
 *
 * The positions are those the perplexity protocol of opt scores
 * (perq/perplexity.h): the text is tokenized once with BOS by the model's
 * tokenizer, cut into chunks of ctx tokens, and the second half of every
 * chunk scored. Either folder may be a checkpoint or a perq artifact; an
 * artifact's W4A4 scheme (INT4 activations, online R3) is applied as its own
 * evaluation applies it. The two must have the same vocabulary size. */
#ifndef PERQ_WORKER_KL_H
#define PERQ_WORKER_KL_H

#include "perq/eval.h"

typedef struct perq_kl_result {
    double kl_mean;            /* mean KL(reference || model) per scored token, nats */
    double kl_max;             /* the largest at one position */
    double nll_reference;      /* mean negative log-likelihood of the text, nats */
    double nll_model;
    long long tokens_scored;
    int chunks;
    const char *protocol;      /* "llama.cpp" or "paper"; static string */
    int ctx;
} perq_kl_result;

/* rep may be NULL; it gets progress in passes (one per model's layers, one
 * for the heads) and is polled for cancellation between layers. */
int perq_eval_kl(const char *reference_dir, const char *model_dir, const char *text_path,
                 const perq_eval_options *opt, const perq_reporter *rep, perq_kl_result *out, perq_err *err);

#endif
