/* The small Hadamard constructions behind perq_hadamard_construct, one file
 * each: Paley's (hadamard_paley.c), Williamson's (hadamard_williamson.c) and
 * Goethals and Seidel's array (hadamard_goethals_seidel.c). */
#ifndef PERQ_HADAMARD_INTERNAL_H
#define PERQ_HADAMARD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "perq/error.h"

/* The smallest order m = 2^j * odd(n) <= max_order dividing n (j = 0, 1, ...)
 * that perq_hadamard_construct builds, with its description; 0 when none, -1
 * on error. One cache of decided orders serves the whole search. */
int perq_hadamard_factor_order(int n, int max_order, char *how, size_t how_size, perq_err *err);

/* 1 when q = p^e for a prime p and e >= 1 (p and e set), 0 otherwise. */
int perq_prime_power(int q, int *p, int *e);

/* Paley I: q a prime power, q = 3 mod 4; h gets order q + 1. */
int perq_hadamard_paley1(int q, int8_t *h, perq_err *err);
/* Paley II: q a prime power, q = 1 mod 4; h gets order 2(q + 1), symmetric. */
int perq_hadamard_paley2(int q, int8_t *h, perq_err *err);

/* Williamson matrices of odd order n (see hadamard_williamson.c): the first
 * rows of four symmetric circulant +-1 matrices A, B, C, D with
 * A^2 + B^2 + C^2 + D^2 = 4n I, into seq[4n] (may be NULL to search only).
 * 1 when found, 0 when the search finds none, -1 on error. */
int perq_williamson_sequences(int n, int8_t *seq, char *how, size_t how_size, perq_err *err);
/* Williamson's array from them: order 4n. Same returns; h may be NULL. */
int perq_hadamard_williamson(int n, int8_t *h, char *how, size_t how_size, perq_err *err);
/* Cooper and Wallis: T-matrices of order 3 and Williamson matrices of odd
 * order n in the Goethals-Seidel array: order 12n. Same returns; h may be NULL. */
int perq_hadamard_cooper_wallis(int n, int8_t *h, char *how, size_t how_size, perq_err *err);

#endif
