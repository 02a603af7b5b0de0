/* Seeded random orthogonal matrices, the fallback for orders with no Hadamard
 * construction here (see perq/hadamard.h). */
#include "perq/hadamard.h"
#include "splitmix64.h"

#include <lapack.h>
#include <math.h>
#include <stdlib.h>

/* Uniform in (0, 1), never 0 (log below). */
static double uniform_open(uint64_t *state)
{
    return ((double)(splitmix64(state) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static void fill_standard_normal(double *a, size_t count, uint64_t seed)
{
    const double two_pi = 6.283185307179586476925286766559;
    uint64_t state = seed;
    for (size_t i = 0; i < count; i += 2) {
        double radius = sqrt(-2.0 * log(uniform_open(&state)));
        double angle = two_pi * uniform_open(&state);
        a[i] = radius * cos(angle);
        if (i + 1 < count)
            a[i + 1] = radius * sin(angle);
    }
}

/* Householder QR of a (column-major m x m) in place: R in the upper triangle,
 * then Q over a. Returns LAPACK's info, or -1000 without memory. */
static int qr_in_place(double *a, int m, double *sign)
{
    lapack_int n = m, info = 0, lwork = -1;
    double query;
    double *tau = malloc((size_t)m * sizeof *tau);
    if (!tau)
        return -1000;
    LAPACK_dgeqrf(&n, &n, a, &n, tau, &query, &lwork, &info);
    lwork = (lapack_int)query;
    double *work = info == 0 ? malloc((size_t)(lwork > 1 ? lwork : 1) * sizeof *work) : NULL;
    if (info == 0 && !work)
        info = -1000;
    if (info == 0)
        LAPACK_dgeqrf(&n, &n, a, &n, tau, work, &lwork, &info);
    if (info == 0) {
        for (int j = 0; j < m; j++)
            sign[j] = a[(size_t)j * m + j] < 0 ? -1.0 : 1.0;
        LAPACK_dorgqr(&n, &n, &n, a, &n, tau, work, &lwork, &info);
    }
    free(work);
    free(tau);
    return (int)info;
}

int perq_random_orthogonal(int m, uint64_t seed, float *q, perq_err *err)
{
    if (m < 1)
        return perq_fail(err, PERQ_E_INVALID, "random orthogonal matrix of order %d", m);
    size_t count = (size_t)m * (size_t)m;
    double *a = malloc(count * sizeof *a);
    double *sign = malloc((size_t)m * sizeof *sign);
    if (!a || !sign) {
        free(a), free(sign);
        return perq_fail(err, PERQ_E_NOMEM, "random orthogonal matrix of order %d", m);
    }
    fill_standard_normal(a, count, seed);
    int info = qr_in_place(a, m, sign);
    int rc = 0;
    if (info == -1000)
        rc = perq_fail(err, PERQ_E_NOMEM, "random orthogonal matrix of order %d", m);
    else if (info != 0)
        rc = perq_fail(err, PERQ_E_INTERNAL, "LAPACK QR of order %d failed (info %d)", m, info);
    else /* a holds Q column-major: Q[i][j] = a[j*m + i] */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++)
                q[(size_t)i * m + j] = (float)(a[(size_t)j * m + i] * sign[j]);
    free(a), free(sign);
    return rc;
}
