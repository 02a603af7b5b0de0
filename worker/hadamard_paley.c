/* Paley's Hadamard matrices from the quadratic character of a finite field.
 *
 * GF(q), q = p^e, is taken as polynomials over GF(p) modulo a primitive
 * polynomial f of degree e; element number i has the base-p digits of i as its
 * coefficients (digit t is the coefficient of x^t), so 0 is zero and 1 is one.
 * Because x generates the multiplicative group, the nonzero squares are exactly
 * the even powers of x, and walking x^0, x^1, ... gives the quadratic character
 * chi without a general multiplication. For e = 1 this is arithmetic mod p with
 * the primitive root f's root.
 *
 * With Q[i][j] = chi(i - j) (the Jacobsthal matrix: Q Q^T = qI - J, rows sum to 0):
 *   Paley I (q = 3 mod 4, Q skew):      H = I + [[0, 1^T], [-1, Q]], order q + 1;
 *   Paley II (q = 1 mod 4, Q symmetric): C = [[0, 1^T], [1, Q]] with C^2 = qI,
 *       each 0 of C replaced by [[1, -1], [-1, -1]] and each +-1 by
 *       +-[[1, 1], [1, -1]], order 2(q + 1), symmetric. */
#include "hadamard_internal.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEGREE 30

int perq_prime_power(int q, int *p, int *e)
{
    if (q < 2)
        return 0;
    int prime = q;
    for (int d = 2; (long)d * d <= q; d++)
        if (q % d == 0) {
            prime = d;
            break;
        }
    int exponent = 0;
    while (q % prime == 0) {
        q /= prime;
        exponent++;
    }
    if (q != 1)
        return 0;
    *p = prime;
    *e = exponent;
    return 1;
}

/* The field: x^e = sum c[t] x^t. */
typedef struct {
    int p, e, q;
    int c[MAX_DEGREE];
} field;

static int digits_to_index(const field *f, const int *d)
{
    int index = 0;
    for (int t = f->e - 1; t >= 0; t--)
        index = index * f->p + d[t];
    return index;
}

static void times_x(const field *f, int *d)
{
    int top = d[f->e - 1];
    for (int t = f->e - 1; t > 0; t--)
        d[t] = (d[t - 1] + top * f->c[t]) % f->p;
    d[0] = top * f->c[0] % f->p;
}

/* 1 when x has multiplicative order exactly q - 1, which happens only when f
 * is irreducible (a ring with zero divisors has fewer than q - 1 units). */
static int x_is_primitive(const field *f)
{
    int d[MAX_DEGREE] = {1};
    for (int i = 1; i < f->q - 1; i++) {
        times_x(f, d);
        if (digits_to_index(f, d) == 1)
            return 0;
    }
    times_x(f, d);
    return digits_to_index(f, d) == 1;
}

/* The first primitive polynomial in the order of its coefficients read as a
 * base-p number; one exists for every p and e. */
static int field_init(field *f, int q)
{
    memset(f, 0, sizeof *f);
    if (!perq_prime_power(q, &f->p, &f->e) || f->e > MAX_DEGREE)
        return -1;
    f->q = q;
    for (int code = 1; code < q; code++) {
        for (int t = 0, v = code; t < f->e; t++, v /= f->p)
            f->c[t] = v % f->p;
        if (f->c[0] != 0 && x_is_primitive(f))
            return 0;
    }
    return -1;
}

static int field_sub(const field *f, int a, int b)
{
    if (f->e == 1)
        return (a - b + f->p) % f->p;
    int result = 0, scale = 1;
    for (int t = 0; t < f->e; t++, a /= f->p, b /= f->p, scale *= f->p)
        result += ((a % f->p - b % f->p + f->p) % f->p) * scale;
    return result;
}

/* chi[i] for every element i: 0, +1 for a nonzero square, -1 otherwise. The
 * caller frees the table. */
static int8_t *quadratic_character(const field *f)
{
    int8_t *chi = calloc((size_t)f->q, 1);
    if (!chi)
        return NULL;
    int d[MAX_DEGREE] = {1};
    for (int i = 0; i < f->q - 1; i++) {
        chi[digits_to_index(f, d)] = (i % 2 == 0) ? 1 : -1;
        times_x(f, d);
    }
    return chi;
}

/* Sets up the field and its character for a Paley construction. */
static int8_t *paley_character(int q, int residue, field *f, perq_err *err)
{
    if (q < 3 || q % 4 != residue || field_init(f, q) != 0) {
        perq_fail(err, PERQ_E_INVALID, "Paley %s needs a prime power q = %d mod 4, not %d",
                  residue == 3 ? "I" : "II", residue, q);
        return NULL;
    }
    int8_t *chi = quadratic_character(f);
    if (!chi)
        perq_fail(err, PERQ_E_NOMEM, "quadratic character of GF(%d)", q);
    return chi;
}

int perq_hadamard_paley1(int q, int8_t *h, perq_err *err)
{
    field f;
    int8_t *chi = paley_character(q, 3, &f, err);
    if (!chi)
        return -1;
    size_t order = (size_t)q + 1;
    for (size_t j = 0; j < order; j++)
        h[j] = 1;
    for (int i = 0; i < q; i++) {
        int8_t *row = h + (size_t)(i + 1) * order;
        row[0] = -1;
        for (int j = 0; j < q; j++)
            row[j + 1] = (i == j) ? 1 : chi[field_sub(&f, i, j)];
    }
    free(chi);
    return 0;
}

int perq_hadamard_paley2(int q, int8_t *h, perq_err *err)
{
    field f;
    int8_t *chi = paley_character(q, 1, &f, err);
    if (!chi)
        return -1;
    size_t order = 2 * ((size_t)q + 1);
    for (int u = 0; u <= q; u++)
        for (int v = 0; v <= q; v++) {
            int c;  /* C[u][v] */
            if (u == 0 || v == 0)
                c = (u == v) ? 0 : 1;
            else
                c = chi[field_sub(&f, u - 1, v - 1)];
            int8_t *top = h + (size_t)(2 * u) * order + 2 * (size_t)v;
            int8_t *bottom = top + order;
            if (c == 0) {
                top[0] = 1, top[1] = -1;
                bottom[0] = -1, bottom[1] = -1;
            } else {
                top[0] = (int8_t)c, top[1] = (int8_t)c;
                bottom[0] = (int8_t)c, bottom[1] = (int8_t)-c;
            }
        }
    free(chi);
    return 0;
}
