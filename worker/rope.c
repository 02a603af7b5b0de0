/* Rotary position embeddings in Hugging Face's rotate-half layout: element i of
 * the first half of a head pairs with element i of the second half, and pair i
 * turns by angle position * inv_freq[i]. */
#include <math.h>

#include "perq/forward.h"

static const double pi = 3.14159265358979323846;

/* Llama 3: long wavelengths are slowed by factor, short ones kept, and the band
 * between blended smoothly (transformers' _compute_llama3_parameters). */
static double llama3_scaled(const perq_llama_config *cfg, double inv_freq)
{
    double factor = cfg->rope_scaling.factor;
    double low = cfg->rope_scaling.low_freq_factor;
    double high = cfg->rope_scaling.high_freq_factor;
    double old_ctx = cfg->rope_scaling.original_max_position_embeddings;
    double low_freq_wavelen = old_ctx / low;
    double high_freq_wavelen = old_ctx / high;
    double wavelen = 2.0 * pi / inv_freq;
    if (wavelen < high_freq_wavelen)
        return inv_freq;
    if (wavelen > low_freq_wavelen)
        return inv_freq / factor;
    double smooth = (old_ctx / wavelen - low) / (high - low);
    return (1.0 - smooth) * inv_freq / factor + smooth * inv_freq;
}

void perq_rope_inv_freq(const perq_llama_config *cfg, int head_dim, double *inv_freq)
{
    for (int i = 0; i < head_dim / 2; i++) {
        double f = 1.0 / pow(cfg->rope_theta, (2.0 * i) / head_dim);
        switch (cfg->rope_scaling.type) {
        case PERQ_ROPE_LINEAR:
            f /= cfg->rope_scaling.factor;
            break;
        case PERQ_ROPE_LLAMA3:
            f = llama3_scaled(cfg, f);
            break;
        case PERQ_ROPE_DEFAULT:
            break;
        }
        inv_freq[i] = f;
    }
}

void perq_rope_tables(const perq_llama_config *cfg, int head_dim, int seq_len, float *cos_t, float *sin_t)
{
    int half = head_dim / 2;
    double inv_freq[half > 0 ? half : 1];
    perq_rope_inv_freq(cfg, head_dim, inv_freq);
    for (int t = 0; t < seq_len; t++)
        for (int i = 0; i < half; i++) {
            double angle = t * inv_freq[i];
            cos_t[t * half + i] = (float)cos(angle);
            sin_t[t * half + i] = (float)sin(angle);
        }
}

void perq_rope_apply(float *x, int n_seqs, int seq_len, int n_heads, int head_dim, const float *cos_t,
                     const float *sin_t)
{
    int half = head_dim / 2;
    long long rows = (long long)n_seqs * seq_len;
    int width = n_heads * head_dim;
#pragma omp parallel for schedule(static) if (rows * width > 65536)
    for (long long r = 0; r < rows; r++) {
        const float *c = cos_t + (r % seq_len) * half;
        const float *s = sin_t + (r % seq_len) * half;
        for (int h = 0; h < n_heads; h++) {
            float *a = x + r * width + h * head_dim;
            float *b = a + half;
            for (int i = 0; i < half; i++) {
                float x1 = a[i], x2 = b[i];
                a[i] = x1 * c[i] - x2 * s[i];
                b[i] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}
