/* INT4 round-to-nearest with MSE-searched scales (see perq/int4.h). */
#include "perq/int4.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define QMIN (-8)
#define QMAX 7
/* Half the span of the grid: absmax / QHALF is the scale that clips nothing. */
#define QHALF 7.5f

/* Below this many weights a matrix is rounded on one thread. */
#define PARALLEL_MIN_WEIGHTS (1 << 15)

int perq_int4_alloc(perq_int4_matrix *m, int rows, int cols, int group, perq_err *err)
{
    memset(m, 0, sizeof *m);
    if (rows <= 0 || cols <= 0)
        return perq_fail(err, PERQ_E_INVALID, "int4 matrix of %d x %d", rows, cols);
    if (group <= 0 || group > cols)
        group = cols;
    int n_groups = (cols + group - 1) / group;
    size_t n = (size_t)rows * (size_t)cols;
    m->q = malloc(n);
    m->scales = malloc((size_t)rows * (size_t)n_groups * sizeof *m->scales);
    if (!m->q || !m->scales) {
        perq_int4_free(m);
        return perq_fail(err, PERQ_E_NOMEM, "int4 matrix of %d x %d", rows, cols);
    }
    m->rows = rows;
    m->cols = cols;
    m->group = group;
    m->n_groups = n_groups;
    return 0;
}

void perq_int4_free(perq_int4_matrix *m)
{
    free(m->q);
    free(m->scales);
    memset(m, 0, sizeof *m);
}

/* clamp(round(w / s)) with round half to even. Clamping first keeps x small
 * enough for the 1.5 * 2^23 trick, which rounds in the current (nearest-even)
 * mode with two additions that every vector unit has (no SSE4.1 round). */
#define MAGIC 12582912.0f /* 1.5 * 2^23 */

static inline float quantize_one(float w, float s)
{
    float x = w / s;
    x = x < (float)QMIN ? (float)QMIN : x;
    x = x > (float)QMAX ? (float)QMAX : x;
    return (x + MAGIC) - MAGIC;
}

void perq_int4_round(const float *w, int n, float scale, int8_t *q)
{
    if (!(scale > 0.0f)) {
        memset(q, 0, (size_t)(n > 0 ? n : 0));
        return;
    }
    for (int i = 0; i < n; i++)
        q[i] = (int8_t)quantize_one(w[i], scale);
}

/* ---- the search's inner loop ------------------------------------------------
 * sum((w - q*s)^2) runs PERQ_INT4_CLIP_STEPS times over every weight, so it is
 * written for the vector unit (GCC keeps IEEE trapping semantics and does not
 * vectorise the clamp by itself). Each path rounds exactly as quantize_one,
 * squares in fp32 and adds in double in one fixed order (eight lanes, then the
 * lanes in order, then the tail), so every machine picks the same scales. */
#define LANES 8

static double sum_lanes(const double lanes[LANES], double tail)
{
    double e = 0.0;
    for (int k = 0; k < LANES; k++)
        e += lanes[k];
    return e + tail;
}

static double square_error(float w, float s)
{
    float d = w - quantize_one(w, s) * s;
    return (double)(d * d);
}

static double tail_error(const float *w, int begin, int n, float s)
{
    double e = 0.0;
    for (int i = begin; i < n; i++)
        e += square_error(w[i], s);
    return e;
}

static double sq_error_c(const float *w, int n, float s)
{
    double lanes[LANES] = {0};
    int body = n - n % LANES;
    for (int i = 0; i < body; i += LANES)
        for (int k = 0; k < LANES; k++)
            lanes[k] += square_error(w[i + k], s);
    return sum_lanes(lanes, tail_error(w, body, n, s));
}

#if defined(__x86_64__)
#include <immintrin.h>

/* Four weights at a time; min/max clamp like quantize_one for every finite
 * quotient (and for infinities, when s is tiny). */
static inline __m128 sse_square_error(__m128 x, __m128 vs)
{
    __m128 q = _mm_div_ps(x, vs);
    q = _mm_min_ps(_mm_max_ps(q, _mm_set1_ps((float)QMIN)), _mm_set1_ps((float)QMAX));
    q = _mm_sub_ps(_mm_add_ps(q, _mm_set1_ps(MAGIC)), _mm_set1_ps(MAGIC));
    __m128 d = _mm_sub_ps(x, _mm_mul_ps(q, vs));
    return _mm_mul_ps(d, d);
}

static double sq_error_sse2(const float *w, int n, float s)
{
    const __m128 vs = _mm_set1_ps(s);
    __m128d acc[LANES / 2] = {_mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd()};
    int body = n - n % LANES;
    for (int i = 0; i < body; i += LANES)
        for (int h = 0; h < 2; h++) {
            __m128 d2 = sse_square_error(_mm_loadu_ps(w + i + 4 * h), vs);
            acc[2 * h] = _mm_add_pd(acc[2 * h], _mm_cvtps_pd(d2));
            acc[2 * h + 1] = _mm_add_pd(acc[2 * h + 1], _mm_cvtps_pd(_mm_movehl_ps(d2, d2)));
        }
    double lanes[LANES];
    for (int k = 0; k < LANES / 2; k++)
        _mm_storeu_pd(lanes + 2 * k, acc[k]);
    return sum_lanes(lanes, tail_error(w, body, n, s));
}

__attribute__((target("avx"))) static double sq_error_avx(const float *w, int n, float s)
{
    const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps((float)QMIN), hi = _mm256_set1_ps((float)QMAX);
    const __m256 magic = _mm256_set1_ps(MAGIC);
    __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
    int body = n - n % LANES;
    for (int i = 0; i < body; i += LANES) {
        __m256 x = _mm256_loadu_ps(w + i);
        __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(x, vs), lo), hi);
        q = _mm256_sub_ps(_mm256_add_ps(q, magic), magic);
        __m256 d = _mm256_sub_ps(x, _mm256_mul_ps(q, vs));
        __m256 d2 = _mm256_mul_ps(d, d);
        acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(d2)));
        acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(d2, 1)));
    }
    double lanes[LANES];
    _mm256_storeu_pd(lanes, acc_lo);
    _mm256_storeu_pd(lanes + 4, acc_hi);
    return sum_lanes(lanes, tail_error(w, body, n, s));
}
#endif

static double zero_scale_error(const float *w, int n)
{
    double e = 0.0;
    for (int i = 0; i < n; i++)
        e += (double)w[i] * (double)w[i];
    return e;
}

double perq_int4_sq_error_impl(const float *w, int n, float scale, perq_int4_impl impl)
{
    if (!(scale > 0.0f))
        return zero_scale_error(w, n);
    switch (impl) {
    case PERQ_INT4_IMPL_C:
        return sq_error_c(w, n, scale);
#if defined(__x86_64__)
    case PERQ_INT4_IMPL_SSE2:
        return sq_error_sse2(w, n, scale);
    case PERQ_INT4_IMPL_AVX:
        return __builtin_cpu_supports("avx") ? sq_error_avx(w, n, scale) : NAN;
#endif
    default:
        return NAN;
    }
}

double perq_int4_sq_error(const float *w, int n, float scale)
{
    if (!(scale > 0.0f))
        return zero_scale_error(w, n);
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx") ? sq_error_avx(w, n, scale) : sq_error_sse2(w, n, scale);
#else
    return sq_error_c(w, n, scale);
#endif
}

static float largest_finite(perq_dtype dtype)
{
    switch (dtype) {
    case PERQ_DT_F16: return 65504.0f;
    case PERQ_DT_BF16: return 0x1.fep127f;
    default: return 0x1.fffffep127f;
    }
}

float perq_int4_round_scale(float s, perq_dtype dtype)
{
    float r = s;
    if (dtype == PERQ_DT_F16)
        r = perq_f16_to_f32(perq_f32_to_f16(s));
    else if (dtype == PERQ_DT_BF16)
        r = perq_bf16_to_f32(perq_f32_to_bf16(s));
    if (isinf(r))
        r = r > 0 ? largest_finite(dtype) : -largest_finite(dtype);
    return r;
}

static float absmax(const float *w, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(w[i]);
        m = a > m ? a : m;
    }
    return m;
}

float perq_int4_mse_scale_as(const float *w, int n, perq_dtype scale_dtype)
{
    float amax = absmax(w, n);
    if (!(amax > 0.0f))
        return 0.0f;
    float best_scale = 0.0f;
    double best_err = INFINITY;
    float prev = -1.0f;
    for (int step = 0; step < PERQ_INT4_CLIP_STEPS; step++) {
        float ratio = 1.0f - 0.01f * (float)step;
        float s = perq_int4_round_scale(amax * ratio / QHALF, scale_dtype);
        if (s == prev)  /* neighbouring ratios often round to one BF16 value */
            continue;
        prev = s;
        double e = perq_int4_sq_error(w, n, s);
        if (e < best_err) {
            best_err = e;
            best_scale = s;
        }
    }
    return best_scale;
}

float perq_int4_mse_scale(const float *w, int n)
{
    return perq_int4_mse_scale_as(w, n, PERQ_DT_F32);
}

static int all_finite(const float *w, int n)
{
    int ok = 1;
    for (int i = 0; i < n; i++)
        ok &= isfinite(w[i]) != 0;
    return ok;
}

static void rtn_row(const float *w, const perq_int4_matrix *m, int r, perq_dtype scale_dtype)
{
    const float *row = w + (size_t)r * (size_t)m->cols;
    int8_t *q = m->q + (size_t)r * (size_t)m->cols;
    for (int g = 0; g < m->n_groups; g++) {
        int begin = g * m->group;
        int len = m->cols - begin < m->group ? m->cols - begin : m->group;
        float s = perq_int4_mse_scale_as(row + begin, len, scale_dtype);
        m->scales[(size_t)r * (size_t)m->n_groups + (size_t)g] = s;
        perq_int4_round(row + begin, len, s, q + begin);
    }
}

int perq_int4_rtn_as(const float *w, int rows, int cols, int group, perq_dtype scale_dtype,
                     perq_int4_matrix *out, perq_err *err)
{
    if (scale_dtype != PERQ_DT_F32 && scale_dtype != PERQ_DT_F16 && scale_dtype != PERQ_DT_BF16)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "int4 scales in %s",
                         perq_dtype_name(scale_dtype) ? perq_dtype_name(scale_dtype) : "?");
    if (perq_int4_alloc(out, rows, cols, group, err) != 0)
        return -1;
    int bad_row = -1;
    int parallel = (size_t)rows * (size_t)cols >= PARALLEL_MIN_WEIGHTS;
#pragma omp parallel for schedule(dynamic, 8) if (parallel) reduction(max : bad_row)
    for (int r = 0; r < rows; r++) {
        if (!all_finite(w + (size_t)r * (size_t)cols, cols)) {
            bad_row = r > bad_row ? r : bad_row;
            continue;
        }
        rtn_row(w, out, r, scale_dtype);
    }
    if (bad_row >= 0) {
        perq_int4_free(out);
        return perq_fail(err, PERQ_E_FORMAT, "non-finite weight in row %d", bad_row);
    }
    return 0;
}

int perq_int4_rtn(const float *w, int rows, int cols, int group, perq_int4_matrix *out, perq_err *err)
{
    return perq_int4_rtn_as(w, rows, cols, group, PERQ_DT_F32, out, err);
}

void perq_int4_dequantize(const perq_int4_matrix *m, float *w)
{
    for (int r = 0; r < m->rows; r++) {
        const int8_t *q = m->q + (size_t)r * (size_t)m->cols;
        const float *scales = m->scales + (size_t)r * (size_t)m->n_groups;
        float *row = w + (size_t)r * (size_t)m->cols;
        for (int c = 0; c < m->cols; c++)
            row[c] = (float)q[c] * scales[c / m->group];
    }
}

size_t perq_int4_packed_cols(int cols)
{
    return cols > 0 ? ((size_t)cols + 7) / 8 : 0;
}

void perq_int4_pack(const int8_t *q, int rows, int cols, int32_t *packed)
{
    size_t words = perq_int4_packed_cols(cols);
    for (int r = 0; r < rows; r++) {
        const int8_t *row = q + (size_t)r * (size_t)cols;
        for (size_t i = 0; i < words; i++) {
            uint32_t word = 0;
            for (int k = 0; k < 8; k++) {
                size_t c = 8 * i + (size_t)k;
                if (c < (size_t)cols)
                    word |= (uint32_t)((row[c] + 8) & 0xF) << (4 * k);
            }
            memcpy(&packed[(size_t)r * words + i], &word, sizeof word);
        }
    }
}

void perq_int4_unpack(const int32_t *packed, int rows, int cols, int8_t *q)
{
    size_t words = perq_int4_packed_cols(cols);
    for (int r = 0; r < rows; r++) {
        int8_t *row = q + (size_t)r * (size_t)cols;
        for (int c = 0; c < cols; c++) {
            uint32_t word;
            memcpy(&word, &packed[(size_t)r * words + (size_t)c / 8], sizeof word);
            row[c] = (int8_t)((int)((word >> (4 * (c % 8))) & 0xF) - 8);
        }
    }
}
