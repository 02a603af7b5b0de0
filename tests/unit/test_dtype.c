#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "perq/dtype.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_names_and_sizes(void **state)
{
    (void)state;
    perq_dtype dt;
    for (int i = 0; i < PERQ_DT_COUNT; i++) {
        const char *name = perq_dtype_name((perq_dtype)i);
        assert_non_null(name);
        assert_int_equal(perq_dtype_from_name(name, &dt), 0);
        assert_int_equal(dt, i);
    }
    assert_null(perq_dtype_name(PERQ_DT_COUNT));
    assert_int_equal(perq_dtype_from_name("f32", &dt), -1);
    assert_int_equal(perq_dtype_from_name("F8_E4M3", &dt), -1);
    assert_int_equal(perq_dtype_size(PERQ_DT_F32), 4);
    assert_int_equal(perq_dtype_size(PERQ_DT_BF16), 2);
    assert_int_equal(perq_dtype_size(PERQ_DT_F16), 2);
    assert_int_equal(perq_dtype_size(PERQ_DT_I64), 8);
    assert_int_equal(perq_dtype_size(PERQ_DT_BOOL), 1);
    assert_true(perq_dtype_is_float(PERQ_DT_BF16));
    assert_false(perq_dtype_is_float(PERQ_DT_F64));
    assert_false(perq_dtype_is_float(PERQ_DT_I32));
}

/* Every bf16 value widens exactly and narrows back to itself. */
static void test_bf16_round_trip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float f = perq_bf16_to_f32((uint16_t)h);
        assert_int_equal(bits_of(f), h << 16);
        if (isnan(f)) {
            assert_true(isnan(perq_bf16_to_f32(perq_f32_to_bf16(f))));
            continue;
        }
        assert_int_equal(perq_f32_to_bf16(f), h);
    }
}

/* Every f16 value widens to the value its fields define and narrows back. */
static void test_f16_round_trip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float f = perq_f16_to_f32((uint16_t)h);
        int exp = (h >> 10) & 31, mant = h & 1023;
        double want = exp == 0 ? ldexp(mant, -24) : ldexp(1024 + mant, exp - 25);
        if (h & 0x8000)
            want = -want;
        if (exp == 31) {
            assert_true(mant ? isnan(f) : isinf(f));
            assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0);
            if (mant)
                assert_true(isnan(perq_f16_to_f32(perq_f32_to_f16(f))));
            else
                assert_int_equal(perq_f32_to_f16(f), h);
            continue;
        }
        assert_true((double)f == want);
        assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0);
        assert_int_equal(perq_f32_to_f16(f), h);
    }
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    /* Exactly halfway between 1.0 (0x3f80, even) and the next value: to even, down. */
    assert_int_equal(perq_f32_to_bf16(float_of(0x3f808000u)), 0x3f80);
    /* Halfway above an odd mantissa: to even, up. */
    assert_int_equal(perq_f32_to_bf16(float_of(0x3f818000u)), 0x3f82);
    /* Just above and below halfway. */
    assert_int_equal(perq_f32_to_bf16(float_of(0x3f808001u)), 0x3f81);
    assert_int_equal(perq_f32_to_bf16(float_of(0x3f807fffu)), 0x3f80);
    /* Negative numbers round by magnitude. */
    assert_int_equal(perq_f32_to_bf16(float_of(0xbf818000u)), 0xbf82);
    /* The largest float rounds up to infinity; the largest bf16 stays. */
    assert_int_equal(perq_f32_to_bf16(float_of(0x7f7fffffu)), 0x7f80);
    assert_int_equal(perq_f32_to_bf16(float_of(0x7f7f0000u)), 0x7f7f);
    /* Subnormals round the same way, and the smallest ones vanish to zero. */
    assert_int_equal(perq_f32_to_bf16(float_of(0x00008000u)), 0x0000);
    assert_int_equal(perq_f32_to_bf16(float_of(0x00018000u)), 0x0002);
    assert_int_equal(perq_f32_to_bf16(float_of(0x80000001u)), 0x8000);
}

static void test_f16_rounding(void **state)
{
    (void)state;
    float ulp = 0x1p-10f; /* spacing of f16 just above 1.0 */
    assert_int_equal(perq_f32_to_f16(1.0f + ulp / 2), 0x3c00);      /* tie, to even: down */
    assert_int_equal(perq_f32_to_f16(1.0f + 3 * ulp / 2), 0x3c02);  /* tie, to even: up */
    assert_int_equal(perq_f32_to_f16(nextafterf(1.0f + ulp / 2, 2.0f)), 0x3c01);
    assert_int_equal(perq_f32_to_f16(-(1.0f + 3 * ulp / 2)), 0xbc02);
    /* 65504 is the largest f16; 65520 is halfway to 65536 and ties to infinity. */
    assert_int_equal(perq_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(perq_f32_to_f16(65519.99f), 0x7bff);
    assert_int_equal(perq_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(perq_f32_to_f16(-1e9f), 0xfc00);
    /* Subnormals: the smallest is 2^-24; half of it ties to zero; 1.5 of it ties up to 2. */
    assert_int_equal(perq_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(perq_f32_to_f16(0x1p-25f), 0x0000);
    assert_int_equal(perq_f32_to_f16(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    assert_int_equal(perq_f32_to_f16(0x1.8p-24f), 0x0002);
    assert_int_equal(perq_f32_to_f16(0x1.4p-24f), 0x0001);
    assert_int_equal(perq_f32_to_f16(-0x1p-26f), 0x8000);
    /* The largest subnormal rounds up into the smallest normal. */
    assert_int_equal(perq_f32_to_f16(0x1p-14f - 0x1p-26f), 0x0400);
    assert_int_equal(perq_f32_to_f16(0x1p-14f - 0x1p-24f), 0x03ff);
    /* Float subnormals are far below f16's range. */
    assert_int_equal(perq_f32_to_f16(float_of(0x00000001u)), 0x0000);
}

static void test_special_values(void **state)
{
    (void)state;
    assert_int_equal(perq_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(perq_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(perq_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(perq_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(perq_f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(perq_f32_to_f16(-0.0f), 0x8000);

    /* NaNs whose payload lies only in the bits that are cut off must stay NaN. */
    float quiet_low = float_of(0x7f800001u), neg_low = float_of(0xff800001u);
    assert_true(isnan(perq_bf16_to_f32(perq_f32_to_bf16(quiet_low))));
    assert_true(isnan(perq_f16_to_f32(perq_f32_to_f16(quiet_low))));
    assert_true(signbit(perq_bf16_to_f32(perq_f32_to_bf16(neg_low))));
    assert_true(signbit(perq_f16_to_f32(perq_f32_to_f16(neg_low))));
    assert_true(isnan(perq_bf16_to_f32(perq_f32_to_bf16(NAN))));
    assert_true(isnan(perq_f16_to_f32(perq_f32_to_f16(NAN))));
}

/* The array conversions agree with the scalar ones, from unaligned sources. */
static void test_array_conversions(void **state)
{
    (void)state;
    float src[5] = {1.0f, -2.5f, 0x1p-20f, 65504.0f, 3.14159f};
    unsigned char raw[1 + 5 * 8];
    float back[5];
    perq_dtype dts[] = {PERQ_DT_F16, PERQ_DT_BF16, PERQ_DT_F32};
    for (size_t k = 0; k < 3; k++) {
        perq_from_f32(dts[k], src, raw + 1, 5);
        perq_to_f32(dts[k], raw + 1, back, 5);
        for (int i = 0; i < 5; i++) {
            float want = dts[k] == PERQ_DT_F16    ? perq_f16_to_f32(perq_f32_to_f16(src[i]))
                         : dts[k] == PERQ_DT_BF16 ? perq_bf16_to_f32(perq_f32_to_bf16(src[i]))
                                                  : src[i];
            assert_true(back[i] == want);
        }
    }
    double d[2] = {0.1, -3e38};
    memcpy(raw + 1, d, sizeof d);
    perq_to_f32(PERQ_DT_F64, raw + 1, back, 2);
    assert_true(back[0] == 0.1f);
    assert_true(back[1] == -3e38f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_sizes),  cmocka_unit_test(test_bf16_round_trip_all),
        cmocka_unit_test(test_f16_round_trip_all), cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_f16_rounding),     cmocka_unit_test(test_special_values),
        cmocka_unit_test(test_array_conversions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
