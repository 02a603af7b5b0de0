/* The Hessian of a linear layer's inputs, accumulated over batches (see perq/gptq.h). */
#include "perq/gptq.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

int perq_hessian_init(perq_hessian *hs, int n, perq_err *err)
{
    memset(hs, 0, sizeof *hs);
    if (n <= 0)
        return perq_fail(err, PERQ_E_INVALID, "Hessian of width %d", n);
    hs->h = calloc((size_t)n * (size_t)n, sizeof *hs->h);
    if (!hs->h)
        return perq_fail(err, PERQ_E_NOMEM, "Hessian of width %d", n);
    hs->n = n;
    return 0;
}

int perq_hessian_add(perq_hessian *hs, const float *x, int tokens, perq_err *err)
{
    if (hs->finalized)
        return perq_fail(err, PERQ_E_INVALID, "Hessian: rows added after finalize");
    if (tokens < 0)
        return perq_fail(err, PERQ_E_INVALID, "Hessian: %d rows", tokens);
    if (tokens == 0)
        return 0;
    /* Row-major upper triangle of X^T X: C[i][j] += sum_t x[t][i] x[t][j]. */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, hs->n, tokens, 1.0f, x, hs->n, 1.0f, hs->h, hs->n);
    hs->tokens += tokens;
    return 0;
}

/* Copies the upper triangle onto the lower one, tile by tile so that the
 * column-wise reads stay in cache. */
#define TILE 64
void perq_sym_from_upper(float *h, int width)
{
    size_t n = width > 0 ? (size_t)width : 0;
    for (size_t i0 = 0; i0 < n; i0 += TILE)
        for (size_t j0 = 0; j0 <= i0; j0 += TILE)
            for (size_t i = i0; i < n && i < i0 + TILE; i++)
                for (size_t j = j0; j < i && j < j0 + TILE; j++)
                    h[i * n + j] = h[j * n + i];
}

int perq_hessian_finalize(perq_hessian *hs, perq_err *err)
{
    if (hs->finalized)
        return 0;
    if (hs->tokens <= 0)
        return perq_fail(err, PERQ_E_INVALID, "Hessian of no calibration rows");
    size_t n = (size_t)hs->n;
    float scale = (float)(2.0 / (double)hs->tokens);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i; j < n; j++)
            hs->h[i * n + j] *= scale;
    perq_sym_from_upper(hs->h, hs->n);
    hs->finalized = 1;
    return 0;
}

void perq_hessian_free(perq_hessian *hs)
{
    free(hs->h);
    memset(hs, 0, sizeof *hs);
}
