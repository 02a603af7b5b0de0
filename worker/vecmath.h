/* Elementwise kernels of the forward pass, vectorised for the CPU at hand. */
#ifndef PERQ_VECMATH_H
#define PERQ_VECMATH_H

#include <stddef.h>

/* x[i] = exp(x[i]) to a few ulp; arguments are clamped to [-87, 88]. */
void perq_vexp(float *x, size_t n);
/* gate[i] = silu(gate[i]) * up[i] */
void perq_vswiglu(float *gate, const float *up, size_t n);
/* s[i] = exp(s[i] - max(s)) in place; returns the sum of the results (the
 * softmax denominator, for the caller to divide by where it is cheapest). */
float perq_vexp_shifted(float *s, size_t n);
/* Softmax of s[0..n) in place. */
void perq_vsoftmax(float *s, size_t n);

#endif
