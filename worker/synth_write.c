/* A safetensors file streamed from the weight generator: the header is known
 * from the shapes alone, so the writer (perq_st_stream_*) puts it first, then
 * each tensor follows a block of rows at a time (rows made in parallel, the
 * previous block written meanwhile), so memory stays at two blocks however
 * large the model. */
#include <omp.h>
#include <stdlib.h>

#include "perq/safetensors.h"
#include "synth.h"

#define BLOCK_BYTES ((size_t)32 << 20)

/* Every tensor by name and shape, and the metadata perq_st_write would give. */
static int declare_tensors(perq_st_writer *w, const synth_tensor *const *t, size_t n, perq_dtype dtype,
                           perq_err *err)
{
    int rc = perq_st_writer_meta(w, "format", "pt", err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const int64_t rows_cols[2] = {t[i]->rows, t[i]->cols};
        const int64_t *shape = t[i]->ndim == 1 ? &t[i]->cols : rows_cols;
        rc = perq_st_writer_declare(w, t[i]->name, dtype, t[i]->ndim, shape, err);
    }
    return rc;
}

/* Rows r0 .. r0+nr of t into block, in dtype; scratch holds cols floats per thread. */
static void make_rows(const synth_plan *plan, const synth_tensor *t, perq_dtype dtype,
                      int64_t r0, int64_t nr, float *scratch, unsigned char *block)
{
    size_t row_bytes = (size_t)t->cols * perq_dtype_size(dtype);
#pragma omp parallel
    {
        float *row = scratch + (size_t)omp_get_thread_num() * (size_t)t->cols;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < nr; r++) {
            synth_tensor_row(plan, t, r0 + r, row);
            perq_from_f32(dtype, row, block + (size_t)r * row_bytes, (size_t)t->cols);
        }
    }
}

static int write_tensor(const synth_plan *plan, const synth_tensor *t, perq_dtype dtype,
                        synth_pipe *pipe, float *scratch, perq_err *err)
{
    size_t row_bytes = (size_t)t->cols * perq_dtype_size(dtype);
    int64_t rows_per_block = (int64_t)(BLOCK_BYTES / row_bytes);
    int rc = 0;
    for (int64_t r0 = 0; rc == 0 && r0 < t->rows; r0 += rows_per_block) {
        int64_t nr = t->rows - r0 < rows_per_block ? t->rows - r0 : rows_per_block;
        make_rows(plan, t, dtype, r0, nr, scratch, synth_pipe_block(pipe));
        rc = synth_pipe_send(pipe, (size_t)nr * row_bytes, err);
    }
    return rc ? perq_err_context(err, "tensor %s", t->name) : 0;
}

/* The tensors' data, made on this thread and written by the pipe's. */
static int write_data(const synth_plan *plan, const synth_tensor *const *t, size_t n,
                      perq_dtype dtype, perq_st_writer *w, perq_err *err)
{
    int64_t max_cols = 1;
    for (size_t i = 0; i < n; i++) {
        if ((size_t)t[i]->cols * perq_dtype_size(dtype) > BLOCK_BYTES)
            return perq_fail(err, PERQ_E_INVALID, "tensor %s: rows too wide", t[i]->name);
        max_cols = t[i]->cols > max_cols ? t[i]->cols : max_cols;
    }
    float *scratch = malloc((size_t)omp_get_max_threads() * (size_t)max_cols * sizeof(float));
    synth_pipe *pipe;
    if (!scratch)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (synth_pipe_open(&pipe, w, BLOCK_BYTES, err) != 0) {
        free(scratch);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = write_tensor(plan, t[i], dtype, pipe, scratch, err);
    perq_err close_err = {0};
    if (synth_pipe_close(pipe, &close_err) != 0 && rc == 0) {
        *err = close_err;
        rc = -1;
    }
    free(scratch);
    return rc;
}

int synth_write_safetensors(const synth_plan *plan, const synth_tensor *const *t, size_t n,
                            perq_dtype dtype, const char *path, perq_err *err)
{
    perq_st_writer *w = perq_st_writer_new();
    if (!w)
        return perq_fail(err, PERQ_E_NOMEM, "writing %s: out of memory", path);
    int rc = declare_tensors(w, t, n, dtype, err);
    if (rc == 0)
        rc = perq_st_stream_begin(w, path, err);
    if (rc == 0 && write_data(plan, t, n, dtype, w, err) != 0)
        rc = perq_err_context(err, "writing %s", path);
    if (rc == 0)
        rc = perq_st_stream_finish(w, err);
    perq_st_writer_free(w); /* removes the temporary file of a stream not finished */
    return rc;
}
