/* Which construction builds a Hadamard matrix of order m (see perq/hadamard.h
 * for the order in which they are tried), and the generic ones: Sylvester,
 * doubling and Kronecker products. Paley's, Williamson's and Cooper and
 * Wallis's are in their own files. */
#include "perq/hadamard.h"
#include "hadamard_internal.h"

#include <stdio.h>
#include <stdlib.h>

/* Room for a description, nested Kronecker products included. */
#define HOW_MAX 192

static int is_power_of_two(int m)
{
    return m > 0 && (m & (m - 1)) == 0;
}

static int is_prime(int q)
{
    int p, e;
    return perq_prime_power(q, &p, &e) && e == 1;
}

static void sylvester(int m, int8_t *h)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++)
            h[(size_t)i * m + j] = (__builtin_popcount((unsigned)(i & j)) & 1) ? -1 : 1;
}

/* out (order ma*mb) = a (x) b: out[(i*mb + k)][(j*mb + l)] = a[i][j] * b[k][l]. */
static void kronecker(const int8_t *a, int ma, const int8_t *b, int mb, int8_t *out)
{
    size_t order = (size_t)ma * mb;
    for (int i = 0; i < ma; i++)
        for (int j = 0; j < ma; j++) {
            int8_t s = a[(size_t)i * ma + j];
            for (int k = 0; k < mb; k++)
                for (int l = 0; l < mb; l++)
                    out[((size_t)i * mb + k) * order + (size_t)j * mb + l] = (int8_t)(s * b[(size_t)k * mb + l]);
        }
}

/* Orders already decided during one top-level call: the recursion through
 * doublings and Kronecker splits meets the same orders again and again, and a
 * failed Williamson search is not cheap. */
typedef struct {
    int m, result;
    char how[HOW_MAX];
} known_order;

typedef struct {
    known_order *items;
    int count, capacity;
} order_memo;

static int construct(order_memo *memo, int m, int8_t *h, char *how, size_t how_size, perq_err *err);

/* Whether m is built (1), not (0), or an error (-1), with its description. */
static int ask(order_memo *memo, int m, char *how, size_t how_size, perq_err *err)
{
    for (int i = 0; i < memo->count; i++)
        if (memo->items[i].m == m) {
            snprintf(how, how_size, "%s", memo->items[i].how);
            return memo->items[i].result;
        }
    char found[HOW_MAX] = "";
    int rc = construct(memo, m, NULL, found, sizeof found, err);
    if (rc < 0)
        return rc;
    snprintf(how, how_size, "%s", found);
    if (memo->count == memo->capacity) {
        int capacity = memo->capacity ? 2 * memo->capacity : 16;
        known_order *items = realloc(memo->items, (size_t)capacity * sizeof *items);
        if (!items)
            return rc; /* only the cache is lost */
        memo->items = items;
        memo->capacity = capacity;
    }
    known_order *k = &memo->items[memo->count++];
    k->m = m;
    k->result = rc;
    snprintf(k->how, sizeof k->how, "%s", found);
    return rc;
}

/* Builds (or, with h NULL, describes) the Kronecker product of two
 * constructed orders a * b = m. */
static int build_kronecker(order_memo *memo, int a, int b, int8_t *h, char *how, size_t how_size,
                           perq_err *err)
{
    char how_a[HOW_MAX], how_b[HOW_MAX];
    int8_t *ha = NULL, *hb = NULL;
    if (h) {
        ha = malloc((size_t)a * a);
        hb = malloc((size_t)b * b);
        if (!ha || !hb) {
            free(ha), free(hb);
            return perq_fail(err, PERQ_E_NOMEM, "Hadamard matrix of order %d", a * b);
        }
    }
    int rc = h ? construct(memo, a, ha, how_a, sizeof how_a, err) : ask(memo, a, how_a, sizeof how_a, err);
    if (rc == 1)
        rc = h ? construct(memo, b, hb, how_b, sizeof how_b, err) : ask(memo, b, how_b, sizeof how_b, err);
    if (rc == 1) {
        if (h)
            kronecker(ha, a, hb, b, h);
        snprintf(how, how_size, "kron(%s, %s)", how_a, how_b);
    }
    free(ha), free(hb);
    return rc;
}

/* A Kronecker split m = a * b with both orders constructed and a, b >= 4
 * multiples of 4 (a factor of 2 is the doubling rule's business). */
static int kronecker_split(order_memo *memo, int m, int *a_out, int *b_out, perq_err *err)
{
    for (int a = 4; (long)a * a <= m; a += 4) {
        if (m % a != 0 || (m / a) % 4 != 0)
            continue;
        char scratch[HOW_MAX];
        int ra = ask(memo, a, scratch, sizeof scratch, err);
        if (ra < 0)
            return -1;
        int rb = ra ? ask(memo, m / a, scratch, sizeof scratch, err) : 0;
        if (rb < 0)
            return -1;
        if (ra && rb) {
            *a_out = a, *b_out = m / a;
            return 1;
        }
    }
    return 0;
}

static int build_paley(int kind, int q, int8_t *h, char *how, size_t how_size, perq_err *err)
{
    int p, e;
    perq_prime_power(q, &p, &e);
    if (e == 1)
        snprintf(how, how_size, "paley%d(q=%d)", kind, q);
    else
        snprintf(how, how_size, "paley%d(q=%d=%d^%d)", kind, q, p, e);
    if (!h)
        return 1;
    int rc = (kind == 1) ? perq_hadamard_paley1(q, h, err) : perq_hadamard_paley2(q, h, err);
    return rc == 0 ? 1 : -1;
}

/* The Paley construction for m, primes first: 1 or 2 into *kind with q, or 0. */
static int paley_choice(int m, int *kind, int *q)
{
    int q1 = m - 1, q2 = m / 2 - 1;
    int p, e;
    int fits1 = q1 % 4 == 3 && perq_prime_power(q1, &p, &e);
    int fits2 = m % 2 == 0 && q2 >= 3 && q2 % 4 == 1 && perq_prime_power(q2, &p, &e);
    if (fits1 && is_prime(q1))
        *kind = 1, *q = q1;
    else if (fits2 && is_prime(q2))
        *kind = 2, *q = q2;
    else if (fits1)
        *kind = 1, *q = q1;
    else if (fits2)
        *kind = 2, *q = q2;
    else
        return 0;
    return 1;
}

static int construct(order_memo *memo, int m, int8_t *h, char *how, size_t how_size, perq_err *err)
{
    if (m < 1 || (m > 2 && m % 4 != 0))
        return 0;
    if (is_power_of_two(m)) {
        if (h)
            sylvester(m, h);
        snprintf(how, how_size, "sylvester(%d)", m);
        return 1;
    }
    int kind, q;
    if (paley_choice(m, &kind, &q))
        return build_paley(kind, q, h, how, how_size, err);

    char half_how[HOW_MAX];
    int half = ask(memo, m / 2, half_how, sizeof half_how, err);
    if (half < 0)
        return -1;
    if (half)
        return build_kronecker(memo, 2, m / 2, h, how, how_size, err);

    int a, b;
    int split = kronecker_split(memo, m, &a, &b, err);
    if (split != 0)
        return split < 0 ? -1 : build_kronecker(memo, a, b, h, how, how_size, err);

    int williamson = perq_hadamard_williamson(m / 4, h, how, how_size, err);
    if (williamson != 0 || m % 12 != 0)
        return williamson;
    return perq_hadamard_cooper_wallis(m / 12, h, how, how_size, err);
}

int perq_hadamard_construct(int m, int8_t *h, char *how, size_t how_size, perq_err *err)
{
    order_memo memo = {0};
    int rc = h ? construct(&memo, m, h, how, how_size, err) : ask(&memo, m, how, how_size, err);
    free(memo.items);
    return rc;
}

int perq_hadamard_factor_order(int n, int max_order, char *how, size_t how_size, perq_err *err)
{
    order_memo memo = {0};
    int odd = n, found = 0;
    while (odd % 2 == 0)
        odd /= 2;
    for (int m = odd; m <= n && m <= max_order && found == 0; m *= 2) {
        int rc = ask(&memo, m, how, how_size, err);
        if (rc != 0)
            found = rc < 0 ? -1 : m;
    }
    free(memo.items);
    return found;
}
