/* Hadamard rotations: an orthogonal matrix R for every width real models have,
 * applied fast to many rows at once, full or block-diagonal.
 *
 * Structure. A width n is split as n = p * m with p = 2^k, and
 *     R = (S_p / sqrt(p)) (x) F,   R[a*m + b][a'*m + b'] = S_p[a][a'] * F[b][b'] / sqrt(p),
 * where S_p is Sylvester's Hadamard matrix (S_p[a][a'] = (-1)^popcount(a & a'),
 * symmetric) and F an orthogonal m x m factor (NULL when m = 1):
 *   - PERQ_ROT_SYLVESTER: n is a power of two, m = 1; R is the normalised
 *     Walsh-Hadamard matrix, applied by the fast transform alone.
 *   - PERQ_ROT_HADAMARD: F = H_m / sqrt(m) for a +-1 Hadamard matrix H_m that
 *     perq_hadamard_construct builds; m is the smallest order 2^j * odd(n)
 *     (j = 0, 1, ...) up to PERQ_ROTATION_MAX_FACTOR that it builds, so R is
 *     itself a Hadamard matrix / sqrt(n).
 *   - PERQ_ROT_RANDOM_ORTHOGONAL: no such order is built here; F is a seeded
 *     random orthogonal matrix of order m = odd(n) (perq_random_orthogonal).
 *     The job report must say so (kind and `how` name it).
 * Viewing a row x as X[p][m] (chunk a = x[a*m .. a*m+m-1]), x R = S_p X F / sqrt(p):
 * a Walsh-Hadamard transform that combines whole m-long chunks, then every
 * chunk times F (one sgemm over all chunks of all rows).
 *
 * Orientation. Weights are [out][in] row-major and y = x W^T.
 *   perq_rotation_right(.., PERQ_ROT_N): x <- x R  for rows x: activations, the
 *       embedding rows (E <- E R), and the input columns of a weight (W <- W R),
 *       since (x R)(W R)^T = x W^T.
 *   perq_rotation_left(.., PERQ_ROT_T):  W <- R^T W for the output rows of a
 *       weight [width][cols]: then x (R^T W)^T = (x W^T) R, the output rotated.
 *   PERQ_ROT_T on the right (x <- x R^T) and PERQ_ROT_N on the left (W <- R W)
 *   are the inverses.
 * Block-diagonal rotations. Both functions take the full width of the data; it
 * must be a multiple of r->n, and they apply diag(R, ..., R): every consecutive
 * n-wide piece of a row (right) or every consecutive block of n rows (left) is
 * rotated on its own. width == n is the full rotation.
 * Randomized. perq_rotation_randomize turns R into D R, D = diag(signs) of
 * seeded random +-1 (a randomized Hadamard transform, as QuaRot and SpinQuant
 * use): still orthogonal, and it spreads an outlier differently for each seed.
 * Block-diagonal use repeats the same D R in every block.
 * A rotation is read-only once built: threads may apply one at the same time. */
#ifndef PERQ_HADAMARD_H
#define PERQ_HADAMARD_H

#include <stddef.h>
#include <stdint.h>

#include "perq/error.h"

typedef enum {
    PERQ_ROT_SYLVESTER = 0,
    PERQ_ROT_HADAMARD,
    PERQ_ROT_RANDOM_ORTHOGONAL
} perq_rotation_kind;

typedef enum { PERQ_ROT_N = 0, PERQ_ROT_T = 1 } perq_rot_op;

/* Widths whose dense factor would be larger than this are refused
 * (PERQ_E_UNSUPPORTED): applying it would cost more than a matmul. */
#define PERQ_ROTATION_MAX_FACTOR 4096

typedef struct perq_rotation {
    int n;                   /* width */
    int p;                   /* 2^k, the Walsh-Hadamard part */
    int m;                   /* n / p, the order of the dense factor */
    perq_rotation_kind kind;
    int symmetric;           /* R == R^T exactly, so R R = I (an involution) */
    uint64_t seed;           /* the seed of a random factor, 0 otherwise */
    char how[224];           /* e.g. "sylvester(64) x paley1(q=43)" */
    float *factor;           /* F, m x m row-major; NULL when m == 1 */
    float *signs;            /* D's diagonal (n entries of +-1) once randomized, else NULL */
    uint64_t signs_seed;
} perq_rotation;

/* Plans and builds the rotation of width n (n >= 1). seed is used only when a
 * random orthogonal factor is needed. Planning may run the Williamson search
 * (a fraction of a second at worst). r is zeroed on failure. */
int perq_rotation_init(perq_rotation *r, int n, uint64_t seed, perq_err *err);
void perq_rotation_free(perq_rotation *r);

/* R <- D R with D = diag of n random signs from seed (perq_random_signs). */
int perq_rotation_randomize(perq_rotation *r, uint64_t seed, perq_err *err);
/* signs[0..n) <- +-1, each with probability 1/2, a function of seed alone. */
void perq_random_signs(float *signs, int n, uint64_t seed);

/* "sylvester", "hadamard", "random_orthogonal". */
const char *perq_rotation_kind_name(perq_rotation_kind kind);

/* x[rows][width] <- x op(R) blockwise (see above). width % r->n must be 0. */
int perq_rotation_right(const perq_rotation *r, float *x, size_t rows, size_t width,
                        perq_rot_op op, perq_err *err);
/* w[width][cols] <- op(R) w blockwise (see above). width % r->n must be 0. */
int perq_rotation_left(const perq_rotation *r, float *w, size_t width, size_t cols,
                       perq_rot_op op, perq_err *err);

/* R itself, n x n row-major: exactly what perq_rotation_right applies (row i
 * of out is e_i R). */
void perq_rotation_matrix(const perq_rotation *r, float *out);

/* In-place normalised fast Walsh-Hadamard transform of rows x[rows][n]:
 * x <- x S_n / sqrt(n). n must be a power of two (else nothing is done and -1
 * is returned). Rows in parallel when there are many. */
int perq_fwht(float *x, size_t rows, int n);

/* A +-1 Hadamard matrix of order m, built by a construction (never a stored
 * table). Tried in this order, the first that applies wins:
 *   1, 2, powers of two: Sylvester;
 *   Paley I (m = q + 1, q prime, q = 3 mod 4); Paley II (m = 2(q + 1), q prime,
 *   q = 1 mod 4); the same two over GF(q) for prime powers q = p^e;
 *   Sylvester doubling H_2 (x) H_{m/2};
 *   Kronecker products H_a (x) H_b of two constructed orders (smallest a first);
 *   Williamson's array with four symmetric circulants of odd order m/4, unions
 *   of orbits of a multiplier group containing -1, found by an exhaustive
 *   search over the few orbit unions (meet in the middle);
 *   Cooper and Wallis (m = 12n): T-matrices of order 3 and Williamson
 *   matrices of order n in the Goethals-Seidel array.
 * h (m*m, row-major) may be NULL to ask only whether m is built. how gets a
 * description ("paley2(q=25)", "kron(12,28)", ...). Returns 1 when built, 0
 * when no construction here gives order m, -1 on error (err set). */
int perq_hadamard_construct(int m, int8_t *h, char *how, size_t how_size, perq_err *err);

/* A random orthogonal matrix of order m from seed: Householder QR (LAPACK
 * dgeqrf/dorgqr, double precision) of an m x m matrix of standard normals
 * (splitmix64, Box-Muller), columns multiplied by the signs of R's diagonal so
 * that the result is Haar-distributed. Rounded to float. Deterministic for a
 * given seed and LAPACK build. */
int perq_random_orthogonal(int m, uint64_t seed, float *q, perq_err *err);

#endif
