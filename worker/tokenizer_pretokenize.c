/* Pre-tokenizers: Metaspace, ByteLevel, Split, Digits and Sequence, with
 * Hugging Face's semantics. Each turns every text piece into smaller ones;
 * added tokens found earlier pass through untouched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

typedef enum { PRE_SEQUENCE, PRE_METASPACE, PRE_BYTE_LEVEL, PRE_SPLIT, PRE_DIGITS } pre_kind;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } prepend_scheme;

/* What a split keeps of the delimiters it finds. */
typedef enum {
    SPLIT_REMOVED,
    SPLIT_ISOLATED,
    SPLIT_MERGED_WITH_PREVIOUS,
    SPLIT_MERGED_WITH_NEXT,
    SPLIT_CONTIGUOUS
} split_behavior;

struct tok_pretok {
    pre_kind kind;
    /* Metaspace */
    char replacement[4];
    size_t replacement_len;
    prepend_scheme prepend;
    bool split;
    /* ByteLevel */
    bool add_prefix_space, use_regex;
    /* Split; ByteLevel's GPT-2 regex */
    tok_pattern pattern;
    split_behavior behavior;
    bool invert;
    /* Digits */
    bool individual_digits;
    tok_pretok **children;
    size_t n_children;
};

/* The regex of GPT-2 that ByteLevel applies when use_regex is true. */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- splitting by matches -------------------------------------------------- */

/* One region of a text: a match of the pattern or the text between two. */
typedef struct {
    size_t start, end;
    bool is_match;
} region;

typedef struct {
    region *v;
    size_t n, cap;
} regions;

static int regions_push(regions *r, size_t start, size_t end, bool is_match, perq_err *err)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        region *v = realloc(r->v, cap * sizeof *v);
        if (!v)
            return perq_fail(err, PERQ_E_NOMEM, "pre_tokenizer: out of memory");
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = (region){start, end, is_match};
    return 0;
}

/* Matches and the gaps between them, covering [0, len); invert swaps the two. */
static int regions_of(const tok_spans *hits, size_t len, bool invert, regions *out, perq_err *err)
{
    out->n = 0;
    size_t prev = 0;
    for (size_t i = 0; i < hits->n; i++) {
        if (prev < hits->v[i].start && regions_push(out, prev, hits->v[i].start, invert, err))
            return -1;
        if (regions_push(out, hits->v[i].start, hits->v[i].end, !invert, err))
            return -1;
        prev = hits->v[i].end;
    }
    if (prev < len && regions_push(out, prev, len, invert, err))
        return -1;
    return 0;
}

/* Applies the behavior in place: afterwards every region is a piece to keep,
 * except those with is_match set under SPLIT_REMOVED. */
static void apply_behavior(regions *r, split_behavior behavior)
{
    size_t n = 0;
    bool prev_match = false;
    switch (behavior) {
    case SPLIT_REMOVED:
    case SPLIT_ISOLATED:
        return;
    case SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < r->n; i++) {
            if (r->v[i].is_match && !prev_match && n > 0)
                r->v[n - 1].end = r->v[i].end;
            else
                r->v[n++] = r->v[i];
            prev_match = r->v[i].is_match;
        }
        break;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < r->n; i++) {
            if (n > 0 && r->v[i].is_match == prev_match)
                r->v[n - 1].end = r->v[i].end;
            else
                r->v[n++] = r->v[i];
            prev_match = r->v[i].is_match;
        }
        break;
    case SPLIT_MERGED_WITH_NEXT:
        /* right to left: a match joins the piece after it, unless that is a match too */
        n = r->n;
        for (size_t i = r->n; i-- > 0;) {
            if (r->v[i].is_match && !prev_match && n < r->n)
                r->v[n].start = r->v[i].start;
            else
                r->v[--n] = r->v[i];
            prev_match = r->v[i].is_match;
        }
        memmove(r->v, r->v + n, (r->n - n) * sizeof *r->v);
        n = r->n - n;
        break;
    }
    for (size_t i = 0; i < n; i++)
        r->v[i].is_match = false;
    r->n = n;
}

/* Splits s at the matches of p and adds the pieces to out. */
static int split_text(const tok_pattern *p, split_behavior behavior, bool invert, const char *s,
                      size_t len, bool at_start, tok_pieces *out, perq_err *err)
{
    tok_spans hits = {0};
    regions r = {0};
    int rc = tok_pattern_find(p, s, len, &hits, err) || regions_of(&hits, len, invert, &r, err);
    if (!rc)
        apply_behavior(&r, behavior);
    for (size_t i = 0; i < r.n && !rc; i++)
        if (!(behavior == SPLIT_REMOVED && r.v[i].is_match))
            rc = tok_pieces_add_text(out, s + r.v[i].start, r.v[i].end - r.v[i].start,
                                     at_start && r.v[i].start == 0, err);
    free(hits.v);
    free(r.v);
    return rc ? -1 : 0;
}

/* ---- the pre-tokenizers ---------------------------------------------------- */

static int metaspace(const tok_pretok *p, const char *s, size_t len, bool at_start, tok_pieces *out,
                     perq_err *err)
{
    tok_buf text = {0};
    bool prepend = len > 0 && (p->prepend == PREPEND_ALWAYS || (p->prepend == PREPEND_FIRST && at_start));
    /* ...unless the text already starts with the replacement (a space, before) */
    if (prepend && (s[0] == ' ' || (len >= p->replacement_len &&
                                    !memcmp(s, p->replacement, p->replacement_len))))
        prepend = false;
    int rc = prepend ? tok_buf_append(&text, p->replacement, p->replacement_len, err) : 0;
    for (size_t i = 0; i < len && !rc;) {
        const char *space = memchr(s + i, ' ', len - i);
        size_t run = space ? (size_t)(space - (s + i)) : len - i;
        rc = tok_buf_append(&text, s + i, run, err);
        if (!rc && space)
            rc = tok_buf_append(&text, p->replacement, p->replacement_len, err);
        i += run + (space ? 1 : 0);
    }
    if (!rc && !p->split)
        rc = tok_pieces_add_text(out, text.data, text.len, at_start, err);
    else if (!rc)
        rc = split_text(&p->pattern, SPLIT_MERGED_WITH_NEXT, false, text.data ? text.data : "",
                        text.len, at_start, out, err);
    tok_buf_free(&text);
    return rc;
}

/* Each byte of each piece becomes its character of the GPT-2 alphabet. */
static int map_bytes(const tok_pieces *in, size_t first, tok_pieces *out, perq_err *err)
{
    for (size_t i = first; i < in->n; i++) {
        const tok_piece *pc = &in->v[i];
        size_t off = out->text.len;
        const char *s = in->text.data + pc->off;
        if (tok_buf_reserve(&out->text, 2 * pc->len, err))
            return -1;
        for (size_t k = 0; k < pc->len; k++)
            out->text.len += tok_utf8_encode(tok_byte_to_char((uint8_t)s[k]), out->text.data + out->text.len);
        if (tok_pieces_close(out, off, pc->at_start, err))
            return -1;
    }
    return 0;
}

static int byte_level(const tok_pretok *p, const char *s, size_t len, bool at_start, tok_pieces *out,
                      perq_err *err)
{
    tok_pieces split = {0};
    tok_buf spaced = {0};
    int rc = 0;
    if (p->add_prefix_space && len > 0 && s[0] != ' ') {
        rc = tok_buf_append(&spaced, " ", 1, err) || tok_buf_append(&spaced, s, len, err);
        s = spaced.data;
        len = spaced.len;
    }
    if (!rc && p->use_regex)
        rc = split_text(&p->pattern, SPLIT_ISOLATED, false, s, len, at_start, &split, err);
    else if (!rc)
        rc = tok_pieces_add_text(&split, s, len, at_start, err);
    if (!rc)
        rc = map_bytes(&split, 0, out, err);
    tok_pieces_free(&split);
    tok_buf_free(&spaced);
    return rc ? -1 : 0;
}

static int digits(const tok_pretok *p, const char *s, size_t len, bool at_start, tok_pieces *out,
                  perq_err *err)
{
    tok_spans hits = {0};
    regions r = {0};
    int rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        uint32_t cp;
        size_t n = tok_utf8_decode(s, len, i, &cp);
        if (tok_is_numeric(cp))
            rc = tok_spans_push(&hits, i, i + n, err);
        i += n;
    }
    if (!rc)
        rc = regions_of(&hits, len, false, &r, err);
    if (!rc)
        apply_behavior(&r, p->individual_digits ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS);
    for (size_t i = 0; i < r.n && !rc; i++)
        rc = tok_pieces_add_text(out, s + r.v[i].start, r.v[i].end - r.v[i].start,
                                 at_start && r.v[i].start == 0, err);
    free(hits.v);
    free(r.v);
    return rc ? -1 : 0;
}

static int pretokenize_piece(const tok_pretok *p, const char *s, size_t len, bool at_start,
                             tok_pieces *out, perq_err *err)
{
    switch (p->kind) {
    case PRE_METASPACE:
        return metaspace(p, s, len, at_start, out, err);
    case PRE_BYTE_LEVEL:
        return byte_level(p, s, len, at_start, out, err);
    case PRE_SPLIT:
        return split_text(&p->pattern, p->behavior, p->invert, s, len, at_start, out, err);
    case PRE_DIGITS:
        return digits(p, s, len, at_start, out, err);
    case PRE_SEQUENCE:
        break;
    }
    return perq_fail(err, PERQ_E_INTERNAL, "pre_tokenizer: a sequence inside a piece");
}

static int sequence(const tok_pretok *p, const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    tok_pieces a = {0}, b = {0};
    const tok_pieces *cur = in;
    int rc = 0;
    for (size_t i = 0; i < p->n_children && !rc; i++) {
        tok_pieces *next = cur == &a ? &b : &a;
        tok_pieces_free(next);
        rc = tok_pretokenize(p->children[i], cur, next, err);
        cur = next;
    }
    for (size_t i = 0; i < cur->n && !rc; i++) {
        const tok_piece *pc = &cur->v[i];
        rc = pc->id >= 0 ? tok_pieces_add_token(out, pc->id, err)
                         : tok_pieces_add_text(out, cur->text.data + pc->off, pc->len, pc->at_start, err);
    }
    tok_pieces_free(&a);
    tok_pieces_free(&b);
    return rc;
}

int tok_pretokenize(const tok_pretok *p, const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    if (p->kind == PRE_SEQUENCE)
        return sequence(p, in, out, err);
    for (size_t i = 0; i < in->n; i++) {
        const tok_piece *pc = &in->v[i];
        int rc = pc->id >= 0 ? tok_pieces_add_token(out, pc->id, err)
                             : pretokenize_piece(p, in->text.data + pc->off, pc->len, pc->at_start, out, err);
        if (rc)
            return -1;
    }
    return 0;
}

/* ---- loading -------------------------------------------------------------- */

static int parse_metaspace(const json_t *j, const char *where, tok_pretok *p, perq_err *err)
{
    uint32_t cp;
    if (tok_json_char(j, "replacement", where, &cp, err))
        return -1;
    p->replacement_len = tok_utf8_encode(cp, p->replacement);
    p->split = true;
    if (tok_json_bool(j, "split", where, &p->split, err))
        return -1;
    json_t *scheme = json_object_get(j, "prepend_scheme");
    bool add_prefix_space = true;
    if (tok_json_bool(j, "add_prefix_space", where, &add_prefix_space, err))
        return -1;
    if (!scheme || json_is_null(scheme))
        p->prepend = add_prefix_space ? PREPEND_ALWAYS : PREPEND_NEVER;
    else if (json_is_string(scheme) && !strcmp(json_string_value(scheme), "always"))
        p->prepend = PREPEND_ALWAYS;
    else if (json_is_string(scheme) && !strcmp(json_string_value(scheme), "first"))
        p->prepend = PREPEND_FIRST;
    else if (json_is_string(scheme) && !strcmp(json_string_value(scheme), "never"))
        p->prepend = PREPEND_NEVER;
    else
        return perq_fail(err, PERQ_E_FORMAT, "%s.prepend_scheme is not always, first or never", where);
    if (!add_prefix_space && p->prepend != PREPEND_NEVER)
        return perq_fail(err, PERQ_E_FORMAT, "%s: add_prefix_space false contradicts prepend_scheme", where);
    /* splitting keeps each replacement with the word it opens */
    p->pattern.literal = malloc(p->replacement_len);
    if (!p->pattern.literal)
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
    memcpy(p->pattern.literal, p->replacement, p->replacement_len);
    p->pattern.literal_len = p->replacement_len;
    return 0;
}

static int parse_split(const json_t *j, const char *where, tok_pretok *p, perq_err *err)
{
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                        "Contiguous"};
    const char *behavior;
    size_t len;
    if (tok_json_string(j, "behavior", where, &behavior, &len, err))
        return -1;
    size_t b = 0;
    while (b < 5 && strcmp(behavior, names[b]))
        b++;
    if (b == 5)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "%s: behavior '%.40s' is not supported", where, behavior);
    p->behavior = (split_behavior)b;
    return tok_json_bool(j, "invert", where, &p->invert, err) ||
                   tok_pattern_parse(json_object_get(j, "pattern"), where, &p->pattern, err)
               ? -1
               : 0;
}

static int parse_children(const json_t *j, const char *where, tok_pretok *p, perq_err *err)
{
    json_t *list = json_object_get(j, "pretokenizers");
    if (!json_is_array(list))
        return perq_fail(err, PERQ_E_FORMAT, "%s.pretokenizers is not an array", where);
    p->children = calloc(json_array_size(list) + 1, sizeof *p->children);
    if (!p->children)
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
    for (size_t i = 0; i < json_array_size(list); i++) {
        char child_where[256];
        snprintf(child_where, sizeof child_where, "%s.pretokenizers[%zu]", where, i);
        if (tok_pretok_parse(json_array_get(list, i), child_where, &p->children[i], err))
            return -1;
        p->n_children++;
        if (!p->children[i])
            return perq_fail(err, PERQ_E_FORMAT, "%s is null", child_where);
    }
    return 0;
}

static int parse_fields(const json_t *j, const char *type, const char *where, tok_pretok *p,
                        perq_err *err)
{
    if (!strcmp(type, "Sequence")) {
        p->kind = PRE_SEQUENCE;
        return parse_children(j, where, p, err);
    }
    if (!strcmp(type, "Metaspace")) {
        p->kind = PRE_METASPACE;
        return parse_metaspace(j, where, p, err);
    }
    if (!strcmp(type, "ByteLevel")) {
        p->kind = PRE_BYTE_LEVEL;
        p->add_prefix_space = p->use_regex = true;
        if (tok_json_bool(j, "add_prefix_space", where, &p->add_prefix_space, err) ||
            tok_json_bool(j, "use_regex", where, &p->use_regex, err))
            return -1;
        return p->use_regex ? tok_pattern_regex(gpt2_regex, sizeof gpt2_regex - 1, where, &p->pattern, err) : 0;
    }
    if (!strcmp(type, "Split")) {
        p->kind = PRE_SPLIT;
        return parse_split(j, where, p, err);
    }
    if (!strcmp(type, "Digits")) {
        p->kind = PRE_DIGITS;
        return tok_json_bool(j, "individual_digits", where, &p->individual_digits, err);
    }
    return tok_unsupported_type(where, j, err);
}

int tok_pretok_parse(const json_t *j, const char *where, tok_pretok **out, perq_err *err)
{
    *out = NULL;
    if (!j || json_is_null(j))
        return 0;
    const char *type = tok_json_type(j);
    if (!type)
        return perq_fail(err, PERQ_E_FORMAT, "%s has no type", where);
    tok_pretok *p = calloc(1, sizeof *p);
    if (!p)
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
    if (parse_fields(j, type, where, p, err)) {
        tok_pretok_free(p);
        return -1;
    }
    *out = p;
    return 0;
}

void tok_pretok_free(tok_pretok *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_children; i++)
        tok_pretok_free(p->children[i]);
    free(p->children);
    tok_pattern_free(&p->pattern);
    free(p);
}
