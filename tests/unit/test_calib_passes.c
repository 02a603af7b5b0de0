/* GPTQ's Hessians without a pass of their own (calibrate.c): the q/k/v, o and
 * gate/up Hessians from the observing pass, the down_proj one from that pass's
 * rows put through P3, R3 and the activation quantization afterwards. On
 * stories260K (PERQ_SHARED; skipped without it) the pipeline must quantize
 * every linear exactly as with the separate Hessian pass (opts.hessian_pass),
 * which saw those inputs through the folded weights and the W4A4 hook, and
 * count one layer pass fewer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calibrate.h"
#include "perq/fsutil.h"
#include "perq/tokenizer.h"
#include "testutil.h"

#define SEQS 8
#define SEQ_LEN 128

typedef struct fixture {
    char *model_dir;
    int32_t *ids; /* [SEQS][SEQ_LEN] calibration sequences */
} fixture;

/* Calibration sequences from the last 40 kB of the TinyStories text. */
static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    *state = fx;
    if (!fx || !getenv("PERQ_SHARED"))
        return fx ? 0 : -1;
    fx->model_dir = shared_path("models/stories260K");
    char *text_path = shared_path("data/tinystories_valid_head.txt");
    perq_err err = {0};
    perq_tokenizer *tok = NULL;
    char *text = NULL;
    size_t len = 0, n = 0;
    int32_t *ids = NULL;
    int rc = perq_read_file(text_path, (size_t)64 << 20, &text, &len, &err);
    size_t from = len > 40000 ? len - 40000 : 0;
    if (rc == 0)
        rc = perq_tokenizer_load(fx->model_dir, &tok, &err);
    if (rc == 0)
        rc = perq_tokenizer_encode(tok, text + from, len - from, false, &ids, &n, &err);
    if (rc == 0)
        rc = perq_calib_sequences(ids, n, perq_tokenizer_bos_id(tok), SEQS, SEQ_LEN, 7, &fx->ids, &err);
    if (rc != 0)
        fprintf(stderr, "setup: %s\n", err.msg);
    free(ids);
    free(text);
    free(text_path);
    perq_tokenizer_free(tok);
    return rc;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    free(fx->model_dir);
    free(fx->ids);
    free(fx);
    return 0;
}

/* A fresh copy of the model through the pipeline (it folds into the model). */
static void run_pipeline(const fixture *fx, const perq_pipeline_opts *o, perq_pipeline *p, perq_llama_config *cfg)
{
    perq_model *m;
    perq_err err = {0};
    if (perq_model_open(fx->model_dir, &m, &err) != 0)
        fail_msg("open: %s", err.msg);
    *cfg = m->cfg;
    if (perq_pipeline_run(m, fx->ids, SEQS, SEQ_LEN, o, NULL, p, &err) != 0)
        fail_msg("pipeline (hessian_pass %d): %s", o->hessian_pass, err.msg);
    perq_model_close(m);
}

/* FLOPs of accumulating one layer's four Hessians (q/k/v, o, gate/up, down inputs). */
static double hessian_flops(const perq_llama_config *c)
{
    double h = c->hidden_size, q = (double)c->num_attention_heads * c->head_dim, i = c->intermediate_size;
    return (double)SEQS * SEQ_LEN * (h * h + q * q + h * h + i * i);
}

/* Every INT4 matrix of a equals b's: the same q, scales within rel of each other. */
static void assert_same_linears(const perq_pipeline *a, const perq_pipeline *b, double rel)
{
    assert_int_equal(a->n_layers, b->n_layers);
    long long q_differ = 0, q_total = 0;
    double worst = 0;
    for (int i = 0; i < a->n_layers * PERQ_PIPELINE_LINEARS; i++) {
        const perq_int4_matrix *x = &a->linears[i], *y = &b->linears[i];
        assert_int_equal(x->rows, y->rows);
        assert_int_equal(x->cols, y->cols);
        assert_int_equal(x->n_groups, y->n_groups);
        size_t n = (size_t)x->rows * x->cols;
        for (size_t k = 0; k < n; k++)
            q_differ += x->q[k] != y->q[k];
        q_total += (long long)n;
        for (size_t k = 0; k < (size_t)x->rows * x->n_groups; k++) {
            double s = fabs((double)x->scales[k]), d = fabs((double)x->scales[k] - y->scales[k]);
            worst = fmax(worst, s > 0 ? d / s : d);
        }
    }
    printf("# %lld of %lld INT4 values differ; worst relative scale difference %.3g\n", q_differ, q_total, worst);
    assert_true(q_total > 0);
    assert_int_equal(q_differ, 0);
    assert_true(worst <= rel);
}

static void check_one_pass(void **state, perq_pipeline_opts o, const char *what)
{
    const fixture *fx = *state;
    if (!fx->ids)
        skip();
    perq_pipeline one, two;
    perq_llama_config c;
    o.hessian_pass = false;
    run_pipeline(fx, &o, &one, &c);
    o.hessian_pass = true;
    run_pipeline(fx, &o, &two, &c);
    printf("# %s: calibration %.4f GFLOP in one pass, %.4f with the Hessian pass\n", what,
           one.costs.calib_flops * 1e-9, two.costs.calib_flops * 1e-9);
    assert_same_linears(&one, &two, 1e-6);
    assert_false(one.costs.hessian_pass);
    assert_true(two.costs.hessian_pass);
    /* Per layer, besides the Hessians: two layer passes (observe, propagate)
     * against three. */
    double layers = c.num_hidden_layers, passes = one.costs.calib_flops - layers * hessian_flops(&c);
    double saved = two.costs.calib_flops - one.costs.calib_flops;
    assert_true(saved > 0);
    assert_true(fabs(passes - 2 * saved) <= 1e-9 * passes);
    perq_pipeline_free(&one);
    perq_pipeline_free(&two);
}

static perq_pipeline_opts gptq_opts(void)
{
    perq_pipeline_opts o = {.mode = PERQ_ROT_FULL, .block_size = 4, .permutation = PERQ_PERM_MASSDIFF,
                            .act_bits = 4, .algorithm = PERQ_WALGO_GPTQ, .group_size = 0,
                            .scale_dtype = PERQ_DT_F32, .seed = 1, .online = true};
    return o;
}

/* W4A4, R3 in blocks of 4 after MassDiff: the down_proj rows kept from the
 * observing pass, permuted, rotated and quantized afterwards. */
static void test_w4a4_r3_block_massdiff(void **state)
{
    check_one_pass(state, gptq_opts(), "W4A4 R3 block 4 MassDiff");
}

/* The same with random signs folded at the down_proj input (D3 before R3). */
static void test_w4a4_randomized(void **state)
{
    perq_pipeline_opts o = gptq_opts();
    o.randomized = true;
    check_one_pass(state, o, "W4A4 R3 block 4 MassDiff, random signs");
}

/* W4A16 (no R3, no P3): every Hessian straight from the observing pass. */
static void test_w4a16(void **state)
{
    perq_pipeline_opts o = gptq_opts();
    o.act_bits = 16;
    o.block_size = 0;
    o.permutation = PERQ_PERM_IDENTITY;
    check_one_pass(state, o, "W4A16 full");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_w4a4_r3_block_massdiff),
        cmocka_unit_test(test_w4a4_randomized),
        cmocka_unit_test(test_w4a16),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
