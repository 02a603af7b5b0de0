/* Causal self-attention with grouped KV heads, one query block at a time:
 * scores S = Q_blk K^T / sqrt(d) and output P V are sgemms, and keys after the
 * block's last query are never touched, so the masked half of the score matrix
 * is skipped except inside the diagonal block.
 *
 * The (sequence, head) pairs are shared among OpenMP threads, each calling a
 * single-threaded sgemm: per-head products are too small for OpenBLAS's own
 * threads to pay, and two thread pools waking each other up on every small
 * product cost more than the products. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "perq/forward.h"
#include "vecmath.h"

enum { QUERY_BLOCK = 128 };

/* Per thread: a block of scores and the softmax denominator of each row. */
static size_t scratch_per_thread(int seq_len)
{
    int block = seq_len < QUERY_BLOCK ? seq_len : QUERY_BLOCK;
    return (size_t)block * seq_len + QUERY_BLOCK;
}

size_t perq_attention_scratch_floats(int seq_len)
{
    return scratch_per_thread(seq_len) * (size_t)omp_get_max_threads();
}

/* Row i of the block attends to keys 0..q0+i: exp(s - max) over them, zeros
 * after; sums[i] gets the denominator, applied to the output row later (a
 * head_dim-wide row instead of a key-wide one). */
static void causal_exp(float *scores, float *sums, int rows, int q0, int n_keys)
{
    for (int i = 0; i < rows; i++) {
        float *s = scores + (size_t)i * n_keys;
        int seen = q0 + i + 1;
        sums[i] = perq_vexp_shifted(s, (size_t)seen);
        memset(s + seen, 0, (size_t)(n_keys - seen) * sizeof *s);
    }
}

static void attend_head(const float *q, const float *k, const float *v, float *out, int seq_len, int q_stride,
                        int kv_stride, int head_dim, float *scratch)
{
    float scale = 1.0f / sqrtf((float)head_dim);
    float *sums = scratch;
    float *scores = scratch + QUERY_BLOCK;
    for (int q0 = 0; q0 < seq_len; q0 += QUERY_BLOCK) {
        int rows = seq_len - q0 < QUERY_BLOCK ? seq_len - q0 : QUERY_BLOCK;
        int n_keys = q0 + rows;
        float *o = out + (size_t)q0 * q_stride;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_keys, head_dim, scale,
                    q + (size_t)q0 * q_stride, q_stride, k, kv_stride, 0.0f, scores, n_keys);
        causal_exp(scores, sums, rows, q0, n_keys);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, head_dim, n_keys, 1.0f, scores, n_keys, v,
                    kv_stride, 0.0f, o, q_stride);
        for (int i = 0; i < rows; i++) {
            float inv = 1.0f / sums[i];
            for (int d = 0; d < head_dim; d++)
                o[(size_t)i * q_stride + d] *= inv;
        }
    }
}

void perq_attention(const float *q, const float *k, const float *v, float *out, int n_seqs, int seq_len,
                    int heads, int kv_heads, int head_dim, float *scratch, size_t scratch_floats)
{
    int q_stride = heads * head_dim;
    int kv_stride = kv_heads * head_dim;
    int group = heads / kv_heads;
    int blas_threads = openblas_get_num_threads();
    int threads = omp_get_max_threads();
    if ((size_t)threads * scratch_per_thread(seq_len) > scratch_floats)
        threads = (int)(scratch_floats / scratch_per_thread(seq_len));
    if (threads < 1)
        threads = 1; /* a caller below one share broke the contract; do not make it worse */
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int pair = 0; pair < n_seqs * heads; pair++) {
        int s = pair / heads, h = pair % heads, kvh = h / group;
        size_t row0 = (size_t)s * seq_len;
        float *mine = scratch + (size_t)omp_get_thread_num() * scratch_per_thread(seq_len);
        attend_head(q + row0 * q_stride + h * head_dim, k + row0 * kv_stride + kvh * head_dim,
                    v + row0 * kv_stride + kvh * head_dim, out + row0 * q_stride + h * head_dim, seq_len,
                    q_stride, kv_stride, head_dim, mine);
    }
    openblas_set_num_threads(blas_threads);
}
