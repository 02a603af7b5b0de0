/* Hadamard rotations: every small construction is an exact +-1 Hadamard
 * matrix, every width real models have gets an orthogonal rotation (and the
 * planned split), the fast transforms equal the explicit matrix in all four
 * orientations, block-diagonal rotations, involutions, and the seeded random
 * fallback. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "perq/hadamard.h"
#include "testutil.h"

#define ORTHO_TOL 1e-5

static uint32_t rng_state = 2463534242u;

static float *random_matrix(size_t rows, size_t cols)
{
    float *x = malloc(rows * cols * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < rows * cols; i++)
        x[i] = xorshift32_float(&rng_state);
    return x;
}

/* max |A A^T - I| over the rows given (a[rows][n]), in double (dsyrk). */
static double gram_error(const float *a, size_t rows, size_t n)
{
    double *d = malloc(rows * n * sizeof *d), *gram = malloc(rows * rows * sizeof *gram);
    for (size_t i = 0; i < rows * n; i++)
        d[i] = a[i];
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)rows, (int)n, 1.0, d, (int)n, 0.0, gram, (int)rows);
    double worst = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j <= i; j++)
            worst = fmax(worst, fabs(gram[i * rows + j] - (i == j ? 1.0 : 0.0)));
    free(d), free(gram);
    return worst;
}

/* ---- small constructions ------------------------------------------------- */

/* The orders real models need, and how each is expected to be built. */
static const struct {
    int m;
    const char *how_prefix;
} orders[] = {
    {1, "sylvester(1)"},
    {2, "sylvester(2)"},
    {4, "sylvester(4)"},
    {64, "sylvester(64)"},
    {12, "paley1(q=11)"},
    {20, "paley1(q=19)"},
    {28, "paley2(q=13)"},
    {36, "paley2(q=17)"},
    {40, "kron(sylvester(2), paley1(q=19))"},
    {44, "paley1(q=43)"},
    {52, "paley2(q=25=5^2)"},
    {60, "paley1(q=59)"},
    {108, "paley1(q=107)"},
    {140, "paley1(q=139)"},
    {148, "paley2(q=73)"},
    {156, "cooper-wallis(t=3, williamson(n=13"},
    {172, "williamson(n=43"},
    {312, "paley1(q=311)"},
    {344, "paley1(q=343=7^3)"},
    {924, "paley2(q=461)"},
    {68, "paley1(q=67)"},
};

/* Every entry +-1 and H H^T = m I exactly (float holds these integer sums
 * exactly; ssyrk fills the lower triangle). */
static void assert_hadamard(const int8_t *h, int m)
{
    size_t count = (size_t)m * m;
    float *f = malloc(count * sizeof *f), *gram = malloc(count * sizeof *gram);
    for (size_t i = 0; i < count; i++) {
        assert_true(h[i] == 1 || h[i] == -1);
        f[i] = h[i];
    }
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, m, m, 1.0f, f, m, 0.0f, gram, m);
    for (int i = 0; i < m; i++)
        for (int j = 0; j <= i; j++)
            if (gram[(size_t)i * m + j] != (i == j ? (float)m : 0.0f))
                fail_msg("order %d: rows %d and %d have dot product %g", m, i, j, gram[(size_t)i * m + j]);
    free(f), free(gram);
}

static void test_constructions_are_hadamard(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof orders / sizeof orders[0]; t++) {
        int m = orders[t].m;
        int8_t *h = malloc((size_t)m * m);
        char how[256] = "";
        perq_err err = {0};
        assert_int_equal(perq_hadamard_construct(m, h, how, sizeof how, &err), 1);
        if (strncmp(how, orders[t].how_prefix, strlen(orders[t].how_prefix)) != 0)
            fail_msg("order %d built as %s, expected %s...", m, how, orders[t].how_prefix);
        assert_hadamard(h, m);
        /* Asking only gives the same answer without building. */
        char how_only[256] = "";
        assert_int_equal(perq_hadamard_construct(m, NULL, how_only, sizeof how_only, &err), 1);
        assert_string_equal(how, how_only);
        free(h);
    }
}

/* Paley I matrices are skew-type (H + H^T = 2I); Paley II ones symmetric. */
/* The smallest order that needs a Kronecker product of two non-Sylvester
 * orders: 1904 = 28 * 68 (1903 = 11 * 173, 951 = 3 * 317, 952 not built). Its
 * entries are those of H_28 (x) H_68, both checked Hadamard above. */
static void test_kronecker_order(void **state)
{
    (void)state;
    enum { A = 28, B = 68, M = A * B };
    int8_t *h = malloc((size_t)M * M), ha[A * A], hb[B * B];
    char how[256];
    perq_err err = {0};
    assert_int_equal(perq_hadamard_construct(M, h, how, sizeof how, &err), 1);
    assert_string_equal(how, "kron(paley2(q=13), paley1(q=67))");
    assert_int_equal(perq_hadamard_construct(A, ha, how, sizeof how, &err), 1);
    assert_int_equal(perq_hadamard_construct(B, hb, how, sizeof how, &err), 1);
    for (int i = 0; i < A; i++)
        for (int k = 0; k < B; k++)
            for (int j = 0; j < A; j++)
                for (int l = 0; l < B; l++)
                    assert_int_equal(h[(size_t)(i * B + k) * M + (size_t)(j * B + l)], ha[i * A + j] * hb[k * B + l]);
    free(h);
}

static void test_paley_structure(void **state)
{
    (void)state;
    const int paley1[] = {12, 20, 44, 60, 108, 344};
    const int paley2[] = {28, 36, 52, 148};
    perq_err err = {0};
    char how[256];
    for (size_t t = 0; t < sizeof paley1 / sizeof paley1[0]; t++) {
        int m = paley1[t];
        int8_t *h = malloc((size_t)m * m);
        assert_int_equal(perq_hadamard_construct(m, h, how, sizeof how, &err), 1);
        if (strncmp(how, "paley1", 6) == 0)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < m; j++)
                    assert_int_equal(h[i * m + j] + h[j * m + i], i == j ? 2 : 0);
        free(h);
    }
    for (size_t t = 0; t < sizeof paley2 / sizeof paley2[0]; t++) {
        int m = paley2[t];
        int8_t *h = malloc((size_t)m * m);
        assert_int_equal(perq_hadamard_construct(m, h, how, sizeof how, &err), 1);
        assert_memory_equal(how, "paley2", 6);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < i; j++)
                assert_int_equal(h[i * m + j], h[j * m + i]);
        free(h);
    }
}

static void test_orders_not_built(void **state)
{
    (void)state;
    perq_err err = {0};
    char how[256];
    int8_t h[36];
    assert_int_equal(perq_hadamard_construct(0, h, how, sizeof how, &err), 0);
    assert_int_equal(perq_hadamard_construct(6, h, how, sizeof how, &err), 0);  /* not 1, 2 or 4k */
    assert_int_equal(perq_hadamard_construct(3, h, how, sizeof how, &err), 0);
    /* 428 = 4 * 107: Hadamard matrices exist, but none of the constructions here makes one. */
    assert_int_equal(perq_hadamard_construct(428, NULL, how, sizeof how, &err), 0);
}

/* ---- rotation plans for real widths -------------------------------------- */

static const struct {
    int n;
    perq_rotation_kind kind;
    int p, m;
} widths[] = {
    {64, PERQ_ROT_SYLVESTER, 64, 1},        {128, PERQ_ROT_SYLVESTER, 128, 1},
    {2048, PERQ_ROT_SYLVESTER, 2048, 1},    {4096, PERQ_ROT_SYLVESTER, 4096, 1},
    {8192, PERQ_ROT_SYLVESTER, 8192, 1},    {172, PERQ_ROT_HADAMARD, 1, 172},
    {352, PERQ_ROT_HADAMARD, 8, 44},        {688, PERQ_ROT_HADAMARD, 4, 172},
    {1536, PERQ_ROT_HADAMARD, 128, 12},     {3072, PERQ_ROT_HADAMARD, 256, 12},
    {3584, PERQ_ROT_HADAMARD, 128, 28},     {5632, PERQ_ROT_HADAMARD, 128, 44},
    {11008, PERQ_ROT_HADAMARD, 64, 172},    {13696, PERQ_ROT_RANDOM_ORTHOGONAL, 128, 107},
    {14336, PERQ_ROT_HADAMARD, 512, 28},    {18944, PERQ_ROT_HADAMARD, 128, 148},
    {29568, PERQ_ROT_HADAMARD, 32, 924},
};

static void test_width_plans(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof widths / sizeof widths[0]; t++) {
        perq_rotation r;
        perq_err err = {0};
        assert_int_equal(perq_rotation_init(&r, widths[t].n, 7, &err), 0);
        if ((int)r.kind != (int)widths[t].kind || r.p != widths[t].p || r.m != widths[t].m)
            fail_msg("width %d: %s p=%d m=%d (%s)", widths[t].n, perq_rotation_kind_name(r.kind), r.p, r.m, r.how);
        assert_int_equal(r.p * r.m, r.n);
        assert_true((r.m == 1) == (r.factor == NULL));
        assert_true(r.kind != PERQ_ROT_RANDOM_ORTHOGONAL || strstr(r.how, "random_orthogonal(") != NULL);
        assert_int_equal(r.seed, r.kind == PERQ_ROT_RANDOM_ORTHOGONAL ? 7u : 0u);
        perq_rotation_free(&r);
    }
}

/* Small widths: the whole explicit matrix is orthogonal. */
static void test_small_widths_orthogonal(void **state)
{
    (void)state;
    const int ns[] = {1, 2, 12, 40, 64, 128, 156, 172, 240, 352, 428, 688, 924};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int n = ns[t];
        perq_rotation r;
        perq_err err = {0};
        assert_int_equal(perq_rotation_init(&r, n, 11, &err), 0);
        float *R = malloc((size_t)n * n * sizeof *R);
        perq_rotation_matrix(&r, R);
        double e = gram_error(R, (size_t)n, (size_t)n);
        if (e > ORTHO_TOL)
            fail_msg("width %d (%s): |R R^T - I| = %g", n, r.how, e);
        /* A Hadamard rotation has every entry +-1/sqrt(n). */
        if (r.kind != PERQ_ROT_RANDOM_ORTHOGONAL)
            for (size_t i = 0; i < (size_t)n * n; i++)
                assert_float_equal(fabsf(R[i]) * sqrtf((float)n), 1.0f, 1e-5f);
        free(R);
        perq_rotation_free(&r);
    }
}

/* Large widths: the factor is orthogonal and sampled rows of R, computed by
 * the fast transform from unit vectors, are orthonormal. */
static void test_large_widths_orthogonal(void **state)
{
    (void)state;
    enum { SAMPLES = 40 };
    for (size_t t = 0; t < sizeof widths / sizeof widths[0]; t++) {
        int n = widths[t].n;
        perq_rotation r;
        perq_err err = {0};
        assert_int_equal(perq_rotation_init(&r, n, 3, &err), 0);
        if (r.factor) {
            double e = gram_error(r.factor, (size_t)r.m, (size_t)r.m);
            if (e > ORTHO_TOL)
                fail_msg("width %d: factor of order %d off by %g", n, r.m, e);
        }
        float *rows = calloc((size_t)SAMPLES * n, sizeof *rows);
        for (int s = 0; s < SAMPLES; s++) {
            size_t i = s == 0 ? 0 : s == 1 ? (size_t)n - 1 : xorshift32(&rng_state) % (size_t)n;
            rows[(size_t)s * n + i] = 1.0f;
        }
        assert_int_equal(perq_rotation_right(&r, rows, SAMPLES, (size_t)n, PERQ_ROT_N, &err), 0);
        double worst = 0;
        for (int a = 0; a < SAMPLES; a++)
            for (int b = 0; b <= a; b++) {
                double dot = 0;
                for (int k = 0; k < n; k++)
                    dot += (double)rows[(size_t)a * n + k] * rows[(size_t)b * n + k];
                /* Equal samples (a repeated index) have dot 1 too. */
                double want = dot > 0.5 ? 1.0 : 0.0;
                if (fabs(dot - want) > worst)
                    worst = fabs(dot - want);
            }
        if (worst > ORTHO_TOL)
            fail_msg("width %d (%s): sampled rows off by %g", n, r.how, worst);
        free(rows);
        perq_rotation_free(&r);
    }
}

/* ---- fast transforms against the explicit matrix ------------------------- */

/* out[rows][n] = x[rows][n] * M or * M^T (M n x n), in double. */
static void reference_right(const float *x, size_t rows, const float *M, size_t n, int transpose, double *out)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t k = 0; k < n; k++)
                s += (double)x[r * n + k] * (transpose ? M[j * n + k] : M[k * n + j]);
            out[r * n + j] = s;
        }
}

static void assert_close(const float *got, const double *want, size_t count, double tol, const char *what, int n)
{
    for (size_t i = 0; i < count; i++)
        if (fabs(got[i] - want[i]) > tol)
            fail_msg("%s, width %d: element %zu is %.8g, expected %.8g", what, n, i, got[i], want[i]);
}

/* perq_rotation_right and _left, both ops, against the explicit matrix. */
static void check_fast_equals_explicit(const perq_rotation *r)
{
    enum { ROWS = 5, COLS = 3 };
    size_t n = (size_t)r->n;
    perq_err err = {0};
    float *R = malloc(n * n * sizeof *R);
    perq_rotation_matrix(r, R);
    double *want = malloc(n * (ROWS > COLS ? ROWS : COLS) * sizeof *want);
    for (int op = 0; op < 2; op++) {
        /* right: x op(R) */
        float *x = random_matrix(ROWS, n);
        reference_right(x, ROWS, R, n, op, want);
        assert_int_equal(perq_rotation_right(r, x, ROWS, n, (perq_rot_op)op, &err), 0);
        assert_close(x, want, ROWS * n, 1e-5, op ? "x R^T" : "x R", (int)n);
        free(x);
        /* left: op(R) w for w[n][COLS], through its columns: (op(R) w)^T = w^T op(R)^T. */
        float *w = random_matrix(n, COLS);
        float *wt = malloc(n * COLS * sizeof *wt);
        for (size_t i = 0; i < n; i++)
            for (size_t c = 0; c < COLS; c++)
                wt[c * n + i] = w[i * COLS + c];
        reference_right(wt, COLS, R, n, !op, want);
        assert_int_equal(perq_rotation_left(r, w, n, COLS, (perq_rot_op)op, &err), 0);
        for (size_t i = 0; i < n; i++)
            for (size_t c = 0; c < COLS; c++)
                wt[c * n + i] = w[i * COLS + c];
        assert_close(wt, want, COLS * n, 1e-5, op ? "R^T w" : "R w", (int)n);
        free(w), free(wt);
    }
    free(want), free(R);
}

static void test_fast_equals_explicit(void **state)
{
    (void)state;
    const int ns[] = {1, 8, 12, 24, 40, 156, 172, 344, 352, 428, 1536};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        perq_rotation r;
        perq_err err = {0};
        assert_int_equal(perq_rotation_init(&r, ns[t], 5, &err), 0);
        check_fast_equals_explicit(&r);
        /* and randomized: D R */
        assert_int_equal(perq_rotation_randomize(&r, 77 + t, &err), 0);
        check_fast_equals_explicit(&r);
        perq_rotation_free(&r);
    }
}

/* D R is orthogonal, its signs are a function of the seed, both signs occur,
 * and block-diagonal use repeats D R in every block. */
static void test_randomized(void **state)
{
    (void)state;
    enum { N = 172 };
    perq_rotation r;
    perq_err err = {0};
    assert_int_equal(perq_rotation_init(&r, N, 1, &err), 0);
    assert_int_equal(perq_rotation_randomize(&r, 42, &err), 0);
    static float R[N * N];
    perq_rotation_matrix(&r, R);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double dot = 0;
            for (int k = 0; k < N; k++)
                dot += (double)R[i * N + k] * R[j * N + k];
            if (fabs(dot - (i == j)) > 1e-5)
                fail_msg("(D R)(D R)^T [%d][%d] = %g", i, j, dot);
        }
    int negative = 0, differ = 0;
    float again[N], other[N];
    perq_random_signs(again, N, 42);
    perq_random_signs(other, N, 43);
    for (int i = 0; i < N; i++) {
        assert_float_equal(again[i], r.signs[i], 0);
        negative += r.signs[i] < 0;
        differ += other[i] != r.signs[i];
    }
    assert_in_range(negative, N / 4, 3 * N / 4);
    assert_in_range(differ, N / 4, 3 * N / 4);
    /* two blocks: each block of the row is rotated by the same D R */
    float x[2 * N], y[N];
    for (int i = 0; i < 2 * N; i++)
        x[i] = (float)((i * 37) % 11) - 5.0f;
    memcpy(y, x + N, sizeof y);
    assert_int_equal(perq_rotation_right(&r, x, 1, 2 * N, PERQ_ROT_N, &err), 0);
    assert_int_equal(perq_rotation_right(&r, y, 1, N, PERQ_ROT_N, &err), 0);
    for (int i = 0; i < N; i++)
        assert_float_equal(x[N + i], y[i], 1e-6);
    perq_rotation_free(&r);
}

/* The left form on wide matrices: column strips in parallel (1536 = 128 x 12)
 * and several sgemm column tiles (924: tiles of 1134 columns). Sampled
 * columns against the explicit matrix, and R (R^T W) = W for all of them. */
static void test_left_wide(void **state)
{
    (void)state;
    const struct {
        size_t n, cols;
    } cases[] = {{1536, 700}, {924, 1200}};
    for (size_t t = 0; t < 2; t++) {
        size_t n = cases[t].n, cols = cases[t].cols;
        perq_rotation r;
        perq_err err = {0};
        assert_int_equal(perq_rotation_init(&r, (int)n, 2, &err), 0);
        float *R = malloc(n * n * sizeof *R);
        perq_rotation_matrix(&r, R);
        float *w = random_matrix(n, cols), *w0 = malloc(n * cols * sizeof *w0);
        memcpy(w0, w, n * cols * sizeof *w);
        assert_int_equal(perq_rotation_left(&r, w, n, cols, PERQ_ROT_T, &err), 0);
        const size_t sample[] = {0, 1, cols / 2, cols - 2, cols - 1};
        float column[1536];
        double want[1536];
        for (size_t k = 0; k < 5; k++) {
            size_t c = sample[k];
            for (size_t i = 0; i < n; i++)
                column[i] = w0[i * cols + c];
            reference_right(column, 1, R, n, 0, want); /* (R^T w_c)^T = w_c^T R */
            for (size_t i = 0; i < n; i++)
                if (fabs(w[i * cols + c] - want[i]) > 1e-5)
                    fail_msg("width %zu column %zu row %zu: %g, expected %g", n, c, i, w[i * cols + c], want[i]);
        }
        assert_int_equal(perq_rotation_left(&r, w, n, cols, PERQ_ROT_N, &err), 0);
        for (size_t i = 0; i < n * cols; i++)
            assert_float_equal(w[i], w0[i], 1e-5);
        free(R), free(w), free(w0);
        perq_rotation_free(&r);
    }
}

/* The orientation the folding relies on: rotating activations and a weight's
 * input columns alike leaves y = x W^T unchanged, and rotating the weight's
 * output rows by R^T rotates y by R. */
static void test_folding_orientation(void **state)
{
    (void)state;
    enum { T = 4, IN = 172, OUT = 12 };
    perq_rotation rin, rout;
    perq_err err = {0};
    assert_int_equal(perq_rotation_init(&rin, IN, 1, &err), 0);
    assert_int_equal(perq_rotation_init(&rout, OUT, 1, &err), 0);
    float *x = random_matrix(T, IN), *W = random_matrix(OUT, IN);
    double y[T][OUT];
    for (int t = 0; t < T; t++)
        for (int o = 0; o < OUT; o++) {
            y[t][o] = 0;
            for (int i = 0; i < IN; i++)
                y[t][o] += (double)x[t * IN + i] * W[o * IN + i];
        }
    assert_int_equal(perq_rotation_right(&rin, x, T, IN, PERQ_ROT_N, &err), 0);   /* x R */
    assert_int_equal(perq_rotation_right(&rin, W, OUT, IN, PERQ_ROT_N, &err), 0); /* W R */
    assert_int_equal(perq_rotation_left(&rout, W, OUT, IN, PERQ_ROT_T, &err), 0); /* R_out^T W */
    float Rout[OUT * OUT];
    perq_rotation_matrix(&rout, Rout);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < OUT; o++) {
            double got = 0, want = 0;
            for (int i = 0; i < IN; i++)
                got += (double)x[t * IN + i] * W[o * IN + i];
            for (int k = 0; k < OUT; k++)
                want += y[t][k] * Rout[k * OUT + o]; /* (y R_out)[o] */
            assert_float_equal(got, want, 1e-4);
        }
    free(x), free(W);
    perq_rotation_free(&rin), perq_rotation_free(&rout);
}

/* ---- block-diagonal rotations -------------------------------------------- */

static void test_block_rotations(void **state)
{
    (void)state;
    enum { D = 688, ROWS = 3 };
    const int blocks[] = {1, 2, 4, 8, 16, 43, 86, 172, 344, 688};
    for (size_t t = 0; t < sizeof blocks / sizeof blocks[0]; t++) {
        size_t b = (size_t)blocks[t];
        perq_rotation r;
        perq_err err = {0};
        assert_int_equal(perq_rotation_init(&r, (int)b, 9, &err), 0);
        float *Rb = malloc(b * b * sizeof *Rb);
        perq_rotation_matrix(&r, Rb);
        /* Explicit diag(Rb, ..., Rb). */
        float *R = calloc((size_t)D * D, sizeof *R);
        for (size_t blk = 0; blk < D / b; blk++)
            for (size_t i = 0; i < b; i++)
                memcpy(R + (blk * b + i) * D + blk * b, Rb + i * b, b * sizeof *R);
        /* Orthogonal: rotating the identity's rows gives R itself, orthonormal. */
        float *rotated = calloc((size_t)D * D, sizeof *rotated);
        for (size_t i = 0; i < D; i++)
            rotated[i * D + i] = 1.0f;
        assert_int_equal(perq_rotation_right(&r, rotated, D, D, PERQ_ROT_N, &err), 0);
        assert_memory_equal(rotated, R, (size_t)D * D * sizeof *R);
        double e = gram_error(rotated, D, D);
        if (e > ORTHO_TOL)
            fail_msg("block %zu: |R R^T - I| = %g", b, e);
        /* Rows and the left form against the explicit block matrix. */
        float *x = random_matrix(ROWS, D);
        double *want = malloc((size_t)ROWS * D * sizeof *want);
        reference_right(x, ROWS, R, D, 0, want);
        assert_int_equal(perq_rotation_right(&r, x, ROWS, D, PERQ_ROT_N, &err), 0);
        assert_close(x, want, (size_t)ROWS * D, 1e-5, "block x R", (int)b);
        /* R^T applied on the left of a [D][1] column equals x R for that column. */
        float *col = random_matrix(D, 1);
        reference_right(col, 1, R, D, 0, want);
        assert_int_equal(perq_rotation_left(&r, col, D, 1, PERQ_ROT_T, &err), 0);
        assert_close(col, want, D, 1e-5, "block R^T w", (int)b);
        free(x), free(col), free(want), free(rotated), free(R), free(Rb);
        perq_rotation_free(&r);
    }
}

static void test_width_must_be_a_multiple(void **state)
{
    (void)state;
    perq_rotation r;
    perq_err err = {0};
    float x[24] = {0};
    assert_int_equal(perq_rotation_init(&r, 12, 0, &err), 0);
    assert_int_equal(perq_rotation_right(&r, x, 1, 20, PERQ_ROT_N, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_non_null(strstr(err.msg, "not a multiple"));
    err = (perq_err){0};
    assert_int_equal(perq_rotation_left(&r, x, 18, 1, PERQ_ROT_T, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    perq_rotation_free(&r);

    assert_int_equal(perq_rotation_init(&r, 0, 0, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    /* 9999 = 9 * 11 * 101 is odd: the only candidate factor is the whole width,
     * above the dense-factor limit. */
    err = (perq_err){0};
    assert_int_equal(perq_rotation_init(&r, 9999, 0, &err), -1);
    assert_int_equal(err.code, PERQ_E_UNSUPPORTED);
    assert_null(r.factor);
}

/* ---- involutions, the random fallback, the plain FWHT --------------------- */

static void test_involutions(void **state)
{
    (void)state;
    /* width, whether R == R^T: Sylvester and Paley II (and Kronecker products
     * of them) are symmetric; Paley I, Williamson and random factors are not. */
    const struct {
        int n, symmetric;
    } cases[] = {{1024, 1}, {36, 1}, {3584, 1}, {72, 1}, {12, 0}, {1536, 0}, {172, 0}, {428, 0}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        size_t n = (size_t)cases[t].n;
        perq_rotation r;
        perq_err err = {0};
        assert_int_equal(perq_rotation_init(&r, (int)n, 4, &err), 0);
        if (r.symmetric != cases[t].symmetric)
            fail_msg("width %zu (%s): symmetric = %d", n, r.how, r.symmetric);
        float *x = random_matrix(3, n), *x0 = malloc(3 * n * sizeof *x0);
        memcpy(x0, x, 3 * n * sizeof *x);
        /* R R^T = I always; R R = I exactly when symmetric. */
        assert_int_equal(perq_rotation_right(&r, x, 3, n, PERQ_ROT_N, &err), 0);
        assert_int_equal(perq_rotation_right(&r, x, 3, n, PERQ_ROT_T, &err), 0);
        for (size_t i = 0; i < 3 * n; i++)
            assert_float_equal(x[i], x0[i], 1e-5);
        assert_int_equal(perq_rotation_right(&r, x, 3, n, PERQ_ROT_N, &err), 0);
        assert_int_equal(perq_rotation_right(&r, x, 3, n, PERQ_ROT_N, &err), 0);
        double worst = 0;
        for (size_t i = 0; i < 3 * n; i++)
            worst = fmax(worst, fabs(x[i] - x0[i]));
        if (cases[t].symmetric)
            assert_true(worst < 1e-5);
        else
            assert_true(worst > 1e-2);
        free(x), free(x0);
        perq_rotation_free(&r);
    }
}

static void test_random_fallback_deterministic(void **state)
{
    (void)state;
    perq_rotation a, b, c;
    perq_err err = {0};
    assert_int_equal(perq_rotation_init(&a, 13696, 42, &err), 0);
    assert_int_equal(perq_rotation_init(&b, 13696, 42, &err), 0);
    assert_int_equal(perq_rotation_init(&c, 13696, 43, &err), 0);
    assert_int_equal(a.kind, PERQ_ROT_RANDOM_ORTHOGONAL);
    assert_string_equal(a.how, "sylvester(128) x random_orthogonal(107, seed=42)");
    assert_memory_equal(a.factor, b.factor, 107 * 107 * sizeof(float));
    assert_memory_not_equal(a.factor, c.factor, 107 * 107 * sizeof(float));
    assert_true(gram_error(a.factor, 107, 107) < ORTHO_TOL);
    assert_true(gram_error(c.factor, 107, 107) < ORTHO_TOL);
    /* Not a +-1 pattern: entries vary in magnitude. */
    float lo = INFINITY, hi = 0;
    for (int i = 0; i < 107 * 107; i++) {
        lo = fminf(lo, fabsf(a.factor[i]));
        hi = fmaxf(hi, fabsf(a.factor[i]));
    }
    assert_true(hi > 4 * lo);
    perq_rotation_free(&a), perq_rotation_free(&b), perq_rotation_free(&c);

    float q1[5 * 5], q2[5 * 5];
    assert_int_equal(perq_random_orthogonal(5, 99, q1, &err), 0);
    assert_int_equal(perq_random_orthogonal(5, 99, q2, &err), 0);
    assert_memory_equal(q1, q2, sizeof q1);
    assert_true(gram_error(q1, 5, 5) < ORTHO_TOL);
    assert_int_equal(perq_random_orthogonal(0, 99, q1, &err), -1);
}

static void test_fwht_against_sylvester(void **state)
{
    (void)state;
    const int ns[] = {1, 2, 4, 8, 16, 32, 64, 2048};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        size_t n = (size_t)ns[t];
        /* 40 rows of 2048 go through the parallel path. */
        size_t rows = n == 2048 ? 40 : 3;
        float *x = random_matrix(rows, n);
        double *want = malloc(rows * n * sizeof *want);
        for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                for (size_t k = 0; k < n; k++)
                    s += (__builtin_popcountll(j & k) & 1 ? -1.0 : 1.0) * x[r * n + k];
                want[r * n + j] = s / sqrt((double)n);
            }
        assert_int_equal(perq_fwht(x, rows, (int)n), 0);
        assert_close(x, want, rows * n, 1e-5, "fwht", (int)n);
        free(x), free(want);
    }
    float y[12] = {0};
    assert_int_equal(perq_fwht(y, 1, 12), -1);
    assert_int_equal(perq_fwht(y, 1, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constructions_are_hadamard),
        cmocka_unit_test(test_kronecker_order),
        cmocka_unit_test(test_paley_structure),
        cmocka_unit_test(test_orders_not_built),
        cmocka_unit_test(test_width_plans),
        cmocka_unit_test(test_small_widths_orthogonal),
        cmocka_unit_test(test_large_widths_orthogonal),
        cmocka_unit_test(test_fast_equals_explicit),
        cmocka_unit_test(test_randomized),
        cmocka_unit_test(test_left_wide),
        cmocka_unit_test(test_folding_orientation),
        cmocka_unit_test(test_block_rotations),
        cmocka_unit_test(test_width_must_be_a_multiple),
        cmocka_unit_test(test_involutions),
        cmocka_unit_test(test_random_fallback_deterministic),
        cmocka_unit_test(test_fwht_against_sylvester),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
