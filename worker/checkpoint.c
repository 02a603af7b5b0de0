/* A checkpoint folder: one model.safetensors, or the shards that
 * model.safetensors.index.json names in its weight_map. */
#include "perq/fsutil.h"
#include "perq/safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define MAX_INDEX_BYTES ((size_t)64 << 20)

static char *join(const char *dir, const char *name)
{
    char *path;
    return asprintf(&path, "%s/%s", dir, name) < 0 ? NULL : path;
}

/* Shard names come from an uploaded file: they must stay inside the folder. */
static int is_plain_filename(const char *name)
{
    return name[0] != '\0' && name[0] != '.' && !strchr(name, '/');
}

static int open_file(perq_checkpoint *c, const char *dir, const char *name, perq_err *err)
{
    char *path = join(dir, name);
    if (!path)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int rc = perq_st_open(path, &c->files[c->n_files], err);
    free(path);
    if (rc == 0)
        c->n_files++;
    return rc;
}

/* The shard already open under that name: every path is dir/name (see open_file). */
static perq_st_file *shard_named(const perq_checkpoint *c, size_t dir_len, const char *name)
{
    for (size_t i = 0; i < c->n_files; i++) {
        if (strcmp(c->files[i].path + dir_len + 1, name) == 0)
            return &c->files[i];
    }
    return NULL;
}

/* Opens each shard the weight map names, once, and checks that every tensor
 * listed is in the shard it is listed under. */
static int open_shards(perq_checkpoint *c, const char *dir, json_t *weight_map, perq_err *err)
{
    c->files = calloc(json_object_size(weight_map) + 1, sizeof *c->files);
    if (!c->files)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    const char *tensor;
    json_t *value;
    json_object_foreach(weight_map, tensor, value) {
        if (!json_is_string(value))
            return perq_fail(err, PERQ_E_FORMAT, "%s: weight_map entry of \"%s\" is not a string",
                             INDEX_NAME, tensor);
        const char *shard = json_string_value(value);
        if (!is_plain_filename(shard))
            return perq_fail(err, PERQ_E_FORMAT, "%s: tensor \"%s\" is in \"%s\", not a file of the folder",
                             INDEX_NAME, tensor, shard);
        if (!shard_named(c, strlen(dir), shard) && open_file(c, dir, shard, err) != 0)
            return -1;
        if (!perq_st_find(shard_named(c, strlen(dir), shard), tensor))
            return perq_fail(err, PERQ_E_FORMAT, "%s lists tensor \"%s\" in %s, which does not hold it",
                             INDEX_NAME, tensor, shard);
    }
    if (c->n_files == 0)
        return perq_fail(err, PERQ_E_FORMAT, "%s: weight_map is empty", INDEX_NAME);
    return 0;
}

static int open_index(perq_checkpoint *c, const char *dir, const char *index_path, perq_err *err)
{
    char *text;
    size_t len;
    if (perq_read_file(index_path, MAX_INDEX_BYTES, &text, &len, err) != 0)
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return perq_fail(err, PERQ_E_FORMAT, "%s is not valid JSON: %s (line %d, column %d)", INDEX_NAME,
                         jerr.text, jerr.line, jerr.column);
    json_t *weight_map = json_object_get(root, "weight_map");
    int rc;
    if (!json_is_object(weight_map))
        rc = perq_fail(err, PERQ_E_FORMAT, "%s has no weight_map object", INDEX_NAME);
    else
        rc = open_shards(c, dir, weight_map, err);
    json_decref(root);
    return rc;
}

static int by_name(const void *a, const void *b)
{
    const perq_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static const char *file_of(const perq_checkpoint *c, const perq_tensor *t)
{
    for (size_t i = 0; i < c->n_files; i++) {
        const perq_st_file *f = &c->files[i];
        if (t >= f->tensors && t < f->tensors + f->n_tensors)
            return f->path;
    }
    return "?";
}

/* A name held by two shards would make lookups depend on file order. */
static int check_unique_names(const perq_checkpoint *c, perq_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < c->n_files; i++)
        total += c->files[i].n_tensors;
    const perq_tensor **all = malloc((total + 1) * sizeof *all);
    if (!all)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < c->n_files; i++)
        for (size_t j = 0; j < c->files[i].n_tensors; j++)
            all[n++] = &c->files[i].tensors[j];
    qsort(all, n, sizeof *all, by_name);
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++) {
        if (strcmp(all[i - 1]->name, all[i]->name) == 0)
            rc = perq_fail(err, PERQ_E_FORMAT, "tensor \"%s\" is in both %s and %s", all[i]->name,
                           file_of(c, all[i - 1]), file_of(c, all[i]));
    }
    free(all);
    return rc;
}

int perq_ckpt_open(const char *dir, perq_checkpoint *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    char *index_path = join(dir, INDEX_NAME);
    if (!index_path)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int rc;
    if (access(index_path, F_OK) == 0) {
        rc = open_index(out, dir, index_path, err);
        if (rc == 0)
            rc = check_unique_names(out, err);
    } else {
        out->files = calloc(1, sizeof *out->files);
        char *single = join(dir, SINGLE_NAME);
        if (!out->files || !single)
            rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
        else if (access(single, F_OK) != 0)
            rc = perq_fail(err, PERQ_E_INVALID, "no %s or %s in %s", SINGLE_NAME, INDEX_NAME, dir);
        else
            rc = open_file(out, dir, SINGLE_NAME, err);
        free(single);
    }
    free(index_path);
    if (rc != 0)
        perq_ckpt_close(out);
    return rc;
}

void perq_ckpt_close(perq_checkpoint *c)
{
    for (size_t i = 0; i < c->n_files; i++)
        perq_st_close(&c->files[i]);
    free(c->files);
    c->files = NULL;
    c->n_files = 0;
}

const perq_tensor *perq_ckpt_find(const perq_checkpoint *c, const char *name)
{
    for (size_t i = 0; i < c->n_files; i++) {
        const perq_tensor *t = perq_st_find(&c->files[i], name);
        if (t)
            return t;
    }
    return NULL;
}
