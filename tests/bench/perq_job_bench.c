/* Helpers of bench_perq.sh, built against build/libperq.a so that they use
 * the same OpenBLAS kernel choice as the perq job they are compared with.
 *
 *   perq_job_bench peak
 *     Best GFLOP/s of a few square sgemms of order 2048 (after a warm-up).
 *   perq_job_bench budget DIR SEQS SEQ_LEN
 *     What a perq job (mode full, W4A4, GPTQ) on the checkpoint in DIR with
 *     SEQS x SEQ_LEN calibration tokens keeps in memory at once, in bytes, one
 *     "name bytes" line each:
 *       layer        one decoder layer in fp32 (perq_model_layer_bytes)
 *       activations  the calibration residual stream plus one micro-batch's
 *                    workspace (perq_layerwise_activation_bytes)
 *       gptq         the larger of what two moments of a layer hold:
 *                    quantizing, the four Hessians (q/k/v, o, gate/up, down
 *                    inputs) and their four GPTQ factors, n*n floats each,
 *                    plus one dequantized matrix; or, just before, the four
 *                    Hessians and the down_proj input rows kept (GPTQ with R3
 *                    keeps every calibration token's while they fit in 1 GiB
 *                    or one layer plus the residual stream; its down_proj
 *                    Hessian is made from them after P3 and R3, then they are
 *                    freed)
 *       int4         the compressed-tensors export's packed weights (half a
 *                    byte per weight) and scales for every layer, plus one
 *                    layer's int8 values (perq_int4_matrix) and fp32 scales
 *                    until the export takes them (perq_pipeline_sink)
 *       export       one block of embedding or lm_head rows in fp32 and
 *                    converted (export_rows.h)
 *     The embedding and lm_head are never held whole in fp32: the calibration
 *     stream is rotated after the lookup, and the export folds the final norm
 *     and P1 R1 into their rows block by block as it writes them. */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "export_rows.h"
#include "perq/blas.h"
#include "perq/forward.h"
#include "perq/model.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static float *filled(size_t n)
{
    float *a = malloc(n * sizeof *a);
    if (!a) {
        fprintf(stderr, "perq_job_bench: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        a[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    return a;
}

static double sgemm_gflops(int n, int rounds)
{
    float *a = filled((size_t)n * n), *b = filled((size_t)n * n), *c = filled((size_t)n * n);
    double best = 0.0;
    for (int r = 0; r < rounds; r++) {
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

static int run_peak(void)
{
    sgemm_gflops(1024, 2); /* threads and clocks up */
    printf("%.2f %s %d\n", sgemm_gflops(2048, 4), perq_blas_core(), perq_blas_threads());
    return 0;
}

static int run_budget(const char *dir, int seqs, int seq_len)
{
    perq_model *m;
    perq_err err = {0};
    if (perq_model_open(dir, &m, &err) != 0) {
        fprintf(stderr, "perq_job_bench: %s\n", err.msg);
        return 1;
    }
    const perq_llama_config *c = &m->cfg;
    int32_t *ids = calloc((size_t)seqs * seq_len, sizeof *ids);
    perq_layerwise *lw = NULL;
    if (!ids || perq_layerwise_begin(m, ids, seqs, seq_len, 0, &lw, &err) != 0) {
        fprintf(stderr, "perq_job_bench: %s\n", ids ? err.msg : "out of memory");
        return 1;
    }
    double hidden = c->hidden_size, inter = c->intermediate_size, q = (double)c->num_attention_heads * c->head_dim;
    double kv = (double)c->num_key_value_heads * c->head_dim;
    double hessians = hidden * hidden + q * q + hidden * hidden + inter * inter;
    double weights = hidden * (2 * q + 2 * kv + 3 * inter);
    printf("layer %zu\n", perq_model_layer_bytes(c));
    printf("activations %zu\n", perq_layerwise_activation_bytes(lw));
    double out_channels = q + 2 * kv + 2 * hidden + 2 * inter; /* rows of the seven linears */
    double quantizing = 2.0 * hessians * 4 + hidden * inter * 4;
    double kept_rows = hessians * 4 + (double)seqs * seq_len * inter * 4;
    printf("gptq %.0f\n", quantizing > kept_rows ? quantizing : kept_rows);
    printf("int4 %.0f\n", (weights * 0.5 + out_channels * 4) * c->num_hidden_layers + weights + out_channels * 4);
    printf("export %.0f\n", (double)perq_export_block_rows(c->hidden_size) * hidden * (4 + 2));
    perq_layerwise_free(lw);
    free(ids);
    perq_model_close(m);
    return 0;
}

int main(int argc, char **argv)
{
    perq_blas_choose_kernel(argc, argv);
    if (argc == 2 && !strcmp(argv[1], "peak"))
        return run_peak();
    if (argc == 5 && !strcmp(argv[1], "budget"))
        return run_budget(argv[2], atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: perq_job_bench peak | budget DIR SEQS SEQ_LEN\n");
    return 2;
}
