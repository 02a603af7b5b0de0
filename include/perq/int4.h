/* INT4 weights: symmetric round-to-nearest with MSE-searched scales, per output
 * channel or per group, and the compressed-tensors pack-quantized layout. */
#ifndef PERQ_INT4_H
#define PERQ_INT4_H

#include <stdint.h>
#include <stddef.h>

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

int perq_int4_alloc(perq_int4_matrix *m, int rows, int cols, int group, perq_err *err);
void perq_int4_free(perq_int4_matrix *m);

/* Scale for a vector of weights: the clipping ratio in {1, 0.99, ..., 0.5}
 * (PERQ_INT4_CLIP_STEPS steps) whose RTN error sum((w - q*s)^2) is smallest. */
#define PERQ_INT4_CLIP_STEPS 51
float perq_int4_mse_scale(const float *w, int n);
/* Rounds w to q = clamp(round(w / s), -8, 7). */
void perq_int4_round(const float *w, int n, float scale, int8_t *q);

/* RTN over the whole matrix, rows in parallel where it pays. */
int perq_int4_rtn(const float *w, int rows, int cols, int group, perq_int4_matrix *out, perq_err *err);
void perq_int4_dequantize(const perq_int4_matrix *m, float *w);

/* pack-quantized: packed[r][ceil(cols/8)] int32, element 8i+k of a row in bits
 * 4k..4k+3 as q+8; a short last word has zero nibbles (value -8 + 8) beyond cols. */
size_t perq_int4_packed_cols(int cols);
void perq_int4_pack(const int8_t *q, int rows, int cols, int32_t *packed);
void perq_int4_unpack(const int32_t *packed, int rows, int cols, int8_t *q);

#endif
