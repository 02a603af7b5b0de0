/* Reading tokenizer.json (and the BOS/EOS of tokenizer_config.json and
 * config.json) into a perq_tokenizer. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perq/fsutil.h"
#include "tokenizer_internal.h"

#define MAX_TOKENIZER_FILE (512u << 20)
#define MAX_CONFIG_FILE (16u << 20)

/* ---- JSON helpers ------------------------------------------------------------ */

const char *tok_json_type(const json_t *obj)
{
    json_t *type = json_is_object(obj) ? json_object_get(obj, "type") : NULL;
    return json_is_string(type) ? json_string_value(type) : NULL;
}

int tok_json_bool(const json_t *obj, const char *key, const char *where, bool *out, perq_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return perq_fail(err, PERQ_E_FORMAT, "%s.%s is not a boolean", where, key);
    *out = json_is_true(v);
    return 0;
}

int tok_json_string(const json_t *obj, const char *key, const char *where, const char **s,
                    size_t *len, perq_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return perq_fail(err, PERQ_E_FORMAT, "%s.%s is %s", where, key, v ? "not a string" : "missing");
    *s = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

int tok_json_char(const json_t *obj, const char *key, const char *where, uint32_t *cp, perq_err *err)
{
    const char *s;
    size_t len;
    if (tok_json_string(obj, key, where, &s, &len, err))
        return -1;
    if (!len || tok_utf8_decode(s, len, 0, cp) != len)
        return perq_fail(err, PERQ_E_FORMAT, "%s.%s is not one character", where, key);
    return 0;
}

int tok_unsupported_type(const char *where, const json_t *obj, perq_err *err)
{
    return perq_fail(err, PERQ_E_UNSUPPORTED, "%s type '%.80s' is not supported", where,
                     tok_json_type(obj));
}

/* ---- tokenizer.json ------------------------------------------------------------ */

static int build(perq_tokenizer *t, const json_t *root, perq_err *err)
{
    if (!json_is_object(root))
        return perq_fail(err, PERQ_E_FORMAT, "not a JSON object");
    /* truncation and padding are batch settings; transformers turns them off
     * unless asked, and so does perq */
    json_t *added = json_object_get(root, "added_tokens");
    size_t n_added = json_is_array(added) ? json_array_size(added) : 0;
    if (tok_bpe_parse(json_object_get(root, "model"), n_added, &t->model, err) ||
        tok_added_parse(added, &t->model, &t->added, err) ||
        tok_normalizer_parse(json_object_get(root, "normalizer"), "normalizer", &t->normalizer, err) ||
        tok_pretok_parse(json_object_get(root, "pre_tokenizer"), "pre_tokenizer", &t->pretok, err) ||
        tok_decoder_parse(json_object_get(root, "decoder"), "decoder", &t->decoder, err) ||
        tok_added_build(&t->added, t->normalizer, err) ||
        tok_special_from_post_processor(t, json_object_get(root, "post_processor"), err))
        return -1;
    t->vocab_size = t->model.vocab.n_ids;
    for (size_t i = 0; i < t->added.n; i++)
        if ((size_t)t->added.tokens[i].id + 1 > t->vocab_size)
            t->vocab_size = (size_t)t->added.tokens[i].id + 1;
    if (t->bos_id >= 0 && (size_t)t->bos_id >= t->vocab_size)
        return perq_fail(err, PERQ_E_FORMAT, "post_processor: BOS id %d is outside the vocabulary", t->bos_id);
    return 0;
}

static int parse_named(const char *json_text, size_t len, const char *name, perq_tokenizer **out,
                       perq_err *err)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(json_text, len, 0, &jerr);
    if (!root)
        return perq_fail(err, PERQ_E_FORMAT, "%s: JSON error at line %d column %d: %s", name, jerr.line,
                         jerr.column, jerr.text);
    perq_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", name);
    }
    t->bos_id = t->eos_id = -1;
    int rc = build(t, root, err);
    json_decref(root);
    if (rc) {
        perq_tokenizer_free(t);
        return perq_err_context(err, "%s", name);
    }
    *out = t;
    return 0;
}

int perq_tokenizer_parse(const char *json_text, size_t len, perq_tokenizer **out, perq_err *err)
{
    return parse_named(json_text, len, "tokenizer.json", out, err);
}

void perq_tokenizer_free(perq_tokenizer *t)
{
    if (!t)
        return;
    tok_bpe_free(&t->model);
    tok_added_free(&t->added);
    tok_normalizer_free(t->normalizer);
    tok_pretok_free(t->pretok);
    tok_decoder_free(t->decoder);
    free(t);
}

/* ---- a model folder -------------------------------------------------------------- */

/* An optional JSON file of the folder: *out NULL when it does not exist. */
static int load_config(const char *dir, const char *name, json_t **out, perq_err *err)
{
    char path[4096];
    char *data;
    size_t len;
    *out = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return 0;
    if (perq_read_file(path, MAX_CONFIG_FILE, &data, &len, err))
        return -1;
    json_error_t jerr;
    *out = json_loadb(data, len, 0, &jerr);
    free(data);
    if (!*out)
        return perq_fail(err, PERQ_E_FORMAT, "%s: JSON error at line %d: %s", path, jerr.line, jerr.text);
    return 0;
}

int perq_tokenizer_load(const char *dir, perq_tokenizer **out, perq_err *err)
{
    char path[4096];
    char *data;
    size_t len;
    *out = NULL;
    if (snprintf(path, sizeof path, "%s/tokenizer.json", dir) >= (int)sizeof path)
        return perq_fail(err, PERQ_E_INVALID, "model folder path too long");
    if (perq_read_file(path, MAX_TOKENIZER_FILE, &data, &len, err))
        return -1;
    perq_tokenizer *t;
    int rc = parse_named(data, len, path, &t, err);
    free(data);
    if (rc)
        return -1;
    json_t *tokenizer_config = NULL, *config = NULL;
    rc = load_config(dir, "tokenizer_config.json", &tokenizer_config, err) ||
         load_config(dir, "config.json", &config, err) ||
         tok_special_from_configs(t, tokenizer_config, config, err);
    json_decref(tokenizer_config);
    json_decref(config);
    if (rc) {
        perq_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int perq_tokenizer_bos_id(const perq_tokenizer *t)
{
    return t->bos_id;
}

int perq_tokenizer_eos_id(const perq_tokenizer *t)
{
    return t->eos_id;
}

size_t perq_tokenizer_vocab_size(const perq_tokenizer *t)
{
    return t->vocab_size;
}
