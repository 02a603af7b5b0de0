/* Growable arrays, UTF-8, and the character classes the tokenizer parts ask about. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_internal.h"

/* ---- growable arrays ---------------------------------------------------- */

static int grow(void **data, size_t *cap, size_t need, size_t elem, perq_err *err)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap : 16;
    while (cap2 < need) {
        if (cap2 > SIZE_MAX / 2 / elem)
            return perq_fail(err, PERQ_E_NOMEM, "tokenizer: %zu elements are too many", need);
        cap2 *= 2;
    }
    void *p = realloc(*data, cap2 * elem);
    if (!p)
        return perq_fail(err, PERQ_E_NOMEM, "tokenizer: out of memory (%zu bytes)", cap2 * elem);
    *data = p;
    *cap = cap2;
    return 0;
}

int tok_buf_reserve(tok_buf *b, size_t extra, perq_err *err)
{
    if (extra > SIZE_MAX - b->len - 1)
        return perq_fail(err, PERQ_E_NOMEM, "tokenizer: text too long");
    /* one more byte, so that a finished buffer can always be NUL-terminated */
    return grow((void **)&b->data, &b->cap, b->len + extra + 1, 1, err);
}

int tok_buf_append(tok_buf *b, const void *bytes, size_t n, perq_err *err)
{
    if (tok_buf_reserve(b, n, err))
        return -1;
    if (n)
        memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

void tok_buf_free(tok_buf *b)
{
    free(b->data);
    *b = (tok_buf){0};
}

int tok_ids_push(tok_ids *ids, int32_t id, perq_err *err)
{
    if (ids->n == ids->cap && grow((void **)&ids->v, &ids->cap, ids->n + 1, sizeof *ids->v, err))
        return -1;
    ids->v[ids->n++] = id;
    return 0;
}

int tok_spans_push(tok_spans *s, size_t start, size_t end, perq_err *err)
{
    if (s->n == s->cap && grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v, err))
        return -1;
    s->v[s->n++] = (tok_span){start, end};
    return 0;
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* Length of the well-formed sequence at s[i], or 0 when it is not one; *bad
 * then receives the length of the maximal invalid subpart (at least 1). */
static size_t sequence_length(const unsigned char *s, size_t len, size_t i, size_t *bad)
{
    unsigned char c = s[i];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t k = 1; k < n; k++) {
        unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
        if (i + k >= len || s[i + k] < lo_k || s[i + k] > hi_k) {
            *bad = k;
            return 0;
        }
    }
    return n;
}

size_t tok_utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, bad;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = sequence_length(u, len, i, &bad);
        if (!n)
            return i;
        i += n;
    }
    return len;
}

size_t tok_utf8_decode(const char *s, size_t len, size_t i, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s + i;
    size_t n = u[0] < 0x80 ? 1 : u[0] < 0xE0 ? 2 : u[0] < 0xF0 ? 3 : 4;
    if (n > len - i)
        n = 1; /* only for invalid input, which callers have ruled out */
    switch (n) {
    case 1: *cp = u[0]; break;
    case 2: *cp = (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F); break;
    case 3: *cp = (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F); break;
    default:
        *cp = (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 |
              (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
    }
    return n;
}

size_t tok_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int tok_utf8_append_lossy(tok_buf *out, const char *s, size_t len, perq_err *err)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, bad;
    while (i < len) {
        size_t good = tok_utf8_valid_prefix(s + i, len - i);
        if (tok_buf_append(out, s + i, good, err))
            return -1;
        i += good;
        if (i == len)
            break;
        sequence_length(u, len, i, &bad);
        if (tok_buf_append(out, replacement, 3, err))
            return -1;
        i += bad;
    }
    return 0;
}

/* ---- character classes --------------------------------------------------- */

bool tok_is_whitespace(uint32_t cp)
{
    switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

bool tok_is_word_char(uint32_t cp)
{
    if (cp == 0x200C || cp == 0x200D) /* Join_Control */
        return true;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

bool tok_is_numeric(uint32_t cp)
{
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

/* ---- GPT-2 byte-level alphabet -------------------------------------------
 * Printable Latin-1 bytes stand for themselves; the 68 others (0x00-0x20,
 * 0x7F-0xA0, 0xAD) take U+0100.. in byte order. */

static bool byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_char(uint8_t byte)
{
    if (byte_is_printable(byte))
        return byte;
    if (byte <= 0x20)
        return 0x100 + byte;
    if (byte <= 0xA0)
        return 0x100 + 0x21 + (byte - 0x7F);
    return 0x100 + 0x21 + 0x22; /* 0xAD */
}

int tok_char_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_is_printable(cp) ? (int)cp : -1;
    if (cp <= 0x120)
        return (int)(cp - 0x100);
    if (cp <= 0x142)
        return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143)
        return 0xAD;
    return -1;
}
