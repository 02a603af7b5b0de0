/* Normalizers: Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD (utf8proc),
 * Lowercase, Strip and ByteLevel, with Hugging Face's semantics. Each maps a
 * whole piece of text to a new one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_internal.h"

typedef enum {
    NORM_SEQUENCE,
    NORM_PREPEND,
    NORM_REPLACE,
    NORM_UNICODE, /* NFC, NFD, NFKC, NFKD: utf8proc options in unicode_options */
    NORM_LOWERCASE,
    NORM_STRIP,
    NORM_BYTE_LEVEL
} norm_kind;

struct tok_normalizer {
    norm_kind kind;
    char *text; /* Prepend: the prefix; Replace: the replacement */
    size_t text_len;
    tok_pattern pattern;
    int unicode_options;
    bool strip_left, strip_right;
    tok_normalizer **children;
    size_t n_children;
};

/* ---- applying ------------------------------------------------------------ */

static int replace(const tok_normalizer *n, const char *s, size_t len, tok_buf *out, perq_err *err)
{
    tok_spans hits = {0};
    int rc = tok_pattern_find(&n->pattern, s, len, &hits, err);
    size_t done = 0;
    for (size_t i = 0; i < hits.n && !rc; i++) {
        rc = tok_buf_append(out, s + done, hits.v[i].start - done, err) ||
             tok_buf_append(out, n->text, n->text_len, err);
        done = hits.v[i].end;
    }
    if (!rc)
        rc = tok_buf_append(out, s + done, len - done, err);
    free(hits.v);
    return rc ? -1 : 0;
}

static int unicode_form(int options, const char *s, size_t len, tok_buf *out, perq_err *err)
{
    utf8proc_uint8_t *mapped = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &mapped,
                                      (utf8proc_option_t)options);
    if (n < 0)
        return perq_fail(err, n == UTF8PROC_ERROR_NOMEM ? PERQ_E_NOMEM : PERQ_E_INVALID,
                         "normalizer: %s", utf8proc_errmsg(n));
    int rc = tok_buf_append(out, mapped, (size_t)n, err);
    free(mapped);
    return rc;
}

/* Character by character, as Rust's char::to_lowercase (İ is the one
 * character whose lowercase is two). */
static int lowercase(const char *s, size_t len, tok_buf *out, perq_err *err)
{
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += tok_utf8_decode(s, len, i, &cp);
        char enc[8];
        size_t n;
        if (cp == 0x130) {
            n = tok_utf8_encode('i', enc);
            n += tok_utf8_encode(0x307, enc + n);
        } else {
            n = tok_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), enc);
        }
        if (tok_buf_append(out, enc, n, err))
            return -1;
    }
    return 0;
}

static int strip(const tok_normalizer *n, const char *s, size_t len, tok_buf *out, perq_err *err)
{
    size_t start = 0, end = len;
    uint32_t cp;
    while (n->strip_left && start < end) {
        size_t k = tok_utf8_decode(s, len, start, &cp);
        if (!tok_is_whitespace(cp))
            break;
        start += k;
    }
    while (n->strip_right && end > start) {
        size_t last = end - 1;
        while (last > start && ((unsigned char)s[last] & 0xC0) == 0x80)
            last--;
        tok_utf8_decode(s, len, last, &cp);
        if (!tok_is_whitespace(cp))
            break;
        end = last;
    }
    return tok_buf_append(out, s + start, end - start, err);
}

static int byte_level(const char *s, size_t len, tok_buf *out, perq_err *err)
{
    if (tok_buf_reserve(out, 2 * len, err))
        return -1;
    for (size_t i = 0; i < len; i++)
        out->len += tok_utf8_encode(tok_byte_to_char((uint8_t)s[i]), out->data + out->len);
    return 0;
}

static int sequence(const tok_normalizer *n, const char *s, size_t len, tok_buf *out, perq_err *err)
{
    tok_buf a = {0}, b = {0};
    const char *cur = s;
    size_t cur_len = len;
    int rc = 0;
    for (size_t i = 0; i < n->n_children && !rc; i++) {
        tok_buf *next = cur == a.data ? &b : &a;
        next->len = 0;
        rc = tok_normalize(n->children[i], cur, cur_len, next, err);
        cur = next->data ? next->data : "";
        cur_len = next->len;
    }
    if (!rc)
        rc = tok_buf_append(out, cur, cur_len, err);
    tok_buf_free(&a);
    tok_buf_free(&b);
    return rc;
}

int tok_normalize(const tok_normalizer *n, const char *s, size_t len, tok_buf *out, perq_err *err)
{
    switch (n->kind) {
    case NORM_SEQUENCE:
        return sequence(n, s, len, out, err);
    case NORM_PREPEND: /* an empty text stays empty */
        if (len && tok_buf_append(out, n->text, n->text_len, err))
            return -1;
        return tok_buf_append(out, s, len, err);
    case NORM_REPLACE:
        return replace(n, s, len, out, err);
    case NORM_UNICODE:
        return unicode_form(n->unicode_options, s, len, out, err);
    case NORM_LOWERCASE:
        return lowercase(s, len, out, err);
    case NORM_STRIP:
        return strip(n, s, len, out, err);
    case NORM_BYTE_LEVEL:
        return byte_level(s, len, out, err);
    }
    return perq_fail(err, PERQ_E_INTERNAL, "normalizer: unknown kind");
}

/* ---- loading -------------------------------------------------------------- */

static int copy_string(const json_t *obj, const char *key, const char *where, char **text,
                       size_t *len, perq_err *err)
{
    const char *s;
    if (tok_json_string(obj, key, where, &s, len, err))
        return -1;
    *text = malloc(*len + 1);
    if (!*text)
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
    memcpy(*text, s, *len);
    (*text)[*len] = 0;
    return 0;
}

static int parse_children(const json_t *obj, const char *where, tok_normalizer *n, perq_err *err)
{
    json_t *list = json_object_get(obj, "normalizers");
    if (!json_is_array(list))
        return perq_fail(err, PERQ_E_FORMAT, "%s.normalizers is not an array", where);
    n->children = calloc(json_array_size(list) + 1, sizeof *n->children);
    if (!n->children)
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
    for (size_t i = 0; i < json_array_size(list); i++) {
        char child_where[256];
        snprintf(child_where, sizeof child_where, "%s.normalizers[%zu]", where, i);
        if (tok_normalizer_parse(json_array_get(list, i), child_where, &n->children[i], err))
            return -1;
        n->n_children++;
        if (!n->children[i])
            return perq_fail(err, PERQ_E_FORMAT, "%s is null", child_where);
    }
    return 0;
}

static int parse_unicode_form(const char *type, tok_normalizer *n)
{
    static const struct {
        const char *name;
        int options;
    } forms[] = {
        {"NFC", UTF8PROC_STABLE | UTF8PROC_COMPOSE},
        {"NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE},
        {"NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT},
        {"NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        if (!strcmp(type, forms[i].name)) {
            n->kind = NORM_UNICODE;
            n->unicode_options = forms[i].options;
            return 0;
        }
    return -1;
}

static int parse_fields(const json_t *j, const char *type, const char *where, tok_normalizer *n,
                        perq_err *err)
{
    if (!strcmp(type, "Sequence")) {
        n->kind = NORM_SEQUENCE;
        return parse_children(j, where, n, err);
    }
    if (!strcmp(type, "Prepend")) {
        n->kind = NORM_PREPEND;
        return copy_string(j, "prepend", where, &n->text, &n->text_len, err);
    }
    if (!strcmp(type, "Replace")) {
        n->kind = NORM_REPLACE;
        return tok_pattern_parse(json_object_get(j, "pattern"), where, &n->pattern, err) ||
                       copy_string(j, "content", where, &n->text, &n->text_len, err)
                   ? -1
                   : 0;
    }
    if (!strcmp(type, "Lowercase")) {
        n->kind = NORM_LOWERCASE;
        return 0;
    }
    if (!strcmp(type, "Strip")) {
        n->kind = NORM_STRIP;
        return tok_json_bool(j, "strip_left", where, &n->strip_left, err) ||
                       tok_json_bool(j, "strip_right", where, &n->strip_right, err)
                   ? -1
                   : 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        n->kind = NORM_BYTE_LEVEL;
        return 0;
    }
    if (!parse_unicode_form(type, n))
        return 0;
    return tok_unsupported_type(where, j, err);
}

int tok_normalizer_parse(const json_t *j, const char *where, tok_normalizer **out, perq_err *err)
{
    *out = NULL;
    if (!j || json_is_null(j))
        return 0;
    const char *type = tok_json_type(j);
    if (!type)
        return perq_fail(err, PERQ_E_FORMAT, "%s has no type", where);
    tok_normalizer *n = calloc(1, sizeof *n);
    if (!n)
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
    if (parse_fields(j, type, where, n, err)) {
        tok_normalizer_free(n);
        return -1;
    }
    *out = n;
    return 0;
}

void tok_normalizer_free(tok_normalizer *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n_children; i++)
        tok_normalizer_free(n->children[i]);
    free(n->children);
    free(n->text);
    tok_pattern_free(&n->pattern);
    free(n);
}
