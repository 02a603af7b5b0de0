/* A safetensors file streamed from the weight generator: the header is known
 * from the shapes alone, so it is written first, then each tensor a block of
 * rows at a time (rows made in parallel, the previous block written meanwhile),
 * so memory stays at two blocks however large the model. The layout is the one perq_st_write produces: u64 header
 * length, JSON header padded with spaces to a multiple of 8, data in order. */
#include <jansson.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "perq/fsutil.h"
#include "synth.h"

#define BLOCK_BYTES ((size_t)32 << 20)

static size_t tensor_bytes(const synth_tensor *t, perq_dtype dtype)
{
    return (size_t)t->rows * (size_t)t->cols * perq_dtype_size(dtype);
}

static json_t *tensor_entry(const synth_tensor *t, perq_dtype dtype, size_t begin)
{
    size_t end = begin + tensor_bytes(t, dtype);
    if (t->ndim == 1)
        return json_pack("{s:s, s:[I], s:[I,I]}", "dtype", perq_dtype_name(dtype), "shape",
                         (json_int_t)t->cols, "data_offsets", (json_int_t)begin, (json_int_t)end);
    return json_pack("{s:s, s:[I,I], s:[I,I]}", "dtype", perq_dtype_name(dtype), "shape",
                     (json_int_t)t->rows, (json_int_t)t->cols, "data_offsets", (json_int_t)begin,
                     (json_int_t)end);
}

/* The length prefix and the padded JSON header, newly allocated. */
static char *header_bytes(const synth_tensor *const *t, size_t n, perq_dtype dtype, size_t *len)
{
    json_t *root = json_pack("{s:{s:s}}", "__metadata__", "format", "pt");
    size_t offset = 0;
    for (size_t i = 0; root && i < n; i++) {
        if (json_object_set_new(root, t[i]->name, tensor_entry(t[i], dtype, offset)) != 0) {
            json_decref(root);
            root = NULL;
        }
        offset += tensor_bytes(t[i], dtype);
    }
    char *json = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!json)
        return NULL;
    size_t json_len = strlen(json), padded = (json_len + 7) / 8 * 8;
    char *buf = malloc(8 + padded);
    if (buf) {
        for (int i = 0; i < 8; i++)
            buf[i] = (char)(((uint64_t)padded >> (8 * i)) & 0xff);
        memcpy(buf + 8, json, json_len);
        memset(buf + 8 + json_len, ' ', padded - json_len);
        *len = 8 + padded;
    }
    free(json);
    return buf;
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
                      perq_dtype dtype, perq_atomic_file *f, perq_err *err)
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
    if (synth_pipe_open(&pipe, f, BLOCK_BYTES, err) != 0) {
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
    size_t header_len = 0;
    char *header = header_bytes(t, n, dtype, &header_len);
    if (!header)
        return perq_fail(err, PERQ_E_NOMEM, "writing %s: out of memory", path);
    perq_atomic_file f;
    if (perq_atomic_open(&f, path, err) != 0) {
        free(header);
        return -1;
    }
    int rc = perq_atomic_write(&f, header, header_len, err);
    free(header);
    if (rc == 0)
        rc = write_data(plan, t, n, dtype, &f, err);
    if (rc != 0) {
        perq_atomic_abort(&f);
        return perq_err_context(err, "writing %s", path);
    }
    return perq_atomic_commit(&f, err);
}
