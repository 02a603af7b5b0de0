/* Perplexity (see perq/perplexity.h for the protocols and perq/eval.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perq/fsutil.h"
#include "perq/perplexity.h"
#include "perq/tokenizer.h"
#include "perq/w4a4.h"

#include "eval_plan.h"
#include "head_nll.h"

enum {
    BATCH_TOKENS = 2048,         /* tokens per forward batch in resident mode */
    SCORE_ROWS = 2048,           /* predictions scored at once (one walk over lm_head) */
};

/* The tokens of chunks c0 .. c0+n-1 as the model sees them. */
static void chunk_tokens(const int32_t *ids, const perq_chunk_plan *p, int bos, int c0, int n, int32_t *out)
{
    memcpy(out, ids + (size_t)c0 * p->ctx, (size_t)n * p->ctx * sizeof *out);
    if (p->replace_bos)
        for (int c = 0; c < n; c++)
            out[(size_t)c * p->ctx] = bos;
}

typedef struct scorer {
    const perq_model *m;
    const perq_chunk_plan *plan;
    const perq_linear_hook *hook;
    float *rows;         /* [SCORE_ROWS][hidden] gathered hidden states */
    int32_t *targets;    /* [SCORE_ROWS] */
    double *nll;         /* [SCORE_ROWS] */
    double nll_sum;
    long long scored;
} scorer;

static int scorer_init(scorer *s, const perq_model *m, const perq_chunk_plan *p, const perq_linear_hook *hook,
                       perq_err *err)
{
    memset(s, 0, sizeof *s);
    s->m = m;
    s->plan = p;
    s->hook = hook;
    s->rows = malloc((size_t)SCORE_ROWS * m->cfg.hidden_size * sizeof *s->rows);
    s->targets = malloc((size_t)SCORE_ROWS * sizeof *s->targets);
    s->nll = malloc((size_t)SCORE_ROWS * sizeof *s->nll);
    if (!s->rows || !s->targets || !s->nll)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for the scored hidden states");
    return 0;
}

static void scorer_free(scorer *s)
{
    free(s->rows);
    free(s->targets);
    free(s->nll);
}

/* The lm_head hook over the gathered rows, as perq_forward_head calls it
 * (the head itself is not there unless it is loaded: w may be NULL). */
static int head_hook(scorer *s, int n, perq_err *err)
{
    if (!s->hook || !s->hook->before)
        return 0;
    const perq_llama_config *c = &s->m->cfg;
    perq_linear_site site = {c->num_hidden_layers, PERQ_LIN_HEAD, s->rows, n, c->hidden_size, c->vocab_size,
                             s->m->head, n, 1, 0};
    if (s->hook->before(s->hook->ctx, &site, err) != 0)
        return perq_err_context(err, "lm_head");
    return 0;
}

static int score_block(scorer *s, int n, perq_err *err)
{
    if (n == 0)
        return 0;
    if (head_hook(s, n, err) != 0 || perq_head_nll(s->m, s->rows, n, s->targets, PERQ_HEAD_NLL_BLOCK_DEFAULT, s->nll, err) != 0)
        return -1;
    for (int r = 0; r < n; r++)
        s->nll_sum += s->nll[r];
    s->scored += n;
    return 0;
}

/* A pack-quantized lm_head has no rows to read in place: it is loaded whole.
 * Any other head is read block by block from where it is. */
static int head_readable(perq_model *m, perq_err *err)
{
    if (m->head || m->cfg.tie_word_embeddings || m->head_src)
        return 0;
    return perq_model_load_head(m, err);
}

/* Scores n chunks whose normalised last hidden states are h [n*ctx][hidden]
 * and whose tokens are tokens [n*ctx]. */
static int score_chunks(scorer *s, const float *h, const int32_t *tokens, int n, perq_err *err)
{
    const perq_chunk_plan *p = s->plan;
    size_t hidden = (size_t)s->m->cfg.hidden_size;
    int filled = 0;
    for (int c = 0; c < n; c++)
        for (int i = 0; i < p->n_scored; i++) {
            size_t pos = (size_t)c * p->ctx + p->first + i;
            memcpy(s->rows + filled * hidden, h + pos * hidden, hidden * sizeof *h);
            s->targets[filled] = tokens[pos + 1];
            if (++filled == SCORE_ROWS) {
                if (score_block(s, filled, err) != 0)
                    return -1;
                filled = 0;
            }
        }
    return score_block(s, filled, err);
}

static int cancelled(const perq_reporter *rep, perq_err *err)
{
    if (!perq_report_cancelled(rep))
        return 0;
    return perq_fail(err, PERQ_E_CANCELLED, "evaluation cancelled");
}

/* ---- the two ways through the model -------------------------------------------------- */

static bool all_layers_loaded(const perq_model *m)
{
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (!perq_model_layer_loaded(m, l))
            return false;
    return true;
}

/* Every layer in fp32, chunks streaming through in batches. */
static int eval_resident(perq_model *m, const int32_t *ids, int bos, const perq_chunk_plan *p, scorer *s,
                         const perq_reporter *rep, perq_err *err)
{
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (perq_model_load_layer(m, l, err) != 0)
            return -1;
    if (head_readable(m, err) != 0)
        return -1;
    int batch = BATCH_TOKENS / p->ctx;
    batch = batch < 1 ? 1 : batch > p->n_chunks ? p->n_chunks : batch;
    perq_forward *f = NULL;
    size_t rows = (size_t)batch * p->ctx;
    float *h = malloc(rows * m->cfg.hidden_size * sizeof *h);
    int32_t *tokens = malloc(rows * sizeof *tokens);
    int rc = 0;
    if (!h || !tokens)
        rc = perq_fail(err, PERQ_E_NOMEM, "out of memory for a batch of %d chunks", batch);
    if (rc == 0)
        rc = perq_forward_new(&m->cfg, batch, p->ctx, &f, err);
    for (int c0 = 0; rc == 0 && c0 < p->n_chunks; c0 += batch) {
        int n = p->n_chunks - c0 < batch ? p->n_chunks - c0 : batch;
        chunk_tokens(ids, p, bos, c0, n, tokens);
        rc = cancelled(rep, err);
        if (rc == 0)
            rc = perq_forward_hidden(f, m, tokens, n, h, s->hook, err);
        if (rc == 0)
            rc = score_chunks(s, h, tokens, n, err);
        perq_report_progress(rep, c0 + n, p->n_chunks);
    }
    perq_forward_free(f);
    free(h);
    free(tokens);
    return rc;
}

/* One layer at a time over the hidden states of every chunk. */
static int eval_layerwise(perq_model *m, const int32_t *ids, int bos, const perq_chunk_plan *p, scorer *s,
                          const perq_reporter *rep, perq_err *err)
{
    size_t rows = (size_t)p->n_chunks * p->ctx;
    int32_t *tokens = malloc(rows * sizeof *tokens);
    if (!tokens)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for %zu tokens", rows);
    chunk_tokens(ids, p, bos, 0, p->n_chunks, tokens);
    perq_layerwise *lw = NULL;
    int layers = m->cfg.num_hidden_layers;
    int rc = perq_layerwise_begin(m, tokens, p->n_chunks, p->ctx, 0, &lw, err);
    for (int l = 0; rc == 0 && l < layers; l++) {
        bool was_loaded = perq_model_layer_loaded(m, l);
        rc = cancelled(rep, err);
        if (rc == 0)
            rc = perq_model_load_layer(m, l, err);
        if (rc == 0)
            rc = perq_layerwise_run(lw, l, s->hook, true, 0, err);
        if (!was_loaded)
            perq_model_free_layer(m, l);
        perq_report_progress(rep, (long long)p->n_chunks * (l + 1) / (layers + 1), p->n_chunks);
    }
    if (rc == 0) {
        float *h = perq_layerwise_hidden(lw);
        perq_forward_final_norm(m, h, (long long)rows);
        rc = head_readable(m, err);
        if (rc == 0)
            rc = score_chunks(s, h, tokens, p->n_chunks, err);
        perq_report_progress(rep, p->n_chunks, p->n_chunks);
    }
    perq_layerwise_free(lw);
    free(tokens);
    return rc;
}

static bool resident_fits(const perq_model *m)
{
    size_t layers = perq_model_layer_bytes(&m->cfg) * (size_t)m->cfg.num_hidden_layers;
    return all_layers_loaded(m) || layers <= PERQ_EVAL_RESIDENT_BYTES;
}

int perq_perplexity_ids(perq_model *m, const int32_t *ids, size_t n_ids, int bos_id, const perq_eval_options *opt,
                        perq_eval_mode mode, const perq_linear_hook *hook, const perq_reporter *rep,
                        perq_eval_result *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    perq_chunk_plan p;
    if (perq_chunk_plan_make(n_ids, opt, &p, err) != 0)
        return -1;
    if (p.replace_bos && (bos_id < 0 || bos_id >= m->cfg.vocab_size))
        return perq_fail(err, PERQ_E_INVALID, "the llama.cpp protocol needs a BOS token (the model has none)");
    scorer s;
    int rc = scorer_init(&s, m, &p, hook, err);
    if (rc == 0) {
        if (mode == PERQ_EVAL_RESIDENT || (mode == PERQ_EVAL_AUTO && resident_fits(m)))
            rc = eval_resident(m, ids, bos_id, &p, &s, rep, err);
        else
            rc = eval_layerwise(m, ids, bos_id, &p, &s, rep, err);
    }
    if (rc == 0) {
        out->nll = s.nll_sum / (double)s.scored;
        out->ppl = exp(out->nll);
        out->tokens_scored = s.scored;
        out->chunks = p.n_chunks;
        out->protocol = opt->protocol == PERQ_PPL_LLAMACPP ? "llama.cpp" : "paper";
        out->ctx = p.ctx;
    }
    scorer_free(&s);
    return rc;
}

void perq_eval_describe(const perq_eval_result *r, char *buf, size_t size)
{
    snprintf(buf, size, "ppl %.4f (%s protocol, ctx %d, %d chunks, %lld tokens scored)", r->ppl, r->protocol, r->ctx,
             r->chunks, r->tokens_scored);
}

/* ---- from a folder and a text file -------------------------------------------------- */

/* The text as llama-perplexity reads it, tokenized once with BOS. */
/* What an artifact asks of inference beyond its dequantized weights (INT4
 * activations, an online R3), as the job's own evaluation applies it. */
static int w4a4_runtime_for(const perq_model *m, const perq_reporter *rep, perq_w4a4_runtime **out,
                                 perq_err *err)
{
    *out = NULL;
    perq_w4a4_scheme scheme;
    if (!m->quant.present || !m->dir)
        return 0;
    if (perq_w4a4_scheme_read(m->dir, &scheme, err) != 0 || perq_w4a4_runtime_new(&scheme, &m->cfg, out, err) != 0)
        return -1;
    if (perq_w4a4_scheme_active(&scheme)) {
        char what[400];
        perq_w4a4_runtime_describe(*out, what, sizeof what);
        perq_report_event(rep, PERQ_LOG_INFO, NULL, "evaluating with %s", what);
    }
    return 0;
}

int perq_eval_perplexity(const char *model_dir, const char *text_path, const perq_eval_options *opt,
                         const perq_reporter *rep, perq_eval_result *out, perq_err *err)
{
    perq_model *m = NULL;
    perq_tokenizer *tok = NULL;
    perq_w4a4_runtime *w4a4 = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = perq_model_open(model_dir, &m, err);
    if (rc == 0)
        rc = perq_eval_text_ids(model_dir, text_path, &tok, &ids, &n_ids, err);
    if (rc == 0) {
        int bos = perq_tokenizer_bos_id(tok);
        if (bos < 0)
            bos = m->cfg.bos_token_id;
        rc = w4a4_runtime_for(m, rep, &w4a4, err);
        if (rc == 0)
            rc = perq_perplexity_ids(m, ids, n_ids, bos, opt, PERQ_EVAL_AUTO, perq_w4a4_runtime_hook(w4a4), rep,
                                     out, err);
    }
    perq_w4a4_runtime_free(w4a4);
    free(ids);
    if (tok)
        perq_tokenizer_free(tok);
    perq_model_close(m);
    return rc;
}
