/* Patterns of the Replace normalizer and the Split pre-tokenizer: a literal
 * string or a regex. Hugging Face runs the regexes with Oniguruma; PCRE2 with
 * UTF and Unicode properties (UCP) reads the same syntax for what tokenizer
 * files use (\p{L}, \s, lookahead, (?i:...), possessive quantifiers). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

int tok_pattern_regex(const char *re, size_t len, const char *where, tok_pattern *p, perq_err *err)
{
    int code;
    PCRE2_SIZE at;
    p->re = pcre2_compile((PCRE2_SPTR)re, len, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return perq_fail(err, PERQ_E_UNSUPPORTED, "%s: regex '%.200s' is not supported (PCRE2: %s at %zu)",
                         where, re, (const char *)msg, (size_t)at);
    }
    /* Without JIT (not built, or no executable memory) the interpreter runs it. */
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE);
    return 0;
}

int tok_pattern_parse(const json_t *j, const char *where, tok_pattern *p, perq_err *err)
{
    *p = (tok_pattern){0};
    json_t *lit = json_is_object(j) ? json_object_get(j, "String") : NULL;
    json_t *re = json_is_object(j) ? json_object_get(j, "Regex") : NULL;
    if (json_is_string(lit) && !re) {
        size_t len = json_string_length(lit);
        if (len == 0) /* matches the empty string everywhere, as a regex would */
            return tok_pattern_regex("", 0, where, p, err);
        p->literal = malloc(len);
        if (!p->literal)
            return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
        memcpy(p->literal, json_string_value(lit), len);
        p->literal_len = len;
        return 0;
    }
    if (json_is_string(re) && !lit)
        return tok_pattern_regex(json_string_value(re), json_string_length(re), where, p, err);
    return perq_fail(err, PERQ_E_FORMAT, "%s: pattern is not {\"String\": ...} or {\"Regex\": ...}", where);
}

void tok_pattern_free(tok_pattern *p)
{
    free(p->literal);
    if (p->re)
        pcre2_code_free(p->re);
    *p = (tok_pattern){0};
}

static int find_literal(const tok_pattern *p, const char *s, size_t len, tok_spans *out, perq_err *err)
{
    size_t i = 0;
    while (i + p->literal_len <= len) {
        const char *hit = memmem(s + i, len - i, p->literal, p->literal_len);
        if (!hit)
            break;
        size_t start = (size_t)(hit - s);
        if (tok_spans_push(out, start, start + p->literal_len, err))
            return -1;
        i = start + p->literal_len;
    }
    return 0;
}

static int find_regex(const tok_pattern *p, const char *s, size_t len, tok_spans *out, perq_err *err)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md)
        return perq_fail(err, PERQ_E_NOMEM, "tokenizer: out of memory");
    size_t from = 0, last_end = 0;
    bool matched_before = false;
    int rc = 0;
    while (from <= len) {
        /* the text was checked to be UTF-8, and from is a character boundary */
        int n = pcre2_match(p->re, (PCRE2_SPTR)s, len, from, PCRE2_NO_UTF_CHECK, md, NULL);
        if (n == PCRE2_ERROR_NOMATCH)
            break;
        if (n < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(n, msg, sizeof msg);
            rc = perq_fail(err, PERQ_E_UNSUPPORTED, "tokenizer: regex match failed: %s", (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t start = ov[0], end = ov[1];
        if (start < from || start > end || end > len) { /* \K can do this */
            rc = perq_fail(err, PERQ_E_UNSUPPORTED, "tokenizer: regex gave a match that ends before it starts");
            break;
        }
        if (start == end && matched_before && end == last_end) {
            /* no empty match right where the previous one ended: step one character */
            if (from >= len)
                break;
            uint32_t cp;
            from += tok_utf8_decode(s, len, from, &cp);
            continue;
        }
        if ((rc = tok_spans_push(out, start, end, err)))
            break;
        matched_before = true;
        last_end = from = end;
    }
    pcre2_match_data_free(md);
    return rc;
}

int tok_pattern_find(const tok_pattern *p, const char *s, size_t len, tok_spans *out, perq_err *err)
{
    out->n = 0;
    return p->literal ? find_literal(p, s, len, out, err) : find_regex(p, s, len, out, err);
}
