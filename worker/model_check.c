/* Validation of a model folder before any job uses it. Every check runs even
 * after others fail, so that one answer lists everything there is to fix. */
#include "perq/model_check.h"

#include "perq/fsutil.h"
#include "perq/llama_config.h"
#include "perq/safetensors.h"
#include "perq/tokenizer.h"

#include <dirent.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENIZER_BYTES ((size_t)64 << 20)

void perq_problems_add(perq_problems *p, const char *fmt, ...)
{
    char *line;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* The same failure seen from two checks (a shard and the index naming it) is one problem. */
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->items[i], line) == 0) {
            free(line);
            return;
        }
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        char **items = realloc(p->items, cap * sizeof *items);
        if (!items) {
            free(line);
            return;
        }
        p->items = items;
        p->cap = cap;
    }
    p->items[p->n++] = line;
}

void perq_problems_free(perq_problems *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->items[i]);
    free(p->items);
    p->items = NULL;
    p->n = p->cap = 0;
}

/* Adds err's message with the folder's path taken out: users know their files
 * by name, not by where the server keeps them. */
static void add_error(perq_problems *p, const char *dir, const perq_err *err)
{
    size_t dlen = strlen(dir);
    char msg[2 * sizeof err->msg];
    size_t n = 0;
    for (const char *s = err->msg; *s && n + 1 < sizeof msg;) {
        if (dlen > 0 && strncmp(s, dir, dlen) == 0) {
            s += dlen;
            if (*s == '/') {
                s++;
            } else {
                n += (size_t)snprintf(msg + n, sizeof msg - n, "the model folder");
                n = n < sizeof msg ? n : sizeof msg - 1;
            }
            continue;
        }
        msg[n++] = *s++;
    }
    msg[n] = '\0';
    perq_problems_add(p, "%s", msg);
}

static char *join(const char *dir, const char *name)
{
    char *path;
    return asprintf(&path, "%s/%s", dir, name) < 0 ? NULL : path;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Each safetensors file on its own, so that every broken header is reported,
 * not only the first the checkpoint reader meets. */
static void check_each_safetensors(const char *dir, perq_problems *out)
{
    DIR *d = opendir(dir);
    if (!d) {
        perq_problems_add(out, "cannot list the model folder");
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".safetensors"))
            continue;
        char *path = join(dir, e->d_name);
        perq_st_file f;
        perq_err err;
        if (path && perq_st_open(path, &f, &err) != 0)
            add_error(out, dir, &err);
        else if (path)
            perq_st_close(&f);
        free(path);
    }
    closedir(d);
}

static void format_shape(char *buf, size_t size, int ndim, const long long *shape)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ", %lld" : "%lld", shape[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}

static void check_expected(const perq_checkpoint *c, const perq_expected_tensor *want, perq_problems *out)
{
    char want_shape[64], got_shape[256];
    format_shape(want_shape, sizeof want_shape, want->ndim, want->shape);
    const perq_tensor *t = perq_ckpt_find(c, want->name);
    if (!t) {
        perq_problems_add(out, "missing tensor %s (expected shape %s)", want->name, want_shape);
        return;
    }
    long long got[PERQ_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++)
        got[i] = t->shape[i];
    format_shape(got_shape, sizeof got_shape, t->ndim, got);
    bool same = t->ndim == want->ndim;
    for (int i = 0; same && i < t->ndim; i++)
        same = got[i] == want->shape[i];
    if (!same)
        perq_problems_add(out, "tensor %s has shape %s, expected %s", want->name, got_shape, want_shape);
    if (!perq_dtype_is_float(t->dtype))
        perq_problems_add(out, "tensor %s has dtype %s, expected F32, F16 or BF16", want->name,
                          perq_dtype_name(t->dtype));
}

/* Tensors a checkpoint may hold beyond the expected ones: lm_head.weight when
 * the embeddings are tied (a copy some exporters write), and the rotary
 * inverse frequencies older transformers saved (recomputed from the config). */
static bool tolerated(const perq_llama_config *cfg, const char *name)
{
    return (cfg->tie_word_embeddings && strcmp(name, "lm_head.weight") == 0) ||
           ends_with(name, ".self_attn.rotary_emb.inv_freq");
}

static void check_tensors(const perq_llama_config *cfg, const perq_checkpoint *c, perq_problems *out)
{
    perq_expected_tensor *want;
    size_t n_want;
    perq_err err;
    if (perq_llama_expected_tensors(cfg, &want, &n_want, &err) != 0) {
        perq_problems_add(out, "%s", err.msg);
        return;
    }
    for (size_t i = 0; i < n_want; i++)
        check_expected(c, &want[i], out);
    for (size_t f = 0; f < c->n_files; f++) {
        for (size_t i = 0; i < c->files[f].n_tensors; i++) {
            const char *name = c->files[f].tensors[i].name;
            bool expected = tolerated(cfg, name);
            for (size_t j = 0; !expected && j < n_want; j++)
                expected = strcmp(want[j].name, name) == 0;
            if (!expected)
                perq_problems_add(out, "unexpected tensor %s (not part of a %s with this config)", name,
                                  cfg->architecture);
        }
    }
    free(want);
}

/* The outline every supported tokenizer.json has; returns whether it is there. */
static bool check_tokenizer_json(json_t *root, perq_problems *out)
{
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        perq_problems_add(out, "tokenizer.json has no \"model\" object");
        return false;
    }
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!type || strcmp(type, "BPE") != 0) {
        perq_problems_add(out, "tokenizer.json: model type %s%.40s%s is not supported (only BPE)", type ? "\"" : "",
                          type ? type : "(missing)", type ? "\"" : "");
        return false;
    }
    bool ok = true;
    if (!json_is_object(json_object_get(model, "vocab"))) {
        perq_problems_add(out, "tokenizer.json: model has no \"vocab\" object");
        ok = false;
    }
    if (!json_is_array(json_object_get(model, "merges"))) {
        perq_problems_add(out, "tokenizer.json: model has no \"merges\" array");
        ok = false;
    }
    return ok;
}

/* Loads the tokenizer as a job will, and checks that every id it can produce
 * has a row in the embeddings. */
static void check_tokenizer_loads(const char *dir, const perq_llama_config *cfg, perq_problems *out)
{
    perq_tokenizer *tok;
    perq_err err;
    if (perq_tokenizer_load(dir, &tok, &err) != 0) {
        add_error(out, dir, &err);
        return;
    }
    size_t n = perq_tokenizer_vocab_size(tok);
    if (cfg && n > (size_t)cfg->vocab_size)
        perq_problems_add(out, "tokenizer.json has %zu tokens but config.json vocab_size is %d", n, cfg->vocab_size);
    perq_tokenizer_free(tok);
}

static void check_tokenizer(const char *dir, const perq_llama_config *cfg, perq_problems *out)
{
    char *path = join(dir, "tokenizer.json");
    char *text = NULL;
    size_t len;
    perq_err err;
    if (!path) {
        perq_problems_add(out, "out of memory");
        return;
    }
    if (perq_read_file(path, MAX_TOKENIZER_BYTES, &text, &len, &err) != 0) {
        add_error(out, dir, &err);
        free(path);
        return;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        perq_problems_add(out, "tokenizer.json is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                          jerr.column);
    else if (!json_is_object(root))
        perq_problems_add(out, "tokenizer.json is not a JSON object");
    else if (check_tokenizer_json(root, out))
        check_tokenizer_loads(dir, cfg, out);
    json_decref(root);
    free(text);
    free(path);
}

size_t perq_model_check(const char *dir, perq_problems *out)
{
    size_t before = out->n;
    perq_err err = {PERQ_E_NOMEM, "out of memory"};

    perq_llama_config cfg;
    char *config_path = join(dir, "config.json");
    bool have_config = config_path && perq_llama_config_load(config_path, &cfg, &err) == 0;
    if (!have_config)
        add_error(out, dir, &err);
    free(config_path);

    check_each_safetensors(dir, out);
    perq_checkpoint c;
    if (perq_ckpt_open(dir, &c, &err) != 0) {
        add_error(out, dir, &err);
    } else {
        if (have_config)
            check_tensors(&cfg, &c, out);
        perq_ckpt_close(&c);
    }

    check_tokenizer(dir, have_config ? &cfg : NULL, out);
    return out->n - before;
}
