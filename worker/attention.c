/* Causal self-attention with grouped KV heads, one query block at a time:
 * scores S = Q_blk K^T / sqrt(d) and output P V are sgemms, and keys after the
 * block's last query are never touched, so the masked half of the score matrix
 * is skipped except inside the diagonal block. */
#include <cblas.h>
#include <math.h>

#include "perq/forward.h"

enum { QUERY_BLOCK = 128 };

size_t perq_attention_scratch_floats(int seq_len)
{
    int block = seq_len < QUERY_BLOCK ? seq_len : QUERY_BLOCK;
    return (size_t)block * seq_len;
}

/* Row i of the block attends to keys 0..q0+i: softmax over them, zeros after. */
static void causal_softmax(float *scores, int rows, int q0, int n_keys)
{
#pragma omp parallel for schedule(static) if ((long long)rows * n_keys > 32768)
    for (int i = 0; i < rows; i++) {
        float *s = scores + (size_t)i * n_keys;
        int last = q0 + i;
        float max = s[0];
        for (int j = 1; j <= last; j++)
            max = s[j] > max ? s[j] : max;
        float sum = 0.0f;
        for (int j = 0; j <= last; j++) {
            s[j] = expf(s[j] - max);
            sum += s[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j <= last; j++)
            s[j] *= inv;
        for (int j = last + 1; j < n_keys; j++)
            s[j] = 0.0f;
    }
}

static void attend_head(const float *q, const float *k, const float *v, float *out, int seq_len, int q_stride,
                        int kv_stride, int head_dim, float *scores)
{
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int q0 = 0; q0 < seq_len; q0 += QUERY_BLOCK) {
        int rows = seq_len - q0 < QUERY_BLOCK ? seq_len - q0 : QUERY_BLOCK;
        int n_keys = q0 + rows;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_keys, head_dim, scale,
                    q + (size_t)q0 * q_stride, q_stride, k, kv_stride, 0.0f, scores, n_keys);
        causal_softmax(scores, rows, q0, n_keys);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, head_dim, n_keys, 1.0f, scores, n_keys,
                    v, kv_stride, 0.0f, out + (size_t)q0 * q_stride, q_stride);
    }
}

void perq_attention(const float *q, const float *k, const float *v, float *out, int n_seqs, int seq_len,
                    int heads, int kv_heads, int head_dim, float *scratch)
{
    int q_stride = heads * head_dim;
    int kv_stride = kv_heads * head_dim;
    int group = heads / kv_heads;
    for (int s = 0; s < n_seqs; s++) {
        size_t row0 = (size_t)s * seq_len;
        for (int h = 0; h < heads; h++) {
            int kvh = h / group;
            attend_head(q + row0 * q_stride + h * head_dim, k + row0 * kv_stride + kvh * head_dim,
                        v + row0 * kv_stride + kvh * head_dim, out + row0 * q_stride + h * head_dim,
                        seq_len, q_stride, kv_stride, head_dim, scratch);
        }
    }
}
