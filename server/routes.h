/* The HTTP API of ../shared/API.md: the route table and its handlers, one
 * file per resource (routes_models.c, routes_datasets.c, routes_jobs.c,
 * routes_artifacts.c, routes_ops.c), and what they share. */
#ifndef PERQD_ROUTES_H
#define PERQD_ROUTES_H

#include <jansson.h>
#include <stdbool.h>

#include "http.h"
#include "perqd.h"
#include "store.h"

extern const http_route perqd_routes[];
extern const size_t perqd_n_routes;

/* ---- shared by the handlers (routes.c) ---------------------------------- */

/* The JSON body as an object; otherwise replies 400 (with jansson's line and
 * column for malformed JSON) and returns NULL. */
json_t *routes_json_object(http_req *r);
/* Replies 400 naming the first key of obj not in allowed (NULL-terminated). */
bool routes_only_keys(http_req *r, json_t *obj, const char *const *allowed);
/* X-Content-SHA256: 0 absent, 1 present (lowercased into hex), or replies 400
 * and returns -1 when it is not 64 hex digits. */
int routes_checksum_header(http_req *r, char hex[65]);
/* After the body of an upload: finishes it and checks it against the
 * X-Content-SHA256 header; replies (500, 400) and returns false on failure. */
bool routes_finish_upload(http_req *r, const char *what);
/* 500 with a generic detail; the real reason goes to stderr. */
void routes_internal_error(http_req *r, const perq_err *err);

/* ---- handlers ----------------------------------------------------------- */

void models_create(http_req *r);
void models_list(http_req *r);
void models_get(http_req *r);
void models_delete(http_req *r);
void models_commit(http_req *r);
void models_file_begin(http_req *r);
void models_file_put(http_req *r);

void datasets_begin(http_req *r);
void datasets_put(http_req *r);
void datasets_list(http_req *r);
void datasets_get(http_req *r);

void jobs_create(http_req *r);
void jobs_list(http_req *r);
void jobs_get(http_req *r);
void jobs_cancel(http_req *r);
void jobs_events(http_req *r);

void artifacts_list(http_req *r);
void artifacts_get(http_req *r);

void ops_livez(http_req *r);
void ops_readyz(http_req *r);
void ops_metrics(http_req *r);
void ops_version(http_req *r);

#endif
