/* GPTQ (Frantar et al. 2022): INT4 weight rounding that pushes each column's
 * rounding error onto the columns not rounded yet, weighted by the inverse
 * Hessian of the layer's inputs, so that X W^T moves as little as possible on
 * the calibration inputs X. CPU, fp32.
 *
 * Shapes. W is [rows = out][cols = in] row-major and y = x W^T; the Hessian of
 * the layer's squared output error is H = 2/N X^T X, [cols][cols], over the N
 * calibration rows of X [N][cols].
 *
 * The algorithm, as perq runs it:
 *   1. Dead columns (H_ii == 0: an input that is always zero) get H_ii = 1,
 *      the rest of their row and column of H taken as 0, and their weights set
 *      to 0; they quantize to 0.
 *   2. Scales are RTN's (perq_int4_rtn_as over W with dead columns zeroed):
 *      MSE-searched, per output channel or per group of columns in ORIGINAL
 *      column order (the last group shorter when group does not divide cols),
 *      rounded to the storage dtype, all chosen before any column is rounded
 *      ("static groups"). So the result is laid out exactly as any
 *      perq_int4_matrix, act-order or not, and GPTQ changes only the q values.
 *      (The reference code's alternative, a group's scale taken from the
 *      updated weights when the loop reaches it, would make groups follow the
 *      visiting order under act-order and need a per-column group index.)
 *   3. act_order: columns are visited in order of descending diag(H) (ties by
 *      column index), the permutation undone in the result.
 *   4. lambda = damp * mean(diag(H)) is added to the diagonal; if a Cholesky
 *      factorisation fails, damp is multiplied by 10, up to
 *      PERQ_GPTQ_DAMP_RETRIES times.
 *   5. U, the upper Cholesky factor of (H + lambda I)^-1 (H^-1 = U^T U), comes
 *      from one Cholesky factorisation of the reversed H and one triangular
 *      inverse (LAPACK spotrf + strtri): if J H J = L L^T, then U = J L^-1 J.
 *      It is the factor the paper obtains from spotrf(H) + spotri + spotrf,
 *      at half the cost.
 *   6. Lazy batch updates: in blocks of `block` columns, each row rounds the
 *      block column by column, spreading each error e_k = (w_k - q_k s) / U_kk
 *      over the rest of the block through U's row k; then one sgemm carries the
 *      whole block's errors to every later column: W[:, j2:] -= E U[j1:j2, j2:].
 * Rows are independent given U: they are rounded in parallel, a few rows at a
 * time through each column. */
#ifndef PERQ_GPTQ_H
#define PERQ_GPTQ_H

#include "perq/dtype.h"
#include "perq/error.h"
#include "perq/int4.h"

/* ---- the Hessian of a linear layer's inputs ------------------------------ */

/* Accumulates sum X^T X over batches of inputs (upper triangle only, fp32,
 * cblas_ssyrk), then finalises H = 2/N sum X^T X, symmetric, where N is the
 * number of rows added. */
typedef struct perq_hessian {
    int n;               /* input features: the width of each row of X */
    long long tokens;    /* rows of X added so far */
    int finalized;
    float *h;            /* n*n row-major */
} perq_hessian;

int perq_hessian_init(perq_hessian *hs, int n, perq_err *err);
/* x is [tokens][n] row-major; tokens == 0 is allowed and adds nothing. Not
 * after finalize. */
int perq_hessian_add(perq_hessian *hs, const float *x, int tokens, perq_err *err);
/* Scales by 2 / tokens and fills the lower triangle. No rows at all is a
 * PERQ_E_INVALID error. */
int perq_hessian_finalize(perq_hessian *hs, perq_err *err);
void perq_hessian_free(perq_hessian *hs);

/* Copies the upper triangle of a row-major n x n matrix onto its lower one. */
void perq_sym_from_upper(float *a, int n);

/* ---- GPTQ --------------------------------------------------------------- */

#define PERQ_GPTQ_DAMP 0.01f
#define PERQ_GPTQ_BLOCK 128
#define PERQ_GPTQ_DAMP_RETRIES 3

typedef struct perq_gptq_opts {
    int group;              /* columns per scale; <= 0 or >= cols: per output channel */
    int act_order;          /* visit columns by descending diag(H) */
    float damp;             /* lambda as a fraction of mean(diag(H)) */
    int block;              /* lazy-batch width in columns */
    perq_dtype scale_dtype; /* F32, F16 or BF16: the dtype scales will be stored in */
    /* Called after each block with the columns done so far; a non-zero return
     * stops the call with PERQ_E_CANCELLED. May be NULL. */
    int (*progress)(void *ctx, int done, int total);
    void *progress_ctx;
} perq_gptq_opts;

/* Per channel, act-order, damp PERQ_GPTQ_DAMP, block PERQ_GPTQ_BLOCK, F32
 * scales, no progress callback. */
void perq_gptq_opts_default(perq_gptq_opts *o);

/* Everything GPTQ needs from H, independent of W: one factor serves every
 * linear layer fed by the same input (q/k/v, gate/up). */
typedef struct perq_gptq_factor {
    int n;
    int *perm;           /* visiting order: position k holds original column perm[k] */
    unsigned char *dead; /* by original column: H_ii was 0 */
    float *u;            /* n*n row-major, upper triangle (strict lower zero): the
                            Cholesky factor of (H + lambda I)^-1 in visiting order */
    float damp;          /* the fraction of mean(diag(H)) finally used */
    double seconds;      /* wall time of perq_gptq_factor_init */
} perq_gptq_factor;

/* h is [n][n] row-major and symmetric (both triangles are read: see
 * perq_sym_from_upper); it is not modified and may be freed once the factor
 * exists (the factor holds n*n floats of its own). Reads opts->act_order and opts->damp. Errors: n <= 0 or damp
 * not positive and finite (PERQ_E_INVALID); a non-finite or negative diagonal
 * element (PERQ_E_INVALID); not positive definite even after the retries
 * (PERQ_E_INVALID); memory (PERQ_E_NOMEM). */
int perq_gptq_factor_init(perq_gptq_factor *f, const float *h, int n, const perq_gptq_opts *opts,
                          perq_err *err);
void perq_gptq_factor_free(perq_gptq_factor *f);

typedef struct perq_gptq_stats {
    double loss;            /* sum over weights of (w - q s)^2 / (2 U_kk^2), GPTQ's
                               estimate of the increase of the layer's squared error */
    double factor_seconds;  /* Hessian factorisation (0 when the factor was given) */
    double block_seconds;   /* rounding inside blocks */
    double update_seconds;  /* the lazy-batch sgemm updates */
    double update_flops;    /* their floating-point operations */
    double seconds;         /* the whole call */
} perq_gptq_stats;

/* Quantizes w [rows][cols] (cols == f->n) with a factor of its Hessian. out
 * must be unallocated and is freed on failure; w_deq [rows][cols], when not
 * NULL, receives q * scale. stats may be NULL. Reads opts->group, block,
 * scale_dtype and the progress callback. A non-finite weight is a
 * PERQ_E_FORMAT error naming its row. */
int perq_gptq_quantize_factored(const perq_gptq_factor *f, const float *w, int rows, int cols,
                                const perq_gptq_opts *opts, perq_int4_matrix *out, float *w_deq,
                                perq_gptq_stats *stats, perq_err *err);

/* perq_gptq_factor_init + perq_gptq_quantize_factored. */
int perq_gptq_quantize(const float *w, int rows, int cols, const float *h, const perq_gptq_opts *opts,
                       perq_int4_matrix *out, float *w_deq, perq_gptq_stats *stats, perq_err *err);

#endif
