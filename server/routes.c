#include "routes.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

const http_route perqd_routes[] = {
    {"POST", "/v1/models", HTTP_BODY_JSON, NULL, models_create},
    {"GET", "/v1/models", HTTP_BODY_NONE, NULL, models_list},
    {"GET", "/v1/models/:id", HTTP_BODY_NONE, NULL, models_get},
    {"DELETE", "/v1/models/:id", HTTP_BODY_NONE, NULL, models_delete},
    {"POST", "/v1/models/:id/commit", HTTP_BODY_NONE, NULL, models_commit},
    {"PUT", "/v1/models/:id/files/:name", HTTP_BODY_FILE, models_file_begin, models_file_put},

    {"PUT", "/v1/datasets/:name", HTTP_BODY_FILE, datasets_begin, datasets_put},
    {"GET", "/v1/datasets", HTTP_BODY_NONE, NULL, datasets_list},
    {"GET", "/v1/datasets/:name", HTTP_BODY_NONE, NULL, datasets_get},

    {"POST", "/v1/jobs", HTTP_BODY_JSON, NULL, jobs_create},
    {"GET", "/v1/jobs", HTTP_BODY_NONE, NULL, jobs_list},
    {"GET", "/v1/jobs/:id", HTTP_BODY_NONE, NULL, jobs_get},
    {"POST", "/v1/jobs/:id/cancel", HTTP_BODY_NONE, NULL, jobs_cancel},
    {"GET", "/v1/jobs/:id/events", HTTP_BODY_NONE, NULL, jobs_events},
    {"GET", "/v1/jobs/:id/artifacts", HTTP_BODY_NONE, NULL, artifacts_list},
    {"GET", "/v1/jobs/:id/artifacts/:name", HTTP_BODY_NONE, NULL, artifacts_get},

    {"GET", "/livez", HTTP_BODY_NONE, NULL, ops_livez},
    {"GET", "/readyz", HTTP_BODY_NONE, NULL, ops_readyz},
    {"GET", "/metrics", HTTP_BODY_NONE, NULL, ops_metrics},
    {"GET", "/v1/version", HTTP_BODY_NONE, NULL, ops_version},
};
const size_t perqd_n_routes = sizeof perqd_routes / sizeof perqd_routes[0];

json_t *routes_json_object(http_req *r)
{
    size_t len;
    const char *body = http_body(r, &len);
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        http_reply_problem(r, 400, "malformed-json", "the body is not valid JSON: %s (line %d, column %d)",
                           len ? jerr.text : "the body is empty", jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(doc)) {
        http_reply_problem(r, 400, "malformed-json", "the body must be a JSON object");
        json_decref(doc);
        return NULL;
    }
    return doc;
}

bool routes_only_keys(http_req *r, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strcmp(*a, key) == 0;
        if (!known) {
            http_reply_problem(r, 400, "unknown-field", "unknown field \"%s\"", key);
            return false;
        }
    }
    return true;
}

int routes_checksum_header(http_req *r, char hex[65])
{
    const char *v = http_header(r, "X-Content-SHA256");
    if (!v)
        return 0;
    size_t n = strlen(v);
    bool ok = n == 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = isxdigit((unsigned char)v[i]);
    if (!ok) {
        http_reply_problem(r, 400, "bad-checksum-header",
                           "X-Content-SHA256 must be the 64 hex digits of the body's SHA-256");
        return -1;
    }
    for (size_t i = 0; i < 64; i++)
        hex[i] = (char)tolower((unsigned char)v[i]);
    hex[64] = '\0';
    return 1;
}

bool routes_finish_upload(http_req *r, const char *what)
{
    upload *u = http_upload(r);
    perq_err err = {0};
    if (upload_finish(u, &err) != 0) {
        routes_internal_error(r, &err);
        return false;
    }
    char want[65];
    int has = routes_checksum_header(r, want);
    if (has < 0)
        return false;
    if (has && strcmp(want, u->sha256) != 0) {
        http_reply_problem(r, 400, "checksum-mismatch",
                           "X-Content-SHA256 is %s but the %llu bytes received for %s have SHA-256 %s; nothing "
                           "was stored",
                           want, (unsigned long long)u->bytes, what, u->sha256);
        return false;
    }
    return true;
}

void routes_internal_error(http_req *r, const perq_err *err)
{
    fprintf(stderr, "perqd: %s %s: %s\n", http_method(r), http_path(r), err && err->msg[0] ? err->msg : "?");
    http_reply_problem(r, 500, "internal", "the server failed to complete the request; its log says why");
}
