/* Per-token NLL walked over lm_head in blocks (head_nll.h) against the NLL of
 * the whole head's logits, on stories260K in F32 and BF16. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perq/forward.h"
#include "perq/model.h"
#include "perq/perplexity.h"
#include "perq/tokenizer.h"
#include "eval_plan.h"
#include "head_nll.h"
#include "testutil.h"

enum { SEQ = 96 };   /* tokens of text run through the model */

/* One token's NLL can differ by what rounding fp32 logits differently costs:
 * sgemm takes another kernel for a 7-row block than for the whole head, and a
 * logit's 64 products summed in another order differ by a few ulps of their
 * magnitude (measured: up to 1.7e-6 here). */
#define PER_TOKEN_TOLERANCE 5e-6

/* The first SEQ tokens of the TinyStories text, BOS first, by dir's tokenizer. */
static void text_ids(const char *dir, int32_t *out)
{
    char *text = shared_path("data/tinystories_valid_head.txt");
    perq_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    perq_err err;
    if (perq_eval_text_ids(dir, text, &tok, &ids, &n, &err) != 0)
        fail_msg("%s", err.msg);
    assert_true(n >= SEQ);
    memcpy(out, ids, SEQ * sizeof *out);
    free(ids);
    perq_tokenizer_free(tok);
    free(text);
}

/* Normalised last hidden states h [SEQ][hidden] of ids; the head stays unloaded. */
static float *hidden_states(perq_model *m, const int32_t *ids)
{
    perq_err err;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        assert_int_equal(perq_model_load_layer(m, l, &err), 0);
    perq_forward *f = NULL;
    assert_int_equal(perq_forward_new(&m->cfg, 1, SEQ, &f, &err), 0);
    float *h = malloc((size_t)SEQ * m->cfg.hidden_size * sizeof *h);
    assert_non_null(h);
    assert_int_equal(perq_forward_hidden(f, m, ids, 1, h, NULL, &err), 0);
    perq_forward_free(f);
    return h;
}

/* -log softmax of every row's whole logits at its target, from the loaded head. */
static void full_head_nll(perq_model *m, const float *h, int rows, const int32_t *targets, double *nll)
{
    perq_err err;
    int vocab = m->cfg.vocab_size;
    assert_int_equal(perq_model_load_head(m, &err), 0);
    float *x = malloc((size_t)rows * m->cfg.hidden_size * sizeof *x);
    float *logits = malloc((size_t)rows * vocab * sizeof *logits);
    assert_non_null(x);
    assert_non_null(logits);
    memcpy(x, h, (size_t)rows * m->cfg.hidden_size * sizeof *x);
    assert_int_equal(perq_forward_head(m, x, rows, logits, NULL, &err), 0);
    for (int r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * vocab;
        float max = l[0];
        for (int v = 1; v < vocab; v++)
            max = l[v] > max ? l[v] : max;
        double sum = 0;
        for (int v = 0; v < vocab; v++)
            sum += exp((double)l[v] - max);
        nll[r] = log(sum) + max - l[targets[r]];
    }
    free(x);
    free(logits);
}

static double mean_of(const double *a, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += a[i];
    return sum / n;
}

/* |mean(a) - mean(b)| / mean(b): what a perplexity sees. */
static double mean_rel_diff(const double *a, const double *b, int n)
{
    return fabs(mean_of(a, n) - mean_of(b, n)) / mean_of(b, n);
}

/* Largest |a - b| / (|b| + 1): relative for NLLs above one nat, absolute
 * below, where fp32 logits (sgemm blocks of other shapes round differently)
 * bound how closely a near-certain token's small NLL can match. */
static double max_rel_diff(const double *a, const double *b, int n)
{
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]) / (fabs(b[i]) + 1);
        worst = d > worst ? d : worst;
    }
    return worst;
}

static void check_model(const char *name)
{
    char *dir = shared_path(name);
    perq_model *m = NULL;
    perq_err err;
    if (perq_model_open(dir, &m, &err) != 0)
        fail_msg("%s", err.msg);
    int32_t ids[SEQ];
    text_ids(dir, ids);
    float *h = hidden_states(m, ids);
    int rows = SEQ - 1;
    const int32_t *targets = ids + 1;
    assert_true(m->cfg.vocab_size % 7 != 0 && m->cfg.vocab_size % 100 != 0);

    /* Streamed from the mapping, with blocks that do not divide the vocab. */
    assert_null(m->head);
    double by7[SEQ], by100[SEQ], by_default[SEQ], whole[SEQ], loaded7[SEQ];
    assert_int_equal(perq_head_nll(m, h, rows, targets, 7, by7, &err), 0);
    assert_int_equal(perq_head_nll(m, h, rows, targets, 100, by100, &err), 0);
    assert_int_equal(perq_head_nll(m, h, rows, targets, PERQ_HEAD_NLL_BLOCK_DEFAULT, by_default, &err), 0);
    assert_null(m->head);

    full_head_nll(m, h, rows, targets, whole);
    assert_int_equal(perq_head_nll(m, h, rows, targets, 7, loaded7, &err), 0);

    double mean = mean_of(whole, rows);
    printf("# %s: mean nll %.6f; streamed vs whole head, largest per-token difference (relative, see "
           "max_rel_diff) and of the mean: block 7 %.2g %.2g, 100 %.2g %.2g, default %.2g %.2g, loaded head %.2g "
           "%.2g\n",
           name, mean, max_rel_diff(by7, whole, rows), mean_rel_diff(by7, whole, rows),
           max_rel_diff(by100, whole, rows), mean_rel_diff(by100, whole, rows), max_rel_diff(by_default, whole, rows),
           mean_rel_diff(by_default, whole, rows), max_rel_diff(loaded7, whole, rows),
           mean_rel_diff(loaded7, whole, rows));
    assert_true(mean > 0.1);
    const double *streamed[] = {by7, by100, by_default, loaded7};
    for (int i = 0; i < 4; i++) {
        assert_true(mean_rel_diff(streamed[i], whole, rows) < 1e-6);
        assert_true(max_rel_diff(streamed[i], whole, rows) < PER_TOKEN_TOLERANCE);
    }
    free(h);
    perq_model_close(m);
    free(dir);
}

static void test_streamed_equals_whole_head_f32(void **state)
{
    (void)state;
    check_model("models/stories260K");
}

static void test_streamed_equals_whole_head_bf16(void **state)
{
    (void)state;
    check_model("models/stories260K-bf16");
}

/* Perplexity through the stream, against the whole head's NLL by hand. */
static void test_perplexity_streams_the_head(void **state)
{
    (void)state;
    char *dir = shared_path("models/stories260K-bf16");
    perq_model *m = NULL;
    perq_err err;
    assert_int_equal(perq_model_open(dir, &m, &err), 0);
    int32_t ids[SEQ];
    text_ids(dir, ids);
    perq_eval_options opt = {PERQ_PPL_PAPER, SEQ, 1};
    perq_eval_result r;
    assert_int_equal(perq_perplexity_ids(m, ids, SEQ, 1, &opt, PERQ_EVAL_AUTO, NULL, NULL, &r, &err), 0);
    assert_null(m->head);

    float *h = hidden_states(m, ids);
    double whole[SEQ], want = 0;
    full_head_nll(m, h, SEQ - 1, ids + 1, whole);
    for (int pos = SEQ / 2 - 1; pos < SEQ - 1; pos++)
        want += whole[pos];
    want /= SEQ / 2;
    assert_int_equal(r.tokens_scored, SEQ / 2);
    printf("# perplexity nll %.9f, by the whole head %.9f\n", r.nll, want);
    assert_true(fabs(r.nll - want) <= 1e-6 * want);
    free(h);
    perq_model_close(m);
    free(dir);
}

static void test_bad_targets_and_rows(void **state)
{
    (void)state;
    char *dir = shared_path("models/stories260K");
    perq_model *m = NULL;
    perq_err err;
    assert_int_equal(perq_model_open(dir, &m, &err), 0);
    float x[2 * 64] = {0};
    double nll[2];
    int32_t targets[2] = {3, 512};
    assert_int_equal(perq_head_nll(m, x, 2, targets, 0, nll, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    targets[1] = -1;
    assert_int_equal(perq_head_nll(m, x, 2, targets, 0, nll, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_int_equal(perq_head_nll(m, x, 0, targets, 0, nll, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);

    /* All-zero hidden states: every logit 0, so the NLL is log(vocab). */
    targets[1] = 511;
    assert_int_equal(perq_head_nll(m, x, 2, targets, 9, nll, &err), 0);
    assert_float_equal(nll[0], log(512.0), 1e-12);
    assert_float_equal(nll[1], log(512.0), 1e-12);
    perq_model_close(m);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streamed_equals_whole_head_f32),
        cmocka_unit_test(test_streamed_equals_whole_head_bf16),
        cmocka_unit_test(test_perplexity_streams_the_head),
        cmocka_unit_test(test_bad_targets_and_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
