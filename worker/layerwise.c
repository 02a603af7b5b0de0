/* Layer-by-layer passes over a calibration set (see perq/forward.h): the
 * residual stream of every sequence is kept between layers, and each layer
 * runs over it in micro-batches of whole sequences, in place. */
#include <stdlib.h>
#include <string.h>

#include "perq/forward.h"

enum { TOKENS_PER_BATCH = 512 };

struct perq_layerwise {
    perq_model *model;
    int n_seqs, seq_len, batch_seqs;
    float *h;               /* [n_seqs*seq_len][hidden] */
    float *batch;           /* [batch_seqs*seq_len][hidden], when a pass does not advance */
    perq_forward *fwd;
};

/* Embeddings of every sequence, a micro-batch at a time: each lookup maps
 * pages of the embedding table around the row it reads, so they are given back
 * after each batch rather than piling up to the whole table. */
static int embed_all(perq_layerwise *lw, const int32_t *ids, perq_err *err)
{
    size_t batch_tokens = (size_t)lw->batch_seqs * lw->seq_len;
    size_t total = (size_t)lw->n_seqs * lw->seq_len;
    size_t hidden = (size_t)lw->model->cfg.hidden_size;
    for (size_t at = 0; at < total; at += batch_tokens) {
        size_t n = total - at < batch_tokens ? total - at : batch_tokens;
        if (perq_model_embed(lw->model, ids + at, n, lw->h + at * hidden, err) != 0)
            return -1;
        perq_model_drop_mapped(lw->model);
    }
    return 0;
}

int perq_layerwise_begin(perq_model *m, const int32_t *ids, int n_seqs, int seq_len, int batch_seqs,
                         perq_layerwise **out, perq_err *err)
{
    *out = NULL;
    if (n_seqs < 1 || seq_len < 1)
        return perq_fail(err, PERQ_E_INVALID, "a calibration set needs at least one sequence of one token");
    if (batch_seqs <= 0)
        batch_seqs = seq_len >= TOKENS_PER_BATCH ? 1 : TOKENS_PER_BATCH / seq_len;
    if (batch_seqs > n_seqs)
        batch_seqs = n_seqs;
    perq_layerwise *lw = calloc(1, sizeof *lw);
    if (!lw)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    size_t hidden = (size_t)m->cfg.hidden_size;
    lw->model = m;
    lw->n_seqs = n_seqs;
    lw->seq_len = seq_len;
    lw->batch_seqs = batch_seqs;
    lw->h = malloc((size_t)n_seqs * seq_len * hidden * sizeof *lw->h);
    lw->batch = malloc((size_t)batch_seqs * seq_len * hidden * sizeof *lw->batch);
    if (!lw->h || !lw->batch) {
        perq_layerwise_free(lw);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for the hidden states of %d x %d tokens", n_seqs,
                         seq_len);
    }
    if (perq_forward_new(&m->cfg, batch_seqs, seq_len, &lw->fwd, err) != 0 || embed_all(lw, ids, err) != 0) {
        perq_layerwise_free(lw);
        return -1;
    }
    *out = lw;
    return 0;
}

void perq_layerwise_free(perq_layerwise *lw)
{
    if (!lw)
        return;
    perq_forward_free(lw->fwd);
    free(lw->h);
    free(lw->batch);
    free(lw);
}

perq_model *perq_layerwise_model(perq_layerwise *lw)
{
    return lw->model;
}

float *perq_layerwise_hidden(perq_layerwise *lw)
{
    return lw->h;
}

int perq_layerwise_n_seqs(const perq_layerwise *lw)
{
    return lw->n_seqs;
}

int perq_layerwise_seq_len(const perq_layerwise *lw)
{
    return lw->seq_len;
}

size_t perq_layerwise_activation_bytes(const perq_layerwise *lw)
{
    size_t row = (size_t)lw->model->cfg.hidden_size * sizeof(float);
    return ((size_t)lw->n_seqs + lw->batch_seqs) * lw->seq_len * row +
           perq_forward_workspace_bytes(&lw->model->cfg, lw->batch_seqs, lw->seq_len);
}

int perq_layerwise_run(perq_layerwise *lw, int layer, const perq_linear_hook *hook, bool advance, int pass,
                       perq_err *err)
{
    size_t row_floats = (size_t)lw->model->cfg.hidden_size;
    size_t seq_floats = (size_t)lw->seq_len * row_floats;
    for (int s0 = 0; s0 < lw->n_seqs; s0 += lw->batch_seqs) {
        int n = lw->n_seqs - s0 < lw->batch_seqs ? lw->n_seqs - s0 : lw->batch_seqs;
        float *h = lw->h + (size_t)s0 * seq_floats;
        if (!advance) {
            memcpy(lw->batch, h, (size_t)n * seq_floats * sizeof *h);
            h = lw->batch;
        }
        if (perq_forward_layer(lw->fwd, lw->model, layer, h, n, hook, pass, err) != 0)
            return -1;
    }
    return 0;
}

static void report_progress(const perq_reporter *rep, long long done, long long total)
{
    if (rep && rep->progress)
        rep->progress(rep->ctx, done, total);
}

static int cancelled(const perq_reporter *rep)
{
    return rep && rep->cancelled && rep->cancelled(rep->ctx);
}

static int calibrate_layer(perq_layerwise *lw, const perq_layerwise_plan *plan, int layer, perq_err *err)
{
    bool one_pass = !plan->layer_observed && !plan->propagate.before;
    if (plan->layer_loaded && plan->layer_loaded(plan->ctx, lw, layer, err) != 0)
        return -1;
    if (plan->observe.before &&
        perq_layerwise_run(lw, layer, &plan->observe, one_pass, PERQ_PASS_OBSERVE, err) != 0)
        return -1;
    if (one_pass && plan->observe.before)
        return 0;
    if (plan->layer_observed && plan->layer_observed(plan->ctx, lw, layer, err) != 0)
        return -1;
    return perq_layerwise_run(lw, layer, &plan->propagate, true, PERQ_PASS_PROPAGATE, err);
}

int perq_layerwise_calibrate(perq_layerwise *lw, const perq_layerwise_plan *plan, const perq_reporter *rep,
                             perq_err *err)
{
    perq_model *m = lw->model;
    int layers = m->cfg.num_hidden_layers;
    for (int l = 0; l < layers; l++) {
        if (cancelled(rep))
            return perq_fail(err, PERQ_E_CANCELLED, "cancelled before layer %d", l);
        if (perq_model_load_layer(m, l, err) != 0)
            return -1;
        int rc = calibrate_layer(lw, plan, l, err);
        perq_model_free_layer(m, l);
        if (rc != 0)
            return perq_err_context(err, "calibrating layer %d", l);
        report_progress(rep, l + 1, layers);
    }
    return 0;
}
