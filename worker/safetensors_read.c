/* safetensors reading: an 8-byte little-endian header length, a JSON header,
 * then the tensor data. Nothing in the header is trusted until checked: each
 * violation is its own error naming the tensor and field concerned. */
#include "perq/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A tensor as the header describes it, before its data is located. */
typedef struct {
    perq_tensor t;
    uint64_t begin, end;
} entry;

static uint64_t read_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int parse_metadata(json_t *obj, perq_st_file *out, perq_err *err)
{
    if (!json_is_object(obj))
        return perq_fail(err, PERQ_E_FORMAT, "__metadata__ is not an object");
    out->meta = calloc(json_object_size(obj) + 1, sizeof *out->meta);
    if (!out->meta)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        if (!json_is_string(value))
            return perq_fail(err, PERQ_E_FORMAT, "__metadata__ value of \"%s\" is not a string", key);
        perq_st_meta *m = &out->meta[out->n_meta++];
        m->key = strdup(key);
        m->value = strdup(json_string_value(value));
        if (!m->key || !m->value)
            return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    return 0;
}

static int parse_dtype(const char *name, json_t *obj, perq_dtype *dt, perq_err *err)
{
    json_t *v = json_object_get(obj, "dtype");
    if (!v)
        return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": missing dtype", name);
    if (!json_is_string(v))
        return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": dtype is not a string", name);
    if (perq_dtype_from_name(json_string_value(v), dt) != 0)
        return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": unknown dtype \"%s\"", name,
                         json_string_value(v));
    return 0;
}

static int parse_shape(const char *name, json_t *obj, perq_tensor *t, perq_err *err)
{
    json_t *shape = json_object_get(obj, "shape");
    if (!shape)
        return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": missing shape", name);
    if (!json_is_array(shape))
        return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": shape is not an array", name);
    size_t ndim = json_array_size(shape);
    if (ndim > PERQ_MAX_DIMS)
        return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": shape has %zu dimensions, more than %d",
                         name, ndim, PERQ_MAX_DIMS);
    t->ndim = (int)ndim;
    for (size_t i = 0; i < ndim; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return perq_fail(err, PERQ_E_FORMAT,
                             "tensor \"%s\": shape[%zu] is not a non-negative integer", name, i);
        t->shape[i] = json_integer_value(d);
    }
    return 0;
}

static int parse_offsets(const char *name, json_t *obj, entry *e, perq_err *err)
{
    json_t *offs = json_object_get(obj, "data_offsets");
    if (!offs)
        return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": missing data_offsets", name);
    json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
    if (!json_is_array(offs) || json_array_size(offs) != 2 || !json_is_integer(b) ||
        !json_is_integer(en) || json_integer_value(b) < 0 || json_integer_value(en) < 0)
        return perq_fail(err, PERQ_E_FORMAT,
                         "tensor \"%s\": data_offsets is not an array of two non-negative integers", name);
    e->begin = (uint64_t)json_integer_value(b);
    e->end = (uint64_t)json_integer_value(en);
    if (e->begin > e->end)
        return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": data_offsets begin %llu is after end %llu",
                         name, (unsigned long long)e->begin, (unsigned long long)e->end);
    return 0;
}

/* The byte count the shape and dtype imply must be exactly the span of the offsets. */
static int check_size(const char *name, entry *e, perq_err *err)
{
    uint64_t bytes = perq_dtype_size(e->t.dtype);
    for (int i = 0; i < e->t.ndim; i++) {
        if (e->t.shape[i] == 0)  /* zero elements, however large the other dimensions */
            bytes = 0;
    }
    for (int i = 0; i < e->t.ndim && bytes != 0; i++) {
        uint64_t d = (uint64_t)e->t.shape[i];
        if (bytes > UINT64_MAX / d)
            return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": shape times dtype size overflows 64 bits",
                             name);
        bytes *= d;
    }
    if (bytes != e->end - e->begin)
        return perq_fail(err, PERQ_E_FORMAT,
                         "tensor \"%s\": shape and dtype %s need %llu bytes but data_offsets span %llu",
                         name, perq_dtype_name(e->t.dtype), (unsigned long long)bytes,
                         (unsigned long long)(e->end - e->begin));
    e->t.nbytes = (size_t)bytes;
    return 0;
}

static int parse_entry(const char *name, json_t *obj, entry *e, perq_err *err)
{
    if (!json_is_object(obj))
        return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": entry is not an object", name);
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 && strcmp(key, "data_offsets") != 0)
            return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\": unknown key \"%s\"", name, key);
    }
    if (parse_dtype(name, obj, &e->t.dtype, err) != 0 || parse_shape(name, obj, &e->t, err) != 0 ||
        parse_offsets(name, obj, e, err) != 0 || check_size(name, e, err) != 0)
        return -1;
    e->t.name = strdup(name);
    if (!e->t.name)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    return 0;
}

static int by_offsets(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

/* Sorted by offset, the tensors must tile [0, data_len) exactly. */
static int check_layout(const entry *es, size_t n, uint64_t data_len, perq_err *err)
{
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const entry *e = &es[i];
        if (i == 0 && e->begin != 0)
            return perq_fail(err, PERQ_E_FORMAT,
                             "tensor \"%s\": data begins at offset %llu, but the data must start at 0",
                             e->t.name, (unsigned long long)e->begin);
        if (e->begin < at)
            return perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\" overlaps tensor \"%s\"", e->t.name,
                             es[i - 1].t.name);
        if (e->begin > at)
            return perq_fail(err, PERQ_E_FORMAT, "hole of %llu unused bytes between tensor \"%s\" and \"%s\"",
                             (unsigned long long)(e->begin - at), es[i - 1].t.name, e->t.name);
        if (e->end > data_len)
            return perq_fail(err, PERQ_E_FORMAT,
                             "tensor \"%s\": data_offsets end %llu is past the end of the file (%llu data bytes)",
                             e->t.name, (unsigned long long)e->end, (unsigned long long)data_len);
        at = e->end;
    }
    if (at != data_len)
        return perq_fail(err, PERQ_E_FORMAT, "%llu bytes after the end of the last tensor's data",
                         (unsigned long long)(data_len - at));
    return 0;
}

static int parse_header(json_t *root, const uint8_t *data, uint64_t data_len, perq_st_file *out,
                        perq_err *err)
{
    if (!json_is_object(root))
        return perq_fail(err, PERQ_E_FORMAT, "header is not a JSON object");
    size_t cap = json_object_size(root);
    entry *es = calloc(cap + 1, sizeof *es);
    if (!es)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    size_t n = 0;
    int rc = 0;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0)
            rc = parse_metadata(value, out, err);
        else if ((rc = parse_entry(key, value, &es[n], err)) == 0)
            n++;
        if (rc != 0)
            break;
    }
    if (rc == 0) {
        qsort(es, n, sizeof *es, by_offsets);
        rc = check_layout(es, n, data_len, err);
    }
    if (rc == 0)
        out->tensors = calloc(n + 1, sizeof *out->tensors);
    if (rc == 0 && !out->tensors)
        rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (rc != 0) {
            free(es[i].t.name);
            continue;
        }
        es[i].t.data = data + es[i].begin;
        out->tensors[i] = es[i].t;
    }
    if (rc == 0)
        out->n_tensors = n;
    free(es);
    return rc;
}

int perq_st_parse(const uint8_t *buf, size_t len, perq_st_file *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    if (len < 8)
        return perq_fail(err, PERQ_E_FORMAT, "file is %zu bytes, shorter than the 8-byte header length",
                         len);
    uint64_t hlen = read_le64(buf);
    if (hlen == 0)
        return perq_fail(err, PERQ_E_FORMAT, "header length is 0");
    if (hlen > PERQ_ST_MAX_HEADER)
        return perq_fail(err, PERQ_E_FORMAT, "header length %llu exceeds the limit of %llu bytes",
                         (unsigned long long)hlen, (unsigned long long)PERQ_ST_MAX_HEADER);
    if (hlen > len - 8)
        return perq_fail(err, PERQ_E_FORMAT, "header length %llu runs past the end of the file (%zu bytes)",
                         (unsigned long long)hlen, len);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return perq_fail(err, PERQ_E_FORMAT, "header is not valid JSON: %s (line %d, column %d)", jerr.text,
                         jerr.line, jerr.column);
    int rc = parse_header(root, buf + 8 + hlen, len - 8 - hlen, out, err);
    json_decref(root);
    if (rc != 0)
        perq_st_close(out);
    return rc;
}

int perq_st_open(const char *path, perq_st_file *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return perq_fail_errno(err, "opening %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        perq_fail_errno(err, "reading %s", path);
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return perq_fail(err, PERQ_E_INVALID, "%s is not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            perq_fail_errno(err, "mapping %s", path);
            close(fd);
            return -1;
        }
    }
    close(fd);
    static const uint8_t empty[1];
    if (perq_st_parse(map ? map : empty, len, out, err) != 0) {
        if (map)
            munmap(map, len);
        return perq_err_context(err, "%s", path);
    }
    out->map = map;
    out->map_len = len;
    out->path = strdup(path);
    if (!out->path) {
        perq_st_close(out);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    return 0;
}

void perq_st_close(perq_st_file *f)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    if (f->map)
        munmap(f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const perq_tensor *perq_st_find(const perq_st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++) {
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    }
    return NULL;
}

size_t perq_tensor_numel(const perq_tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}
