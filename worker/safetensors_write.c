/* safetensors writing: the header names every tensor with its offsets, then
 * the tensors' bytes follow in the order they were added, written into a
 * temporary file that is renamed when whole. perq_st_write takes them from
 * the caller's memory; the stream form takes them as the caller makes them. */
#include "perq/fsutil.h"
#include "perq/safetensors.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct perq_st_writer {
    perq_tensor *tensors; /* data NULL for a declared tensor */
    size_t n_tensors, cap_tensors;
    perq_st_meta *meta;
    size_t n_meta, cap_meta;
    /* a stream: the temporary file between its header and its commit */
    bool streaming;
    perq_atomic_file file;
    uint64_t written, total;
};

perq_st_writer *perq_st_writer_new(void)
{
    return calloc(1, sizeof(perq_st_writer));
}

void perq_st_writer_free(perq_st_writer *w)
{
    if (!w)
        return;
    if (w->streaming)
        perq_atomic_abort(&w->file);
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->meta);
    free(w);
}

/* Makes room for one more element of size `size` in *items. */
static int grow(void **items, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return 0;
    size_t new_cap = *cap ? *cap * 2 : 16;
    void *bigger = realloc(*items, new_cap * size);
    if (!bigger)
        return -1;
    *items = bigger;
    *cap = new_cap;
    return 0;
}

static int tensor_bytes(const char *name, perq_dtype dtype, int ndim, const int64_t *shape,
                        size_t *nbytes, perq_err *err)
{
    size_t bytes = perq_dtype_size(dtype);
    int empty = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return perq_fail(err, PERQ_E_INVALID, "tensor \"%s\": negative dimension %lld", name,
                             (long long)shape[i]);
        empty |= shape[i] == 0;
    }
    for (int i = 0; i < ndim && !empty; i++) {
        if (bytes > SIZE_MAX / (size_t)shape[i])
            return perq_fail(err, PERQ_E_INVALID, "tensor \"%s\": size overflows", name);
        bytes *= (size_t)shape[i];
    }
    *nbytes = empty ? 0 : bytes;
    return 0;
}

/* Validates a tensor and appends it; a declared one has no data yet (it is streamed). */
static int add_tensor(perq_st_writer *w, const char *name, perq_dtype dtype, int ndim, const int64_t *shape,
                      const void *data, bool declared, perq_err *err)
{
    if (w->streaming)
        return perq_fail(err, PERQ_E_INVALID, "tensor \"%s\": added after the header was written",
                         name ? name : "(null)");
    if (!name || strcmp(name, "__metadata__") == 0)
        return perq_fail(err, PERQ_E_INVALID, "tensor name \"%s\" is reserved", name ? name : "(null)");
    if (!perq_dtype_name(dtype))
        return perq_fail(err, PERQ_E_INVALID, "tensor \"%s\": invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > PERQ_MAX_DIMS)
        return perq_fail(err, PERQ_E_INVALID, "tensor \"%s\": %d dimensions (at most %d)", name, ndim,
                         PERQ_MAX_DIMS);
    for (size_t i = 0; i < w->n_tensors; i++) {
        if (strcmp(w->tensors[i].name, name) == 0)
            return perq_fail(err, PERQ_E_INVALID, "tensor \"%s\" added twice", name);
    }
    size_t nbytes = 0;
    if (tensor_bytes(name, dtype, ndim, shape, &nbytes, err) != 0)
        return -1;
    if (nbytes > 0 && !data && !declared)
        return perq_fail(err, PERQ_E_INVALID, "tensor \"%s\": no data", name);
    if (grow((void **)&w->tensors, w->n_tensors, &w->cap_tensors, sizeof *w->tensors) != 0)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    perq_tensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name)))
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim > 0)
        memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->data = data;
    t->nbytes = nbytes;
    w->n_tensors++;
    return 0;
}

int perq_st_writer_add(perq_st_writer *w, const char *name, perq_dtype dtype, int ndim,
                       const int64_t *shape, const void *data, perq_err *err)
{
    return add_tensor(w, name, dtype, ndim, shape, data, false, err);
}

int perq_st_writer_declare(perq_st_writer *w, const char *name, perq_dtype dtype, int ndim,
                           const int64_t *shape, perq_err *err)
{
    return add_tensor(w, name, dtype, ndim, shape, NULL, true, err);
}

int perq_st_writer_meta(perq_st_writer *w, const char *key, const char *value, perq_err *err)
{
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta[i].key, key) == 0)
            return perq_fail(err, PERQ_E_INVALID, "metadata key \"%s\" set twice", key);
    }
    if (grow((void **)&w->meta, w->n_meta, &w->cap_meta, sizeof *w->meta) != 0)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    perq_st_meta *m = &w->meta[w->n_meta];
    m->key = strdup(key);
    m->value = strdup(value);
    if (!m->key || !m->value) {
        free(m->key);
        free(m->value);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    w->n_meta++;
    return 0;
}

static json_t *tensor_entry(const perq_tensor *t, uint64_t begin)
{
    json_t *shape = json_array();
    for (int i = 0; shape && i < t->ndim; i++) {
        if (json_array_append_new(shape, json_integer(t->shape[i])) != 0) {
            json_decref(shape);
            return NULL;
        }
    }
    return json_pack("{s:s, s:o, s:[I,I]}", "dtype", perq_dtype_name(t->dtype), "shape", shape,
                     "data_offsets", (json_int_t)begin, (json_int_t)(begin + t->nbytes));
}

/* The header as JSON text: __metadata__ first, then the tensors in data order. */
static char *header_json(const perq_st_writer *w, perq_err *err)
{
    json_t *root = json_object();
    int bad = !root;
    if (!bad && w->n_meta > 0) {
        json_t *meta = json_object();
        for (size_t i = 0; meta && i < w->n_meta; i++) {
            if (json_object_set_new(meta, w->meta[i].key, json_string(w->meta[i].value)) != 0) {
                perq_fail(err, PERQ_E_INVALID, "metadata \"%s\" is not valid UTF-8", w->meta[i].key);
                json_decref(meta);
                json_decref(root);
                return NULL;
            }
        }
        bad = json_object_set_new(root, "__metadata__", meta) != 0;
    }
    uint64_t offset = 0;
    for (size_t i = 0; !bad && i < w->n_tensors; i++) {
        const perq_tensor *t = &w->tensors[i];
        json_t *entry = tensor_entry(t, offset);
        bad = !entry;
        if (entry && json_object_set_new(root, t->name, entry) != 0) {
            perq_fail(err, PERQ_E_INVALID, "tensor name \"%s\" is not valid UTF-8", t->name);
            json_decref(root);
            return NULL;
        }
        offset += t->nbytes;
    }
    char *text = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text)
        perq_fail(err, PERQ_E_NOMEM, "out of memory");
    return text;
}

/* The 8-byte length and the header, padded with spaces so that the data starts
 * on an 8-byte boundary. */
static uint8_t *header_bytes(const perq_st_writer *w, size_t *len, perq_err *err)
{
    char *json = header_json(w, err);
    if (!json)
        return NULL;
    size_t json_len = strlen(json);
    size_t padded = (json_len + 7) / 8 * 8;
    uint8_t *buf = malloc(8 + padded);
    if (!buf) {
        free(json);
        perq_fail(err, PERQ_E_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, json, json_len);
    memset(buf + 8 + json_len, ' ', padded - json_len);
    free(json);
    *len = 8 + padded;
    return buf;
}

/* Ends a stream that went wrong: the temporary file is removed. */
static int stream_fail(perq_st_writer *w)
{
    perq_atomic_abort(&w->file);
    w->streaming = false;
    return -1;
}

int perq_st_stream_begin(perq_st_writer *w, const char *path, perq_err *err)
{
    if (w->streaming)
        return perq_fail(err, PERQ_E_INVALID, "writing %s: the writer is streaming another file", path);
    size_t header_len;
    uint8_t *header = header_bytes(w, &header_len, err);
    if (!header)
        return perq_err_context(err, "writing %s", path);
    if (perq_atomic_open(&w->file, path, err) != 0) {
        free(header);
        return -1;
    }
    w->streaming = true;
    w->written = w->total = 0;
    for (size_t i = 0; i < w->n_tensors; i++)
        w->total += w->tensors[i].nbytes;
    int rc = perq_atomic_write(&w->file, header, header_len, err);
    free(header);
    return rc == 0 ? 0 : stream_fail(w);
}

int perq_st_stream_write(perq_st_writer *w, const void *data, size_t len, perq_err *err)
{
    if (!w->streaming)
        return perq_fail(err, PERQ_E_INVALID, "safetensors stream: not open (no header, or a write failed)");
    if (len > w->total - w->written) {
        perq_fail(err, PERQ_E_INVALID,
                  "safetensors stream: %zu bytes more than the %" PRIu64 " the tensors declare",
                  len - (size_t)(w->total - w->written), w->total);
        return stream_fail(w);
    }
    w->written += len;
    return perq_atomic_write(&w->file, data, len, err) == 0 ? 0 : stream_fail(w);
}

int perq_st_stream_finish(perq_st_writer *w, perq_err *err)
{
    if (!w->streaming)
        return perq_fail(err, PERQ_E_INVALID, "safetensors stream: not open (no header, or a write failed)");
    if (w->written != w->total) {
        perq_fail(err, PERQ_E_INVALID,
                  "safetensors stream: %" PRIu64 " of the %" PRIu64 " bytes the tensors declare were written",
                  w->written, w->total);
        return stream_fail(w);
    }
    w->streaming = false;
    return perq_atomic_commit(&w->file, err);
}

int perq_st_write(perq_st_writer *w, const char *path, perq_err *err)
{
    for (size_t i = 0; i < w->n_tensors; i++) {
        if (w->tensors[i].nbytes > 0 && !w->tensors[i].data)
            return perq_fail(err, PERQ_E_INVALID, "writing %s: tensor \"%s\" was declared, not given data",
                             path, w->tensors[i].name);
    }
    int rc = perq_st_stream_begin(w, path, err);
    for (size_t i = 0; rc == 0 && i < w->n_tensors; i++)
        rc = perq_st_stream_write(w, w->tensors[i].data, w->tensors[i].nbytes, err);
    return rc == 0 ? perq_st_stream_finish(w, err) : -1;
}
