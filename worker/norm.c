/* RMSNorm: x / sqrt(mean(x^2) + eps) * w, per row. */
#include <math.h>

#include "perq/forward.h"

void perq_rmsnorm(const float *x, const float *w, float *out, long long rows, int dim, float eps)
{
#pragma omp parallel for schedule(static) if (rows * dim > 65536)
    for (long long r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = out + r * dim;
        double sum_sq = 0.0;
        for (int i = 0; i < dim; i++)
            sum_sq += (double)xr[i] * xr[i];
        float inv_rms = (float)(1.0 / sqrt(sum_sq / dim + eps));
        for (int i = 0; i < dim; i++)
            yr[i] = xr[i] * inv_rms * w[i];
    }
}
