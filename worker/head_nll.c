/* Per-token NLL under lm_head, one block of vocab rows at a time (head_nll.h). */
#include "head_nll.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

enum {
    BLOCK_BYTES = 4 << 20,      /* fp32 head rows per block */
    LOGIT_FLOATS = 1 << 22,     /* logits per block: 16 MB */
    DROP_BYTES = 64 << 20,      /* widened bytes between drops of the mapped pages */
    WIDEN_ROWS = 32,            /* head rows per thread's share of a block */
};

/* The running log-sum-exp of every row, and its target's logit. */
typedef struct running {
    double *max, *sum, *target;
} running;

static int block_rows_for(const perq_model *m, int rows, int requested)
{
    int vocab = m->cfg.vocab_size;
    int b = requested;
    if (b <= 0) {
        b = BLOCK_BYTES / (m->cfg.hidden_size * (int)sizeof(float));
        if (b > LOGIT_FLOATS / rows)
            b = LOGIT_FLOATS / rows;
    }
    return b < 1 ? 1 : b > vocab ? vocab : b;
}

/* Rows [v0, v0 + n) of the head in fp32: in place when it is loaded, else
 * widened into buf on every core. */
static const float *head_block(const perq_model *m, int v0, int n, float *buf, perq_err *err)
{
    size_t hidden = (size_t)m->cfg.hidden_size;
    if (m->head)
        return m->head + (size_t)v0 * hidden;
    int failed = 0;
#pragma omp parallel for schedule(static) reduction(| : failed)
    for (int i = 0; i < n; i += WIDEN_ROWS) {
        perq_err local;
        int k = n - i < WIDEN_ROWS ? n - i : WIDEN_ROWS;
        failed |= perq_model_head_rows(m, v0 + i, k, buf + (size_t)i * hidden, &local) != 0;
    }
    if (failed) {
        perq_fail(err, PERQ_E_INTERNAL, "lm_head rows [%d, %d) could not be read", v0, v0 + n);
        return NULL;
    }
    return buf;
}

/* Folds the logits [rows][n] of vocab rows v0.. into the running sums. */
static void fold_block(const float *logits, int rows, int n, int v0, const int32_t *targets, running *run)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * n;
        float top = l[0];
        for (int j = 1; j < n; j++)
            top = l[j] > top ? l[j] : top;
        if (top > run->max[r]) {
            run->sum[r] *= exp(run->max[r] - top);
            run->max[r] = top;
        }
        double s = 0;
        for (int j = 0; j < n; j++)
            s += exp((double)l[j] - run->max[r]);
        run->sum[r] += s;
        int t = targets[r] - v0;
        if (t >= 0 && t < n)
            run->target[r] = l[t];
    }
}

static int check_args(const perq_model *m, int rows, const int32_t *targets, perq_err *err)
{
    if (rows < 1)
        return perq_fail(err, PERQ_E_INVALID, "no rows to score");
    for (int r = 0; r < rows; r++)
        if (targets[r] < 0 || targets[r] >= m->cfg.vocab_size)
            return perq_fail(err, PERQ_E_INVALID, "target %d of row %d is outside the vocabulary (%d)",
                             (int)targets[r], r, m->cfg.vocab_size);
    /* No rows asked: only whether the head has rows to read in place. */
    return perq_model_head_rows(m, 0, 0, NULL, err);
}

static int walk_head(const perq_model *m, const float *x, int rows, const int32_t *targets, int block,
                     float *buf, float *logits, running *run, perq_err *err)
{
    int vocab = m->cfg.vocab_size, hidden = m->cfg.hidden_size;
    size_t widened = 0;
    for (int v0 = 0; v0 < vocab; v0 += block) {
        int n = vocab - v0 < block ? vocab - v0 : block;
        const float *w = head_block(m, v0, n, buf, err);
        if (!w)
            return -1;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, hidden, 1.0f, x, hidden, w, hidden, 0.0f,
                    logits, n);
        fold_block(logits, rows, n, v0, targets, run);
        widened += m->head ? 0 : (size_t)n * hidden * sizeof(float);
        if (widened >= DROP_BYTES || (widened > 0 && v0 + n == vocab)) {
            perq_model_drop_mapped(m);
            widened = 0;
        }
    }
    return 0;
}

int perq_head_nll(const perq_model *m, const float *x, int rows, const int32_t *targets, int block_rows,
                  double *nll, perq_err *err)
{
    if (check_args(m, rows, targets, err) != 0)
        return -1;
    int block = block_rows_for(m, rows, block_rows);
    size_t hidden = (size_t)m->cfg.hidden_size;
    float *buf = m->head ? NULL : malloc((size_t)block * hidden * sizeof *buf);
    float *logits = malloc((size_t)rows * block * sizeof *logits);
    double *sums = malloc(3 * (size_t)rows * sizeof *sums);
    if ((!m->head && !buf) || !logits || !sums) {
        free(buf), free(logits), free(sums);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for %d x %d logits", rows, block);
    }
    running run = {sums, sums + rows, sums + 2 * (size_t)rows};
    for (int r = 0; r < rows; r++) {
        run.max[r] = -INFINITY;
        run.sum[r] = 0;
        run.target[r] = 0;
    }
    int rc = walk_head(m, x, rows, targets, block, buf, logits, &run, err);
    if (rc == 0)
        for (int r = 0; r < rows; r++)
            nll[r] = log(run.sum[r]) + run.max[r] - run.target[r];
    free(buf), free(logits), free(sums);
    return rc;
}
