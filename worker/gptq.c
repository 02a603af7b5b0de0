/* GPTQ: the inverse-Hessian factor and the lazy-batch rounding (see perq/gptq.h). */
#include "perq/gptq.h"

#include <cblas.h>
#include <lapack.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Below this many weights per block the rows are rounded on one thread. */
#define PARALLEL_MIN_WEIGHTS (1 << 14)
/* Rows rounded together in a block (see round_block_rows). */
#define ROW_TILE 8

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void perq_gptq_opts_default(perq_gptq_opts *o)
{
    memset(o, 0, sizeof *o);
    o->group = 0;
    o->act_order = 1;
    o->damp = PERQ_GPTQ_DAMP;
    o->block = PERQ_GPTQ_BLOCK;
    o->scale_dtype = PERQ_DT_F32;
}

/* ---- the factor ---------------------------------------------------------- */

typedef struct {
    float diag;
    int col;
} diag_entry;

static int by_descending_diag(const void *pa, const void *pb)
{
    const diag_entry *a = pa, *b = pb;
    if (a->diag != b->diag)
        return a->diag > b->diag ? -1 : 1;
    return (a->col > b->col) - (a->col < b->col);
}

/* The visiting order: by descending diag (dead columns counting as 1) or as given. */
static int order_columns(const float *diag, int n, int act_order, int *perm)
{
    if (!act_order) {
        for (int k = 0; k < n; k++)
            perm[k] = k;
        return 0;
    }
    diag_entry *e = malloc((size_t)n * sizeof *e);
    if (!e)
        return -1;
    for (int k = 0; k < n; k++)
        e[k] = (diag_entry){diag[k], k};
    qsort(e, (size_t)n, sizeof *e, by_descending_diag);
    for (int k = 0; k < n; k++)
        perm[k] = e[k].col;
    free(e);
    return 0;
}

/* The diagonal with dead columns marked and set to 1; its mean in *mean. */
static int read_diagonal(const float *h, int n, unsigned char *dead, float *diag, double *mean, perq_err *err)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        float d = h[(size_t)i * (size_t)n + (size_t)i];
        if (!isfinite(d) || d < 0.0f)
            return perq_fail(err, PERQ_E_INVALID, "Hessian diagonal element %d is %g", i, (double)d);
        dead[i] = d == 0.0f;
        diag[i] = dead[i] ? 1.0f : d;
        sum += diag[i];
    }
    *mean = sum / n;
    return 0;
}

/* b = J P^T H P J, the Hessian in reversed visiting order: b[a][c] =
 * H[rev[a]][rev[c]] with rev[a] = perm[n-1-a]; dead rows and columns zero
 * off the diagonal. The diagonal is left for each attempt to set. */
static int gather_reversed(const float *h, const perq_gptq_factor *f, float *b, perq_err *err)
{
    size_t n = (size_t)f->n;
    for (size_t a = 0; a < n; a++) {
        size_t ra = (size_t)f->perm[n - 1 - a];
        const float *hrow = h + ra * n;
        float *brow = b + a * n;
        for (size_t c = 0; c < n; c++) {
            size_t rc = (size_t)f->perm[n - 1 - c];
            float v = hrow[rc];
            if (!isfinite(v))
                return perq_fail(err, PERQ_E_INVALID, "Hessian element [%zu][%zu] is %g", ra, rc, (double)v);
            brow[c] = (f->dead[ra] || f->dead[rc]) ? 0.0f : v;
        }
    }
    return 0;
}

/* One attempt at U from b (reversed order, upper triangle intact, diagonal
 * from diag_rev + lambda): Cholesky B = L L^T and L^-1 in b's lower triangle
 * (LAPACK's column-major upper), leaving the upper one as it was so that a
 * failed attempt can start again. Returns LAPACK's info (0: success). */
static int try_factor(float *b, int n, const float *diag_rev, float lambda)
{
    perq_sym_from_upper(b, n);
    for (int a = 0; a < n; a++)
        b[(size_t)a * (size_t)n + (size_t)a] = diag_rev[a] + lambda;
    lapack_int order = n, info = 0;
    LAPACK_spotrf("U", &order, b, &order, &info);
    if (info == 0)
        LAPACK_strtri("U", "N", &order, b, &order, &info);
    return (int)info;
}

/* L^-1 (lower, in reversed order) -> U = J L^-1 J (upper, visiting order):
 * reversing both indices of a row-major matrix reverses its storage. */
static void reverse_into_upper(float *b, size_t n)
{
    for (size_t a = 0; a < n; a++)
        memset(b + a * n + a + 1, 0, (n - a - 1) * sizeof *b);
    for (size_t lo = 0, hi = n * n - 1; lo < hi; lo++, hi--) {
        float t = b[lo];
        b[lo] = b[hi];
        b[hi] = t;
    }
}

static int diagonal_positive(const float *u, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (!(u[k * n + k] > 0.0f) || !isfinite(u[k * n + k]))
            return 0;
    return 1;
}

int perq_gptq_factor_init(perq_gptq_factor *f, const float *h, int n, const perq_gptq_opts *opts,
                          perq_err *err)
{
    double t0 = now_seconds();
    memset(f, 0, sizeof *f);
    if (n <= 0)
        return perq_fail(err, PERQ_E_INVALID, "GPTQ: Hessian of width %d", n);
    if (!(opts->damp > 0.0f) || !isfinite(opts->damp))
        return perq_fail(err, PERQ_E_INVALID, "GPTQ: dampening %g", (double)opts->damp);
    f->n = n;
    f->perm = malloc((size_t)n * sizeof *f->perm);
    f->dead = malloc((size_t)n);
    f->u = malloc((size_t)n * (size_t)n * sizeof *f->u);
    float *diag = malloc((size_t)n * sizeof *diag);
    float *diag_rev = malloc((size_t)n * sizeof *diag_rev);
    double mean = 0.0;
    int rc = -1;
    if (!f->perm || !f->dead || !f->u || !diag || !diag_rev) {
        perq_fail(err, PERQ_E_NOMEM, "GPTQ: Hessian factor of width %d", n);
        goto done;
    }
    if (read_diagonal(h, n, f->dead, diag, &mean, err) != 0)
        goto done;
    if (order_columns(diag, n, opts->act_order, f->perm) != 0) {
        perq_fail(err, PERQ_E_NOMEM, "GPTQ: column order of width %d", n);
        goto done;
    }
    if (gather_reversed(h, f, f->u, err) != 0)
        goto done;
    for (int a = 0; a < n; a++)
        diag_rev[a] = diag[f->perm[n - 1 - a]];

    float damp = opts->damp;
    int info = 0;
    for (int attempt = 0; attempt <= PERQ_GPTQ_DAMP_RETRIES; attempt++, damp *= 10.0f) {
        info = try_factor(f->u, n, diag_rev, (float)(damp * mean));
        if (info == 0)
            break;
        if (info < 0) {
            perq_fail(err, PERQ_E_INTERNAL, "GPTQ: LAPACK rejected argument %d", -info);
            goto done;
        }
    }
    if (info != 0) {
        perq_fail(err, PERQ_E_INVALID,
                  "GPTQ: Hessian not positive definite even with dampening %g x its mean diagonal "
                  "(Cholesky pivot %d of %d)", (double)(damp / 10.0f), info, n);
        goto done;
    }
    reverse_into_upper(f->u, (size_t)n);
    if (!diagonal_positive(f->u, (size_t)n)) {
        perq_fail(err, PERQ_E_INVALID, "GPTQ: inverse Hessian factor not finite (Hessian too ill-conditioned)");
        goto done;
    }
    f->damp = damp;
    f->seconds = now_seconds() - t0;
    rc = 0;
done:
    free(diag);
    free(diag_rev);
    if (rc != 0)
        perq_gptq_factor_free(f);
    return rc;
}

void perq_gptq_factor_free(perq_gptq_factor *f)
{
    free(f->perm);
    free(f->dead);
    free(f->u);
    memset(f, 0, sizeof *f);
}

/* ---- the rounding -------------------------------------------------------- */

typedef struct {
    const perq_gptq_factor *f;
    perq_int4_matrix *out;
    float *w;           /* [rows][n] in visiting order, updated as columns are rounded */
    float *errs;        /* [rows][block]: the current block's scaled errors */
    int *group_of;      /* by visiting position: the scale's group */
    int rows, n, block;
} gptq_run;

/* Rounds columns [j1, j2) of rows [r0, r1) in visiting order, spreading each
 * error over the rest of the block; returns the rows' share of the loss. The
 * rows go through each column together: one row alone would wait on its own
 * chain (round, error, update, round the next column) at every step.
 * Compiled for each vector unit and chosen at load time; the arithmetic is
 * elementwise (no contraction under -std=c11), so every clone gives the same
 * bits. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static double round_block_rows(const gptq_run *g, int r0, int r1, int j1, int j2)
{
    size_t n = (size_t)g->n, ng = (size_t)g->out->n_groups, block = (size_t)g->block;
    double loss = 0.0;
    for (int k = j1; k < j2; k++) {
        const float *restrict u = g->f->u + (size_t)k * n;
        int col = g->f->perm[k], group = g->group_of[k];
        for (size_t r = (size_t)r0; r < (size_t)r1; r++) {
            float *w = g->w + r * n;
            float s = g->out->scales[r * ng + (size_t)group];
            int8_t qk;
            perq_int4_round(&w[k], 1, s, &qk);
            float ek = (w[k] - (float)qk * s) / u[k];
            g->out->q[r * n + (size_t)col] = qk;
            g->errs[r * block + (size_t)(k - j1)] = ek;
            loss += 0.5 * (double)ek * (double)ek;
        }
        /* The update runs from column k rounded down to a multiple of 16 in
         * the block, so that the vector loop needs no scalar tail: U is zero
         * left of its diagonal, and columns up to k are not read again. */
        int m0 = j1 + ((k - j1) & ~15);
        for (size_t r = (size_t)r0; r < (size_t)r1; r++) {
            float *restrict w = g->w + r * n;
            float ek = g->errs[r * block + (size_t)(k - j1)];
#pragma omp simd
            for (int m = m0; m < j2; m++)
                w[m] -= ek * u[m];
        }
    }
    return loss;
}

/* The weights in visiting order with dead columns zeroed, and RTN's scales of
 * the same weights in original order (RTN's q are overwritten later). */
static int prepare_weights(const gptq_run *g, const float *w, const perq_gptq_opts *opts, perq_err *err)
{
    size_t n = (size_t)g->n;
    const int *perm = g->f->perm;
    for (size_t r = 0; r < (size_t)g->rows; r++) {
        const float *src = w + r * n;
        float *dst = g->w + r * n;
        for (size_t c = 0; c < n; c++)
            dst[c] = g->f->dead[c] ? 0.0f : src[c];
    }
    if (perq_int4_rtn_as(g->w, g->rows, g->n, opts->group, opts->scale_dtype, g->out, err) != 0)
        return -1;
    for (size_t k = 0; k < n; k++)
        g->group_of[k] = perm[k] / g->out->group;
    float *row = malloc(n * sizeof *row);
    if (!row) {
        perq_int4_free(g->out);
        return perq_fail(err, PERQ_E_NOMEM, "GPTQ: row of %zu", n);
    }
    for (size_t r = 0; r < (size_t)g->rows; r++) {
        float *dst = g->w + r * n;
        for (size_t k = 0; k < n; k++)
            row[k] = dst[perm[k]];
        memcpy(dst, row, n * sizeof *row);
    }
    free(row);
    return 0;
}

static int run_blocks(gptq_run *g, const perq_gptq_opts *opts, perq_gptq_stats *st, perq_err *err)
{
    int n = g->n, rows = g->rows;
    for (int j1 = 0; j1 < n; j1 += g->block) {
        int j2 = j1 + g->block < n ? j1 + g->block : n;
        double t0 = now_seconds(), loss = 0.0;
        int tiles = (rows + ROW_TILE - 1) / ROW_TILE;
        int parallel = tiles > 1 && (size_t)rows * (size_t)(j2 - j1) >= PARALLEL_MIN_WEIGHTS;
#pragma omp parallel for schedule(static) reduction(+ : loss) if (parallel)
        for (int t = 0; t < tiles; t++)
            loss += round_block_rows(g, t * ROW_TILE, t * ROW_TILE + ROW_TILE < rows ? t * ROW_TILE + ROW_TILE : rows,
                                     j1, j2);
        double t1 = now_seconds();
        st->loss += loss;
        st->block_seconds += t1 - t0;
        if (j2 < n) {
            /* W[:, j2:] -= E U[j1:j2, j2:], the lazy batch update. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, n - j2, j2 - j1, -1.0f, g->errs,
                        g->block, g->f->u + (size_t)j1 * (size_t)n + (size_t)j2, n, 1.0f, g->w + j2, n);
            st->update_seconds += now_seconds() - t1;
            st->update_flops += 2.0 * rows * (double)(n - j2) * (double)(j2 - j1);
        }
        if (opts->progress && opts->progress(opts->progress_ctx, j2, n) != 0)
            return perq_fail(err, PERQ_E_CANCELLED, "GPTQ cancelled after %d of %d columns", j2, n);
    }
    return 0;
}

int perq_gptq_quantize_factored(const perq_gptq_factor *f, const float *w, int rows, int cols,
                                const perq_gptq_opts *opts, perq_int4_matrix *out, float *w_deq,
                                perq_gptq_stats *stats, perq_err *err)
{
    double t0 = now_seconds();
    perq_gptq_stats st = {0};
    memset(out, 0, sizeof *out);
    if (rows <= 0 || cols <= 0)
        return perq_fail(err, PERQ_E_INVALID, "GPTQ: weight of %d x %d", rows, cols);
    if (cols != f->n)
        return perq_fail(err, PERQ_E_INVALID, "GPTQ: weight of %d columns, Hessian of width %d", cols, f->n);
    gptq_run g = {.f = f, .out = out, .rows = rows, .n = cols};
    g.block = opts->block > 0 ? opts->block : PERQ_GPTQ_BLOCK;
    g.block = g.block < cols ? g.block : cols;
    g.w = malloc((size_t)rows * (size_t)cols * sizeof *g.w);
    g.errs = malloc((size_t)rows * (size_t)g.block * sizeof *g.errs);
    g.group_of = malloc((size_t)cols * sizeof *g.group_of);
    int rc = -1;
    if (!g.w || !g.errs || !g.group_of) {
        perq_fail(err, PERQ_E_NOMEM, "GPTQ: weight of %d x %d", rows, cols);
        goto done;
    }
    if (prepare_weights(&g, w, opts, err) != 0)
        goto done;
    if (run_blocks(&g, opts, &st, err) != 0) {
        perq_int4_free(out);
        goto done;
    }
    if (w_deq)
        perq_int4_dequantize(out, w_deq);
    rc = 0;
done:
    free(g.w);
    free(g.errs);
    free(g.group_of);
    st.seconds = now_seconds() - t0;
    if (stats)
        *stats = st;
    return rc;
}

int perq_gptq_quantize(const float *w, int rows, int cols, const float *h, const perq_gptq_opts *opts,
                       perq_int4_matrix *out, float *w_deq, perq_gptq_stats *stats, perq_err *err)
{
    double t0 = now_seconds();
    perq_gptq_factor f;
    memset(out, 0, sizeof *out);
    if (rows <= 0 || cols <= 0)
        return perq_fail(err, PERQ_E_INVALID, "GPTQ: weight of %d x %d", rows, cols);
    if (perq_gptq_factor_init(&f, h, cols, opts, err) != 0)
        return -1;
    int rc = perq_gptq_quantize_factored(&f, w, rows, cols, opts, out, w_deq, stats, err);
    if (stats) {
        stats->factor_seconds = f.seconds;
        stats->seconds = now_seconds() - t0;
    }
    perq_gptq_factor_free(&f);
    return rc;
}
