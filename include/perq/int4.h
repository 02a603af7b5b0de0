/* INT4 weights: symmetric round-to-nearest with MSE-searched scales, per output
 * channel or per group, and the compressed-tensors pack-quantized layout.
 *
 * A weight w with scale s becomes q = clamp(round(w / s), -8, 7), rounding
 * half to even (as torch.round does), and is read back as q * s. The full-range
 * scale of a vector is absmax / 7.5 (compressed-tensors' symmetric convention:
 * half of the 15 steps from -8 to 7), so that every element is within s / 2 of
 * its grid point; the MSE search may pick a smaller scale that clips the
 * largest elements when that lowers the total squared error.
 *
 * Scales are stored in the model's float dtype. Each candidate scale is rounded
 * to that dtype before any weight is rounded with it, so the stored artifact
 * dequantizes to exactly q * stored_scale, and the guarantees below hold for
 * the stored values:
 *   - every element with |w| <= 7.5 * s (not clipped) is within s / 2 of q * s;
 *   - the chosen scale's squared error is never above that of the full-range
 *     scale (absmax / 7.5, rounded the same way), which is always a candidate. */
#ifndef PERQ_INT4_H
#define PERQ_INT4_H

#include <stdint.h>
#include <stddef.h>

#include "perq/dtype.h"
#include "perq/error.h"

/* A quantized [rows][cols] matrix. Group g of row r covers columns
 * [g*group, min((g+1)*group, cols)): when group does not divide cols the last
 * group of each row is shorter and has a scale of its own. group == cols is
 * per output channel. */
typedef struct perq_int4_matrix {
    int rows, cols, group, n_groups;
    int8_t *q;        /* rows*cols values in [-8, 7] */
    float *scales;    /* rows*n_groups; w ~= q * scale */
} perq_int4_matrix;

/* group <= 0 or group > cols means one group per row (per output channel). */
int perq_int4_alloc(perq_int4_matrix *m, int rows, int cols, int group, perq_err *err);
void perq_int4_free(perq_int4_matrix *m);

/* Scale for a vector of weights: the clipping ratio in {1, 0.99, ..., 0.5}
 * (PERQ_INT4_CLIP_STEPS steps) whose RTN error sum((w - q*s)^2) is smallest;
 * the largest ratio wins a tie. 0 for a vector of zeros. */
#define PERQ_INT4_CLIP_STEPS 51
float perq_int4_mse_scale(const float *w, int n);
/* The same search with every candidate rounded to scale_dtype (F32, F16 or
 * BF16) first; the result is exactly representable in scale_dtype. */
float perq_int4_mse_scale_as(const float *w, int n, perq_dtype scale_dtype);
/* s rounded to nearest in dtype (F32, F16, BF16); a scale too large for the
 * dtype becomes its largest finite value. */
float perq_int4_round_scale(float s, perq_dtype dtype);
/* Rounds w to q = clamp(round(w / s), -8, 7); a scale of 0 gives q = 0. */
void perq_int4_round(const float *w, int n, float scale, int8_t *q);
/* sum((w - q*s)^2), the figure the search minimises: each term in fp32, the
 * sum in double, in one fixed order whatever the vector unit, so that every
 * machine picks the same scales. */
double perq_int4_sq_error(const float *w, int n, float scale);
/* The same through one implementation, for tests; NaN for one this CPU lacks. */
typedef enum { PERQ_INT4_IMPL_C, PERQ_INT4_IMPL_SSE2, PERQ_INT4_IMPL_AVX } perq_int4_impl;
double perq_int4_sq_error_impl(const float *w, int n, float scale, perq_int4_impl impl);

/* RTN over the whole matrix, rows in parallel where it pays. The weights must
 * be finite (an infinite or NaN weight is a PERQ_E_FORMAT error naming it).
 * perq_int4_rtn keeps fp32 scales; perq_int4_rtn_as rounds them to the dtype
 * they will be stored in. out must be unallocated; it is freed on failure. */
int perq_int4_rtn(const float *w, int rows, int cols, int group, perq_int4_matrix *out, perq_err *err);
int perq_int4_rtn_as(const float *w, int rows, int cols, int group, perq_dtype scale_dtype,
                     perq_int4_matrix *out, perq_err *err);
void perq_int4_dequantize(const perq_int4_matrix *m, float *w);

/* pack-quantized: packed[r][ceil(cols/8)] int32, element 8i+k of a row in bits
 * 4k..4k+3 as q+8; a short last word has zero nibbles (value -8 + 8) beyond cols. */
size_t perq_int4_packed_cols(int cols);
void perq_int4_pack(const int8_t *q, int rows, int cols, int32_t *packed);
void perq_int4_unpack(const int32_t *packed, int rows, int cols, int8_t *q);

#endif
