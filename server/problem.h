/* Errors as application/problem+json (RFC 9457): {type, title, status, detail},
 * plus, for a 422, a `problems` array naming each problem found. */
#ifndef PERQD_PROBLEM_H
#define PERQD_PROBLEM_H

#include <jansson.h>

/* type is "urn:perq:problem:" + slug (a short kebab-case name for the kind of
 * error, stable for clients to branch on); title is the status's reason
 * phrase. Returns a new reference. */
json_t *problem_new(unsigned status, const char *slug, const char *detail);

/* "Not Found" for 404, ...; "Error" for a status not listed. */
const char *http_reason_phrase(unsigned status);

#endif
