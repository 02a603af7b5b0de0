/* Small pieces of HTTP that need no server: names a client may choose, percent
 * decoding, path patterns, the Range header. Pure functions, unit-tested and
 * fuzzed on their own. */
#ifndef PERQD_HTTP_UTIL_H
#define PERQD_HTTP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Names of uploaded files and datasets: [A-Za-z0-9._-]+, no leading dot, at
 * most PERQ_NAME_MAX bytes. So no '/', no "..", nothing hidden. */
#define PERQ_NAME_MAX 200
bool http_name_valid(const char *name);

/* Decodes %XX escapes of src[0..len) into dst (which holds len + 1 bytes);
 * plus_is_space for query strings. Returns the decoded length, or -1 when an
 * escape is malformed or decodes to a NUL byte (a NUL could hide the rest of
 * a name from every later check). */
long http_percent_decode(const char *src, size_t len, char *dst, bool plus_is_space);

/* Matches a raw (still escaped) path against a pattern such as
 * "/v1/models/:id/files/:name": literal segments must be equal, each ":x"
 * segment captures one non-empty segment, percent-decoded into a new string
 * (params[i], caller frees). Returns the number of params captured (>= 0), or
 * -1 when the path does not match; a segment that matched a ":x" but does not
 * decode becomes the literal "%" (never a valid name), so the handler can say
 * why. At most max_params are captured. */
int http_path_match(const char *pattern, const char *path, char **params, int max_params);

/* Range: bytes=... against a representation of `size` bytes (RFC 9110 14).
 *   HTTP_RANGE_NONE: no header, not a bytes range, several ranges, or a
 *                    syntax error: the whole file is sent (200), as the RFC allows;
 *   HTTP_RANGE_PARTIAL: *first and *length (>= 1) are set: 206;
 *   HTTP_RANGE_UNSATISFIABLE: a valid single range that selects nothing: 416. */
typedef enum { HTTP_RANGE_NONE, HTTP_RANGE_PARTIAL, HTTP_RANGE_UNSATISFIABLE } http_range_result;
http_range_result http_parse_range(const char *header, uint64_t size, uint64_t *first, uint64_t *length);

/* If-None-Match: true when the header (a list of entity tags, or "*") names
 * etag (given with its quotes). Weak tags compare by their opaque part. */
bool http_etag_matches(const char *header, const char *etag);

/* A byte count of a header such as Content-Length: digits only, no overflow. */
bool http_parse_u64(const char *s, uint64_t *out);

#endif
