/* GPTQ: the Hessian against a by-hand X^T X, the inverse-Hessian factor
 * against its definition, the rounding against RTN (identity Hessian), an
 * unblocked double-precision GPTQ written here, and the output error it exists
 * to lower; then shapes, dead columns, act-order layout and errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perq/gptq.h"
#include "perq/int4.h"
#include "testutil.h"

/* ---- test data ------------------------------------------------------------ */

static uint32_t rng_state = 2463534242u;
static void rng_seed(uint32_t s) { rng_state = s ? s : 1u; }
static float rng_normal(void)
{
    return (float)(sqrt(-2.0 * log(xorshift32_unit(&rng_state))) *
                   cos(6.283185307179586 * xorshift32_unit(&rng_state)));
}
/* Weights with a few large elements, so that scales clip and rounding matters. */
static float *random_weights(int rows, int cols)
{
    float *w = malloc((size_t)rows * cols * sizeof *w);
    assert_non_null(w);
    for (int i = 0; i < rows * cols; i++)
        w[i] = (xorshift32(&rng_state) % 32 == 0 ? 4.0f : 1.0f) * rng_normal();
    return w;
}
/* X = Z A + noise: a few directions shared by all columns, so that H is far from diagonal. */
static float *correlated_inputs(int tokens, int cols, int directions, float noise)
{
    float *a = malloc((size_t)directions * cols * sizeof *a);
    float *x = malloc((size_t)tokens * cols * sizeof *x);
    assert_non_null(a);
    assert_non_null(x);
    for (int i = 0; i < directions * cols; i++)
        a[i] = rng_normal();
    for (int t = 0; t < tokens; t++) {
        float z[16];
        for (int d = 0; d < directions; d++)
            z[d] = rng_normal();
        for (int c = 0; c < cols; c++) {
            float v = noise * rng_normal();
            for (int d = 0; d < directions; d++)
                v += z[d] * a[d * cols + c];
            x[(size_t)t * cols + c] = v;
        }
    }
    free(a);
    return x;
}
static float *hessian_of(const float *x, int tokens, int cols)
{
    perq_hessian hs;
    perq_err err = {0};
    assert_int_equal(perq_hessian_init(&hs, cols, &err), 0);
    assert_int_equal(perq_hessian_add(&hs, x, tokens, &err), 0);
    assert_int_equal(perq_hessian_finalize(&hs, &err), 0);
    float *h = hs.h; /* the caller owns it now */
    return h;
}
static float *identity(int n)
{
    float *h = calloc((size_t)n * n, sizeof *h);
    assert_non_null(h);
    for (int i = 0; i < n; i++)
        h[(size_t)i * n + i] = 1.0f;
    return h;
}
static perq_gptq_opts opts_of(int group, int act_order)
{
    perq_gptq_opts o;
    perq_gptq_opts_default(&o);
    o.group = group;
    o.act_order = act_order;
    return o;
}

/* ||X W^T - X Wq^T||_F in double. */
static double output_error(const float *x, int tokens, const float *w, const float *wq, int rows, int cols)
{
    double sum = 0.0;
    for (int t = 0; t < tokens; t++)
        for (int r = 0; r < rows; r++) {
            double d = 0.0;
            for (int c = 0; c < cols; c++)
                d += (double)x[(size_t)t * cols + c] * ((double)w[(size_t)r * cols + c] - wq[(size_t)r * cols + c]);
            sum += d * d;
        }
    return sqrt(sum);
}

/* Every q on the grid, and the dequantized matrix exactly q * scale of its
 * group in original column order. */
static void assert_valid_matrix(const perq_int4_matrix *m, const float *w_deq)
{
    for (int r = 0; r < m->rows; r++)
        for (int c = 0; c < m->cols; c++) {
            int8_t q = m->q[(size_t)r * m->cols + c];
            assert_true(q >= -8 && q <= 7);
            float s = m->scales[(size_t)r * m->n_groups + c / m->group];
            assert_true(w_deq[(size_t)r * m->cols + c] == (float)q * s);
        }
}

/* ---- an unblocked GPTQ in double -----------------------------------------
 * The form of the OBS papers: round column k, move the rest of the row by the
 * error times row k of the current inverse Hessian over its diagonal, then
 * remove column k from the inverse (one Gaussian elimination step). Same
 * order, dampening and scales as the code under test; no Cholesky, no blocks. */
static void invert(double *a, int n) /* Gauss-Jordan with partial pivoting, in place */
{
    double *inv = calloc((size_t)n * n, sizeof *inv);
    assert_non_null(inv);
    for (int i = 0; i < n; i++)
        inv[(size_t)i * n + i] = 1.0;
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[(size_t)r * n + c]) > fabs(a[(size_t)p * n + c]))
                p = r;
        for (int k = 0; k < n; k++) {
            double t = a[(size_t)c * n + k]; a[(size_t)c * n + k] = a[(size_t)p * n + k]; a[(size_t)p * n + k] = t;
            t = inv[(size_t)c * n + k]; inv[(size_t)c * n + k] = inv[(size_t)p * n + k]; inv[(size_t)p * n + k] = t;
        }
        double d = a[(size_t)c * n + c];
        for (int k = 0; k < n; k++) {
            a[(size_t)c * n + k] /= d;
            inv[(size_t)c * n + k] /= d;
        }
        for (int r = 0; r < n; r++) {
            if (r == c)
                continue;
            double m = a[(size_t)r * n + c];
            for (int k = 0; k < n; k++) {
                a[(size_t)r * n + k] -= m * a[(size_t)c * n + k];
                inv[(size_t)r * n + k] -= m * inv[(size_t)c * n + k];
            }
        }
    }
    memcpy(a, inv, (size_t)n * n * sizeof *a);
    free(inv);
}

static void reference_gptq(const float *w, int rows, int n, const float *h, int group, int act_order, int8_t *q_out)
{
    perq_gptq_opts o = opts_of(group, act_order);
    perq_err err = {0};
    perq_gptq_factor f; /* for the order and dead columns only */
    assert_int_equal(perq_gptq_factor_init(&f, h, n, &o, &err), 0);
    double mean = 0.0;
    for (int i = 0; i < n; i++)
        mean += f.dead[i] ? 1.0 : h[(size_t)i * n + i];
    mean /= n;
    double *hinv = malloc((size_t)n * n * sizeof *hinv);
    assert_non_null(hinv);
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            int ra = f.perm[a], rb = f.perm[b];
            double v = (f.dead[ra] || f.dead[rb]) ? 0.0 : h[(size_t)ra * n + rb];
            hinv[(size_t)a * n + b] = a == b ? (f.dead[ra] ? 1.0 : v) + (double)PERQ_GPTQ_DAMP * mean : v;
        }
    invert(hinv, n);
    /* ratio[k][m] = Hinv_k[k][m] / Hinv_k[k][k] as column k is removed. */
    double *ratio = calloc((size_t)n * n, sizeof *ratio);
    assert_non_null(ratio);
    for (int k = 0; k < n; k++) {
        double d = hinv[(size_t)k * n + k];
        for (int m = k + 1; m < n; m++)
            ratio[(size_t)k * n + m] = hinv[(size_t)k * n + m] / d;
        for (int a = k + 1; a < n; a++)
            for (int b = k + 1; b < n; b++)
                hinv[(size_t)a * n + b] -= hinv[(size_t)a * n + k] * hinv[(size_t)k * n + b] / d;
    }
    float *zeroed = malloc((size_t)rows * n * sizeof *zeroed);
    assert_non_null(zeroed);
    for (int i = 0; i < rows * n; i++)
        zeroed[i] = f.dead[i % n] ? 0.0f : w[i];
    perq_int4_matrix rtn;
    assert_int_equal(perq_int4_rtn(zeroed, rows, n, group, &rtn, &err), 0);
    double *row = malloc((size_t)n * sizeof *row);
    assert_non_null(row);
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < n; k++)
            row[k] = zeroed[(size_t)r * n + f.perm[k]];
        for (int k = 0; k < n; k++) {
            float s = rtn.scales[(size_t)r * rtn.n_groups + f.perm[k] / rtn.group];
            float wk = (float)row[k];
            int8_t q;
            perq_int4_round(&wk, 1, s, &q);
            q_out[(size_t)r * n + f.perm[k]] = q;
            double e = row[k] - (double)q * s;
            for (int m = k + 1; m < n; m++)
                row[m] -= e * ratio[(size_t)k * n + m];
        }
    }
    free(row);
    perq_int4_free(&rtn);
    free(zeroed);
    free(ratio);
    free(hinv);
    perq_gptq_factor_free(&f);
}

static double agreement(const int8_t *a, const int8_t *b, size_t n)
{
    size_t same = 0;
    for (size_t i = 0; i < n; i++)
        same += a[i] == b[i];
    return (double)same / (double)n;
}

/* ---- the Hessian ---------------------------------------------------------- */

static void test_hessian_batches_equal_one_shot(void **state)
{
    (void)state;
    enum { T = 61, N = 13 };
    rng_seed(7);
    float *x = correlated_inputs(T, N, 3, 0.3f);
    perq_hessian hs;
    perq_err err = {0};
    assert_int_equal(perq_hessian_init(&hs, N, &err), 0);
    const int batches[] = {7, 0, 20, 1, 33};
    int at = 0;
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        assert_int_equal(perq_hessian_add(&hs, x + (size_t)at * N, batches[b], &err), 0);
        at += batches[b];
    }
    assert_int_equal(at, T);
    assert_int_equal(hs.tokens, T);
    assert_int_equal(perq_hessian_finalize(&hs, &err), 0);
    float *one_shot = hessian_of(x, T, N);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double want = 0.0;
            for (int t = 0; t < T; t++)
                want += (double)x[t * N + i] * x[t * N + j];
            want *= 2.0 / T;
            float got = hs.h[i * N + j];
            assert_true(fabs(got - want) <= 1e-5 * (fabs(want) + 1.0));
            assert_true(got == hs.h[j * N + i]);
            assert_true(fabs(got - one_shot[i * N + j]) <= 1e-5 * (fabs(want) + 1.0));
        }
    free(one_shot);
    /* No more rows once finalised. */
    assert_int_equal(perq_hessian_add(&hs, x, 1, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    perq_hessian_free(&hs);

    assert_int_equal(perq_hessian_init(&hs, N, &err), 0);
    assert_int_equal(perq_hessian_finalize(&hs, &err), -1); /* no rows at all */
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_int_equal(perq_hessian_add(&hs, x, -1, &err), -1);
    perq_hessian_free(&hs);
    assert_int_equal(perq_hessian_init(&hs, 0, &err), -1);
    free(x);
}

/* ---- the factor ------------------------------------------------------------ */

/* U is upper triangular with a positive diagonal and U^T U (P^T H P + lambda I) = I. */
static void check_factor(const float *h, int n, int act_order)
{
    perq_gptq_opts o = opts_of(0, act_order);
    perq_gptq_factor f;
    perq_err err = {0};
    assert_int_equal(perq_gptq_factor_init(&f, h, n, &o, &err), 0);
    assert_true(f.damp == PERQ_GPTQ_DAMP);
    double mean = 0.0;
    for (int i = 0; i < n; i++)
        mean += h[(size_t)i * n + i];
    mean /= n;
    int *seen = calloc((size_t)n, sizeof *seen);
    assert_non_null(seen);
    for (int k = 0; k < n; k++) {
        assert_true(f.perm[k] >= 0 && f.perm[k] < n);
        seen[f.perm[k]]++;
        if (act_order && k > 0)
            assert_true(h[(size_t)f.perm[k - 1] * n + f.perm[k - 1]] >= h[(size_t)f.perm[k] * n + f.perm[k]]);
        if (!act_order)
            assert_int_equal(f.perm[k], k);
        assert_true(f.u[(size_t)k * n + k] > 0.0f);
        for (int m = 0; m < k; m++)
            assert_true(f.u[(size_t)k * n + m] == 0.0f);
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(seen[i], 1);
    double worst = 0.0;
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            /* (U^T U H')[a][b] = sum_c (U^T U)[a][c] H'[c][b] */
            double v = 0.0;
            for (int c = 0; c < n; c++) {
                double utu = 0.0;
                for (int k = 0; k <= (a < c ? a : c); k++)
                    utu += (double)f.u[(size_t)k * n + a] * f.u[(size_t)k * n + c];
                double hp = h[(size_t)f.perm[c] * n + f.perm[b]] + (c == b ? (double)PERQ_GPTQ_DAMP * mean : 0.0);
                v += utu * hp;
            }
            double d = fabs(v - (a == b ? 1.0 : 0.0));
            worst = d > worst ? d : worst;
        }
    assert_true(worst < 1e-3);
    free(seen);
    perq_gptq_factor_free(&f);
}

static void test_factor_is_inverse_cholesky(void **state)
{
    (void)state;
    enum { T = 200, N = 37 };
    rng_seed(11);
    float *x = correlated_inputs(T, N, 4, 0.5f);
    for (int t = 0; t < T; t++) /* distinct column scales, so that act-order reorders */
        for (int c = 0; c < N; c++)
            x[t * N + c] *= 0.5f + (float)((c * 7) % N) / N;
    float *h = hessian_of(x, T, N);
    check_factor(h, N, 0);
    check_factor(h, N, 1);
    free(h);
    free(x);
}

/* An indefinite H that the first dampening cannot fix but the second can:
 * eigenvalues 1 +- 1.05, mean diagonal 1: lambda 0.01 leaves -0.04, 0.1 leaves 0.05. */
static void test_dampening_retries(void **state)
{
    (void)state;
    const float h[4] = {1.0f, 1.05f, 1.05f, 1.0f};
    perq_gptq_opts o = opts_of(0, 1);
    perq_gptq_factor f;
    perq_err err = {0};
    assert_int_equal(perq_gptq_factor_init(&f, h, 2, &o, &err), 0);
    assert_float_equal(f.damp, 0.1f, 1e-6f);
    perq_gptq_factor_free(&f);

    /* Eigenvalue -99 of 1 +- 100: no dampening up to 10 x mean helps. */
    const float bad[4] = {1.0f, 100.0f, 100.0f, 1.0f};
    assert_int_equal(perq_gptq_factor_init(&f, bad, 2, &o, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_non_null(strstr(err.msg, "not positive definite"));
    assert_null(f.u);
}

/* ---- the rounding ------------------------------------------------------------ */

/* With uncorrelated inputs nothing is carried over: GPTQ is RTN, q and scales. */
static void check_identity_is_rtn(int rows, int cols, int group, int act_order, perq_dtype dtype)
{
    float *w = random_weights(rows, cols);
    float *h = identity(cols);
    perq_gptq_opts o = opts_of(group, act_order);
    o.scale_dtype = dtype;
    perq_int4_matrix g, r;
    perq_err err = {0};
    assert_int_equal(perq_gptq_quantize(w, rows, cols, h, &o, &g, NULL, NULL, &err), 0);
    assert_int_equal(perq_int4_rtn_as(w, rows, cols, group, dtype, &r, &err), 0);
    assert_int_equal(g.n_groups, r.n_groups);
    assert_memory_equal(g.q, r.q, (size_t)rows * cols);
    assert_memory_equal(g.scales, r.scales, (size_t)rows * r.n_groups * sizeof(float));
    perq_int4_free(&g);
    perq_int4_free(&r);
    free(h);
    free(w);
}

static void test_identity_hessian_is_rtn(void **state)
{
    (void)state;
    rng_seed(3);
    check_identity_is_rtn(9, 300, 0, 0, PERQ_DT_F32);
    check_identity_is_rtn(9, 300, 0, 1, PERQ_DT_F32);
    check_identity_is_rtn(9, 300, 32, 0, PERQ_DT_F32);
    check_identity_is_rtn(9, 300, 32, 1, PERQ_DT_F32);
    check_identity_is_rtn(5, 77, 32, 1, PERQ_DT_BF16);
}

/* The blocked fp32 code agrees with the unblocked double one above. */
static void check_against_reference(int rows, int cols, int group, int act_order, int block)
{
    int tokens = 3 * cols;
    float *x = correlated_inputs(tokens, cols, 5, 0.4f);
    float *h = hessian_of(x, tokens, cols);
    float *w = random_weights(rows, cols);
    perq_gptq_opts o = opts_of(group, act_order);
    o.block = block;
    perq_int4_matrix m;
    perq_err err = {0};
    float *deq = malloc((size_t)rows * cols * sizeof *deq);
    int8_t *want = malloc((size_t)rows * cols);
    assert_non_null(deq);
    assert_non_null(want);
    assert_int_equal(perq_gptq_quantize(w, rows, cols, h, &o, &m, deq, NULL, &err), 0);
    assert_valid_matrix(&m, deq);
    reference_gptq(w, rows, cols, h, group, act_order, want);
    double agree = agreement(m.q, want, (size_t)rows * cols);
    if (agree < 0.99)
        fprintf(stderr, "%d x %d group %d act_order %d block %d: %.4f of q agree\n", rows, cols, group, act_order,
                block, agree);
    assert_true(agree >= 0.99);
    perq_int4_free(&m);
    free(want);
    free(deq);
    free(w);
    free(h);
    free(x);
}

static void test_matches_unblocked_reference(void **state)
{
    (void)state;
    rng_seed(5);
    check_against_reference(12, 150, 0, 0, PERQ_GPTQ_BLOCK);
    check_against_reference(12, 150, 0, 1, PERQ_GPTQ_BLOCK);
    check_against_reference(12, 150, 32, 1, PERQ_GPTQ_BLOCK);
    check_against_reference(12, 150, 32, 0, 7);
    check_against_reference(12, 150, 0, 1, 1);
}

/* Shapes: widths that neither 128 nor the group divides, fewer columns than a
 * block, one row, one column. */
static void test_shapes(void **state)
{
    (void)state;
    rng_seed(9);
    check_against_reference(1, 130, 0, 1, PERQ_GPTQ_BLOCK);
    check_against_reference(1, 130, 32, 0, PERQ_GPTQ_BLOCK);
    check_against_reference(3, 257, 64, 1, PERQ_GPTQ_BLOCK);
    check_against_reference(40, 20, 0, 1, PERQ_GPTQ_BLOCK);
    check_against_reference(4, 1, 0, 1, PERQ_GPTQ_BLOCK);
    check_against_reference(5, 200, 300, 0, 64);   /* group wider than the matrix: per channel */
}

/* GPTQ's reason to exist: a clearly lower output error than RTN when inputs are correlated. */
static void check_beats_rtn(int group, int act_order)
{
    enum { T = 600, ROWS = 24, COLS = 200 };
    float *x = correlated_inputs(T, COLS, 6, 0.2f);
    float *h = hessian_of(x, T, COLS);
    float *w = random_weights(ROWS, COLS);
    float *wg = malloc(sizeof(float) * ROWS * COLS), *wr = malloc(sizeof(float) * ROWS * COLS);
    assert_non_null(wg);
    assert_non_null(wr);
    perq_gptq_opts o = opts_of(group, act_order);
    perq_int4_matrix g, r;
    perq_gptq_stats st;
    perq_err err = {0};
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &g, wg, &st, &err), 0);
    assert_int_equal(perq_int4_rtn(w, ROWS, COLS, group, &r, &err), 0);
    perq_int4_dequantize(&r, wr);
    assert_valid_matrix(&g, wg);
    /* Static groups: the scales are RTN's, only the rounding differs. */
    assert_memory_equal(g.scales, r.scales, sizeof(float) * ROWS * r.n_groups);
    double eg = output_error(x, T, w, wg, ROWS, COLS), er = output_error(x, T, w, wr, ROWS, COLS);
    if (!(eg < 0.9 * er))
        fprintf(stderr, "group %d act_order %d: GPTQ %.4g RTN %.4g\n", group, act_order, eg, er);
    assert_true(eg < 0.9 * er);
    assert_true(st.loss > 0.0);
    assert_true(st.update_flops == 2.0 * ROWS * 128.0 * (COLS - 128));
    perq_int4_free(&g);
    perq_int4_free(&r);
    free(wg);
    free(wr);
    free(w);
    free(h);
    free(x);
}

static void test_beats_rtn_on_correlated_inputs(void **state)
{
    (void)state;
    rng_seed(13);
    check_beats_rtn(0, 0);
    check_beats_rtn(0, 1);
    check_beats_rtn(32, 0);
    check_beats_rtn(32, 1);
    check_beats_rtn(48, 1); /* 200 = 4 x 48 + 8 */
}

/* Act-order on inputs whose column scales differ a lot: the visiting order is
 * far from the identity, yet q and scales come back in original column order. */
static void test_act_order_layout(void **state)
{
    (void)state;
    enum { T = 400, ROWS = 10, COLS = 150, GROUP = 32 };
    rng_seed(17);
    float *x = correlated_inputs(T, COLS, 4, 0.5f);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < COLS; c++)
            x[t * COLS + c] *= 1.0f + (float)((c * 37) % COLS) / 10.0f;
    float *h = hessian_of(x, T, COLS);
    float *w = random_weights(ROWS, COLS);
    float *deq = malloc(sizeof(float) * ROWS * COLS), *deq_plain = malloc(sizeof(float) * ROWS * COLS);
    assert_non_null(deq);
    assert_non_null(deq_plain);
    perq_gptq_opts o = opts_of(GROUP, 1), plain = opts_of(GROUP, 0);
    perq_int4_matrix m, p, r;
    perq_err err = {0};
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &m, deq, NULL, &err), 0);
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &plain, &p, deq_plain, NULL, &err), 0);
    assert_int_equal(m.group, GROUP);
    assert_int_equal(m.n_groups, 5); /* 4 x 32 + 22 */
    assert_valid_matrix(&m, deq);
    assert_int_equal(perq_int4_rtn(w, ROWS, COLS, GROUP, &r, &err), 0);
    assert_memory_equal(m.scales, r.scales, sizeof(float) * ROWS * r.n_groups);
    /* In original order each q is near its own weight (a permuted layout would not be). */
    double far = 0.0;
    for (int i = 0; i < ROWS * COLS; i++)
        far += fabs(deq[i] - w[i]) > 4.0f * r.scales[(i / COLS) * r.n_groups + (i % COLS) / GROUP];
    assert_true(far < 0.05 * ROWS * COLS);
    /* Both orders beat RTN's output error. */
    float *wr = malloc(sizeof(float) * ROWS * COLS);
    assert_non_null(wr);
    perq_int4_dequantize(&r, wr);
    double er = output_error(x, T, w, wr, ROWS, COLS);
    assert_true(output_error(x, T, w, deq, ROWS, COLS) < 0.9 * er);
    assert_true(output_error(x, T, w, deq_plain, ROWS, COLS) < 0.9 * er);
    assert_true(agreement(m.q, p.q, (size_t)ROWS * COLS) < 1.0); /* the order did change something */
    perq_int4_free(&m);
    perq_int4_free(&p);
    perq_int4_free(&r);
    free(wr);
    free(deq_plain);
    free(deq);
    free(w);
    free(h);
    free(x);
}

/* Inputs that are always zero: those weights become 0, scales are RTN's of the
 * weights with them zeroed, and the other columns are still GPTQ'd. */
static void test_dead_columns(void **state)
{
    (void)state;
    enum { T = 300, ROWS = 8, COLS = 140 };
    const int dead[] = {0, 3, 64, 139};
    rng_seed(19);
    float *x = correlated_inputs(T, COLS, 5, 0.3f);
    for (int t = 0; t < T; t++)
        for (size_t d = 0; d < sizeof dead / sizeof dead[0]; d++)
            x[t * COLS + dead[d]] = 0.0f;
    float *h = hessian_of(x, T, COLS);
    float *w = random_weights(ROWS, COLS);
    float *zeroed = malloc(sizeof(float) * ROWS * COLS), *deq = malloc(sizeof(float) * ROWS * COLS);
    assert_non_null(zeroed);
    assert_non_null(deq);
    memcpy(zeroed, w, sizeof(float) * ROWS * COLS);
    for (int r = 0; r < ROWS; r++) {
        for (size_t d = 0; d < sizeof dead / sizeof dead[0]; d++) {
            w[r * COLS + dead[d]] = 50.0f; /* would dominate a scale */
            zeroed[r * COLS + dead[d]] = 0.0f;
        }
    }
    for (int act = 0; act <= 1; act++) {
        perq_gptq_opts o = opts_of(32, act);
        perq_int4_matrix m, r;
        perq_err err = {0};
        assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &m, deq, NULL, &err), 0);
        assert_valid_matrix(&m, deq);
        for (int row = 0; row < ROWS; row++)
            for (size_t d = 0; d < sizeof dead / sizeof dead[0]; d++)
                assert_int_equal(m.q[row * COLS + dead[d]], 0);
        assert_int_equal(perq_int4_rtn(zeroed, ROWS, COLS, 32, &r, &err), 0);
        assert_memory_equal(m.scales, r.scales, sizeof(float) * ROWS * r.n_groups);
        int8_t want[ROWS * COLS];
        reference_gptq(w, ROWS, COLS, h, 32, act, want);
        assert_true(agreement(m.q, want, ROWS * COLS) >= 0.99);
        float *wr = malloc(sizeof(float) * ROWS * COLS);
        assert_non_null(wr);
        perq_int4_dequantize(&r, wr);
        assert_true(output_error(x, T, w, deq, ROWS, COLS) < 0.9 * output_error(x, T, w, wr, ROWS, COLS));
        free(wr);
        perq_int4_free(&m);
        perq_int4_free(&r);
    }
    free(deq);
    free(zeroed);
    free(w);
    free(h);
    free(x);
}

/* ---- progress, cancellation and errors ------------------------------------- */

typedef struct {
    int calls, last, total, cancel_at;
} progress_log;

static int on_progress(void *ctx, int done, int total)
{
    progress_log *p = ctx;
    assert_true(done > p->last);
    p->calls++;
    p->last = done;
    p->total = total;
    return p->cancel_at > 0 && done >= p->cancel_at;
}

static void test_progress_and_cancel(void **state)
{
    (void)state;
    enum { ROWS = 4, COLS = 300 };
    rng_seed(23);
    float *w = random_weights(ROWS, COLS);
    float *h = identity(COLS);
    perq_gptq_opts o = opts_of(0, 1);
    progress_log log = {0};
    o.progress = on_progress;
    o.progress_ctx = &log;
    perq_int4_matrix m;
    perq_err err = {0};
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &m, NULL, NULL, &err), 0);
    assert_int_equal(log.calls, 3); /* 128 + 128 + 44 */
    assert_int_equal(log.last, COLS);
    assert_int_equal(log.total, COLS);
    perq_int4_free(&m);

    log = (progress_log){.cancel_at = 128};
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &m, NULL, NULL, &err), -1);
    assert_int_equal(err.code, PERQ_E_CANCELLED);
    assert_int_equal(log.calls, 1);
    assert_null(m.q);
    assert_null(m.scales);
    free(h);
    free(w);
}

static void test_rejects_bad_input(void **state)
{
    (void)state;
    enum { ROWS = 3, COLS = 10 };
    rng_seed(29);
    float *w = random_weights(ROWS, COLS);
    float *h = identity(COLS);
    perq_gptq_opts o = opts_of(0, 1);
    perq_int4_matrix m;
    perq_err err = {0};

    assert_int_equal(perq_gptq_quantize(w, 0, COLS, h, &o, &m, NULL, NULL, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    perq_gptq_factor f;
    assert_int_equal(perq_gptq_factor_init(&f, h, COLS, &o, &err), 0);
    assert_int_equal(perq_gptq_quantize_factored(&f, w, ROWS, COLS - 1, &o, &m, NULL, NULL, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_int_equal(perq_gptq_quantize_factored(&f, w, 0, COLS, &o, &m, NULL, NULL, &err), -1);
    perq_gptq_factor_free(&f);

    w[2 * COLS + 5] = NAN;
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &m, NULL, NULL, &err), -1);
    assert_int_equal(err.code, PERQ_E_FORMAT);
    assert_non_null(strstr(err.msg, "row 2"));
    assert_null(m.q);
    w[2 * COLS + 5] = 0.5f;

    h[4 * COLS + 4] = -1.0f;
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &m, NULL, NULL, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    h[4 * COLS + 4] = 1.0f;
    h[4 * COLS + 7] = INFINITY;
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &m, NULL, NULL, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    h[4 * COLS + 7] = 0.0f;

    o.damp = 0.0f;
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &m, NULL, NULL, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    o = opts_of(0, 1);
    o.scale_dtype = PERQ_DT_I8;
    assert_int_equal(perq_gptq_quantize(w, ROWS, COLS, h, &o, &m, NULL, NULL, &err), -1);
    assert_int_equal(err.code, PERQ_E_UNSUPPORTED);
    free(h);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hessian_batches_equal_one_shot),
        cmocka_unit_test(test_factor_is_inverse_cholesky),
        cmocka_unit_test(test_dampening_retries),
        cmocka_unit_test(test_identity_hessian_is_rtn),
        cmocka_unit_test(test_matches_unblocked_reference),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_beats_rtn_on_correlated_inputs),
        cmocka_unit_test(test_act_order_layout),
        cmocka_unit_test(test_dead_columns),
        cmocka_unit_test(test_progress_and_cancel),
        cmocka_unit_test(test_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
