/* Folding norms, permutations and rotations into stories260K leaves its
 * logits unchanged (to 1e-4), R3 applied online through a hook. Needs
 * PERQ_SHARED (skipped without it). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perq/fold.h"
#include "perq/forward.h"
#include "perq/permute.h"

#define SEQ 48

static char model_dir[512];

static perq_model *open_loaded(void)
{
    perq_model *m = NULL;
    perq_err err = {0};
    if (perq_model_open(model_dir, &m, &err) != 0)
        fail_msg("%s", err.msg);
    /* The head first: for a tied model it is a copy of the embedding as it was. */
    assert_int_equal(perq_model_load_head(m, &err), 0);
    assert_int_equal(perq_model_load_all(m, &err), 0);
    assert_int_equal(perq_model_load_embed(m, &err), 0);
    return m;
}

static int rotate_down(void *ctx, const perq_linear_site *site, perq_err *err)
{
    const perq_rotation *r3 = ctx;
    if (site->kind != PERQ_LIN_DOWN)
        return 0;
    return perq_fold_rotate_down_input(r3, site->x, (size_t)site->rows, site->in, err);
}

static float *logits_of(const perq_model *m, const perq_rotation *r3)
{
    int32_t ids[SEQ];
    ids[0] = 1;
    for (int i = 1; i < SEQ; i++)
        ids[i] = (int32_t)((i * 37 + 11) % m->cfg.vocab_size);
    perq_forward *f = NULL;
    perq_err err = {0};
    assert_int_equal(perq_forward_new(&m->cfg, 1, SEQ, &f, &err), 0);
    float *logits = malloc((size_t)SEQ * m->cfg.vocab_size * sizeof *logits);
    assert_non_null(logits);
    perq_linear_hook hook = {(void *)r3, rotate_down};
    if (perq_forward_logits(f, m, ids, 1, logits, r3 ? &hook : NULL, &err) != 0)
        fail_msg("%s", err.msg);
    perq_forward_free(f);
    return logits;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static void fold_norms(perq_model *m)
{
    perq_err err = {0};
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        perq_fold_layer_norms(m, l);
    assert_int_equal(perq_fold_head_norm(m, &err), 0);
}

static void rotation(perq_rotation *r, int n)
{
    perq_err err = {0};
    if (perq_rotation_init(r, n, 7, &err) != 0)
        fail_msg("rotation %d: %s", n, err.msg);
}

/* Folds P1, R1, R2, P3, D3, R3 (any may be NULL or 0) after the norms and
 * returns the largest logit change. */
static double change_after(const int *p1, const perq_rotation *r1, const perq_rotation *r2, uint64_t p3_seed,
                           uint64_t d3_seed, const perq_rotation *r3)
{
    if (!getenv("PERQ_SHARED"))
        skip();
    perq_model *m = open_loaded();
    size_t n = (size_t)SEQ * m->cfg.vocab_size;
    float *before = logits_of(m, NULL);
    perq_err err = {0};
    fold_norms(m);
    if (p1 || r1) {
        assert_int_equal(perq_fold_residual_embed(m, p1, r1, &err), 0);
        assert_int_equal(perq_fold_residual_head(m, p1, r1, &err), 0);
    }
    int inter = m->cfg.intermediate_size;
    int *p3 = malloc((size_t)inter * sizeof *p3);
    float *d3 = malloc((size_t)inter * sizeof *d3);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        if (p1 || r1)
            assert_int_equal(perq_fold_residual_layer(m, l, p1, r1, &err), 0);
        if (r2)
            assert_int_equal(perq_fold_r2(m, l, r2, &err), 0);
        if (p3_seed) {
            perq_permute_random(p3, inter, p3_seed + (uint64_t)l);
            assert_int_equal(perq_fold_p3(m, l, p3, &err), 0);
        }
        if (d3_seed) {
            perq_random_signs(d3, inter, d3_seed + (uint64_t)l);
            int flip = 0;
            while (flip < inter && d3[flip] > 0)
                flip++;
            assert_true(flip < inter);
            perq_layer_weights *w = &m->layers[l];
            float up = w->up[(size_t)flip * m->cfg.hidden_size], down = w->down[flip];
            perq_fold_down_input_signs(m, l, d3);
            assert_float_equal(w->up[(size_t)flip * m->cfg.hidden_size], -up, 0);
            assert_float_equal(w->down[flip], -down, 0);
        }
        if (r3)
            assert_int_equal(perq_fold_r3(m, l, r3, &err), 0);
    }
    float *after = logits_of(m, r3);
    double d = max_diff(before, after, n);
    free(p3);
    free(d3);
    free(before);
    free(after);
    perq_model_close(m);
    return d;
}

static void test_norms(void **state)
{
    (void)state;
    double d = change_after(NULL, NULL, NULL, 0, 0, NULL);
    printf("# norms folded: max |dlogit| = %.3g\n", d);
    assert_true(d < 1e-4);
}

static void test_permutations(void **state)
{
    (void)state;
    int p1[64];
    perq_permute_random(p1, 64, 99);
    double d = change_after(p1, NULL, NULL, 5, 0, NULL);
    printf("# P1 + P3 random: max |dlogit| = %.3g\n", d);
    assert_true(d < 1e-4);
}

static void test_full_rotations(void **state)
{
    (void)state;
    perq_rotation r1, r2, r3;
    rotation(&r1, 64);
    rotation(&r2, 8);
    rotation(&r3, 172);
    double d = change_after(NULL, &r1, &r2, 0, 0, &r3);
    printf("# R1 + R2 + R3 full (%s): max |dlogit| = %.3g\n", r3.how, d);
    assert_true(d < 1e-4);
    perq_rotation_free(&r1);
    perq_rotation_free(&r2);
    perq_rotation_free(&r3);
}

/* Randomized: R1 = D1 H, R2 = D2 H folded; D3 folded into up/down after a
 * random P3, with a plain online R3 (what a W4A4 job with randomized true
 * builds). */
static void test_randomized_rotations(void **state)
{
    (void)state;
    perq_rotation r1, r2, r3;
    perq_err err = {0};
    rotation(&r1, 64);
    rotation(&r2, 8);
    rotation(&r3, 172);
    assert_int_equal(perq_rotation_randomize(&r1, 21, &err), 0);
    assert_int_equal(perq_rotation_randomize(&r2, 22, &err), 0);
    double d = change_after(NULL, &r1, &r2, 9, 23, &r3);
    printf("# randomized R1 + R2, P3 + D3 + R3: max |dlogit| = %.3g\n", d);
    assert_true(d < 1e-4);
    perq_rotation_free(&r1);
    perq_rotation_free(&r2);
    perq_rotation_free(&r3);
}

/* The all-block configuration: P1, R1 and R2 in blocks of 4, P3, R3 in blocks
 * of 4 (the one power of two dividing 172 = 4 * 43 above 2), and of 2. */
static void test_block_rotations(void **state)
{
    (void)state;
    int p1[64];
    perq_permute_random(p1, 64, 3);
    for (int b = 2; b <= 4; b *= 2) {
        perq_rotation rb;
        rotation(&rb, b);
        double d = change_after(p1, &rb, &rb, 11, 0, &rb);
        printf("# block %d, P1 + P3 random: max |dlogit| = %.3g\n", b, d);
        assert_true(d < 1e-4);
        perq_rotation_free(&rb);
    }
}

/* A fold that would not tile its width is refused, not applied. */
static void test_refusals(void **state)
{
    (void)state;
    if (!getenv("PERQ_SHARED"))
        skip();
    perq_model *m = open_loaded();
    perq_rotation r;
    rotation(&r, 8);
    perq_err err = {0};
    assert_int_not_equal(perq_fold_r3(m, 0, &r, &err), 0);  /* 172 % 8 != 0 */
    assert_int_equal(err.code, PERQ_E_INVALID);
    perq_rotation_free(&r);
    perq_model_close(m);
}

int main(void)
{
    const char *shared = getenv("PERQ_SHARED");
    snprintf(model_dir, sizeof model_dir, "%s/models/stories260K", shared ? shared : "../shared");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norms),
        cmocka_unit_test(test_permutations),
        cmocka_unit_test(test_full_rotations),
        cmocka_unit_test(test_block_rotations),
        cmocka_unit_test(test_randomized_rotations),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
