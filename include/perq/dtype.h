/* Element types of tensors on disk, and conversions to and from fp32. */
#ifndef PERQ_DTYPE_H
#define PERQ_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    PERQ_DT_F32, PERQ_DT_F16, PERQ_DT_BF16, PERQ_DT_F64,
    PERQ_DT_I8, PERQ_DT_U8, PERQ_DT_I16, PERQ_DT_U16,
    PERQ_DT_I32, PERQ_DT_U32, PERQ_DT_I64, PERQ_DT_U64, PERQ_DT_BOOL,
    PERQ_DT_COUNT
} perq_dtype;

/* safetensors spelling ("F32", "BF16", ...); NULL for an out-of-range value. */
const char *perq_dtype_name(perq_dtype dt);
/* Returns 0 and sets *dt, or -1 for a name safetensors does not define. */
int perq_dtype_from_name(const char *name, perq_dtype *dt);
size_t perq_dtype_size(perq_dtype dt);
/* True for F32, F16, BF16: the dtypes model weights may have. */
int perq_dtype_is_float(perq_dtype dt);

float perq_bf16_to_f32(uint16_t h);
float perq_f16_to_f32(uint16_t h);
uint16_t perq_f32_to_bf16(float f); /* round to nearest even, NaN kept NaN */
uint16_t perq_f32_to_f16(float f);  /* round to nearest even, overflow to inf */

/* Widens n elements of a float dtype (F32, F16, BF16, F64) to fp32; src may be unaligned. */
void perq_to_f32(perq_dtype dt, const void *src, float *dst, size_t n);
/* Narrows n fp32 values into a float dtype (F32, F16, BF16). */
void perq_from_f32(perq_dtype dt, const float *src, void *dst, size_t n);

#endif
