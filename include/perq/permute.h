/* Channel permutations that balance the l1 mass of the blocks of a
 * block-diagonal rotation (PERQ-NOTES.md section 2): MassDiff, and identity,
 * random and zigzag for ablation; plus what folding and reporting need.
 *
 * Convention: perm[k] is the original channel at position k of the permuted
 * vector, y[k] = x[perm[k]]. With blocks of b channels, block j is
 * perm[j*b .. j*b + b - 1]. Weights are [out][in] and y = x W^T, so permuting
 * the activation x and the input columns of W alike (perq_permute_columns)
 * leaves y unchanged, and permuting the output rows of W (perq_permute_rows)
 * permutes y the same way. */
#ifndef PERQ_PERMUTE_H
#define PERQ_PERMUTE_H

#include <stddef.h>
#include <stdint.h>

#include "perq/error.h"

/* MassDiff, the greedy mass diffusion. mass[i] >= 0 is channel i's expected l1
 * mass (mean over tokens of |x_i|, accumulated by the caller); block divides d.
 * Channels are sorted heaviest first (ties: lower index); block j < d/block
 * starts with the j-th heaviest; every other channel, heaviest first, joins
 * the block that is not full and has the smallest mass so far (ties: lowest
 * block index). Within a block channels keep the order they joined in.
 * O(d log d) with a heap. Errors: d or block not positive, block not dividing
 * d, a mass negative or not finite (PERQ_E_INVALID), no memory. */
int perq_permute_massdiff(const float *mass, int d, int block, int *perm, perq_err *err);

/* Zigzag: channels sorted by absmax, largest first (ties: lower index), dealt
 * to the d/block blocks in serpentine order 0, 1, ..., n-1, n-1, ..., 0, 0, 1, ...
 * Same errors as MassDiff (absmax in place of mass). */
int perq_permute_zigzag(const float *absmax, int d, int block, int *perm, perq_err *err);

void perq_permute_identity(int *perm, int d);

/* Fisher-Yates from the back (for i = d-1 down to 1, swap i with a uniform
 * j in [0, i]) over the identity, j drawn from splitmix64(seed) by Lemire's
 * unbiased multiply-and-reject. */
void perq_permute_random(int *perm, int d, uint64_t seed);

/* 1 when perm is a permutation of 0..d-1, 0 otherwise (also for d < 1 or no memory). */
int perq_permute_is_bijection(const int *perm, int d);

/* inv[perm[k]] = k. */
void perq_permute_inverse(const int *perm, int d, int *inv);

/* out[j] = sum of mass[perm[k]] over block j (double, d/block entries). */
void perq_permute_block_masses(const float *mass, const int *perm, int d, int block, double *out);

/* max over blocks of the block mass divided by the mean block mass: 1 when
 * perfectly balanced, d/block at worst. 1 when every mass is 0. */
double perq_permute_mass_ratio(const float *mass, const int *perm, int d, int block);

/* x[rows][cols]: x[r][k] <- x[r][perm[k]] (activations; input columns of a
 * weight). Rows in parallel when there are many. */
int perq_permute_columns(float *x, size_t rows, int cols, const int *perm, perq_err *err);

/* x[rows][cols]: row k <- row perm[k] (output rows of a weight), in place by
 * following the cycles of perm. */
int perq_permute_rows(float *x, int rows, size_t cols, const int *perm, perq_err *err);

#endif
