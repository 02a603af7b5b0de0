/* libmicrohttpd glue: a route table, request bodies (JSON held in memory up
 * to a limit, files streamed to disk), replies, problem+json errors.
 *
 * A request goes: route lookup (404, 405 with Allow) -> size limits (413) ->
 * for a file route, route->begin (checks, opens the upload) -> the body ->
 * route->handle, which replies. A reply decided before the body is read (an
 * error) is sent once the body has been read and dropped, so the client sees
 * it, except when the body is too large to be worth reading. */
#ifndef PERQD_HTTP_H
#define PERQD_HTTP_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "metrics.h"
#include "perq/error.h"
#include "upload.h"

typedef struct http_req http_req;
typedef void (*http_handler)(http_req *r);

typedef enum {
    HTTP_BODY_NONE,   /* a body, if any, is read and dropped */
    HTTP_BODY_JSON,   /* held in memory, at most the JSON limit */
    HTTP_BODY_FILE,   /* streamed into the upload that route->begin opens */
} http_body_kind;

typedef struct http_route {
    const char *method;      /* GET (also answers HEAD), POST, PUT, DELETE */
    const char *pattern;     /* "/v1/models/:id/files/:name" */
    http_body_kind body;
    http_handler begin;      /* HTTP_BODY_FILE: headers known, no byte read yet */
    http_handler handle;     /* the whole body is here: reply */
} http_route;

#define HTTP_MAX_PARAMS 4
/* JSON request bodies are small; anything larger is refused (413). */
#define HTTP_JSON_LIMIT ((uint64_t)1 << 20)

typedef struct http_options {
    const http_route *routes;
    size_t n_routes;
    void *app;               /* handed to handlers through http_app() */
    perqd_metrics *metrics;
    uint64_t max_body;       /* file bodies */
    int threads;
} http_options;

typedef struct http_server http_server;

/* Serves on an already listening socket (which the server then owns). */
int http_start(int listen_fd, const http_options *opt, http_server **out, perq_err *err);
/* Stops accepting, finishes or drops the requests in flight, joins the threads. */
void http_stop(http_server *h);

/* ---- the request ------------------------------------------------------------ */

void *http_app(http_req *r);
const char *http_method(http_req *r);
/* The request's path, as sent (still percent-encoded). */
const char *http_path(http_req *r);
/* The i-th ":x" segment of the route pattern, percent-decoded. */
const char *http_param(http_req *r, int i);
/* A request header (case-insensitive name), NULL when absent. */
const char *http_header(http_req *r, const char *name);
/* A query parameter, decoded into buf: 1 present, 0 absent, -1 malformed or too long. */
int http_query(http_req *r, const char *name, char *buf, size_t size);
/* The JSON body (NUL-terminated; len 0 when there was none). */
const char *http_body(http_req *r, size_t *len);
/* Content-Length when the client sent one. */
bool http_content_length(http_req *r, uint64_t *len);
/* The upload a file route's begin handler opened; http.c removes its
 * temporary file whenever the request ends without upload_commit. */
upload *http_upload(http_req *r);

/* ---- replies (each replaces any earlier one) -------------------------------- */

/* Takes the reference to body. */
void http_reply_json(http_req *r, unsigned status, json_t *body);
void http_reply_problem(http_req *r, unsigned status, const char *slug, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A problem object built by the caller (problem_new + extensions); takes it. */
void http_reply_problem_json(http_req *r, json_t *problem);
void http_reply_empty(http_req *r, unsigned status);
void http_reply_text(http_req *r, unsigned status, const char *content_type, const char *text);
/* length bytes of fd from offset; the response owns fd from here on. */
void http_reply_fd(http_req *r, unsigned status, int fd, uint64_t offset, uint64_t length,
                   const char *content_type);
/* Adds a header to the reply already set. */
void http_reply_header(http_req *r, const char *name, const char *value);
bool http_replied(http_req *r);

#endif
