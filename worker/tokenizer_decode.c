/* Decoding: ids to token strings, then the decoders of tokenizer.json
 * (Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel, Sequence), each
 * a map from a list of strings to a list of strings as in Hugging Face, and
 * the list joined at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

typedef enum {
    DEC_SEQUENCE,
    DEC_REPLACE,
    DEC_BYTE_FALLBACK,
    DEC_FUSE,
    DEC_STRIP,
    DEC_METASPACE,
    DEC_BYTE_LEVEL
} dec_kind;

struct tok_decoder {
    dec_kind kind;
    tok_pattern pattern; /* Replace */
    char *text;          /* Replace: the replacement */
    size_t text_len;
    uint32_t ch;         /* Strip: the character; Metaspace: the replacement */
    size_t start, stop;  /* Strip */
    bool drop_first;     /* Metaspace: prepend_scheme is not "never" */
    tok_decoder **children;
    size_t n_children;
};

/* ---- the decoders ----------------------------------------------------------- */

static int add_token(tok_pieces *out, size_t off, perq_err *err)
{
    /* empty tokens stay in the list: Metaspace counts positions */
    return tok_pieces_push(out, (tok_piece){off, out->text.len - off, -1, false}, err);
}

static const char *token_text(const tok_pieces *in, size_t i)
{
    return in->text.data ? in->text.data + in->v[i].off : "";
}

static int replace_each(const tok_decoder *d, const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    tok_spans hits = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) {
        const char *s = token_text(in, i);
        size_t len = in->v[i].len, off = out->text.len, done = 0;
        rc = tok_pattern_find(&d->pattern, s, len, &hits, err);
        for (size_t k = 0; k < hits.n && !rc; k++) {
            rc = tok_buf_append(&out->text, s + done, hits.v[k].start - done, err) ||
                 tok_buf_append(&out->text, d->text, d->text_len, err);
            done = hits.v[k].end;
        }
        if (!rc)
            rc = tok_buf_append(&out->text, s + done, len - done, err) || add_token(out, off, err);
    }
    free(hits.v);
    return rc ? -1 : 0;
}

static int byte_token(const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef0123456789ABCDEF";
    if (len != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
        return -1;
    const char *hi = memchr(hex, s[3], 32), *lo = memchr(hex, s[4], 32);
    if (!hi || !lo || !s[3] || !s[4])
        return -1;
    return ((hi - hex) % 16) * 16 + (lo - hex) % 16;
}

/* Consecutive byte tokens become their text when they form UTF-8, else one
 * U+FFFD per byte. */
static int flush_bytes(tok_buf *bytes, tok_pieces *out, perq_err *err)
{
    if (!bytes->len)
        return 0;
    int rc = 0;
    if (tok_utf8_valid_prefix(bytes->data, bytes->len) == bytes->len) {
        size_t off = out->text.len;
        rc = tok_buf_append(&out->text, bytes->data, bytes->len, err) || add_token(out, off, err);
    } else {
        for (size_t i = 0; i < bytes->len && !rc; i++) {
            size_t off = out->text.len;
            rc = tok_buf_append(&out->text, "\xEF\xBF\xBD", 3, err) || add_token(out, off, err);
        }
    }
    bytes->len = 0;
    return rc ? -1 : 0;
}

static int byte_fallback(const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    tok_buf bytes = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) {
        const char *s = token_text(in, i);
        int b = byte_token(s, in->v[i].len);
        if (b >= 0) {
            char c = (char)b;
            rc = tok_buf_append(&bytes, &c, 1, err);
            continue;
        }
        size_t off;
        rc = flush_bytes(&bytes, out, err);
        off = out->text.len;
        if (!rc)
            rc = tok_buf_append(&out->text, s, in->v[i].len, err) || add_token(out, off, err);
    }
    if (!rc)
        rc = flush_bytes(&bytes, out, err);
    tok_buf_free(&bytes);
    return rc ? -1 : 0;
}

static int fuse(const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    for (size_t i = 0; i < in->n; i++)
        if (tok_buf_append(&out->text, token_text(in, i), in->v[i].len, err))
            return -1;
    return add_token(out, 0, err);
}

static size_t char_start_before(const char *s, size_t end)
{
    size_t k = end - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    return k;
}

static int strip(const tok_decoder *d, const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *s = token_text(in, i);
        size_t len = in->v[i].len, start = 0, end = len;
        uint32_t cp;
        for (size_t k = 0; k < d->start && start < end; k++) {
            size_t n = tok_utf8_decode(s, len, start, &cp);
            if (cp != d->ch)
                break;
            start += n;
        }
        for (size_t k = 0; k < d->stop && end > start; k++) {
            size_t last = char_start_before(s, end);
            tok_utf8_decode(s, len, last, &cp);
            if (cp != d->ch)
                break;
            end = last;
        }
        size_t off = out->text.len;
        if (tok_buf_append(&out->text, s + start, end - start, err) || add_token(out, off, err))
            return -1;
    }
    return 0;
}

static int metaspace(const tok_decoder *d, const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *s = token_text(in, i);
        size_t len = in->v[i].len, off = out->text.len;
        for (size_t k = 0; k < len;) {
            uint32_t cp;
            size_t n = tok_utf8_decode(s, len, k, &cp);
            int rc = 0;
            if (cp != d->ch)
                rc = tok_buf_append(&out->text, s + k, n, err);
            else if (!(i == 0 && d->drop_first)) /* the first token loses every replacement */
                rc = tok_buf_append(&out->text, " ", 1, err);
            if (rc)
                return -1;
            k += n;
        }
        if (add_token(out, off, err))
            return -1;
    }
    return 0;
}

/* Tokens whose characters all come from the byte alphabet give those bytes;
 * others (an added token, say) give themselves. The whole is then read as
 * UTF-8, invalid sequences replaced. */
static int byte_level(const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    tok_buf bytes = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) {
        const char *s = token_text(in, i);
        size_t len = in->v[i].len, mark = bytes.len;
        bool all_mapped = true;
        for (size_t k = 0; k < len && all_mapped && !rc;) {
            uint32_t cp;
            k += tok_utf8_decode(s, len, k, &cp);
            int b = tok_char_to_byte(cp);
            char c = (char)b;
            all_mapped = b >= 0;
            if (all_mapped)
                rc = tok_buf_append(&bytes, &c, 1, err);
        }
        if (!rc && !all_mapped) {
            bytes.len = mark;
            rc = tok_buf_append(&bytes, s, len, err);
        }
    }
    if (!rc)
        rc = tok_utf8_append_lossy(&out->text, bytes.data ? bytes.data : "", bytes.len, err) ||
             add_token(out, 0, err);
    tok_buf_free(&bytes);
    return rc ? -1 : 0;
}

static int decode_chain(const tok_decoder *d, const tok_pieces *in, tok_pieces *out, perq_err *err);

static int sequence(const tok_decoder *d, const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    tok_pieces a = {0}, b = {0};
    const tok_pieces *cur = in;
    int rc = 0;
    for (size_t i = 0; i < d->n_children && !rc; i++) {
        tok_pieces *next = cur == &a ? &b : &a;
        tok_pieces_free(next);
        rc = decode_chain(d->children[i], cur, next, err);
        cur = next;
    }
    for (size_t i = 0; i < cur->n && !rc; i++) {
        size_t off = out->text.len;
        rc = tok_buf_append(&out->text, token_text(cur, i), cur->v[i].len, err) || add_token(out, off, err);
    }
    tok_pieces_free(&a);
    tok_pieces_free(&b);
    return rc ? -1 : 0;
}

static int decode_chain(const tok_decoder *d, const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    switch (d->kind) {
    case DEC_SEQUENCE: return sequence(d, in, out, err);
    case DEC_REPLACE: return replace_each(d, in, out, err);
    case DEC_BYTE_FALLBACK: return byte_fallback(in, out, err);
    case DEC_FUSE: return fuse(in, out, err);
    case DEC_STRIP: return strip(d, in, out, err);
    case DEC_METASPACE: return metaspace(d, in, out, err);
    case DEC_BYTE_LEVEL: return byte_level(in, out, err);
    }
    return perq_fail(err, PERQ_E_INTERNAL, "decoder: unknown kind");
}

/* ---- ids to text ------------------------------------------------------------ */

static int token_strings(const perq_tokenizer *t, const int32_t *ids, size_t n, tok_pieces *out,
                         perq_err *err)
{
    for (size_t i = 0; i < n; i++) {
        const tok_added_token *added = tok_added_by_id(&t->added, ids[i]);
        size_t len;
        const char *s = added ? added->content : tok_vocab_str(&t->model.vocab, ids[i], &len);
        if (added)
            len = added->len;
        if (!s)
            return perq_fail(err, PERQ_E_INVALID, "token id %d (at %zu) is not in the vocabulary", ids[i], i);
        size_t off = out->text.len;
        if (tok_buf_append(&out->text, s, len, err) || add_token(out, off, err))
            return -1;
    }
    return 0;
}

int perq_tokenizer_decode(const perq_tokenizer *t, const int32_t *ids, size_t n_ids, char **text,
                          perq_err *err)
{
    *text = NULL;
    tok_pieces tokens = {0}, decoded = {0};
    tok_buf joined = {0};
    int rc = token_strings(t, ids, n_ids, &tokens, err);
    if (!rc && t->decoder)
        rc = decode_chain(t->decoder, &tokens, &decoded, err);
    const tok_pieces *final = t->decoder ? &decoded : &tokens;
    for (size_t i = 0; i < final->n && !rc; i++) {
        /* without a decoder, Hugging Face joins the tokens with spaces */
        if (!t->decoder && i > 0)
            rc = tok_buf_append(&joined, " ", 1, err);
        if (!rc)
            rc = tok_buf_append(&joined, token_text(final, i), final->v[i].len, err);
    }
    if (!rc)
        rc = tok_buf_reserve(&joined, 1, err);
    if (!rc) {
        joined.data[joined.len] = 0;
        *text = joined.data;
    } else {
        tok_buf_free(&joined);
    }
    tok_pieces_free(&tokens);
    tok_pieces_free(&decoded);
    return rc ? -1 : 0;
}

/* ---- loading -------------------------------------------------------------- */

static int parse_size(const json_t *j, const char *key, const char *where, size_t *out, perq_err *err)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return perq_fail(err, PERQ_E_FORMAT, "%s.%s is not a non-negative integer", where, key);
    *out = (size_t)json_integer_value(v);
    return 0;
}

static int parse_children(const json_t *j, const char *where, tok_decoder *d, perq_err *err)
{
    json_t *list = json_object_get(j, "decoders");
    if (!json_is_array(list))
        return perq_fail(err, PERQ_E_FORMAT, "%s.decoders is not an array", where);
    d->children = calloc(json_array_size(list) + 1, sizeof *d->children);
    if (!d->children)
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
    for (size_t i = 0; i < json_array_size(list); i++) {
        char child_where[256];
        snprintf(child_where, sizeof child_where, "%s.decoders[%zu]", where, i);
        if (tok_decoder_parse(json_array_get(list, i), child_where, &d->children[i], err))
            return -1;
        d->n_children++;
        if (!d->children[i])
            return perq_fail(err, PERQ_E_FORMAT, "%s is null", child_where);
    }
    return 0;
}

static int parse_metaspace(const json_t *j, const char *where, tok_decoder *d, perq_err *err)
{
    bool add_prefix_space = true;
    if (tok_json_char(j, "replacement", where, &d->ch, err) ||
        tok_json_bool(j, "add_prefix_space", where, &add_prefix_space, err))
        return -1;
    json_t *scheme = json_object_get(j, "prepend_scheme");
    if (!scheme || json_is_null(scheme))
        d->drop_first = add_prefix_space;
    else if (json_is_string(scheme) && (!strcmp(json_string_value(scheme), "always") ||
                                        !strcmp(json_string_value(scheme), "first")))
        d->drop_first = true;
    else if (json_is_string(scheme) && !strcmp(json_string_value(scheme), "never"))
        d->drop_first = false;
    else
        return perq_fail(err, PERQ_E_FORMAT, "%s.prepend_scheme is not always, first or never", where);
    return 0;
}

static int parse_fields(const json_t *j, const char *type, const char *where, tok_decoder *d,
                        perq_err *err)
{
    if (!strcmp(type, "Sequence")) {
        d->kind = DEC_SEQUENCE;
        return parse_children(j, where, d, err);
    }
    if (!strcmp(type, "Replace")) {
        const char *s;
        d->kind = DEC_REPLACE;
        if (tok_pattern_parse(json_object_get(j, "pattern"), where, &d->pattern, err) ||
            tok_json_string(j, "content", where, &s, &d->text_len, err))
            return -1;
        d->text = malloc(d->text_len + 1);
        if (!d->text)
            return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
        memcpy(d->text, s, d->text_len + 1);
        return 0;
    }
    if (!strcmp(type, "ByteFallback")) {
        d->kind = DEC_BYTE_FALLBACK;
        return 0;
    }
    if (!strcmp(type, "Fuse")) {
        d->kind = DEC_FUSE;
        return 0;
    }
    if (!strcmp(type, "Strip")) {
        d->kind = DEC_STRIP;
        return tok_json_char(j, "content", where, &d->ch, err) || parse_size(j, "start", where, &d->start, err) ||
                       parse_size(j, "stop", where, &d->stop, err)
                   ? -1
                   : 0;
    }
    if (!strcmp(type, "Metaspace")) {
        d->kind = DEC_METASPACE;
        return parse_metaspace(j, where, d, err);
    }
    if (!strcmp(type, "ByteLevel")) {
        d->kind = DEC_BYTE_LEVEL;
        return 0;
    }
    return tok_unsupported_type(where, j, err);
}

int tok_decoder_parse(const json_t *j, const char *where, tok_decoder **out, perq_err *err)
{
    *out = NULL;
    if (!j || json_is_null(j))
        return 0;
    const char *type = tok_json_type(j);
    if (!type)
        return perq_fail(err, PERQ_E_FORMAT, "%s has no type", where);
    tok_decoder *d = calloc(1, sizeof *d);
    if (!d)
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
    if (parse_fields(j, type, where, d, err)) {
        tok_decoder_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

void tok_decoder_free(tok_decoder *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_children; i++)
        tok_decoder_free(d->children[i]);
    free(d->children);
    free(d->text);
    tok_pattern_free(&d->pattern);
    free(d);
}
