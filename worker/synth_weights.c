/* The values of a synthetic checkpoint, one row at a time.
 *
 * Every row has its own random stream, keyed by the seed, the tensor's name and
 * the row index, so rows can be made in any order on any number of threads and
 * the bytes never change. Values are about N(0, 0.02) (0.02 is the
 * initializer_range of Llama configs), with per-matrix and per-row scales that
 * vary the way trained weights do, rare heavy-tailed entries, and the outliers
 * of synth_plan.c. Norm weights are about 1. */
#include <math.h>
#include <string.h>

#include "synth.h"

#define WEIGHT_STD 0.02
/* Mean |z| of a standard normal, sqrt(2/pi): keeps a planted residual channel's
 * mean |x| at its scale times the others'. */
#define MEAN_ABS_NORMAL 0.7979f

uint64_t synth_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double synth_uniform(uint64_t *state)
{
    return (double)(synth_next(state) >> 11) * 0x1.0p-53;
}

uint64_t synth_key(uint64_t seed, const char *label)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)label; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    uint64_t state = h ^ (seed * 0x9e3779b97f4a7c15ull);
    synth_next(&state);
    return synth_next(&state);
}

/* About N(0, 1) from the low 56 bits of x: the sum of four 14-bit uniforms
 * (Irwin-Hall), centred and scaled. Cheap, smooth, and only its tails (cut at
 * 3.46 sigma) differ from a Gaussian's; heavy tails are added separately. */
static inline float gauss56(uint64_t x)
{
    uint32_t sum = (uint32_t)(x & 0x3fff) + (uint32_t)((x >> 14) & 0x3fff) +
                   (uint32_t)((x >> 28) & 0x3fff) + (uint32_t)((x >> 42) & 0x3fff);
    return ((float)sum - 32766.0f) * (1.0f / 9459.3f);
}

/* One entry in 512 (the top 9 bits of x all zero) is 2.5 to 6 times larger:
 * a scale mixture with the kurtosis of a Student t of about 6 degrees. */
static inline bool is_tail(uint64_t x)
{
    return (x >> 55) == 0;
}

static float tail_factor(uint64_t x)
{
    return (float)(2.5 + 3.5 * synth_uniform(&x));
}

/* cols values sigma * z, z about N(0, 1), with heavy tails when planted. */
static void gaussian_row(uint64_t state, float sigma, bool tails, float *out, int64_t cols)
{
    for (int64_t i = 0; i < cols; i++) {
        uint64_t x = synth_next(&state);
        float v = sigma * gauss56(x);
        if (tails && is_tail(x))
            v *= tail_factor(x);
        out[i] = v;
    }
}

static uint64_t row_stream(uint64_t key, int64_t row)
{
    uint64_t state = key ^ ((uint64_t)row * 0xd1b54a32d192ed03ull);
    return synth_next(&state);
}

/* Per matrix, 0.75 to 1.25 times the base scale: layers differ. */
static float matrix_scale(uint64_t key)
{
    uint64_t state = key;
    return (float)(0.75 + 0.5 * synth_uniform(&state));
}

/* Per row, a log-normal factor (about 0.67 to 1.5 within two sigma): output
 * channels differ, so per-channel quantization scales matter. */
static float row_scale(uint64_t *state)
{
    return expf(0.2f * gauss56(synth_next(state)));
}

static float heavy_scale_of(const synth_plan *plan, int layer, int64_t channel)
{
    int64_t first = plan->heavy_start[layer];
    if (plan->n_heavy == 0 || channel < first || channel >= first + plan->n_heavy)
        return 1.0f;
    return plan->heavy_scale[layer * plan->n_heavy + (channel - first)];
}

static float resid_scale_of(const synth_plan *plan, int64_t channel)
{
    for (int i = 0; i < plan->n_resid; i++)
        if (plan->resid_channel[i] == channel)
            return plan->resid_scale[i];
    return 1.0f;
}

static void norm_row(uint64_t state, float mean, float *out, int64_t cols)
{
    for (int64_t i = 0; i < cols; i++)
        out[i] = mean * expf(0.1f * gauss56(synth_next(&state)));
}

static void linear_row(const synth_plan *plan, const synth_tensor *t, uint64_t key, int64_t row,
                       float *out)
{
    uint64_t state = row_stream(key, row);
    float sigma = (float)WEIGHT_STD * matrix_scale(key) * row_scale(&state);
    bool tails = plan->plant & PERQ_SYNTH_PLANT_HEAVY_TAILS;
    if (t->role == SYNTH_O || t->role == SYNTH_DOWN)
        sigma *= resid_scale_of(plan, row);
    if (t->role == SYNTH_UP)
        sigma *= heavy_scale_of(plan, t->layer, row);
    gaussian_row(state, sigma, tails, out, t->cols);
    if (t->role == SYNTH_DOWN && plan->n_heavy > 0) {
        for (int i = 0; i < plan->n_heavy; i++) {
            int64_t c = plan->heavy_start[t->layer] + i;
            out[c] /= plan->heavy_scale[t->layer * plan->n_heavy + i];
        }
    }
}

static void embedding_row(const synth_plan *plan, uint64_t key, int64_t row, float *out,
                          int64_t cols)
{
    uint64_t state = row_stream(key, row);
    float sigma = (float)WEIGHT_STD * matrix_scale(key) * row_scale(&state);
    gaussian_row(state, sigma, plan->plant & PERQ_SYNTH_PLANT_HEAVY_TAILS, out, cols);
    for (int i = 0; i < plan->n_resid; i++)
        out[plan->resid_channel[i]] +=
            plan->resid_sign[i] * plan->resid_scale[i] * (float)WEIGHT_STD * MEAN_ABS_NORMAL;
}

void synth_tensor_row(const synth_plan *plan, const synth_tensor *t, int64_t row, float *out)
{
    uint64_t key = synth_key(plan->seed, t->name);
    switch (t->role) {
    case SYNTH_NORM:
        norm_row(row_stream(key, row), 1.0f, out, t->cols);
        break;
    case SYNTH_FINAL_NORM:
        /* Trained models damp their massive channels before the head: without
         * this, a few tokens would win every prediction. */
        norm_row(row_stream(key, row), plan->final_norm_scale, out, t->cols);
        for (int i = 0; i < plan->n_resid; i++)
            out[plan->resid_channel[i]] /= plan->resid_scale[i];
        break;
    case SYNTH_EMBED:
        embedding_row(plan, key, row, out, t->cols);
        break;
    default:
        linear_row(plan, t, key, row, out);
        break;
    }
}
