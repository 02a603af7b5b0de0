/* Elementwise kernels, compiled for AVX-512, AVX2 and the baseline and picked
 * at load time (target_clones), so that the exponentials of softmax and SiLU
 * run as wide as the sgemms around them. */
#include "vecmath.h"

#include <stdint.h>

/* The clamps of exp_one must become plain vmaxps/vminps: with IEEE NaN and
 * signed-zero rules GCC turns them into selects, threads each select through
 * the code after it, and in SwiGLU then divides every lane by 1 + e^88 just in
 * case, whose denormal results cost a microcode assist each (ten times the
 * whole kernel). These kernels see finite values only and never test flags. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "finite-math-only", "no-signed-zeros")
#endif
/* Instrumented builds (sanitizers, fuzzing) may not vectorise: not an error. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* exp(x) = 2^k * exp(r) with k = round(x / ln 2) and |r| <= ln(2)/2; exp(r)
 * by its Taylor series to r^7 (truncation error below 2e-8 relative). ln 2 is
 * split in two so that k * ln2_hi is exact. */
static inline __attribute__((always_inline)) float exp_one(float x)
{
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    float k = (x * log2e + round_magic) - round_magic;
    float r = x - k * ln2_hi - k * ln2_lo;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t bits; float value; } scale = {((int32_t)k + 127) << 23};
    return p * scale.value;
}

VECTOR_CLONES void perq_vexp(float *x, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++)
        x[i] = exp_one(x[i]);
}

VECTOR_CLONES void perq_vswiglu(float *gate, const float *up, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + exp_one(-g)) * up[i];
    }
}

VECTOR_CLONES float perq_vexp_shifted(float *s, size_t n)
{
    float max = s[0];
#pragma omp simd reduction(max : max)
    for (size_t i = 0; i < n; i++)
        max = s[i] > max ? s[i] : max;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (size_t i = 0; i < n; i++) {
        s[i] = exp_one(s[i] - max);
        sum += s[i];
    }
    return sum;
}

void perq_vsoftmax(float *s, size_t n)
{
    float inv = 1.0f / perq_vexp_shifted(s, n);
    for (size_t i = 0; i < n; i++)
        s[i] *= inv;
}
