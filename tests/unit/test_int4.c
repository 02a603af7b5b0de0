/* INT4 RTN: a hand-computed golden case, the pack-quantized layout, and the
 * properties every quantized matrix must have. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perq/dtype.h"
#include "perq/int4.h"
#include "testutil.h"

/* Deterministic test data: xorshift, then a heavy-ish tail so that clipping pays. */
static uint32_t rng_state = 12345u;
static float rng_weight(void)
{
    float u = xorshift32_float(&rng_state);
    return (xorshift32(&rng_state) % 16 == 0) ? 6.0f * u : 0.05f * u;  /* a few large elements */
}

/* Golden case, worked out by hand.
 * Group 0 [7.5, -3.2, 1.4, 0.6]: absmax 7.5, full-range scale 1 gives q = [7 (7.5 rounds
 *   half-even to 8, clamped), -3, 1, 1], error .25+.04+.16+.16 = .61. Any ratio r < 1 clips
 *   7.5 to 7r, costing (7.5-7r)^2 alone: r=.99 -> .698 total, .98 -> .798, .97 -> .91,
 *   r <= .96 -> over .6084 from that element plus the others. So s = 1.
 * Group 1 [-1, -1, -1, -1]: every r in [.94, 1] gives q = -8 with error |8r/7.5 - 1| per
 *   element, smallest at r = .94 (.00267); r = .93 clamps at -8 too (error .008). So
 *   s = .94/7.5 = .1253333.
 * Group 2 [0.3, -0.15] (the short last group of width 10 with groups of 4): r = 1 gives
 *   s = .04, q = [7, -4], error .02^2 + .01^2 = .0005; for smaller r the clamped 0.3 costs
 *   (.3-.28r)^2 + (.16r-.15)^2, decreasing up to r = 1.04, so s = .04.
 * Packed (q + 8 in nibble k of word i for element 8i+k): elements 0..7 are
 * [15, 5, 9, 9, 0, 0, 0, 0] = 0x0000995F; elements 8, 9 are [15, 4] = 0x4F, the rest 0. */
static const float golden_w[10] = {7.5f, -3.2f, 1.4f, 0.6f, -1.0f, -1.0f, -1.0f, -1.0f, 0.3f, -0.15f};
static const int8_t golden_q[10] = {7, -3, 1, 1, -8, -8, -8, -8, 7, -4};

static void test_golden_groups(void **state)
{
    (void)state;
    perq_int4_matrix m;
    perq_err err = {0};
    assert_int_equal(perq_int4_rtn(golden_w, 1, 10, 4, &m, &err), 0);
    assert_int_equal(m.n_groups, 3);
    assert_int_equal(m.group, 4);
    assert_memory_equal(m.q, golden_q, 10);
    assert_float_equal(m.scales[0], 1.0f, 0.0f);
    assert_float_equal(m.scales[1], 0.94f / 7.5f, 1e-7f);
    assert_float_equal(m.scales[2], 0.04f, 1e-8f);

    int32_t packed[2];
    assert_int_equal(perq_int4_packed_cols(10), 2);
    perq_int4_pack(m.q, 1, 10, packed);
    assert_int_equal((uint32_t)packed[0], 0x0000995Fu);
    assert_int_equal((uint32_t)packed[1], 0x0000004Fu);
    perq_int4_free(&m);
}

/* The same rows per channel with BF16 scales: the -1 row now finds r = .94 rounding to
 * exactly 0.125 in BF16 (.9338 <= r < .9412 does), so -8 * 0.125 = -1 with no error at all:
 * the search sees the scale that will be stored. */
static void test_golden_bf16_scales(void **state)
{
    (void)state;
    const float w[8] = {7.5f, -3.2f, 1.4f, 0.6f, -1.0f, -1.0f, -1.0f, -1.0f};
    perq_int4_matrix m;
    perq_err err = {0};
    assert_int_equal(perq_int4_rtn_as(w, 2, 4, 0, PERQ_DT_BF16, &m, &err), 0);
    assert_int_equal(m.n_groups, 1);
    assert_memory_equal(m.q, golden_q, 8);
    assert_float_equal(m.scales[0], 1.0f, 0.0f);
    assert_float_equal(m.scales[1], 0.125f, 0.0f);
    float back[8];
    perq_int4_dequantize(&m, back);
    for (int i = 4; i < 8; i++)
        assert_float_equal(back[i], -1.0f, 0.0f);
    perq_int4_free(&m);
}

static void test_round_half_even_and_clamp(void **state)
{
    (void)state;
    const float w[8] = {0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 100.0f, -100.0f, 7.49f};
    const int8_t want[8] = {0, 2, 2, 0, -2, 7, -8, 7};
    int8_t q[8];
    perq_int4_round(w, 8, 1.0f, q);
    assert_memory_equal(q, want, 8);
    perq_int4_round(w, 8, 0.0f, q);
    for (int i = 0; i < 8; i++)
        assert_int_equal(q[i], 0);
}

static void test_pack_round_trip(void **state)
{
    (void)state;
    for (int cols = 1; cols <= 41; cols++) {
        const int rows = 3;
        size_t words = perq_int4_packed_cols(cols);
        assert_int_equal(words, (size_t)(cols + 7) / 8);
        int8_t *q = malloc((size_t)rows * cols), *back = malloc((size_t)rows * cols);
        int32_t *packed = malloc(rows * words * sizeof *packed);
        for (int i = 0; i < rows * cols; i++)
            q[i] = (int8_t)((int)(xorshift32(&rng_state) % 16) - 8);
        perq_int4_pack(q, rows, cols, packed);
        perq_int4_unpack(packed, rows, cols, back);
        assert_memory_equal(q, back, (size_t)rows * cols);
        for (int r = 0; r < rows; r++)
            for (size_t c = 0; c < words * 8; c++) {
                uint32_t word = (uint32_t)packed[r * words + c / 8];
                unsigned nib = (word >> (4 * (c % 8))) & 0xF;
                if (c < (size_t)cols)
                    assert_int_equal(nib, (unsigned)(q[r * cols + (int)c] + 8));
                else
                    assert_int_equal(nib, 0); /* padding */
            }
        free(q);
        free(back);
        free(packed);
    }
}

/* The error of every clipping candidate, computed here independently of the search. */
static double best_candidate_error(const float *w, int n, perq_dtype dt)
{
    float amax = 0;
    for (int i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(w[i]));
    double best = INFINITY;
    for (int step = 0; step < PERQ_INT4_CLIP_STEPS; step++) {
        float s = perq_int4_round_scale(amax * (1.0f - 0.01f * (float)step) / 7.5f, dt);
        best = fmin(best, perq_int4_sq_error(w, n, s));
    }
    return best;
}

static int representable(float s, perq_dtype dt)
{
    if (dt == PERQ_DT_BF16)
        return perq_bf16_to_f32(perq_f32_to_bf16(s)) == s;
    if (dt == PERQ_DT_F16)
        return perq_f16_to_f32(perq_f32_to_f16(s)) == s;
    return 1;
}

static int clipped_groups; /* groups whose search chose to clip */

/* For each shape, group and scale dtype: q in range, unclipped elements within half a
 * step, the chosen scale as good as the best candidate and never worse than full range. */
static void check_properties(int rows, int cols, int group, perq_dtype dt)
{
    size_t n = (size_t)rows * cols;
    float *w = malloc(n * sizeof *w), *back = malloc(n * sizeof *back);
    for (size_t i = 0; i < n; i++)
        w[i] = rng_weight();
    perq_int4_matrix m;
    perq_err err = {0};
    assert_int_equal(perq_int4_rtn_as(w, rows, cols, group, dt, &m, &err), 0);
    int g = group <= 0 || group > cols ? cols : group;
    assert_int_equal(m.n_groups, (cols + g - 1) / g);
    perq_int4_dequantize(&m, back);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < m.n_groups; k++) {
            int begin = k * g, len = cols - begin < g ? cols - begin : g;
            const float *gw = w + (size_t)r * cols + begin;
            float s = m.scales[(size_t)r * m.n_groups + k];
            assert_true(representable(s, dt));
            for (int c = 0; c < len; c++) {
                int8_t q = m.q[(size_t)r * cols + begin + c];
                assert_true(q >= -8 && q <= 7);
                double got = back[(size_t)r * cols + begin + c];
                /* q * stored scale; exact in fp32 for F16/BF16 scales (4 + 11 bits at most) */
                assert_true(got == (double)((float)q * s));
                if (dt != PERQ_DT_F32)
                    assert_true(got == (double)q * (double)s);
                if (fabs((double)gw[c]) <= 7.5 * (double)s)
                    assert_true(fabs((double)gw[c] - got) <= (double)s * (0.5 + 1e-6));
            }
            double chosen = perq_int4_sq_error(gw, len, s);
            assert_true(chosen == best_candidate_error(gw, len, dt));
            float amax = 0;
            for (int c = 0; c < len; c++)
                amax = fmaxf(amax, fabsf(gw[c]));
            float full = perq_int4_round_scale(amax / 7.5f, dt);
            assert_true(chosen <= perq_int4_sq_error(gw, len, full));
            clipped_groups += s < full;
        }
    perq_int4_free(&m);
    free(w);
    free(back);
}

static void test_properties(void **state)
{
    (void)state;
    static const int shapes[][2] = {{1, 1}, {3, 7}, {5, 64}, {4, 172}, {17, 100}, {64, 513}};
    static const int groups[] = {0, 32, 64, 128, 3};
    static const perq_dtype dts[] = {PERQ_DT_F32, PERQ_DT_F16, PERQ_DT_BF16};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
            for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++)
                check_properties(shapes[s][0], shapes[s][1], groups[g], dts[d]);
    assert_true(clipped_groups > 0); /* the search did more than take the full range */
}

/* Large enough for the parallel path: the result must not depend on threading. */
static void test_parallel_matches_rows(void **state)
{
    (void)state;
    const int rows = 256, cols = 256;
    float *w = malloc((size_t)rows * cols * sizeof *w);
    for (int i = 0; i < rows * cols; i++)
        w[i] = rng_weight();
    perq_int4_matrix all, one;
    perq_err err = {0};
    assert_int_equal(perq_int4_rtn_as(w, rows, cols, 32, PERQ_DT_BF16, &all, &err), 0);
    for (int r = 0; r < rows; r += 37) {
        assert_int_equal(perq_int4_rtn_as(w + (size_t)r * cols, 1, cols, 32, PERQ_DT_BF16, &one, &err), 0);
        assert_memory_equal(one.q, all.q + (size_t)r * cols, (size_t)cols);
        assert_memory_equal(one.scales, all.scales + (size_t)r * all.n_groups, all.n_groups * sizeof(float));
        perq_int4_free(&one);
    }
    perq_int4_free(&all);
    free(w);
}

/* The plain C, SSE2 and AVX error loops agree to the bit (so every machine picks the
 * same scales), including the tails of lengths that are not multiples of 8. */
static void test_implementations_agree(void **state)
{
    (void)state;
    float w[300];
    for (int i = 0; i < 300; i++)
        w[i] = rng_weight();
    int compared = 0;
    for (int n = 1; n <= 300; n += 7)
        for (int step = 0; step < PERQ_INT4_CLIP_STEPS; step += 5) {
            float s = perq_int4_round_scale(6.0f * (1.0f - 0.01f * (float)step) / 7.5f, PERQ_DT_BF16);
            double c = perq_int4_sq_error_impl(w, n, s, PERQ_INT4_IMPL_C);
            assert_true(c == perq_int4_sq_error(w, n, s));
            for (int impl = PERQ_INT4_IMPL_SSE2; impl <= PERQ_INT4_IMPL_AVX; impl++) {
                double v = perq_int4_sq_error_impl(w, n, s, (perq_int4_impl)impl);
                if (isnan(v))
                    continue; /* not on this machine */
                assert_true(v == c);
                compared++;
            }
        }
    print_message("compared %d vector results with the plain C loop\n", compared);
}

static void test_zero_and_tiny_rows(void **state)
{
    (void)state;
    const float w[6] = {0, 0, 0, 1e-9f, -2e-9f, 0};
    perq_int4_matrix m;
    perq_err err = {0};
    assert_int_equal(perq_int4_rtn_as(w, 2, 3, 0, PERQ_DT_F16, &m, &err), 0);
    assert_float_equal(m.scales[0], 0.0f, 0.0f);
    for (int i = 0; i < 3; i++)
        assert_int_equal(m.q[i], 0);
    /* 2e-9 / 7.5 underflows F16: the scale is 0 and the row rounds to 0 */
    assert_float_equal(m.scales[1], 0.0f, 0.0f);
    for (int i = 3; i < 6; i++)
        assert_int_equal(m.q[i], 0);
    perq_int4_free(&m);
    assert_float_equal(perq_int4_round_scale(1e6f, PERQ_DT_F16), 65504.0f, 0.0f);
}

static void test_rejects_bad_input(void **state)
{
    (void)state;
    float w[4] = {1, 2, NAN, 4};
    perq_int4_matrix m;
    perq_err err = {0};
    assert_int_equal(perq_int4_rtn(w, 2, 2, 0, &m, &err), -1);
    assert_int_equal(err.code, PERQ_E_FORMAT);
    assert_non_null(strstr(err.msg, "row 1"));
    assert_null(m.q);
    w[2] = INFINITY;
    assert_int_equal(perq_int4_rtn(w, 2, 2, 0, &m, &err), -1);
    assert_int_equal(perq_int4_rtn(w, 0, 2, 0, &m, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    w[2] = 3;
    assert_int_equal(perq_int4_rtn_as(w, 2, 2, 0, PERQ_DT_I32, &m, &err), -1);
    assert_int_equal(err.code, PERQ_E_UNSUPPORTED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_groups),
        cmocka_unit_test(test_golden_bf16_scales),
        cmocka_unit_test(test_round_half_even_and_clamp),
        cmocka_unit_test(test_pack_round_trip),
        cmocka_unit_test(test_properties),
        cmocka_unit_test(test_parallel_matches_rows),
        cmocka_unit_test(test_implementations_agree),
        cmocka_unit_test(test_zero_and_tiny_rows),
        cmocka_unit_test(test_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
