#include "http.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_util.h"
#include "problem.h"

/* An error decided before the body is read is sent after reading and
 * dropping a body up to this size, so the client reads the reply instead of
 * a reset connection; beyond it the connection is closed after the reply. */
#define DISCARD_LIMIT ((uint64_t)16 << 20)

struct http_server {
    struct MHD_Daemon *mhd;
    http_options opt;
};

struct http_req {
    http_server *h;
    struct MHD_Connection *conn;
    char method[16];
    char *path;              /* as requested, still escaped */
    const http_route *route;
    char *params[HTTP_MAX_PARAMS];
    int n_params;

    bool has_length;
    uint64_t content_length;
    uint64_t limit;          /* of the body */
    uint64_t received;

    char *body;              /* HTTP_BODY_JSON */
    size_t body_len, body_cap;
    upload up;               /* HTTP_BODY_FILE */

    unsigned status;         /* the reply, once decided */
    struct MHD_Response *resp;
};

/* ---- the request ------------------------------------------------------------ */

void *http_app(http_req *r) { return r->h->opt.app; }
const char *http_method(http_req *r) { return r->method; }
const char *http_path(http_req *r) { return r->path ? r->path : ""; }
const char *http_param(http_req *r, int i) { return i >= 0 && i < r->n_params ? r->params[i] : ""; }
upload *http_upload(http_req *r) { return &r->up; }
bool http_replied(http_req *r) { return r->resp != NULL; }

const char *http_header(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

int http_query(http_req *r, const char *name, char *buf, size_t size)
{
    const char *raw = NULL;
    size_t raw_len = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &raw, &raw_len) !=
        MHD_YES)
        return 0;
    if (!raw)
        raw = "", raw_len = 0;
    if (raw_len + 1 > size)
        return -1;
    return http_percent_decode(raw, raw_len, buf, true) < 0 ? -1 : 1;
}

const char *http_body(http_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body ? r->body : "";
}

bool http_content_length(http_req *r, uint64_t *len)
{
    *len = r->content_length;
    return r->has_length;
}

/* ---- replies ---------------------------------------------------------------- */

static void set_reply(http_req *r, unsigned status, struct MHD_Response *resp)
{
    if (r->resp)
        MHD_destroy_response(r->resp);
    r->status = status;
    r->resp = resp;
}

static void reply_buffer(http_req *r, unsigned status, const char *content_type, char *data, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        set_reply(r, 500, NULL);
        return;
    }
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    set_reply(r, status, resp);
}

static void reply_json_typed(http_req *r, unsigned status, json_t *body, const char *content_type)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    size_t len = text ? strlen(text) : 0;
    char *with_newline = text ? realloc(text, len + 2) : NULL;
    if (!with_newline) {
        free(text);
        set_reply(r, 500, NULL);
        return;
    }
    with_newline[len] = '\n';
    with_newline[len + 1] = '\0';
    reply_buffer(r, status, content_type, with_newline, len + 1);
}

void http_reply_json(http_req *r, unsigned status, json_t *body)
{
    reply_json_typed(r, status, body, "application/json");
}

void http_reply_problem_json(http_req *r, json_t *problem)
{
    unsigned status = (unsigned)json_integer_value(json_object_get(problem, "status"));
    reply_json_typed(r, status ? status : 500, problem, "application/problem+json");
}

void http_reply_problem(http_req *r, unsigned status, const char *slug, const char *fmt, ...)
{
    char detail[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    http_reply_problem_json(r, problem_new(status, slug, detail));
}

void http_reply_empty(http_req *r, unsigned status)
{
    set_reply(r, status, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT));
}

void http_reply_text(http_req *r, unsigned status, const char *content_type, const char *text)
{
    char *copy = strdup(text);
    if (!copy) {
        set_reply(r, 500, NULL);
        return;
    }
    reply_buffer(r, status, content_type, copy, strlen(copy));
}

void http_reply_fd(http_req *r, unsigned status, int fd, uint64_t offset, uint64_t length,
                   const char *content_type)
{
    if (length == 0) {
        close(fd);
        http_reply_empty(r, status);
        if (r->resp)
            MHD_add_response_header(r->resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(length, fd, offset);
    if (!resp) {
        close(fd);
        set_reply(r, 500, NULL);
        return;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status == 200 || status == 206)
        atomic_fetch_add(&r->h->opt.metrics->download_bytes, length);
    set_reply(r, status, resp);
}

void http_reply_header(http_req *r, const char *name, const char *value)
{
    if (r->resp)
        MHD_add_response_header(r->resp, name, value);
}

/* Sends the reply (a plain 500 when building one failed). */
static enum MHD_Result queue_reply(http_req *r)
{
    if (!r->resp) {
        r->status = 500;
        static const char fallback[] = "{\"type\":\"urn:perq:problem:internal\",\"title\":\"Internal Server "
                                       "Error\",\"status\":500,\"detail\":\"out of memory\"}\n";
        r->resp = MHD_create_response_from_buffer(sizeof fallback - 1, (void *)fallback, MHD_RESPMEM_PERSISTENT);
        if (!r->resp)
            return MHD_NO;
        MHD_add_response_header(r->resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/problem+json");
    }
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    if (r->status < PERQD_STATUS_CODES)
        atomic_fetch_add(&r->h->opt.metrics->http_responses[r->status], 1);
    return ok;
}

/* ---- routing ---------------------------------------------------------------- */

static bool method_is(const char *want, const char *method)
{
    return strcmp(want, method) == 0 || (strcmp(want, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

/* Finds the route of method + path, capturing its params; otherwise replies
 * 404, or 405 with Allow when the path exists for other methods. */
static void route_request(http_req *r, const char *path)
{
    const http_options *o = &r->h->opt;
    char allow[128] = "";
    for (size_t i = 0; i < o->n_routes; i++) {
        const http_route *route = &o->routes[i];
        char *params[HTTP_MAX_PARAMS];
        int n = http_path_match(route->pattern, path, params, HTTP_MAX_PARAMS);
        if (n < 0)
            continue;
        if (method_is(route->method, r->method) && !r->route) {
            r->route = route;
            memcpy(r->params, params, sizeof(char *) * (size_t)n);
            r->n_params = n;
            return;
        }
        for (int k = 0; k < n; k++)
            free(params[k]);
        if (!strstr(allow, route->method)) {
            size_t len = strlen(allow);
            snprintf(allow + len, sizeof allow - len, "%s%s%s", len ? ", " : "", route->method,
                     strcmp(route->method, "GET") == 0 ? ", HEAD" : "");
        }
    }
    if (allow[0]) {
        http_reply_problem(r, 405, "method-not-allowed", "%s is not allowed on this path; allowed: %s", r->method,
                           allow);
        http_reply_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    } else {
        http_reply_problem(r, 404, "not-found", "no such endpoint: %s", path);
    }
}

/* ---- the request's life ----------------------------------------------------- */

static void free_request(http_req *r)
{
    upload_abort(&r->up);
    for (int i = 0; i < r->n_params; i++)
        free(r->params[i]);
    free(r->path);
    free(r->body);
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r);
}

static void reply_too_large(http_req *r)
{
    http_reply_problem(r, 413, "body-too-large", "the request body is over the limit of %llu bytes",
                       (unsigned long long)r->limit);
}

/* Headers are in: route, check sizes, and let a file route prepare its
 * upload. Returns true when the reply must go out before the body is read. */
static bool begin_request(http_req *r, const char *path)
{
    route_request(r, path);
    const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    r->has_length = cl && http_parse_u64(cl, &r->content_length);
    if (!r->route)
        return r->has_length && r->content_length > DISCARD_LIMIT;

    switch (r->route->body) {
    case HTTP_BODY_FILE: r->limit = r->h->opt.max_body; break;
    case HTTP_BODY_JSON:
        r->limit = r->h->opt.max_body < HTTP_JSON_LIMIT ? r->h->opt.max_body : HTTP_JSON_LIMIT;
        break;
    case HTTP_BODY_NONE: r->limit = HTTP_JSON_LIMIT; break;
    }
    if (r->has_length && r->content_length > r->limit) {
        reply_too_large(r);
        return true;
    }
    if (r->route->body == HTTP_BODY_FILE) {
        r->route->begin(r);
        if (!r->resp && !r->up.open)
            http_reply_problem(r, 500, "internal", "the upload could not be prepared");
        if (r->resp)
            return r->has_length && r->content_length > DISCARD_LIMIT;
    }
    return false;
}

/* A piece of the body. */
static void consume(http_req *r, const char *data, size_t n)
{
    r->received += n;
    if (r->resp)
        return; /* the reply is decided: drop the rest */
    if (r->received > r->limit) {
        upload_abort(&r->up);
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
        reply_too_large(r);
        return;
    }
    switch (r->route->body) {
    case HTTP_BODY_NONE: break;
    case HTTP_BODY_JSON:
        if (r->body_len + n + 1 > r->body_cap) {
            size_t want = r->body_cap ? r->body_cap : 4096;
            while (want < r->body_len + n + 1)
                want *= 2;
            char *grown = realloc(r->body, want);
            if (!grown) {
                http_reply_problem(r, 500, "internal", "out of memory");
                return;
            }
            r->body = grown;
            r->body_cap = want;
        }
        memcpy(r->body + r->body_len, data, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
        break;
    case HTTP_BODY_FILE: {
        perq_err err = {0};
        atomic_fetch_add(&r->h->opt.metrics->upload_bytes, n);
        if (upload_write(&r->up, data, n, &err) != 0) {
            bool full = errno == ENOSPC || errno == EDQUOT;
            upload_abort(&r->up);
            fprintf(stderr, "perqd: upload failed: %s\n", err.msg);
            if (full)
                http_reply_problem(r, 507, "storage-full", "the data folder is full");
            else
                http_reply_problem(r, 500, "internal", "the upload could not be written");
        }
        break;
    }
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *data, size_t *data_size, void **con_cls)
{
    (void)version;
    http_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->h = cls;
        r->conn = conn;
        snprintf(r->method, sizeof r->method, "%s", method);
        r->path = strdup(url);
        *con_cls = r;
        if (begin_request(r, url))
            return queue_reply(r);
        return MHD_YES;
    }
    if (*data_size > 0) {
        consume(r, data, *data_size);
        *data_size = 0;
        return MHD_YES;
    }
    if (!r->resp)
        r->route->handle(r);
    upload_abort(&r->up); /* unless the handler committed it */
    return queue_reply(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)conn;
    (void)why;
    if (*con_cls)
        free_request(*con_cls);
    *con_cls = NULL;
}

/* Paths stay escaped: each segment is decoded on its own once routed, so that
 * "%2F" in a name is a bad name rather than a path separator. */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return strlen(s);
}

static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    fputs("perqd: http: ", stderr);
    vfprintf(stderr, fmt, ap);
}

int http_start(int listen_fd, const http_options *opt, http_server **out, perq_err *err)
{
    http_server *h = calloc(1, sizeof *h);
    if (!h)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    h->opt = *opt;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                              MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
                              MHD_OPTION_LISTEN_SOCKET, listen_fd,
                              MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(opt->threads > 0 ? opt->threads : 4),
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                              MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL,
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
                              MHD_OPTION_END);
    if (!h->mhd) {
        free(h);
        return perq_fail(err, PERQ_E_IO, "starting the HTTP server failed");
    }
    *out = h;
    return 0;
}

void http_stop(http_server *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->mhd);
    free(h);
}
