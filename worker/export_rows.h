/* A 2-D tensor whose rows an export asks for while it writes the file, so that
 * a large matrix computed from another (a folded embedding or lm_head) never
 * exists whole: both exporters (export_ct.h, export_gguf.h) take one.
 *
 * The export calls rows(ctx, row0, nrows, out, err) for consecutive blocks of
 * rows, first to last, each of at most perq_export_block_rows(cols) rows; out
 * is [nrows][cols] fp32, converted to the tensor's type as soon as it returns.
 * A non-zero return (err set) fails the write: the file being written is
 * removed and err gets the tensor's name and the rows as context. */
#ifndef PERQ_EXPORT_ROWS_H
#define PERQ_EXPORT_ROWS_H

#include <stdint.h>

#include "perq/error.h"

typedef int (*perq_row_source)(void *ctx, int64_t row0, int64_t nrows, float *out, perq_err *err);

/* fp32 bytes of one block of rows (a few MB: large writes, small buffers). */
#define PERQ_EXPORT_BLOCK_BYTES ((int64_t)4 << 20)

static inline int64_t perq_export_block_rows(int64_t cols)
{
    int64_t rows = PERQ_EXPORT_BLOCK_BYTES / ((int64_t)sizeof(float) * (cols > 0 ? cols : 1));
    return rows > 0 ? rows : 1;
}

#endif
