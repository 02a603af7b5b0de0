/* Per-token asymmetric INT4 activation fake quantization (see perq/actquant.h). */
#include "perq/actquant.h"

#include <math.h>
#include <stddef.h>

#define QMAX (PERQ_ACTQUANT_LEVELS - 1)

/* Below this many elements the rows are done on one thread. */
#define PARALLEL_MIN_ELEMENTS (1 << 16)

static float usable_clip(float clip)
{
    return clip > 0.0f && clip <= 1.0f ? clip : 1.0f;
}

/* Round half to even for any double: adding and taking away 2^52 drops every
 * fraction bit of a smaller magnitude in the default rounding mode. */
static inline double round_even(double v)
{
    const double two52 = 4503599627370496.0;
    double a = fabs(v);
    if (a < two52)
        a = (a + two52) - two52;
    return copysign(a, v);
}

void perq_actquant_params(const float *x, int n, float clip, float *scale, int *zero)
{
    *scale = 0.0f;
    *zero = 0;
    if (n <= 0)
        return;
    float lo = x[0], hi = x[0];
    int finite = 1;
    for (int i = 0; i < n; i++) {
        finite &= isfinite(x[i]) != 0;
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (!finite)
        return;
    float c = usable_clip(clip);
    lo *= c;
    hi *= c;
    float s = (float)(((double)hi - (double)lo) / QMAX);
    if (!(s > 0.0f))
        return;
    *scale = s;
    *zero = (int)round_even(-(double)lo / s);
}

static inline float fake_quantize(float x, double scale, double zero)
{
    double q = round_even((double)x / scale) + zero;
    q = q < 0.0 ? 0.0 : q;
    q = q > QMAX ? QMAX : q;
    return (float)((q - zero) * scale);
}

static void quantize_row(float *x, int n, float clip)
{
    float scale;
    int zero;
    perq_actquant_params(x, n, clip, &scale, &zero);
    if (scale == 0.0f)
        return;
    for (int i = 0; i < n; i++)
        x[i] = fake_quantize(x[i], scale, zero);
}

void perq_actquant_rows(float *x, int tokens, int cols, float clip)
{
    if (tokens <= 0 || cols <= 0)
        return;
    int parallel = tokens > 1 && (size_t)tokens * (size_t)cols >= PARALLEL_MIN_ELEMENTS;
#pragma omp parallel for schedule(static) if (parallel)
    for (int t = 0; t < tokens; t++)
        quantize_row(x + (size_t)t * (size_t)cols, cols, clip);
}

double perq_actquant_row_error(const float *x, int n, float clip)
{
    float scale;
    int zero;
    perq_actquant_params(x, n, clip, &scale, &zero);
    if (scale == 0.0f)
        return 0.0;
    double diff = 0.0, norm = 0.0;
    for (int i = 0; i < n; i++) {
        double d = (double)x[i] - (double)fake_quantize(x[i], scale, zero);
        diff += d * d;
        norm += (double)x[i] * (double)x[i];
    }
    return norm > 0.0 ? diff / norm : 0.0;
}

/* The rows are summed in a fixed number of contiguous slices, then the
 * slices in order, so that the figure does not depend on the thread count. */
#define SLICES 64

double perq_actquant_error(const float *x, int tokens, int cols, float clip)
{
    if (tokens <= 0 || cols <= 0)
        return 0.0;
    double partial[SLICES] = {0};
    int parallel = tokens > 1 && (size_t)tokens * (size_t)cols >= PARALLEL_MIN_ELEMENTS;
#pragma omp parallel for schedule(static) if (parallel)
    for (int k = 0; k < SLICES; k++) {
        int begin = (int)((long long)tokens * k / SLICES), end = (int)((long long)tokens * (k + 1) / SLICES);
        for (int t = begin; t < end; t++)
            partial[k] += perq_actquant_row_error(x + (size_t)t * (size_t)cols, cols, clip);
    }
    double sum = 0.0;
    for (int k = 0; k < SLICES; k++)
        sum += partial[k];
    return sum / tokens;
}
