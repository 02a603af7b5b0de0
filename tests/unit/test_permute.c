/* Channel permutations: MassDiff's partitions worked out by hand (ties
 * included), against a naive O(d n) version of the greedy rule on many inputs,
 * its balance against identity, the baselines, and applying permutations. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perq/permute.h"
#include "testutil.h"

static uint32_t rng_state = 88172645u;

static void massdiff_ok(const float *mass, int d, int block, int *perm)
{
    perq_err err = {0};
    if (perq_permute_massdiff(mass, d, block, perm, &err) != 0)
        fail_msg("massdiff: %s", err.msg);
}

/* ---- MassDiff by hand ---------------------------------------------------- */

/* Masses [1, 6, 3, 5, 2, 4], blocks of 2 (3 blocks). Heaviest first: ch1 (6),
 * ch3 (5), ch5 (4), ch2 (3), ch4 (2), ch0 (1). Seeds: B0 {1}=6, B1 {3}=5,
 * B2 {5}=4. ch2 -> lightest B2: {5,2}=7, full. ch4 -> lighter of B0 (6), B1 (5):
 * B1 {3,4}=7, full. ch0 -> B0 {1,0}=7. */
static void test_massdiff_by_hand(void **state)
{
    (void)state;
    const float mass[6] = {1, 6, 3, 5, 2, 4};
    const int expected[6] = {1, 0, 3, 4, 5, 2};
    int perm[6];
    massdiff_ok(mass, 6, 2, perm);
    assert_memory_equal(perm, expected, sizeof expected);

    double blocks[3];
    perq_permute_block_masses(mass, perm, 6, 2, blocks);
    for (int j = 0; j < 3; j++)
        assert_float_equal(blocks[j], 7.0, 0.0);
    assert_float_equal(perq_permute_mass_ratio(mass, perm, 6, 2), 1.0, 1e-12);
    int identity[6];
    perq_permute_identity(identity, 6);
    /* identity: {1,6}=7, {3,5}=8, {2,4}=6: max 8 over mean 7. */
    assert_float_equal(perq_permute_mass_ratio(mass, identity, 6, 2), 8.0 / 7.0, 1e-12);
}

/* Ties everywhere: masses [2, 2, 2, 2, 1, 1, 1, 1], blocks of 2. Equal masses
 * rank by lower index (ch0..ch3, then ch4..ch7); seeds B0..B3 = {0}, {1}, {2},
 * {3}, all at 2; ch4 finds four blocks tied at 2 and takes the lowest, B0; ch5
 * then B1 (B0 is full), ch6 B2, ch7 B3. */
static void test_massdiff_ties(void **state)
{
    (void)state;
    const float mass[8] = {2, 2, 2, 2, 1, 1, 1, 1};
    const int expected[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    int perm[8];
    massdiff_ok(mass, 8, 2, perm);
    assert_memory_equal(perm, expected, sizeof expected);

    /* All equal, blocks of 4: seeds {0}, {1}; then 2 -> B0 (tie, lower index),
     * 3 -> B1, 4 -> B0, 5 -> B1, 6 -> B0, 7 -> B1. */
    const float flat[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    const int expected_flat[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    massdiff_ok(flat, 8, 4, perm);
    assert_memory_equal(perm, expected_flat, sizeof expected_flat);
}

/* A full block is skipped: masses [10, 1, 1, 1, 1, 1], blocks of 3. Seeds B0
 * {0}=10, B1 {1}=1; ch2, ch3 join B1 (lighter), which is then full; ch4 and ch5
 * must join B0 although it is the heavier. */
static void test_massdiff_full_blocks(void **state)
{
    (void)state;
    const float mass[6] = {10, 1, 1, 1, 1, 1};
    const int expected[6] = {0, 4, 5, 1, 2, 3};
    int perm[6];
    massdiff_ok(mass, 6, 3, perm);
    assert_memory_equal(perm, expected, sizeof expected);
}

/* The greedy rule is not optimal, and MassDiff follows the rule: masses
 * [3, 3, 0, 2, 2, 2], blocks of 3. Seeds B0 {0}=3, B1 {1}=3; ch3 -> B0 (tie)
 * =5; ch4 -> B1 =5; ch5 -> B0 (tie) =7, full; ch2 -> B1 =5. Max 7, while the
 * identity split {3,3,0}, {2,2,2} has max 6. */
static void test_massdiff_is_greedy_not_optimal(void **state)
{
    (void)state;
    const float mass[6] = {3, 3, 0, 2, 2, 2};
    const int expected[6] = {0, 3, 5, 1, 4, 2};
    int perm[6], identity[6];
    massdiff_ok(mass, 6, 3, perm);
    assert_memory_equal(perm, expected, sizeof expected);
    perq_permute_identity(identity, 6);
    double greedy[2], ident[2];
    perq_permute_block_masses(mass, perm, 6, 3, greedy);
    perq_permute_block_masses(mass, identity, 6, 3, ident);
    assert_float_equal(fmax(greedy[0], greedy[1]), 7.0, 0.0);
    assert_float_equal(fmax(ident[0], ident[1]), 6.0, 0.0);
}

static void test_massdiff_edge_blocks(void **state)
{
    (void)state;
    const float mass[5] = {1, 5, 3, 5, 0};
    int perm[5];
    /* Blocks of 1: every channel is a seed, so perm is the ranking. */
    const int ranking[5] = {1, 3, 2, 0, 4};
    massdiff_ok(mass, 5, 1, perm);
    assert_memory_equal(perm, ranking, sizeof ranking);
    /* One block: channels join in rank order too. */
    massdiff_ok(mass, 5, 5, perm);
    assert_memory_equal(perm, ranking, sizeof ranking);
}

/* ---- MassDiff against a naive greedy, and against identity --------------- */

/* The rule written the slow way: sort by selection, scan every block. */
static void naive_massdiff(const float *mass, int d, int block, int *perm)
{
    int n = d / block;
    char *used = calloc((size_t)d, 1);
    int *order = malloc((size_t)d * sizeof *order);
    for (int r = 0; r < d; r++) {
        int best = -1;
        for (int i = 0; i < d; i++)
            if (!used[i] && (best < 0 || mass[i] > mass[best]))
                best = i;
        used[best] = 1;
        order[r] = best;
    }
    double *bm = calloc((size_t)n, sizeof *bm);
    int *count = calloc((size_t)n, sizeof *count);
    for (int r = 0; r < d; r++) {
        int j = -1;
        if (r < n)
            j = r;
        else
            for (int c = 0; c < n; c++)
                if (count[c] < block && (j < 0 || bm[c] < bm[j]))
                    j = c;
        perm[j * block + count[j]++] = order[r];
        bm[j] += mass[order[r]];
    }
    free(used), free(order), free(bm), free(count);
}

typedef enum { UNIFORM, SMALL_INTEGERS, LOGNORMAL, PARETO, PLANTED } mass_shape;

static void random_masses(float *mass, int d, mass_shape shape)
{
    for (int i = 0; i < d; i++) {
        double u = xorshift32_unit(&rng_state), v = xorshift32_unit(&rng_state);
        double normal = sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
        switch (shape) {
        case UNIFORM: mass[i] = (float)u; break;
        case SMALL_INTEGERS: mass[i] = (float)(xorshift32(&rng_state) % 4); break; /* many ties */
        case LOGNORMAL: mass[i] = (float)exp(2.0 * normal); break;
        case PARETO: mass[i] = (float)pow(u, -1.0 / 1.2); break;     /* heavy tail, alpha 1.2 */
        case PLANTED: mass[i] = (float)(0.1 * u + (xorshift32(&rng_state) % 64 == 0 ? 50.0 : 0.0)); break;
        }
    }
    /* Outliers side by side, as in real activations, make identity's job hard. */
    if (shape == PLANTED && d >= 8)
        for (int i = 0; i < 4; i++)
            mass[d / 3 + i] = 80.0f + (float)i;
}

static void test_massdiff_matches_naive_and_beats_identity(void **state)
{
    (void)state;
    const int dims[] = {16, 64, 172, 256, 688, 1024};
    int cases = 0;
    for (size_t t = 0; t < sizeof dims / sizeof dims[0]; t++) {
        int d = dims[t];
        float *mass = malloc((size_t)d * sizeof *mass);
        int *perm = malloc((size_t)d * sizeof *perm), *naive = malloc((size_t)d * sizeof *naive);
        int *identity = malloc((size_t)d * sizeof *identity);
        perq_permute_identity(identity, d);
        for (int block = 2; block < d; block++) {
            if (d % block != 0)
                continue;
            double *bm = malloc((size_t)(d / block) * sizeof *bm);
            for (int shape = UNIFORM; shape <= PLANTED; shape++)
                for (int rep = 0; rep < 3; rep++, cases++) {
                    random_masses(mass, d, (mass_shape)shape);
                    massdiff_ok(mass, d, block, perm);
                    naive_massdiff(mass, d, block, naive);
                    assert_memory_equal(perm, naive, (size_t)d * sizeof *perm);
                    assert_true(perq_permute_is_bijection(perm, d));
                    perq_permute_block_masses(mass, perm, d, block, bm);
                    double greedy_max = 0, identity_max = 0;
                    for (int j = 0; j < d / block; j++)
                        greedy_max = fmax(greedy_max, bm[j]);
                    perq_permute_block_masses(mass, identity, d, block, bm);
                    for (int j = 0; j < d / block; j++)
                        identity_max = fmax(identity_max, bm[j]);
                    if (greedy_max > identity_max)
                        fail_msg("d=%d block=%d shape=%d: MassDiff max %g above identity's %g", d, block, shape,
                                 greedy_max, identity_max);
                    /* A max over a mean. */
                    assert_true(perq_permute_mass_ratio(mass, perm, d, block) >= 1.0 - 1e-12);
                }
            free(bm);
        }
        free(mass), free(perm), free(naive), free(identity);
    }
    assert_true(cases > 300);
}

static void test_massdiff_errors(void **state)
{
    (void)state;
    perq_err err = {0};
    int perm[6];
    const float good[6] = {1, 2, 3, 4, 5, 6};
    assert_int_equal(perq_permute_massdiff(good, 6, 4, perm, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_int_equal(perq_permute_massdiff(good, 6, 0, perm, &err), -1);
    assert_int_equal(perq_permute_massdiff(good, 0, 1, perm, &err), -1);
    const float negative[6] = {1, 2, -3, 4, 5, 6};
    err = (perq_err){0};
    assert_int_equal(perq_permute_massdiff(negative, 6, 2, perm, &err), -1);
    assert_non_null(strstr(err.msg, "channel 2"));
    const float not_finite[6] = {1, 2, 3, NAN, 5, 6};
    assert_int_equal(perq_permute_massdiff(not_finite, 6, 2, perm, &err), -1);
    assert_int_equal(perq_permute_zigzag(not_finite, 6, 2, perm, &err), -1);
    const float infinite[6] = {1, 2, 3, 4, INFINITY, 6};
    assert_int_equal(perq_permute_zigzag(infinite, 6, 3, perm, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
}

/* ---- baselines ----------------------------------------------------------- */

/* absmax falls with the channel index, blocks of 2 (4 blocks): ranks 0..3 go
 * to blocks 0, 1, 2, 3 and ranks 4..7 back to blocks 3, 2, 1, 0. */
static void test_zigzag_by_hand(void **state)
{
    (void)state;
    const float absmax[8] = {8, 7, 6, 5, 4, 3, 2, 1};
    const int expected[8] = {0, 7, 1, 6, 2, 5, 3, 4};
    int perm[8];
    perq_err err = {0};
    assert_int_equal(perq_permute_zigzag(absmax, 8, 2, perm, &err), 0);
    assert_memory_equal(perm, expected, sizeof expected);
    /* Three rounds of three blocks, and ties by index: absmax [1, 9, 1, 9, 1, 9, 1, 9, 1]
     * ranks channels 1, 3, 5, 7, 0, 2, 4, 6, 8; rounds deal to blocks 0 1 2 | 2 1 0 | 0 1 2. */
    const float tied[9] = {1, 9, 1, 9, 1, 9, 1, 9, 1};
    int perm9[9];
    assert_int_equal(perq_permute_zigzag(tied, 9, 3, perm9, &err), 0);
    /* block 0 gets ranks 0, 5, 6 = ch1, ch2, ch4; block 1 ranks 1, 4, 7 = ch3,
     * ch0, ch6; block 2 ranks 2, 3, 8 = ch5, ch7, ch8. */
    const int blocks9[9] = {1, 2, 4, 3, 0, 6, 5, 7, 8};
    assert_memory_equal(perm9, blocks9, sizeof blocks9);
}

static void test_random_permutations(void **state)
{
    (void)state;
    /* Golden values from an independent implementation of splitmix64 + Lemire
     * + Fisher-Yates as documented in perq/permute.h. */
    const int seed1[10] = {9, 0, 1, 4, 8, 2, 3, 7, 6, 5};
    const int seed12345[10] = {2, 5, 4, 7, 6, 3, 8, 0, 9, 1};
    const int seed0[7] = {1, 5, 4, 3, 0, 2, 6};
    int perm[10];
    perq_permute_random(perm, 10, 1);
    assert_memory_equal(perm, seed1, sizeof seed1);
    perq_permute_random(perm, 10, 12345);
    assert_memory_equal(perm, seed12345, sizeof seed12345);
    perq_permute_random(perm, 7, 0);
    assert_memory_equal(perm, seed0, sizeof seed0);

    /* Bijections for many sizes and seeds; all 6 orders of 3 about equally often. */
    int counts[6] = {0};
    for (uint64_t seed = 0; seed < 6000; seed++) {
        int p3[3];
        perq_permute_random(p3, 3, seed);
        assert_true(perq_permute_is_bijection(p3, 3));
        counts[p3[0] * 2 + (p3[1] > p3[2])]++;
    }
    for (int k = 0; k < 6; k++)
        assert_in_range(counts[k], 880, 1120);
    for (int d = 1; d < 300; d += 37) {
        int *p = malloc((size_t)d * sizeof *p);
        perq_permute_random(p, d, (uint64_t)d * 7919u);
        assert_true(perq_permute_is_bijection(p, d));
        free(p);
    }
}

static void test_bijections_and_inverse(void **state)
{
    (void)state;
    enum { D = 688 };
    float mass[D];
    int perm[D], inv[D], composed[D];
    random_masses(mass, D, PARETO);
    perq_err err = {0};
    for (int method = 0; method < 4; method++) {
        if (method == 0)
            massdiff_ok(mass, D, 16, perm);
        else if (method == 1)
            assert_int_equal(perq_permute_zigzag(mass, D, 43, perm, &err), 0);
        else if (method == 2)
            perq_permute_random(perm, D, 5);
        else
            perq_permute_identity(perm, D);
        assert_true(perq_permute_is_bijection(perm, D));
        perq_permute_inverse(perm, D, inv);
        for (int k = 0; k < D; k++)
            composed[k] = perm[inv[k]];
        for (int k = 0; k < D; k++)
            assert_int_equal(composed[k], k);
        for (int k = 0; k < D; k++)
            assert_int_equal(inv[perm[k]], k);
    }
    const int repeated[4] = {0, 1, 1, 3}, out_of_range[3] = {0, 3, 1}, negative[2] = {-1, 0};
    assert_false(perq_permute_is_bijection(repeated, 4));
    assert_false(perq_permute_is_bijection(out_of_range, 3));
    assert_false(perq_permute_is_bijection(negative, 2));
    assert_false(perq_permute_is_bijection(repeated, 0));
}

static void test_zero_masses_ratio(void **state)
{
    (void)state;
    const float zeros[4] = {0, 0, 0, 0};
    int perm[4];
    massdiff_ok(zeros, 4, 2, perm);
    assert_true(perq_permute_is_bijection(perm, 4));
    assert_float_equal(perq_permute_mass_ratio(zeros, perm, 4, 2), 1.0, 0.0);
    /* All the mass in one block: the ratio is the number of blocks. */
    const float one[4] = {0, 0, 3, 1};
    int identity[4];
    perq_permute_identity(identity, 4);
    assert_float_equal(perq_permute_mass_ratio(one, identity, 4, 2), 2.0, 1e-12);
}

/* ---- applying ------------------------------------------------------------ */

static void test_apply_columns_and_rows(void **state)
{
    (void)state;
    enum { T = 3, IN = 10, OUT = 7 };
    float x[T * IN], W[OUT * IN], x0[T * IN], W0[OUT * IN];
    for (int i = 0; i < T * IN; i++)
        x0[i] = x[i] = (float)(xorshift32_unit(&rng_state) - 0.5);
    for (int i = 0; i < OUT * IN; i++)
        W0[i] = W[i] = (float)(xorshift32_unit(&rng_state) - 0.5);
    int pin[IN], pout[OUT], inv[IN];
    perq_permute_random(pin, IN, 3);
    perq_permute_random(pout, OUT, 4);
    perq_err err = {0};

    /* Columns: x[r][k] takes x[r][pin[k]]. */
    assert_int_equal(perq_permute_columns(x, T, IN, pin, &err), 0);
    for (int r = 0; r < T; r++)
        for (int k = 0; k < IN; k++)
            assert_float_equal(x[r * IN + k], x0[r * IN + pin[k]], 0.0);
    /* Rows: row k takes row pout[k]. */
    assert_int_equal(perq_permute_columns(W, OUT, IN, pin, &err), 0);
    assert_int_equal(perq_permute_rows(W, OUT, IN, pout, &err), 0);
    for (int o = 0; o < OUT; o++)
        for (int k = 0; k < IN; k++)
            assert_float_equal(W[o * IN + k], W0[pout[o] * IN + pin[k]], 0.0);
    /* y = x W^T: permuting x and W's input columns alike changes nothing;
     * permuting W's output rows permutes y. */
    for (int r = 0; r < T; r++)
        for (int o = 0; o < OUT; o++) {
            double y = 0, y0 = 0;
            for (int k = 0; k < IN; k++) {
                y += (double)x[r * IN + k] * W[o * IN + k];
                y0 += (double)x0[r * IN + k] * W0[pout[o] * IN + k];
            }
            assert_float_equal(y, y0, 1e-6);
        }
    /* The inverse undoes it. */
    perq_permute_inverse(pin, IN, inv);
    assert_int_equal(perq_permute_columns(x, T, IN, inv, &err), 0);
    assert_memory_equal(x, x0, sizeof x);

    /* Many rows take the parallel path; a long cycle and fixed points for rows. */
    enum { ROWS = 300, COLS = 256 };
    float *big = malloc((size_t)ROWS * COLS * sizeof *big), *copy = malloc((size_t)ROWS * COLS * sizeof *copy);
    for (int i = 0; i < ROWS * COLS; i++)
        copy[i] = big[i] = (float)i;
    int pc[COLS], pr[ROWS];
    perq_permute_random(pc, COLS, 11);
    for (int k = 0; k < ROWS; k++)
        pr[k] = (k % 3 == 0) ? k : (k + 3) % ROWS;  /* fixed points and one long cycle */
    assert_true(perq_permute_is_bijection(pr, ROWS));
    assert_int_equal(perq_permute_columns(big, ROWS, COLS, pc, &err), 0);
    assert_int_equal(perq_permute_rows(big, ROWS, COLS, pr, &err), 0);
    for (int r = 0; r < ROWS; r++)
        for (int k = 0; k < COLS; k++)
            assert_float_equal(big[r * COLS + k], copy[pr[r] * COLS + pc[k]], 0.0);
    free(big), free(copy);

    const int bad[3] = {0, 0, 2};
    float small[3] = {1, 2, 3};
    assert_int_equal(perq_permute_columns(small, 1, 3, bad, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_int_equal(perq_permute_rows(small, 3, 1, bad, &err), -1);
    assert_float_equal(small[1], 2.0f, 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_massdiff_by_hand),
        cmocka_unit_test(test_massdiff_ties),
        cmocka_unit_test(test_massdiff_full_blocks),
        cmocka_unit_test(test_massdiff_is_greedy_not_optimal),
        cmocka_unit_test(test_massdiff_edge_blocks),
        cmocka_unit_test(test_massdiff_matches_naive_and_beats_identity),
        cmocka_unit_test(test_massdiff_errors),
        cmocka_unit_test(test_zigzag_by_hand),
        cmocka_unit_test(test_random_permutations),
        cmocka_unit_test(test_bijections_and_inverse),
        cmocka_unit_test(test_zero_masses_ratio),
        cmocka_unit_test(test_apply_columns_and_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
