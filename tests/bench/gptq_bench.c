/* GPTQ figures (built and run by bench_gptq.sh).
 *
 *   gptq_bench ROWS COLS [ROWS COLS ...]
 *     For each shape: random weights and a random SPD Hessian (G^T G / k plus a
 *     ridge, G [k][COLS] Gaussian), then perq_gptq_quantize with the paper's
 *     setting (act-order, per channel, 1% dampening, blocks of 128). Prints the
 *     GFLOP/s of the lazy-batch sgemm updates and of the whole call as
 *     fractions of a plain square sgemm's GFLOP/s measured in the same run
 *     (the mean of one measurement before and one after each shape), and the
 *     share of each stage in the call's wall time, and its time against RTN
 *     on the same matrix. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perq/blas.h"
#include "perq/gptq.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float normal(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    double u1 = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    double u2 = (double)(rng >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static float *random_floats(size_t n)
{
    float *a = malloc(n * sizeof *a);
    if (!a) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        a[i] = normal();
    return a;
}

/* Best GFLOP/s of a few square sgemms of order n. */
static double sgemm_peak(int n)
{
    float *a = random_floats((size_t)n * n), *b = random_floats((size_t)n * n), *c = random_floats((size_t)n * n);
    double best = 0.0;
    for (int round = 0; round < 4; round++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * n * (double)n * n / (now() - t0) / 1e9;
        best = g > best ? g : best;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* G^T G / k + 0.1 I: symmetric positive definite, far from diagonal. */
static float *random_hessian(int n, int k)
{
    float *g = random_floats((size_t)k * n);
    float *h = calloc((size_t)n * n, sizeof *h);
    if (!h) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, 1.0f / (float)k, g, n, 0.0f, h, n);
    for (int i = 0; i < n; i++)
        h[(size_t)i * n + i] += 0.1f;
    perq_sym_from_upper(h, n);
    free(g);
    return h;
}

static int run_shape(int rows, int cols)
{
    double peak_before = sgemm_peak(2048);
    float *w = random_floats((size_t)rows * cols);
    float *h = random_hessian(cols, 256);
    perq_gptq_opts o;
    perq_gptq_opts_default(&o);
    perq_int4_matrix m;
    perq_gptq_stats st;
    perq_err err = {0};
    if (perq_gptq_quantize(w, rows, cols, h, &o, &m, NULL, &st, &err) != 0) {
        fprintf(stderr, "gptq %d x %d: %s\n", rows, cols, err.msg);
        return 1;
    }
    perq_int4_matrix rtn;
    double t0 = now();
    if (perq_int4_rtn(w, rows, cols, 0, &rtn, &err) != 0) {
        fprintf(stderr, "rtn %d x %d: %s\n", rows, cols, err.msg);
        return 1;
    }
    double rtn_seconds = now() - t0;
    perq_int4_free(&rtn);
    double peak = 0.5 * (peak_before + sgemm_peak(2048));
    /* Floating-point work: Cholesky n^3/3, triangular inverse n^3/3, the
     * rounding inside blocks (one multiply-add per later column of the block),
     * the updates. */
    double n = cols, inblock_flops = 0.0;
    for (int j1 = 0; j1 < cols; j1 += o.block) {
        double bw = cols - j1 < o.block ? cols - j1 : o.block;
        inblock_flops += (double)rows * bw * (bw - 1.0);
    }
    double factor_flops = 2.0 * n * n * n / 3.0;
    double total = factor_flops + inblock_flops + st.update_flops;
    double upd = st.update_flops / st.update_seconds / 1e9, all = total / st.seconds / 1e9;
    double other = st.seconds - st.factor_seconds - st.block_seconds - st.update_seconds;
    printf("gptq %d x %d (act-order, per channel): %.2f s; update sgemm: %.0f GFLOP/s = %.2f of peak; "
           "whole call: %.0f GFLOP/s = %.2f of peak\n",
           rows, cols, st.seconds, upd, upd / peak, all, all / peak);
    printf("  shares: H factor %.0f%% (%.0f GFLOP/s), rounding in blocks %.0f%%, update sgemm %.0f%%, "
           "scales and layout %.0f%%\n",
           100.0 * st.factor_seconds / st.seconds, factor_flops / st.factor_seconds / 1e9,
           100.0 * st.block_seconds / st.seconds, 100.0 * st.update_seconds / st.seconds,
           100.0 * other / st.seconds);
    printf("  RTN of the same matrix (the scale search GPTQ starts from): %.2f s, GPTQ = %.1f x RTN\n", rtn_seconds,
           st.seconds / rtn_seconds);
    perq_int4_free(&m);
    free(h);
    free(w);
    return 0;
}

int main(int argc, char **argv)
{
    perq_blas_choose_kernel(argc, argv);
    if (argc < 3 || argc % 2 == 0) {
        fprintf(stderr, "usage: gptq_bench ROWS COLS [ROWS COLS ...]\n");
        return 2;
    }
    sgemm_peak(1024); /* warm up threads and clocks */
    double peak = sgemm_peak(2048);
    printf("sgemm peak (2048^3, %d threads, %s kernels): %.0f GFLOP/s\n", perq_blas_threads(), perq_blas_core(), peak);
    for (int i = 1; i + 1 < argc; i += 2)
        if (run_shape(atoi(argv[i]), atoi(argv[i + 1])) != 0)
            return 1;
    return 0;
}
