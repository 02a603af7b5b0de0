#include "perq/dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[PERQ_DT_COUNT] = {
    [PERQ_DT_F32] = {"F32", 4},  [PERQ_DT_F16] = {"F16", 2},  [PERQ_DT_BF16] = {"BF16", 2},
    [PERQ_DT_F64] = {"F64", 8},  [PERQ_DT_I8] = {"I8", 1},    [PERQ_DT_U8] = {"U8", 1},
    [PERQ_DT_I16] = {"I16", 2},  [PERQ_DT_U16] = {"U16", 2},  [PERQ_DT_I32] = {"I32", 4},
    [PERQ_DT_U32] = {"U32", 4},  [PERQ_DT_I64] = {"I64", 8},  [PERQ_DT_U64] = {"U64", 8},
    [PERQ_DT_BOOL] = {"BOOL", 1},
};

const char *perq_dtype_name(perq_dtype dt)
{
    if ((unsigned)dt >= PERQ_DT_COUNT)
        return NULL;
    return dtype_info[dt].name;
}

int perq_dtype_from_name(const char *name, perq_dtype *dt)
{
    for (int i = 0; i < PERQ_DT_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *dt = (perq_dtype)i;
            return 0;
        }
    }
    return -1;
}

size_t perq_dtype_size(perq_dtype dt)
{
    if ((unsigned)dt >= PERQ_DT_COUNT)
        return 0;
    return dtype_info[dt].size;
}

int perq_dtype_is_float(perq_dtype dt)
{
    return dt == PERQ_DT_F32 || dt == PERQ_DT_F16 || dt == PERQ_DT_BF16;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Drops the low `shift` bits of x, rounding to nearest with ties to even. */
static uint32_t shift_round_even(uint32_t x, int shift)
{
    uint32_t kept = x >> shift;
    uint32_t rest = x & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1)))
        kept++;
    return kept;
}

float perq_bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t perq_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)               /* NaN: keep sign and payload top, force quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    /* A carry out of the mantissa bumps the exponent, which is exactly right,
     * up to the largest finite value rounding to infinity. */
    return (uint16_t)(shift_round_even(u, 16));
}

float perq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {                                    /* zero or subnormal: mant * 2^-24, exact in f32 */
        float mag = (float)mant * 0x1p-24f;
        return sign ? -mag : mag;
    }
    if (exp == 31)                                     /* inf or NaN, payload kept */
        return f32_from_bits(sign | 0x7f800000u | (mant << 13));
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t perq_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t mag = u & 0x7fffffffu;

    if (mag > 0x7f800000u)                             /* NaN: quiet, top payload bits kept */
        return sign | 0x7e00u | (uint16_t)((mag >> 13) & 0x3ffu);
    if (mag >= 0x477ff000u)                            /* >= 65520 (or inf) rounds to inf */
        return sign | 0x7c00u;
    if (mag >= 0x38800000u)                            /* normal in f16 (>= 2^-14): rebias, round */
        return sign | (uint16_t)shift_round_even(mag - 0x38000000u, 13);

    /* Below 2^-14 the result is subnormal: count = value * 2^24, rounded. */
    int exp = (int)(mag >> 23);
    if (exp < 102)                                     /* below 2^-25: rounds to zero */
        return sign;
    uint32_t mant = (mag & 0x7fffffu) | 0x800000u;
    return sign | (uint16_t)shift_round_even(mant, 126 - exp);
}

void perq_to_f32(perq_dtype dt, const void *src, float *dst, size_t n)
{
    const unsigned char *p = src;
    if (n == 0)
        return;
    switch (dt) {
    case PERQ_DT_F32:
        memcpy(dst, p, n * sizeof(float));
        break;
    case PERQ_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = perq_f16_to_f32(h);
        }
        break;
    case PERQ_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = perq_bf16_to_f32(h);
        }
        break;
    case PERQ_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    default:
        break;
    }
}

void perq_from_f32(perq_dtype dt, const float *src, void *dst, size_t n)
{
    unsigned char *p = dst;
    if (n == 0)
        return;
    switch (dt) {
    case PERQ_DT_F32:
        memcpy(p, src, n * sizeof(float));
        break;
    case PERQ_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = perq_f32_to_f16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        break;
    case PERQ_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = perq_f32_to_bf16(src[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        break;
    default:
        break;
    }
}
