/* Hadamard rotation figures (built and run by bench_hadamard.sh).
 *
 * For each width, x <- x R on a [rows][width] activation buffer of about
 * 64 MB: the bandwidth it achieves (one read and one write of the buffer)
 * against memcpy of the same buffer, and its speed against a dense x R run at
 * the sgemm peak, both measured in the same run. Then block-diagonal rotations
 * (R3 with block b) and the left form on a weight (W <- R^T W). Each figure is
 * the best of ROUNDS, rounds of the measured operation alternating with the
 * memcpy they are compared to. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perq/blas.h"
#include "perq/hadamard.h"

#define ROUNDS 5
#define BUFFER_FLOATS (16u << 20)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double sgemm_peak_gflops(void)
{
    enum { N = 2048 };
    float *a = malloc((size_t)N * N * sizeof *a), *b = malloc((size_t)N * N * sizeof *b);
    float *c = malloc((size_t)N * N * sizeof *c);
    for (size_t i = 0; i < (size_t)N * N; i++)
        a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        double t = now() - t0;
        if (t < best)
            best = t;
    }
    free(a), free(b), free(c);
    return 2.0 * N * N * (double)N / best / 1e9;
}

typedef struct {
    double op, copy; /* best seconds */
} timing;

/* Best of ROUNDS for rotating x (right or left form) and for memcpy of the same bytes. */
static timing time_rotation(const perq_rotation *r, float *x, float *spare, size_t rows, size_t width, int left)
{
    timing best = {1e30, 1e30};
    perq_err err = {0};
    size_t bytes = rows * width * sizeof *x;
    for (int round = 0; round < ROUNDS; round++) {
        double t0 = now();
        int rc = left ? perq_rotation_left(r, x, width, rows, PERQ_ROT_T, &err)
                      : perq_rotation_right(r, x, rows, width, PERQ_ROT_N, &err);
        double t1 = now();
        memcpy(spare, x, bytes);
        double t2 = now();
        if (rc != 0) {
            fprintf(stderr, "rotation failed: %s\n", err.msg);
            exit(1);
        }
        if (t1 - t0 < best.op)
            best.op = t1 - t0;
        if (t2 - t1 < best.copy)
            best.copy = t2 - t1;
    }
    return best;
}

int main(int argc, char **argv)
{
    perq_blas_choose_kernel(argc, argv);
    float *x = malloc(BUFFER_FLOATS * sizeof *x), *spare = malloc(BUFFER_FLOATS * sizeof *spare);
    for (size_t i = 0; i < BUFFER_FLOATS; i++)
        x[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    memcpy(spare, x, BUFFER_FLOATS * sizeof *x);
    double peak = sgemm_peak_gflops();
    printf("sgemm peak (2048^3, OpenBLAS %s, %d threads): %.1f GFLOP/s; buffers of %.0f MB\n", perq_blas_core(),
           perq_blas_threads(), peak, BUFFER_FLOATS * 4.0 / 1e6);

    const int widths[] = {2048, 4096, 8192, 11008, 13696, 14336, 29568};
    for (size_t t = 0; t < sizeof widths / sizeof widths[0]; t++) {
        perq_rotation r;
        perq_err err = {0};
        if (perq_rotation_init(&r, widths[t], 1, &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        size_t n = (size_t)r.n, rows = BUFFER_FLOATS / n;
        timing tm = time_rotation(&r, x, spare, rows, n, 0);
        double dense = 2.0 * rows * n * (double)n / (peak * 1e9);
        printf("x R, width %zu = %s, %zu rows: %.2f of memcpy bandwidth (%.1f vs %.1f GB/s), "
               "%.0fx faster than a dense x R at sgemm peak\n",
               n, r.how, rows, tm.copy / tm.op, 2.0 * rows * n * 4 / tm.op / 1e9, 2.0 * rows * n * 4 / tm.copy / 1e9,
               dense / tm.op);
        perq_rotation_free(&r);
    }

    const int blocks[] = {16, 32, 64, 128, 256, 512};
    for (size_t t = 0; t < sizeof blocks / sizeof blocks[0]; t++) {
        perq_rotation r;
        perq_err err = {0};
        perq_rotation_init(&r, blocks[t], 1, &err);
        size_t width = 8192, rows = BUFFER_FLOATS / width;
        timing tm = time_rotation(&r, x, spare, rows, width, 0);
        printf("block rotation b=%d on width %zu, %zu rows: %.2f of memcpy bandwidth\n", blocks[t], width, rows,
               tm.copy / tm.op);
        perq_rotation_free(&r);
    }

    const int left_widths[] = {4096, 11008};
    for (size_t t = 0; t < sizeof left_widths / sizeof left_widths[0]; t++) {
        perq_rotation r;
        perq_err err = {0};
        perq_rotation_init(&r, left_widths[t], 1, &err);
        size_t width = (size_t)r.n, cols = BUFFER_FLOATS / width;
        timing tm = time_rotation(&r, x, spare, cols, width, 1);
        printf("W <- R^T W, W [%zu][%zu] (%s): %.2f of memcpy bandwidth\n", width, cols, r.how, tm.copy / tm.op);
        perq_rotation_free(&r);
    }
    free(x), free(spare);
    return 0;
}
