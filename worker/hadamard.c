/* Hadamard rotations of any width: planning the split n = p * m, the fast
 * Walsh-Hadamard transform, the dense factor through sgemm, and the explicit
 * matrix (see perq/hadamard.h for the conventions). */
#include "perq/hadamard.h"
#include "hadamard_internal.h"
#include "splitmix64.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Below this many floats a transform runs on one thread. */
#define PARALLEL_MIN_FLOATS (1 << 16)
/* Floats per sgemm tile: large enough for OpenBLAS to spread over its
 * threads, small enough for a modest scratch buffer. */
#define TILE_FLOATS (1 << 20)
/* Floats of a column strip that perq_rotation_left transforms across all the
 * rows of a block at once: small enough to stay in the L2 cache. */
#define LEFT_STRIP_FLOATS (1 << 18)

const char *perq_rotation_kind_name(perq_rotation_kind kind)
{
    switch (kind) {
    case PERQ_ROT_SYLVESTER: return "sylvester";
    case PERQ_ROT_HADAMARD: return "hadamard";
    case PERQ_ROT_RANDOM_ORTHOGONAL: return "random_orthogonal";
    }
    return "unknown";
}

static int is_power_of_two(size_t n)
{
    return n > 0 && (n & (n - 1)) == 0;
}

/* ---- fast Walsh-Hadamard transform --------------------------------------- */

/* The library is built for baseline x86-64 (SSE2); the transform is compiled
 * again for AVX2 and AVX-512 and the best one is picked at load time. */
#if defined(__x86_64__) && defined(__ELF__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif
/* clang at -O1 (the fuzz build) may decline to vectorise an omp simd loop and
 * says so with a warning; that costs speed only. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

/* Two consecutive stages (spans h and 2h) on four vectors of len floats at
 * once: a, b, c, d become a+b+c+d, a-b+c-d, a+b-c-d, a-b-c+d. */
static inline void butterfly4(float *a, float *b, float *c, float *d, size_t len)
{
#pragma omp simd
    for (size_t j = 0; j < len; j++) {
        float s0 = a[j] + b[j], d0 = a[j] - b[j];
        float s1 = c[j] + d[j], d1 = c[j] - d[j];
        a[j] = s0 + s1;
        b[j] = d0 + d1;
        c[j] = s0 - s1;
        d[j] = d0 - d1;
    }
}

static inline void butterfly2(float *a, float *b, size_t len)
{
#pragma omp simd
    for (size_t j = 0; j < len; j++) {
        float u = a[j], v = b[j];
        a[j] = u + v;
        b[j] = u - v;
    }
}

static inline void radix4_pass(float *x, size_t len, size_t h)
{
    for (size_t i = 0; i < len; i += 4 * h)
        butterfly4(x + i, x + i + h, x + i + 2 * h, x + i + 3 * h, h);
}

static inline void radix2_pass(float *x, size_t len, size_t h)
{
    for (size_t i = 0; i < len; i += 2 * h)
        butterfly2(x + i, x + i + h, h);
}

/* The first three stages on spans of 1, 2 and 4 within each group of eight,
 * where the generic passes would run loops of one to four iterations. */
static inline void radix8_first_pass(float *x, size_t len)
{
    for (size_t i = 0; i < len; i += 8) {
        float *v = x + i;
        float a0 = v[0] + v[1], a1 = v[0] - v[1], a2 = v[2] + v[3], a3 = v[2] - v[3];
        float a4 = v[4] + v[5], a5 = v[4] - v[5], a6 = v[6] + v[7], a7 = v[6] - v[7];
        float b0 = a0 + a2, b1 = a1 + a3, b2 = a0 - a2, b3 = a1 - a3;
        float b4 = a4 + a6, b5 = a5 + a7, b6 = a4 - a6, b7 = a5 - a7;
        v[0] = b0 + b4, v[1] = b1 + b5, v[2] = b2 + b6, v[3] = b3 + b7;
        v[4] = b0 - b4, v[5] = b1 - b5, v[6] = b2 - b6, v[7] = b3 - b7;
    }
}

/* The transform of x[len], times scale, where blocks of `first` contiguous
 * floats are the elements being combined (first = 1: a plain transform;
 * first = m: the S part of S (x) F on a row viewed as X[len/m][m]).
 * len / first must be a power of two. */
VECTOR_CLONES
static void fwht_spans(float *x, size_t len, size_t first, float scale)
{
    size_t h = first;
    if (h == 1 && len >= 8) {
        radix8_first_pass(x, len);
        h = 8;
    }
    for (; 4 * h <= len; h *= 4)
        radix4_pass(x, len, h);
    if (2 * h <= len)
        radix2_pass(x, len, h);
#pragma omp simd
    for (size_t j = 0; j < len; j++)
        x[j] *= scale;
}

/* The transform across the p rows of a strip, times scale: element (a, t)
 * is x[a*stride + t] for t < len, and each row's segment is one element of
 * the transform. p must be a power of two. */
VECTOR_CLONES
static void fwht_across_rows(float *x, size_t p, size_t stride, size_t len, float scale)
{
    size_t h = 1;
    for (; 4 * h <= p; h *= 4)
        for (size_t i = 0; i < p; i += 4 * h)
            for (size_t j = i; j < i + h; j++) {
                float *a = x + j * stride;
                butterfly4(a, a + h * stride, a + 2 * h * stride, a + 3 * h * stride, len);
            }
    if (2 * h <= p)
        for (size_t i = 0; i < p; i += 2 * h)
            for (size_t j = i; j < i + h; j++)
                butterfly2(x + j * stride, x + (j + h) * stride, len);
    for (size_t a = 0; a < p; a++) {
        float *row = x + a * stride;
#pragma omp simd
        for (size_t t = 0; t < len; t++)
            row[t] *= scale;
    }
}

/* x[rows][len] <- each row through fwht_spans, scaled by `scale`. */
static void fwht_rows(float *x, size_t rows, size_t len, size_t first, float scale)
{
    long n_rows = (long)rows;
#pragma omp parallel for schedule(static) if (rows * len >= PARALLEL_MIN_FLOATS && rows > 1)
    for (long r = 0; r < n_rows; r++)
        fwht_spans(x + (size_t)r * len, len, first, scale);
}

int perq_fwht(float *x, size_t rows, int n)
{
    if (n < 1 || !is_power_of_two((size_t)n))
        return -1;
    fwht_rows(x, rows, (size_t)n, 1, 1.0f / sqrtf((float)n));
    return 0;
}

/* ---- planning and building ----------------------------------------------- */

static int build_hadamard_factor(perq_rotation *r, perq_err *err)
{
    size_t count = (size_t)r->m * (size_t)r->m;
    int8_t *h = malloc(count);
    if (!h)
        return perq_fail(err, PERQ_E_NOMEM, "Hadamard matrix of order %d", r->m);
    char how[sizeof r->how];
    int rc = perq_hadamard_construct(r->m, h, how, sizeof how, err);
    if (rc == 1) {
        float s = 1.0f / sqrtf((float)r->m);
        for (size_t i = 0; i < count; i++)
            r->factor[i] = (float)h[i] * s;
    }
    free(h);
    if (rc == 0)
        return perq_fail(err, PERQ_E_INTERNAL, "Hadamard order %d planned but not built", r->m);
    return rc == 1 ? 0 : -1;
}

static int factor_is_symmetric(const perq_rotation *r)
{
    for (int i = 0; i < r->m; i++)
        for (int j = 0; j < i; j++)
            if (r->factor[(size_t)i * r->m + j] != r->factor[(size_t)j * r->m + i])
                return 0;
    return 1;
}

int perq_rotation_init(perq_rotation *r, int n, uint64_t seed, perq_err *err)
{
    memset(r, 0, sizeof *r);
    if (n < 1)
        return perq_fail(err, PERQ_E_INVALID, "rotation width %d", n);
    char factor_how[192];
    int m = perq_hadamard_factor_order(n, PERQ_ROTATION_MAX_FACTOR, factor_how, sizeof factor_how, err);
    if (m < 0)
        return perq_err_context(err, "rotation of width %d", n);
    r->n = n;
    if (m == 0) {
        m = n;
        while (m % 2 == 0)
            m /= 2;
        if (m > PERQ_ROTATION_MAX_FACTOR) {
            memset(r, 0, sizeof *r);
            return perq_fail(err, PERQ_E_UNSUPPORTED,
                             "rotation of width %d: no Hadamard order built, and a random factor of order %d "
                             "is above the limit of %d",
                             n, m, PERQ_ROTATION_MAX_FACTOR);
        }
        r->kind = PERQ_ROT_RANDOM_ORTHOGONAL;
        r->seed = seed;
        snprintf(factor_how, sizeof factor_how, "random_orthogonal(%d, seed=%llu)", m,
                 (unsigned long long)seed);
    } else {
        r->kind = (m == 1) ? PERQ_ROT_SYLVESTER : PERQ_ROT_HADAMARD;
    }
    r->m = m;
    r->p = n / m;
    if (m == 1)
        snprintf(r->how, sizeof r->how, "sylvester(%d)", n);
    else if (r->p == 1)
        snprintf(r->how, sizeof r->how, "%s", factor_how);
    else
        snprintf(r->how, sizeof r->how, "sylvester(%d) x %s", r->p, factor_how);
    if (m == 1) {
        r->symmetric = 1;
        return 0;
    }

    r->factor = malloc((size_t)m * (size_t)m * sizeof *r->factor);
    if (!r->factor) {
        memset(r, 0, sizeof *r);
        return perq_fail(err, PERQ_E_NOMEM, "rotation of width %d", n);
    }
    int rc = (r->kind == PERQ_ROT_HADAMARD) ? build_hadamard_factor(r, err)
                                            : perq_random_orthogonal(m, seed, r->factor, err);
    if (rc != 0) {
        perq_rotation_free(r);
        return perq_err_context(err, "rotation of width %d", n);
    }
    r->symmetric = factor_is_symmetric(r);
    return 0;
}

void perq_rotation_free(perq_rotation *r)
{
    free(r->factor);
    free(r->signs);
    memset(r, 0, sizeof *r);
}

void perq_random_signs(float *signs, int n, uint64_t seed)
{
    uint64_t state = seed, bits = 0;
    for (int i = 0; i < n; i++) {
        if (i % 64 == 0)
            bits = splitmix64(&state);
        signs[i] = (bits >> (i % 64)) & 1 ? -1.0f : 1.0f;
    }
}

int perq_rotation_randomize(perq_rotation *r, uint64_t seed, perq_err *err)
{
    float *s = malloc((size_t)r->n * sizeof *s);
    if (!s)
        return perq_fail(err, PERQ_E_NOMEM, "random signs of width %d", r->n);
    perq_random_signs(s, r->n, seed);
    free(r->signs);
    r->signs = s;
    r->signs_seed = seed;
    r->symmetric = 0;
    return 0;
}

/* x[count][n] <- x D: every n-wide row times the signs. */
static void scale_by_signs(const perq_rotation *r, float *x, size_t count)
{
    size_t n = (size_t)r->n;
    for (size_t i = 0; i < count; i++)
        for (size_t j = 0; j < n; j++)
            x[i * n + j] *= r->signs[j];
}

/* w[n][cols] <- D w: row j of the block times signs[j]. */
static void scale_rows_by_signs(const perq_rotation *r, float *w, size_t cols)
{
    for (size_t j = 0; j < (size_t)r->n; j++)
        if (r->signs[j] < 0)
            for (size_t c = 0; c < cols; c++)
                w[j * cols + c] = -w[j * cols + c];
}

/* ---- applying ------------------------------------------------------------ */

/* chunks[count][m] <- chunks op(F), through a scratch tile. */
static int multiply_chunks(const perq_rotation *r, float *chunks, size_t count, perq_rot_op op, perq_err *err)
{
    size_t m = (size_t)r->m;
    size_t tile = TILE_FLOATS / m;
    if (tile < 1)
        tile = 1;
    if (tile > count)
        tile = count;
    float *scratch = malloc(tile * m * sizeof *scratch);
    if (!scratch)
        return perq_fail(err, PERQ_E_NOMEM, "rotation of width %d", r->n);
    for (size_t done = 0; done < count; done += tile) {
        size_t now = count - done < tile ? count - done : tile;
        float *x = chunks + done * m;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, op == PERQ_ROT_T ? CblasTrans : CblasNoTrans, (int)now,
                    (int)m, (int)m, 1.0f, x, (int)m, r->factor, (int)m, 0.0f, scratch, (int)m);
        memcpy(x, scratch, now * m * sizeof *x);
    }
    free(scratch);
    return 0;
}

/* x[count][n] <- x op(R) for whole rows of width n. */
static int rotate_rows(const perq_rotation *r, float *x, size_t count, perq_rot_op op, perq_err *err)
{
    size_t n = (size_t)r->n, m = (size_t)r->m;
    if (r->p > 1)
        fwht_rows(x, count, n, m, 1.0f / sqrtf((float)r->p));
    if (m > 1)
        return multiply_chunks(r, x, count * (size_t)r->p, op, err);
    return 0;
}

static int check_width(const perq_rotation *r, size_t width, const char *what, perq_err *err)
{
    if (r->n < 1 || width % (size_t)r->n != 0)
        return perq_fail(err, PERQ_E_INVALID, "%s of width %zu is not a multiple of the rotation width %d",
                         what, width, r->n);
    return 0;
}

int perq_rotation_right(const perq_rotation *r, float *x, size_t rows, size_t width, perq_rot_op op,
                        perq_err *err)
{
    if (check_width(r, width, "rows", err) != 0)
        return -1;
    size_t count = rows * (width / (size_t)r->n);
    /* x (D R) = (x D) R; x (D R)^T = (x R^T) D */
    if (r->signs && op == PERQ_ROT_N)
        scale_by_signs(r, x, count);
    int rc = rotate_rows(r, x, count, op, err);
    if (rc == 0 && r->signs && op == PERQ_ROT_T)
        scale_by_signs(r, x, count);
    return rc;
}

/* op(R) w for one block w[n][cols], viewed as p slabs W_a of m rows:
 * op(R) = S_p / sqrt(p) (x) op(F), so the slabs are first combined by the
 * transform across rows (in column strips that stay in cache, in parallel),
 * then each slab becomes op(F) W_a (sgemm on column tiles). */
static int rotate_block_left(const perq_rotation *r, float *w, size_t cols, perq_rot_op op, float *scratch,
                             size_t tile_cols)
{
    size_t m = (size_t)r->m, p = (size_t)r->p, slab = m * cols;
    if (p > 1) {
        size_t strip = LEFT_STRIP_FLOATS / p;
        strip = strip < 16 ? 16 : strip - strip % 16;
        long n_strips = (long)((slab + strip - 1) / strip);
        float scale = 1.0f / sqrtf((float)p);
#pragma omp parallel for schedule(static) if (p * slab >= PARALLEL_MIN_FLOATS && n_strips > 1)
        for (long s = 0; s < n_strips; s++) {
            size_t t0 = (size_t)s * strip;
            fwht_across_rows(w + t0, p, slab, slab - t0 < strip ? slab - t0 : strip, scale);
        }
    }
    if (m == 1)
        return 0;
    for (size_t a = 0; a < p; a++) {
        float *rows = w + a * slab;
        for (size_t c0 = 0; c0 < cols; c0 += tile_cols) {
            size_t tc = cols - c0 < tile_cols ? cols - c0 : tile_cols;
            cblas_sgemm(CblasRowMajor, op == PERQ_ROT_T ? CblasTrans : CblasNoTrans, CblasNoTrans, (int)m, (int)tc,
                        (int)m, 1.0f, r->factor, (int)m, rows + c0, (int)cols, 0.0f, scratch, (int)tc);
            for (size_t b = 0; b < m; b++)
                memcpy(rows + b * cols + c0, scratch + b * tc, tc * sizeof *scratch);
        }
    }
    return 0;
}

int perq_rotation_left(const perq_rotation *r, float *w, size_t width, size_t cols, perq_rot_op op,
                       perq_err *err)
{
    if (check_width(r, width, "matrix", err) != 0)
        return -1;
    size_t n = (size_t)r->n, m = (size_t)r->m;
    size_t tile_cols = TILE_FLOATS / m;
    if (tile_cols > cols)
        tile_cols = cols;
    if (tile_cols < 1)
        tile_cols = 1;
    float *scratch = NULL;
    if (m > 1 && !(scratch = malloc(m * tile_cols * sizeof *scratch)))
        return perq_fail(err, PERQ_E_NOMEM, "rotation of width %d", r->n);
    /* (D R)^T w = R^T (D w); (D R) w = D (R w) */
    for (size_t block = 0; block < width / n; block++) {
        float *b = w + block * n * cols;
        if (r->signs && op == PERQ_ROT_T)
            scale_rows_by_signs(r, b, cols);
        rotate_block_left(r, b, cols, op, scratch, tile_cols);
        if (r->signs && op == PERQ_ROT_N)
            scale_rows_by_signs(r, b, cols);
    }
    free(scratch);
    return 0;
}

void perq_rotation_matrix(const perq_rotation *r, float *out)
{
    size_t n = (size_t)r->n, m = (size_t)r->m, p = (size_t)r->p;
    float s = 1.0f / sqrtf((float)p);
    for (size_t a = 0; a < p; a++)
        for (size_t b = 0; b < m; b++) {
            float *row = out + (a * m + b) * n;
            for (size_t a2 = 0; a2 < p; a2++) {
                float sa = (__builtin_popcountll(a & a2) & 1) ? -s : s;
                for (size_t b2 = 0; b2 < m; b2++)
                    row[a2 * m + b2] = sa * (m == 1 ? 1.0f : r->factor[b * m + b2]);
            }
        }
    if (r->signs)
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++)
                out[i * n + j] *= r->signs[i];
}
