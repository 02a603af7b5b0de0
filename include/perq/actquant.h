/* Activation quantization: INT4 per token, asymmetric, dynamic (min-max), as
 * fake quantization in fp32 (quantize, then dequantize in place), the way
 * perq's W4A4 evaluation applies it to the input of every linear layer.
 *
 * For a row x (one token) with clipping ratio c:
 *     hi = c * max(x), lo = c * min(x), scale = (hi - lo) / 15,
 *     zero = round(-lo / scale),
 *     q = clamp(round(x / scale) + zero, 0, 15),  x' = (q - zero) * scale,
 * rounding half to even, the arithmetic after the scale in double. So x' is
 * round(x / scale) * scale unless clamped: a multiple of the scale (0 is
 * exact whenever it lies in the row's range), within scale / 2 of x for every
 * x in [lo, hi] (c = 1: every element, the row's min and max included), and
 * at most 16 distinct values. zero is not limited to 0..15: a row of one sign
 * keeps its own range rather than being widened to include 0.
 * A constant row (scale 0) and a row with a non-finite element are left as
 * they are. */
#ifndef PERQ_ACTQUANT_H
#define PERQ_ACTQUANT_H

#define PERQ_ACTQUANT_LEVELS 16     /* q in 0 .. 15 */
#define PERQ_ACTQUANT_CLIP 1.0f     /* no clipping */

/* The clipping ratio must be in (0, 1]; anything else (NaN included) is taken as 1. */
/* The row's scale (hi - lo) / 15, computed in double and rounded once to
 * fp32, and zero point; *scale = 0 and *zero = 0 when the row is left as it is. */
void perq_actquant_params(const float *x, int n, float clip, float *scale, int *zero);

/* Fake-quantizes each of the `tokens` rows of x [tokens][cols] in place, rows
 * in parallel when there are enough of them. */
void perq_actquant_rows(float *x, int tokens, int cols, float clip);

/* ||x - x'||^2 / ||x||^2 of one row, in double, without changing x; 0 for a
 * row that is left as it is (an all-zero row included). */
double perq_actquant_row_error(const float *x, int n, float clip);

/* The mean per-token INT4 activation error: the mean over the rows of
 * perq_actquant_row_error. 0 when tokens <= 0. */
double perq_actquant_error(const float *x, int tokens, int cols, float clip);

#endif
