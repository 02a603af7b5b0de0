/* compressed-tensors pack-quantized export (see export_ct.h). */
#include "export_ct.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "perq/fsutil.h"

/* Files of a model folder that are not weights or config.json, copied as they are. */
static const char *const side_files[] = {
    "tokenizer.json",  "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "generation_config.json",
};

typedef struct ct_tensor {
    perq_tensor t;      /* name owned; data borrowed, or `owned`, or NULL when made by rows */
    void *owned;        /* data, when the export made it */
    perq_row_source rows;   /* the rows, made while written (t.shape [rows][cols]) */
    void *rows_ctx;
    size_t shard;
} ct_tensor;

struct perq_ct_export {
    perq_ct_options opt;
    const json_t *config_patch, *quant_patch;
    ct_tensor *tensors;
    size_t n, cap;
};

perq_ct_export *perq_ct_new(const perq_ct_options *opt)
{
    perq_ct_export *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->opt = *opt;
    if (x->opt.shard_bytes == 0)
        x->opt.shard_bytes = PERQ_CT_SHARD_BYTES;
    return x;
}

void perq_ct_set_patches(perq_ct_export *x, const json_t *config_patch, const json_t *quant_patch)
{
    x->config_patch = config_patch;
    x->quant_patch = quant_patch;
}

void perq_ct_free(perq_ct_export *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->n; i++) {
        free(x->tensors[i].t.name);
        free(x->tensors[i].owned);
    }
    free(x->tensors);
    free(x);
}

/* Appends a tensor; takes `owned` (freed here on failure). */
static int push(perq_ct_export *x, const char *name, perq_dtype dtype, int ndim, const int64_t *shape,
                const void *data, size_t nbytes, void *owned, perq_err *err)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 64;
        ct_tensor *t = realloc(x->tensors, cap * sizeof *t);
        if (!t) {
            free(owned);
            return perq_fail(err, PERQ_E_NOMEM, "out of memory");
        }
        x->tensors = t;
        x->cap = cap;
    }
    ct_tensor *c = &x->tensors[x->n];
    memset(c, 0, sizeof *c);
    perq_tensor *t = &c->t;
    t->name = strdup(name);
    if (!t->name) {
        free(owned);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->data = data;
    t->nbytes = nbytes;
    c->owned = owned;
    x->n++;
    return 0;
}

int perq_ct_add_tensor(perq_ct_export *x, const perq_tensor *t, perq_err *err)
{
    return push(x, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes, NULL, err);
}

int perq_ct_add_f32(perq_ct_export *x, const char *name, perq_dtype dtype, int ndim, const int64_t *shape,
                    const float *values, perq_err *err)
{
    if (!perq_dtype_is_float(dtype) || dtype == PERQ_DT_F64)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "%s: dtype %s", name, perq_dtype_name(dtype));
    size_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    size_t nbytes = n * perq_dtype_size(dtype);
    void *data = malloc(nbytes ? nbytes : 1);
    if (!data)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for %s", name);
    perq_from_f32(dtype, values, data, n);
    return push(x, name, dtype, ndim, shape, data, nbytes, data, err);
}

int perq_ct_add_rows(perq_ct_export *x, const char *name, perq_dtype dtype, int64_t rows, int64_t cols,
                     perq_row_source src, void *ctx, perq_err *err)
{
    if (!perq_dtype_is_float(dtype) || dtype == PERQ_DT_F64)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "%s: dtype %s", name, perq_dtype_name(dtype));
    if (rows < 0 || cols < 0)
        return perq_fail(err, PERQ_E_INVALID, "%s: shape [%lld, %lld]", name, (long long)rows, (long long)cols);
    const int64_t shape[2] = {rows, cols};
    size_t nbytes = (size_t)rows * (size_t)cols * perq_dtype_size(dtype);
    if (push(x, name, dtype, 2, shape, NULL, nbytes, NULL, err) != 0)
        return -1;
    x->tensors[x->n - 1].rows = src;
    x->tensors[x->n - 1].rows_ctx = ctx;
    return 0;
}

static int add_owned(perq_ct_export *x, const char *prefix, const char *part, perq_dtype dtype, int ndim,
                     const int64_t *shape, void *data, size_t nbytes, perq_err *err)
{
    char name[512];
    if (snprintf(name, sizeof name, "%s.%s", prefix, part) >= (int)sizeof name) {
        free(data);
        return perq_fail(err, PERQ_E_INVALID, "tensor name too long: %s", prefix);
    }
    return push(x, name, dtype, ndim, shape, data, nbytes, data, err);
}

int perq_ct_add_linear(perq_ct_export *x, const char *prefix, const perq_int4_matrix *m,
                       perq_dtype scale_dtype, perq_err *err)
{
    if (!perq_dtype_is_float(scale_dtype) || scale_dtype == PERQ_DT_F64)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "%s: scales in %s", prefix, perq_dtype_name(scale_dtype));
    size_t words = perq_int4_packed_cols(m->cols);
    size_t packed_bytes = (size_t)m->rows * words * sizeof(int32_t);
    size_t n_scales = (size_t)m->rows * (size_t)m->n_groups;
    size_t scale_bytes = n_scales * perq_dtype_size(scale_dtype);
    int32_t *packed = malloc(packed_bytes);
    void *scales = malloc(scale_bytes);
    int64_t *dims = malloc(2 * sizeof *dims);
    if (!packed || !scales || !dims) {
        free(packed);
        free(scales);
        free(dims);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory packing %s", prefix);
    }
    perq_int4_pack(m->q, m->rows, m->cols, packed);
    perq_from_f32(scale_dtype, m->scales, scales, n_scales);
    dims[0] = m->rows;
    dims[1] = m->cols;
    const int64_t packed_shape[2] = {m->rows, (int64_t)words};
    const int64_t scale_shape[2] = {m->rows, m->n_groups};
    const int64_t dims_shape[1] = {2};
    if (add_owned(x, prefix, "weight_packed", PERQ_DT_I32, 2, packed_shape, packed, packed_bytes, err) != 0) {
        free(scales);
        free(dims);
        return -1;
    }
    if (add_owned(x, prefix, "weight_scale", scale_dtype, 2, scale_shape, scales, scale_bytes, err) != 0) {
        free(dims);
        return -1;
    }
    return add_owned(x, prefix, "weight_shape", PERQ_DT_I64, 1, dims_shape, dims, 2 * sizeof *dims, err);
}

/* ---- config.json ----------------------------------------------------------- */

json_t *perq_ct_quantization_config(const perq_ct_options *opt)
{
    json_t *weights = json_pack("{si ss sb ss so sb ss sn sn s{}}", "num_bits", 4, "type", "int", "symmetric", 1,
                                "strategy", opt->group_size > 0 ? "group" : "channel", "group_size",
                                opt->group_size > 0 ? json_integer(opt->group_size) : json_null(), "dynamic", 0,
                                "observer", "mse", "actorder", "block_structure", "observer_kwargs");
    /* W4A4: activations per token, asymmetric, dynamic min-max (PERQ-NOTES section 4) */
    json_t *acts = opt->act_bits == 4
                       ? json_pack("{si ss sb ss sb sn}", "num_bits", 4, "type", "int", "symmetric", 0, "strategy",
                                   "token", "dynamic", 1, "observer")
                       : json_null();
    return json_pack("{ss ss ss s{s{s[s] so so sn ss}} s[s] sn ss}", "quant_method", "compressed-tensors", "format",
                     "pack-quantized", "quantization_status", "compressed", "config_groups", "group_0", "targets",
                     "Linear", "weights", weights, "input_activations", acts, "output_activations", "format",
                     "pack-quantized", "ignore", "lm_head", "kv_cache_scheme", "version", PERQ_CT_VERSION);
}

static int write_config(const perq_ct_export *x, const char *in_path, const char *out_path, perq_err *err)
{
    json_error_t jerr;
    json_t *config = json_load_file(in_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!config)
        return perq_fail(err, PERQ_E_FORMAT, "%s: %s (line %d)", in_path, jerr.text, jerr.line);
    if (!json_is_object(config)) {
        json_decref(config);
        return perq_fail(err, PERQ_E_FORMAT, "%s: not a JSON object", in_path);
    }
    json_t *qc = perq_ct_quantization_config(&x->opt);
    int rc = qc ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (rc == 0 && x->config_patch)
        json_object_update(config, (json_t *)x->config_patch);
    if (rc == 0 && x->quant_patch)
        json_object_update(qc, (json_t *)x->quant_patch);
    if (rc == 0) {
        json_object_set_new(config, "quantization_config", qc);
        rc = perq_write_json_atomic(out_path, config, err);
    }
    json_decref(config);
    return rc;
}

/* ---- writing ------------------------------------------------------------- */

/* Greedy shards in tensor order; returns their count (1 when everything fits). */
static size_t assign_shards(perq_ct_export *x, uint64_t *total)
{
    *total = 0;
    for (size_t i = 0; i < x->n; i++)
        *total += x->tensors[i].t.nbytes;
    size_t shard = 0;
    uint64_t in_shard = 0;
    for (size_t i = 0; i < x->n; i++) {
        uint64_t b = x->tensors[i].t.nbytes;
        if (*total > x->opt.shard_bytes && in_shard > 0 && in_shard + b > x->opt.shard_bytes) {
            shard++;
            in_shard = 0;
        }
        x->tensors[i].shard = shard;
        in_shard += b;
    }
    return shard + 1;
}

static void shard_name(char *buf, size_t cap, size_t shard, size_t n_shards)
{
    if (n_shards == 1)
        snprintf(buf, cap, "model.safetensors");
    else
        snprintf(buf, cap, "model-%05zu-of-%05zu.safetensors", shard + 1, n_shards);
}

/* A tensor made by rows, block by block into the stream. */
static int stream_rows(perq_st_writer *w, const ct_tensor *c, perq_err *err)
{
    const perq_tensor *t = &c->t;
    int64_t rows = t->shape[0], cols = t->shape[1], block = perq_export_block_rows(cols);
    size_t dsize = perq_dtype_size(t->dtype);
    float *f = malloc((size_t)(block * cols) * sizeof *f + 1);
    void *bytes = malloc((size_t)(block * cols) * dsize + 1);
    int rc = f && bytes ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory for %s", t->name);
    for (int64_t r0 = 0; rc == 0 && r0 < rows; r0 += block) {
        int64_t n = rows - r0 < block ? rows - r0 : block;
        if (c->rows(c->rows_ctx, r0, n, f, err) != 0) {
            rc = perq_err_context(err, "%s rows %lld..%lld", t->name, (long long)r0, (long long)(r0 + n - 1));
            break;
        }
        perq_from_f32(t->dtype, f, bytes, (size_t)(n * cols));
        rc = perq_st_stream_write(w, bytes, (size_t)(n * cols) * dsize, err);
    }
    free(f);
    free(bytes);
    return rc;
}

/* Streamed, so that tensors made by rows go straight into the file; the bytes
 * are those perq_st_write would write. A failed shard leaves no file. */
static int write_shard(const perq_ct_export *x, size_t shard, const char *path, perq_err *err)
{
    perq_st_writer *w = perq_st_writer_new();
    if (!w)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int rc = perq_st_writer_meta(w, "format", "pt", err);
    for (size_t i = 0; rc == 0 && i < x->n; i++) {
        const perq_tensor *t = &x->tensors[i].t;
        if (x->tensors[i].shard == shard)
            rc = perq_st_writer_declare(w, t->name, t->dtype, t->ndim, t->shape, err);
    }
    if (rc == 0)
        rc = perq_st_stream_begin(w, path, err);
    for (size_t i = 0; rc == 0 && i < x->n; i++) {
        const ct_tensor *c = &x->tensors[i];
        if (c->shard == shard)
            rc = c->rows ? stream_rows(w, c, err) : perq_st_stream_write(w, c->t.data, c->t.nbytes, err);
    }
    if (rc == 0)
        rc = perq_st_stream_finish(w, err);
    perq_st_writer_free(w); /* removes the temporary file of a stream not finished */
    return rc;
}

static int write_index(const perq_ct_export *x, size_t n_shards, uint64_t total, const char *path, perq_err *err)
{
    json_t *map = json_object();
    for (size_t i = 0; i < x->n; i++) {
        char name[64];
        shard_name(name, sizeof name, x->tensors[i].shard, n_shards);
        json_object_set_new(map, x->tensors[i].t.name, json_string(name));
    }
    json_t *index = json_pack("{s{sI} so}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    if (!index)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int rc = perq_write_json_atomic(path, index, err);
    json_decref(index);
    return rc;
}

static int is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int join(char *buf, size_t cap, const char *dir, const char *name, perq_err *err)
{
    if (snprintf(buf, cap, "%s/%s", dir, name) >= (int)cap)
        return perq_fail(err, PERQ_E_INVALID, "path too long: %s/%s", dir, name);
    return 0;
}

typedef struct writing {
    const perq_reporter *rep;
    long long done, total;
    perq_artifact_list *files;
} writing;

/* Called after each file: lists it, reports progress, honours cancel. */
static int file_done(writing *wr, const char *name, perq_err *err)
{
    if (perq_artifacts_add(wr->files, name, PERQ_CT_FORMAT, err) != 0)
        return -1;
    perq_report_progress(wr->rep, ++wr->done, wr->total);
    if (perq_report_cancelled(wr->rep))
        return perq_fail(err, PERQ_E_CANCELLED, "cancelled");
    return 0;
}

static int write_tensors(perq_ct_export *x, const char *out_dir, writing *wr, size_t n_shards, uint64_t total,
                         perq_err *err)
{
    char path[4096], name[64];
    for (size_t s = 0; s < n_shards; s++) {
        shard_name(name, sizeof name, s, n_shards);
        if (join(path, sizeof path, out_dir, name, err) != 0 || write_shard(x, s, path, err) != 0 ||
            file_done(wr, name, err) != 0)
            return perq_err_context(err, "exporting %s", name);
    }
    if (n_shards > 1) {
        const char *index = "model.safetensors.index.json";
        if (join(path, sizeof path, out_dir, index, err) != 0 || write_index(x, n_shards, total, path, err) != 0 ||
            file_done(wr, index, err) != 0)
            return -1;
    }
    return 0;
}

int perq_ct_write(perq_ct_export *x, const char *in_dir, const char *out_dir, perq_artifact_list *files,
                  const perq_reporter *rep, perq_err *err)
{
    uint64_t total;
    size_t n_shards = assign_shards(x, &total);
    char src[4096], dst[4096];
    size_t n_side = sizeof side_files / sizeof side_files[0];
    int present[sizeof side_files / sizeof side_files[0]];
    writing wr = {rep, 0, (long long)n_shards + (n_shards > 1) + 1, files};
    for (size_t i = 0; i < n_side; i++) {
        if (join(src, sizeof src, in_dir, side_files[i], err) != 0)
            return -1;
        present[i] = is_regular_file(src);
        wr.total += present[i];
    }
    if (write_tensors(x, out_dir, &wr, n_shards, total, err) != 0)
        return -1;
    if (join(src, sizeof src, in_dir, "config.json", err) != 0 ||
        join(dst, sizeof dst, out_dir, "config.json", err) != 0 || write_config(x, src, dst, err) != 0 ||
        file_done(&wr, "config.json", err) != 0)
        return -1;
    for (size_t i = 0; i < n_side; i++) {
        if (!present[i])
            continue;
        if (join(src, sizeof src, in_dir, side_files[i], err) != 0 ||
            join(dst, sizeof dst, out_dir, side_files[i], err) != 0 || perq_copy_file(src, dst, err) != 0 ||
            file_done(&wr, side_files[i], err) != 0)
            return -1;
    }
    return 0;
}
