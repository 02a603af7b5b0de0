/* Per-token INT4 activation fake quantization: hand-computed rows (rounding,
 * error figure), the grid properties on random rows, constant and non-finite
 * rows, clipping, and the parallel path against the row-by-row one. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perq/actquant.h"
#include "testutil.h"

/* |a - b| <= tol in double (cmocka's float comparison is fp32). */
#define assert_close(a, b, tol) assert_true(fabs((double)(a) - (double)(b)) <= (tol))

static uint32_t rng_state = 88172645u;

/* Activation-like rows: small values with a few outlier channels. */
static void fill_activations(float *x, int tokens, int cols)
{
    for (int t = 0; t < tokens; t++)
        for (int c = 0; c < cols; c++)
            x[(size_t)t * cols + c] = (c % 23 == 5 ? 40.0f : 1.0f) * xorshift32_float(&rng_state);
}

/* Row A: lo -1, hi 2, scale 3/15 = 0.2f, zero round(1 / 0.2f) = 5;
 *   -1 -> q 0 -> -5 * 0.2f = -1; 0 -> q 5 -> 0; 0.5 / 0.2f = 2.4999999 -> 2 -> 0.4f;
 *   2 -> 10 -> q 15 -> 2. Error (0.5 - 0.4f)^2 / (1 + 0.25 + 4 + 4) = ~0.01 / 9.25.
 * Row B: lo 0, hi 15, scale 1, zero 0; ties round to even: 0.5 -> 0, 1.5 -> 2,
 *   2.5 -> 2. Error (.25 + .25 + .25) / (.25 + 2.25 + 6.25 + 225) = .75 / 233.75. */
static void test_hand_made_rows(void **state)
{
    (void)state;
    float a[5] = {-1.0f, 0.0f, 0.5f, 2.0f, 2.0f};
    float b[5] = {0.0f, 0.5f, 1.5f, 2.5f, 15.0f};
    float scale;
    int zero;
    perq_actquant_params(a, 5, PERQ_ACTQUANT_CLIP, &scale, &zero);
    assert_true(scale == 0.2f);
    assert_int_equal(zero, 5);
    perq_actquant_params(b, 5, PERQ_ACTQUANT_CLIP, &scale, &zero);
    assert_true(scale == 1.0f);
    assert_int_equal(zero, 0);

    double ea = (0.5 - (double)0.4f) * (0.5 - (double)0.4f) / 9.25, eb = 0.75 / 233.75;
    assert_close(perq_actquant_row_error(a, 5, 1.0f), ea, 1e-12);
    assert_close(perq_actquant_row_error(b, 5, 1.0f), eb, 1e-12);

    float rows[4][5];
    memcpy(rows[0], a, sizeof a);
    memcpy(rows[1], b, sizeof b);
    for (int i = 0; i < 5; i++) {
        rows[2][i] = 3.0f; /* constant */
        rows[3][i] = 0.0f;
    }
    assert_close(perq_actquant_error(&rows[0][0], 4, 5, 1.0f), (ea + eb) / 4.0, 1e-12);

    perq_actquant_rows(&rows[0][0], 4, 5, 1.0f);
    const float want_a[5] = {-1.0f, 0.0f, 0.4f, 2.0f, 2.0f};
    const float want_b[5] = {0.0f, 0.0f, 2.0f, 2.0f, 15.0f};
    assert_memory_equal(rows[0], want_a, sizeof want_a);
    assert_memory_equal(rows[1], want_b, sizeof want_b);
    for (int i = 0; i < 5; i++) {
        assert_true(rows[2][i] == 3.0f);
        assert_true(rows[3][i] == 0.0f);
    }
    /* Quantizing again changes nothing: x' is on its own grid. */
    float again[5];
    memcpy(again, rows[0], sizeof again);
    perq_actquant_rows(again, 1, 5, 1.0f);
    assert_memory_equal(again, rows[0], sizeof again);
}

/* Every element within scale / 2 (a few ulps of slack for the final rounding
 * to fp32), min and max included, 0 exact when in range, x' a multiple of the
 * scale (rounded to fp32) on one of the 16 levels, at most 16 distinct values. */
static void check_row(const float *x, const float *xq, int n)
{
    float scale;
    int zero;
    perq_actquant_params(x, n, 1.0f, &scale, &zero);
    assert_true(scale > 0.0f);
    float lo = x[0], hi = x[0];
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    float distinct[PERQ_ACTQUANT_LEVELS + 1];
    int n_distinct = 0;
    for (int i = 0; i < n; i++) {
        double slack = 4.0 * ldexp(1.0, ilogb(fmaxf(fabsf(x[i]), 1e-30f)) - 23);
        assert_true(fabs((double)x[i] - xq[i]) <= 0.5 * scale + slack);
        if (x[i] == 0.0f)
            assert_true(xq[i] == 0.0f);
        double k = nearbyint((double)xq[i] / scale);  /* x' is k * scale, rounded to fp32 */
        assert_true(xq[i] == (float)(k * scale));
        assert_true(k + zero >= 0 && k + zero <= 15);
        int seen = 0;
        for (int d = 0; d < n_distinct; d++)
            seen |= distinct[d] == xq[i];
        if (!seen) {
            assert_true(n_distinct < PERQ_ACTQUANT_LEVELS);
            distinct[n_distinct++] = xq[i];
        }
    }
}

static void test_grid_properties(void **state)
{
    (void)state;
    enum { T = 40, C = 97 };
    float x[T][C], xq[T][C];
    fill_activations(&x[0][0], T, C);
    for (int c = 0; c < C; c++) {
        x[1][c] = 3.0f + fabsf(x[1][c]);          /* one sign: lo > 0 */
        x[2][c] = -fabsf(x[2][c]) - 0.25f;        /* hi < 0 */
        x[3][c] = 1.0e6f + 0.125f * (float)(c % 7); /* narrow range far from 0 */
    }
    x[4][10] = 0.0f;
    memcpy(xq, x, sizeof x);
    perq_actquant_rows(&xq[0][0], T, C, 1.0f);
    for (int t = 0; t < T; t++)
        check_row(x[t], xq[t], C);
    /* The narrow row keeps its 7 levels exactly: 0.125 * 6 / 15 = 0.05 per step. */
    for (int c = 0; c < C; c++)
        assert_true(fabsf(xq[3][c] - x[3][c]) <= 0.025f + 0.0625f);
}

static void test_constant_and_non_finite_rows(void **state)
{
    (void)state;
    const float constants[] = {0.0f, -2.5f, 7.0e30f, 1.0e-40f};
    for (size_t k = 0; k < sizeof constants / sizeof constants[0]; k++) {
        float row[9];
        for (int i = 0; i < 9; i++)
            row[i] = constants[k];
        float scale;
        int zero;
        perq_actquant_params(row, 9, 1.0f, &scale, &zero);
        assert_true(scale == 0.0f);
        assert_int_equal(zero, 0);
        perq_actquant_rows(row, 1, 9, 1.0f);
        for (int i = 0; i < 9; i++)
            assert_true(row[i] == constants[k]);
        assert_true(perq_actquant_row_error(row, 9, 1.0f) == 0.0);
    }
    float bad[4] = {1.0f, NAN, -3.0f, 0.5f}, inf[4] = {1.0f, INFINITY, -3.0f, 0.5f};
    float keep_bad[4], keep_inf[4];
    memcpy(keep_bad, bad, sizeof bad);
    memcpy(keep_inf, inf, sizeof inf);
    perq_actquant_rows(bad, 1, 4, 1.0f);
    perq_actquant_rows(inf, 1, 4, 1.0f);
    assert_memory_equal(bad, keep_bad, sizeof bad);
    assert_memory_equal(inf, keep_inf, sizeof inf);
    assert_true(perq_actquant_row_error(keep_bad, 4, 1.0f) == 0.0);
    /* The widest range fp32 allows has a finite scale. */
    float wide[3] = {-3.0e38f, 0.0f, 3.0e38f};
    perq_actquant_rows(wide, 1, 3, 1.0f);
    assert_true(isfinite(wide[0]) && isfinite(wide[2]));
    assert_true(wide[1] == 0.0f);
    assert_true(perq_actquant_error(wide, 0, 3, 1.0f) == 0.0);
}

/* Clipping: the range shrinks to c * [min, max]; inside it the scale / 2 bound
 * holds, outside values go to the end points of the grid. An unusable ratio is 1. */
static void test_clipping(void **state)
{
    (void)state;
    enum { C = 64 };
    float x[C], xq[C], ref[C];
    fill_activations(x, 1, C);
    float lo = x[0], hi = x[0];
    for (int i = 0; i < C; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    const float c = 0.8f;
    float scale, s1;
    int zero, z1;
    perq_actquant_params(x, C, c, &scale, &zero);
    perq_actquant_params(x, C, 1.0f, &s1, &z1);
    assert_close(scale, ((double)(c * hi) - (double)(c * lo)) / 15.0, 1e-6 * s1);
    assert_true(scale < s1);
    memcpy(xq, x, sizeof x);
    perq_actquant_rows(xq, 1, C, c);
    float top = (float)((15 - zero) * (double)scale), bottom = (float)(-zero * (double)scale);
    int clipped = 0;
    for (int i = 0; i < C; i++) {
        if (x[i] >= c * lo && x[i] <= c * hi)
            assert_true(fabsf(xq[i] - x[i]) <= 0.5f * scale * 1.0001f);
        else {
            clipped++;
            assert_true(xq[i] == (x[i] > 0 ? top : bottom));
        }
    }
    assert_true(clipped > 0);

    const float unusable[] = {0.0f, -0.5f, 1.5f, NAN};
    memcpy(ref, x, sizeof x);
    perq_actquant_rows(ref, 1, C, 1.0f);
    for (size_t k = 0; k < sizeof unusable / sizeof unusable[0]; k++) {
        memcpy(xq, x, sizeof x);
        perq_actquant_rows(xq, 1, C, unusable[k]);
        assert_memory_equal(xq, ref, sizeof x);
    }
}

/* Enough rows for the parallel path: the same values as one row at a time, and
 * the mean error equal to the mean of the row errors. */
static void test_parallel_matches_rows(void **state)
{
    (void)state;
    enum { T = 300, C = 301 };
    float *x = malloc(sizeof(float) * T * C), *all = malloc(sizeof(float) * T * C);
    assert_non_null(x);
    assert_non_null(all);
    fill_activations(x, T, C);
    memcpy(all, x, sizeof(float) * T * C);
    perq_actquant_rows(all, T, C, 1.0f);
    double mean = 0.0;
    for (int t = 0; t < T; t++) {
        float row[C];
        memcpy(row, x + (size_t)t * C, sizeof row);
        mean += perq_actquant_row_error(row, C, 1.0f);
        perq_actquant_rows(row, 1, C, 1.0f);
        assert_memory_equal(row, all + (size_t)t * C, sizeof row);
    }
    mean /= T;
    double e = perq_actquant_error(x, T, C, 1.0f);
    assert_close(e, mean, 1e-12 * mean);
    assert_true(e > 0.0 && e < 0.1);
    free(all);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_made_rows),
        cmocka_unit_test(test_grid_properties),
        cmocka_unit_test(test_constant_and_non_finite_rows),
        cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_parallel_matches_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
