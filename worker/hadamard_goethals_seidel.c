/* Cooper and Wallis's construction of a Hadamard matrix of order 12n from
 * Williamson matrices A, B, C, D of odd order n (156 = 12 * 13, where no
 * Williamson matrices of order 39 with a multiplier symmetry are found).
 *
 * T-matrices of order 3 are T1 = I, T2 = P, T3 = P^2, T4 = 0 (P the cyclic
 * shift): disjoint supports, sum J, sum of T_i T_i^T = 3I. With them
 *     X = T1(x)A + T2(x)B + T3(x)C + T4(x)D      Y = -T1(x)B + T2(x)A + T3(x)D - T4(x)C
 *     Z = -T1(x)C - T2(x)D + T3(x)A + T4(x)B     W = -T1(x)D + T2(x)C - T3(x)B + T4(x)A
 * are +-1 matrices of order v = 3n, developed over the group Z_3 x Z_n, with
 * X X^T + Y Y^T + Z Z^T + W W^T = 4v I. Goethals and Seidel's array, with R the
 * permutation g -> -g of the group,
 *     [ X     Y R     Z R     W R  ]
 *     [-Y R   X       W^T R  -Z^T R]
 *     [-Z R  -W^T R   X       Y^T R]
 *     [-W R   Z^T R  -Y^T R   X    ]
 * is then Hadamard of order 4v. Element (t, a) of the group is index t*n + a. */
#include "hadamard_internal.h"

#include <stdio.h>
#include <stdlib.h>

/* First-row value of X, Y, Z or W at group element (dt, da): the T_k with
 * dt = k (T4 is 0, so only dt = 0, 1, 2 occur) selects a signed Williamson row. */
static const struct {
    int williamson; /* 0..3 for A..D */
    int sign;
} developed[4][3] = {
    /* X */ {{0, 1}, {1, 1}, {2, 1}},
    /* Y */ {{1, -1}, {0, 1}, {3, 1}},
    /* Z */ {{2, -1}, {3, -1}, {0, 1}},
    /* W */ {{3, -1}, {2, 1}, {1, -1}},
};

static int value(const int8_t *seq, int n, int which, int dt, int da)
{
    dt = ((dt % 3) + 3) % 3;
    da = ((da % n) + n) % n;
    return developed[which][dt].sign * seq[(size_t)developed[which][dt].williamson * n + da];
}

/* Block of the array: sign * M, M^T, M R or M^T R for M = X, Y, Z, W (0..3). */
typedef struct {
    int which, sign, transposed, reversed;
} block;

static const block array[4][4] = {
    {{0, 1, 0, 0}, {1, 1, 0, 1}, {2, 1, 0, 1}, {3, 1, 0, 1}},
    {{1, -1, 0, 1}, {0, 1, 0, 0}, {3, 1, 1, 1}, {2, -1, 1, 1}},
    {{2, -1, 0, 1}, {3, -1, 1, 1}, {0, 1, 0, 0}, {1, 1, 1, 1}},
    {{3, -1, 0, 1}, {2, 1, 1, 1}, {1, -1, 1, 1}, {0, 1, 0, 0}},
};

/* Entry (i, j) of a block, i and j group elements (ti, ai), (tj, aj):
 * M[i][j] = m(j - i), M^T[i][j] = m(i - j), (M R)[i][j] = m(-j - i),
 * (M^T R)[i][j] = m(i + j). */
static int block_entry(const int8_t *seq, int n, block b, int ti, int ai, int tj, int aj)
{
    int st = b.reversed ? -tj : tj, sa = b.reversed ? -aj : aj;
    int dt = b.transposed ? ti - st : st - ti;
    int da = b.transposed ? ai - sa : sa - ai;
    return b.sign * value(seq, n, b.which, dt, da);
}

int perq_hadamard_cooper_wallis(int n, int8_t *h, char *how, size_t how_size, perq_err *err)
{
    int8_t *seq = h ? malloc(4 * (size_t)n) : NULL;
    if (h && !seq)
        return perq_fail(err, PERQ_E_NOMEM, "Williamson matrices of order %d", n);
    char found[128];
    int rc = perq_williamson_sequences(n, seq, found, sizeof found, err);
    if (rc == 1 && h) {
        int v = 3 * n;
        size_t order = 4 * (size_t)v;
        for (int R = 0; R < 4; R++)
            for (int C = 0; C < 4; C++)
                for (int i = 0; i < v; i++)
                    for (int j = 0; j < v; j++)
                        h[(size_t)(R * v + i) * order + (size_t)(C * v + j)] =
                            (int8_t)block_entry(seq, n, array[R][C], i / n, i % n, j / n, j % n);
    }
    if (rc == 1)
        snprintf(how, how_size, "cooper-wallis(t=3, williamson(%s))", found);
    free(seq);
    return rc;
}
