#include "http_util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool http_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > PERQ_NAME_MAX || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long http_percent_decode(const char *src, size_t len, char *dst, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            if (len - i < 3)
                return -1;
            int hi = hex_value(src[i + 1]), lo = hex_value(src[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return -1;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        } else if (c == '\0') {
            return -1;
        }
        dst[o++] = c;
    }
    dst[o] = '\0';
    return (long)o;
}

/* The segment of s starting at *pos (just after a '/') and its length; *more
 * tells whether a '/' follows. Advances *pos past the segment and that '/'. */
static void next_segment(const char *s, size_t *pos, const char **seg, size_t *len, bool *more)
{
    const char *start = s + *pos;
    const char *slash = strchr(start, '/');
    *seg = start;
    *len = slash ? (size_t)(slash - start) : strlen(start);
    *more = slash != NULL;
    *pos += *len + (slash ? 1 : 0);
}

static void free_params(char **params, int n)
{
    for (int i = 0; i < n; i++) {
        free(params[i]);
        params[i] = NULL;
    }
}

int http_path_match(const char *pattern, const char *path, char **params, int max_params)
{
    if (pattern[0] != '/' || path[0] != '/')
        return -1;
    size_t pp = 1, sp = 1;
    int n = 0;
    for (;;) {
        const char *pseg, *sseg;
        size_t plen, slen;
        bool pmore, smore;
        next_segment(pattern, &pp, &pseg, &plen, &pmore);
        next_segment(path, &sp, &sseg, &slen, &smore);
        if (plen > 0 && pseg[0] == ':') {
            if (slen == 0 || n >= max_params)
                goto mismatch;
            char *decoded = malloc(slen + 1);
            if (!decoded)
                goto mismatch;
            if (http_percent_decode(sseg, slen, decoded, false) < 0)
                strcpy(decoded, "%");
            params[n++] = decoded;
        } else if (plen != slen || memcmp(pseg, sseg, plen) != 0) {
            goto mismatch;
        }
        if (pmore != smore)
            goto mismatch;
        if (!pmore)
            return n;
    }
mismatch:
    free_params(params, n);
    return -1;
}

/* Digits at *p into *value, saturating at UINT64_MAX; false when there are none. */
static bool parse_digits(const char **p, uint64_t *value)
{
    const char *s = *p;
    uint64_t v = 0;
    bool saturated = false;
    while (*s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            saturated = true;
        else
            v = v * 10 + d;
        s++;
    }
    if (s == *p)
        return false;
    *value = saturated ? UINT64_MAX : v;
    *p = s;
    return true;
}

static const char *skip_ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

http_range_result http_parse_range(const char *header, uint64_t size, uint64_t *first, uint64_t *length)
{
    if (!header)
        return HTTP_RANGE_NONE;
    const char *s = skip_ows(header);
    if (strncasecmp(s, "bytes=", 6) != 0)
        return HTTP_RANGE_NONE;
    s += 6;

    /* range-set = 1#range-spec: empty list elements are allowed and skipped. */
    int specs = 0;
    bool suffix = false;
    uint64_t a = 0, b = UINT64_MAX;
    for (;;) {
        s = skip_ows(s);
        if (*s == ',') {
            s++;
            continue;
        }
        if (*s == '\0')
            break;
        if (++specs > 1)
            return HTTP_RANGE_NONE; /* several ranges: we answer with the whole file */
        if (*s == '-') {
            s++;
            suffix = true;
            if (!parse_digits(&s, &a))
                return HTTP_RANGE_NONE;
        } else {
            if (!parse_digits(&s, &a) || *s != '-')
                return HTTP_RANGE_NONE;
            s++;
            if (*s >= '0' && *s <= '9') {
                parse_digits(&s, &b);
                if (b < a)
                    return HTTP_RANGE_NONE;
            }
        }
        s = skip_ows(s);
        if (*s != ',' && *s != '\0')
            return HTTP_RANGE_NONE;
    }
    if (specs == 0)
        return HTTP_RANGE_NONE;

    if (suffix) {
        if (a == 0 || size == 0)
            return HTTP_RANGE_UNSATISFIABLE;
        uint64_t n = a < size ? a : size;
        *first = size - n;
        *length = n;
        return HTTP_RANGE_PARTIAL;
    }
    if (a >= size)
        return HTTP_RANGE_UNSATISFIABLE;
    uint64_t last = b < size - 1 ? b : size - 1;
    *first = a;
    *length = last - a + 1;
    return HTTP_RANGE_PARTIAL;
}

bool http_etag_matches(const char *header, const char *etag)
{
    if (!header)
        return false;
    size_t etag_len = strlen(etag);
    const char *s = header;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (*s == '\0')
            return false;
        if (*s == '*')
            return true;
        if (s[0] == 'W' && s[1] == '/')
            s += 2;
        if (*s != '"')
            return false; /* malformed: matches nothing */
        const char *close = strchr(s + 1, '"');
        if (!close)
            return false;
        size_t len = (size_t)(close - s) + 1;
        if (len == etag_len && memcmp(s, etag, len) == 0)
            return true;
        s = close + 1;
    }
}

bool http_parse_u64(const char *s, uint64_t *out)
{
    if (!s)
        return false;
    s = skip_ows(s);
    uint64_t v = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        p++;
    }
    if (p == s || *skip_ows(p) != '\0')
        return false;
    *out = v;
    return true;
}
