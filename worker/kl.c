/* KL(reference || model) per token on a text (see kl.h).
 *
 * Each model in turn runs layer by layer over every chunk (as the layerwise
 * perplexity evaluation does), and keeps only the normalised last hidden
 * states of the scored positions; then both heads turn those into logits a
 * few rows at a time, and the two distributions are compared row by row. */
#include "kl.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "perq/forward.h"
#include "perq/fsutil.h"
#include "perq/tokenizer.h"
#include "perq/w4a4.h"

#include "eval_plan.h"

enum { HEAD_ROWS = 32 };    /* positions whose logits are computed at once */

static size_t scored_count(const perq_chunk_plan *p)
{
    return (size_t)p->n_chunks * (size_t)p->n_scored;
}

/* Position (row of the residual stream) of scored prediction i. */
static size_t scored_position(const perq_chunk_plan *p, size_t i)
{
    return i / (size_t)p->n_scored * (size_t)p->ctx + (size_t)p->first + i % (size_t)p->n_scored;
}

/* ---- one model ------------------------------------------------------------- */

typedef struct side {
    const char *dir;
    perq_model *m;
    perq_w4a4_runtime *w4a4;
    float *rows;            /* [scored][hidden] normalised last hidden states */
} side;

static int side_open(side *s, const char *dir, perq_err *err)
{
    memset(s, 0, sizeof *s);
    s->dir = dir;
    perq_w4a4_scheme scheme;
    if (perq_model_open(dir, &s->m, err) != 0 || perq_w4a4_scheme_read(dir, &scheme, err) != 0 ||
        perq_w4a4_runtime_new(&scheme, &s->m->cfg, &s->w4a4, err) != 0)
        return perq_err_context(err, "opening %s", dir);
    return 0;
}

static void side_close(side *s)
{
    perq_w4a4_runtime_free(s->w4a4);
    perq_model_close(s->m);
    free(s->rows);
}

static int cancelled(const perq_reporter *rep, perq_err *err)
{
    return perq_report_cancelled(rep) ? perq_fail(err, PERQ_E_CANCELLED, "evaluation cancelled") : 0;
}

/* Runs tokens [n_chunks][ctx] through every layer of s, one layer in memory
 * at a time (layers already loaded stay), and keeps the scored positions'
 * normalised hidden states. */
static int side_hidden(side *s, const int32_t *tokens, const perq_chunk_plan *p, const perq_reporter *rep, long long step,
                       long long steps, perq_err *err)
{
    perq_model *m = s->m;
    const perq_linear_hook *hook = perq_w4a4_runtime_hook(s->w4a4);
    size_t hidden = (size_t)m->cfg.hidden_size, n = scored_count(p);
    s->rows = malloc(n * hidden * sizeof *s->rows);
    if (!s->rows)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for %zu hidden states", n);
    perq_layerwise *lw = NULL;
    int rc = perq_layerwise_begin(m, tokens, p->n_chunks, p->ctx, 0, &lw, err);
    for (int l = 0; rc == 0 && l < m->cfg.num_hidden_layers; l++) {
        bool was_loaded = perq_model_layer_loaded(m, l);
        rc = cancelled(rep, err);
        if (rc == 0)
            rc = perq_model_load_layer(m, l, err);
        if (rc == 0)
            rc = perq_layerwise_run(lw, l, hook, true, 0, err);
        if (!was_loaded)
            perq_model_free_layer(m, l);
        perq_report_progress(rep, ++step, steps);
    }
    if (rc == 0) {
        float *h = perq_layerwise_hidden(lw);
        perq_forward_final_norm(m, h, (long long)p->n_chunks * p->ctx);
        for (size_t i = 0; i < n; i++)
            memcpy(s->rows + i * hidden, h + scored_position(p, i) * hidden, hidden * sizeof *h);
    }
    perq_layerwise_free(lw);
    return rc == 0 ? 0 : perq_err_context(err, "running %s", s->dir);
}

/* ---- the comparison ---------------------------------------------------------- */

static double log_sum_exp(const float *z, int n)
{
    float mx = z[0];
    for (int i = 1; i < n; i++)
        mx = z[i] > mx ? z[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)z[i] - mx);
    return mx + log(sum);
}

/* KL(softmax(a) || softmax(b)) and both -log p(target). */
static double kl_of(const float *a, const float *b, int vocab, int target, double *nll_a, double *nll_b)
{
    double lse_a = log_sum_exp(a, vocab), lse_b = log_sum_exp(b, vocab), kl = 0;
    for (int i = 0; i < vocab; i++) {
        double la = (double)a[i] - lse_a;
        kl += exp(la) * (la - ((double)b[i] - lse_b));
    }
    *nll_a = lse_a - a[target];
    *nll_b = lse_b - b[target];
    return kl > 0 ? kl : 0; /* rounding can leave -1e-12 for equal distributions */
}

static int compare(side *ref, side *mod, const int32_t *tokens, const perq_chunk_plan *p, perq_kl_result *out,
                   perq_err *err)
{
    int vocab = ref->m->cfg.vocab_size;
    size_t hidden_r = (size_t)ref->m->cfg.hidden_size, hidden_m = (size_t)mod->m->cfg.hidden_size;
    if (perq_model_load_head(ref->m, err) != 0 || perq_model_load_head(mod->m, err) != 0)
        return -1;
    float *la = malloc((size_t)HEAD_ROWS * vocab * sizeof *la), *lb = malloc((size_t)HEAD_ROWS * vocab * sizeof *lb);
    int rc = la && lb ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory for the logits");
    double kl_sum = 0, kl_max = 0, nll_ref = 0, nll_mod = 0;
    size_t n = scored_count(p);
    for (size_t r0 = 0; rc == 0 && r0 < n; r0 += HEAD_ROWS) {
        int rows = n - r0 < HEAD_ROWS ? (int)(n - r0) : HEAD_ROWS;
        rc = perq_forward_head(ref->m, ref->rows + r0 * hidden_r, rows, la, perq_w4a4_runtime_hook(ref->w4a4), err);
        if (rc == 0)
            rc = perq_forward_head(mod->m, mod->rows + r0 * hidden_m, rows, lb, perq_w4a4_runtime_hook(mod->w4a4),
                                   err);
        if (rc != 0)
            break;
#pragma omp parallel for reduction(+ : kl_sum, nll_ref, nll_mod) reduction(max : kl_max) schedule(static)
        for (int r = 0; r < rows; r++) {
            int target = tokens[scored_position(p, r0 + (size_t)r) + 1];
            double na, nb, kl = kl_of(la + (size_t)r * vocab, lb + (size_t)r * vocab, vocab, target, &na, &nb);
            kl_sum += kl;
            kl_max = kl > kl_max ? kl : kl_max;
            nll_ref += na;
            nll_mod += nb;
        }
    }
    if (rc == 0) {
        out->kl_mean = kl_sum / (double)n;
        out->kl_max = kl_max;
        out->nll_reference = nll_ref / (double)n;
        out->nll_model = nll_mod / (double)n;
        out->tokens_scored = (long long)n;
    }
    free(la);
    free(lb);
    return rc;
}

/* ---- from folders and a text file ---------------------------------------------- */

/* The chunks' tokens as both models see them: the text tokenized once with
 * BOS by the model's tokenizer; for llama.cpp, BOS first in every chunk. */
static int chunk_tokens(const side *mod, const char *text_path, const perq_eval_options *opt, perq_chunk_plan *p,
                        int32_t **tokens, perq_err *err)
{
    size_t n_ids = 0;
    int32_t *ids = NULL;
    perq_tokenizer *tok = NULL;
    *tokens = NULL;
    int rc = perq_eval_text_ids(mod->dir, text_path, &tok, &ids, &n_ids, err);
    if (rc == 0)
        rc = perq_chunk_plan_make(n_ids, opt, p, err);
    int bos = tok ? perq_tokenizer_bos_id(tok) : -1;
    bos = bos >= 0 ? bos : mod->m->cfg.bos_token_id;
    if (rc == 0 && p->replace_bos && (bos < 0 || bos >= mod->m->cfg.vocab_size))
        rc = perq_fail(err, PERQ_E_INVALID, "the llama.cpp protocol needs a BOS token (the model has none)");
    size_t count = (size_t)p->n_chunks * p->ctx;
    if (rc == 0 && !(*tokens = malloc(count * sizeof **tokens)))
        rc = perq_fail(err, PERQ_E_NOMEM, "out of memory for %zu tokens", count);
    if (rc == 0) {
        memcpy(*tokens, ids, count * sizeof *ids);
        for (int c = 0; p->replace_bos && c < p->n_chunks; c++)
            (*tokens)[(size_t)c * p->ctx] = bos;
    }
    free(ids);
    if (tok)
        perq_tokenizer_free(tok);
    return rc;
}

int perq_eval_kl(const char *reference_dir, const char *model_dir, const char *text_path,
                 const perq_eval_options *opt, const perq_reporter *rep, perq_kl_result *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    side ref, mod;
    int32_t *tokens = NULL;
    perq_chunk_plan p;
    int rc = side_open(&ref, reference_dir, err);
    if (rc == 0)
        rc = side_open(&mod, model_dir, err);
    else
        memset(&mod, 0, sizeof mod);
    if (rc == 0 && ref.m->cfg.vocab_size != mod.m->cfg.vocab_size)
        rc = perq_fail(err, PERQ_E_INVALID, "vocabulary sizes differ: %d in %s, %d in %s", ref.m->cfg.vocab_size,
                       reference_dir, mod.m->cfg.vocab_size, model_dir);
    if (rc == 0)
        rc = chunk_tokens(&mod, text_path, opt, &p, &tokens, err);
    long long steps = 0;
    if (rc == 0)
        steps = (long long)ref.m->cfg.num_hidden_layers + mod.m->cfg.num_hidden_layers + 1;
    if (rc == 0)
        rc = side_hidden(&ref, tokens, &p, rep, 0, steps, err);
    if (rc == 0)
        rc = side_hidden(&mod, tokens, &p, rep, ref.m->cfg.num_hidden_layers, steps, err);
    if (rc == 0)
        rc = compare(&ref, &mod, tokens, &p, out, err);
    if (rc == 0) {
        perq_report_progress(rep, steps, steps);
        out->chunks = p.n_chunks;
        out->protocol = opt->protocol == PERQ_PPL_LLAMACPP ? "llama.cpp" : "paper";
        out->ctx = p.ctx;
    }
    free(tokens);
    side_close(&ref);
    side_close(&mod);
    return rc;
}
