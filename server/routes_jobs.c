/* /v1/jobs: a job spec is checked in full before anything is queued; the
 * scheduler (on the loop thread) starts queued jobs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perq/fsutil.h"
#include "perq/jobspec.h"
#include "routes.h"

#define EVENTS_DEFAULT_LIMIT 1000
#define EVENTS_MAX_LIMIT 10000
#define IDEMPOTENCY_KEY_MAX 200

static json_t *json_text_or(const char *text, json_t *fallback)
{
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    if (v) {
        json_decref(fallback);
        return v;
    }
    return fallback;
}

static json_t *time_or_null(const char *t)
{
    return t[0] ? json_string(t) : json_null();
}

static json_t *progress_json(const store_job *j)
{
    bool succeeded = strcmp(j->status, "succeeded") == 0;
    double percent = 0;
    if (succeeded)
        percent = 100;
    else if (j->progress_total > 0)
        percent = floor(1000.0 * (double)j->progress_done / (double)j->progress_total) / 10.0;
    json_t *eta = json_null();
    if (succeeded) {
        eta = json_integer(0);
    } else if (strcmp(j->status, "running") == 0 && j->stage_started > 0 && j->progress_done > 0 &&
               j->progress_total > j->progress_done) {
        double elapsed = perqd_now() - j->stage_started;
        double left = elapsed * (double)(j->progress_total - j->progress_done) / (double)j->progress_done;
        eta = json_integer((json_int_t)ceil(left > 0 ? left : 0));
    }
    return json_pack("{sI sI sf so}", "done", (json_int_t)j->progress_done, "total", (json_int_t)j->progress_total,
                     "percent", percent, "eta_seconds", eta);
}

static json_t *job_json(const store_job *j)
{
    json_t *error = j->error_type[0]
                        ? json_pack("{ss ss}", "type", j->error_type, "detail", j->error_detail ? j->error_detail : "")
                        : json_null();
    return json_pack("{ss ss ss so so so so so so so so}", "id", j->id, "model", j->model_id, "status", j->status,
                     "stage", j->stage[0] ? json_string(j->stage) : json_null(), "progress", progress_json(j),
                     "created_at", time_or_null(j->created_at), "started_at", time_or_null(j->started_at),
                     "finished_at", time_or_null(j->finished_at), "error", error, "metrics",
                     json_text_or(j->metrics, json_object()), "spec", json_text_or(j->spec, json_null()));
}

static void reply_job(http_req *r, unsigned status, const store_job *j)
{
    http_reply_json(r, status, job_json(j));
    char location[64];
    snprintf(location, sizeof location, "/v1/jobs/%s", j->id);
    if (status == 202)
        http_reply_header(r, "Location", location);
}

/* Loads the job of the path's :id, or replies 404 / 500 and returns false. */
static bool load_job(http_req *r, store_job *j)
{
    perqd *d = http_app(r);
    perq_err err = {0};
    switch (store_job_get(d->store, http_param(r, 0), j, &err)) {
    case STORE_OK: return true;
    case STORE_NOT_FOUND:
        http_reply_problem(r, 404, "job-not-found", "no job with id \"%s\"", http_param(r, 0));
        return false;
    default: routes_internal_error(r, &err); return false;
    }
}

/* The spec names datasets by name; each must have been uploaded. */
static bool datasets_exist(http_req *r, const perq_jobspec *spec)
{
    perqd *d = http_app(r);
    const char *names[2] = {spec->calibration.present ? spec->calibration.dataset : NULL,
                            spec->eval.present ? spec->eval.dataset : NULL};
    const char *fields[2] = {"calibration", "eval"};
    for (int i = 0; i < 2; i++) {
        if (!names[i])
            continue;
        store_dataset ds;
        perq_err err = {0};
        store_result got = store_dataset_get(d->store, names[i], &ds, &err);
        if (got == STORE_NOT_FOUND) {
            http_reply_problem(r, 404, "dataset-not-found",
                               "%s.dataset \"%s\" does not exist; upload it with PUT /v1/datasets/%s", fields[i],
                               names[i], names[i]);
            return false;
        }
        if (got != STORE_OK) {
            routes_internal_error(r, &err);
            return false;
        }
    }
    return true;
}

/* Idempotency-Key: 0 absent, 1 present, -1 replied 400. */
static int idempotency_key(http_req *r, const char **key)
{
    *key = http_header(r, "Idempotency-Key");
    if (!*key)
        return 0;
    size_t n = strlen(*key);
    bool ok = n > 0 && n <= IDEMPOTENCY_KEY_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (*key)[i] > 0x20 && (*key)[i] < 0x7f;
    if (!ok) {
        http_reply_problem(r, 400, "bad-idempotency-key",
                           "Idempotency-Key must be 1 to %d visible ASCII characters", IDEMPOTENCY_KEY_MAX);
        return -1;
    }
    return 1;
}

void jobs_create(http_req *r)
{
    perqd *d = http_app(r);
    const char *key;
    if (idempotency_key(r, &key) < 0)
        return;
    json_t *doc = routes_json_object(r);
    if (!doc)
        return;
    perq_jobspec spec;
    perq_err err = {0};
    int parsed = perq_jobspec_parse(doc, true, &spec, &err);
    json_decref(doc);
    if (parsed != 0) {
        http_reply_problem(r, 400, "invalid-spec", "%s", err.msg);
        return;
    }
    if (!datasets_exist(r, &spec))
        return;

    /* The normalised spec is what runs, so it is also what a replay must match. */
    json_t *normal = perq_jobspec_to_json(&spec);
    char *spec_text = normal ? json_dumps(normal, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(normal);
    if (!spec_text) {
        http_reply_problem(r, 500, "internal", "out of memory");
        return;
    }
    char hash[65], id[PERQD_ID_MAX];
    perq_sha256_hex(spec_text, strlen(spec_text), hash);
    if (perqd_new_id("j_", id) != 0) {
        free(spec_text);
        http_reply_problem(r, 500, "internal", "no randomness for a job id");
        return;
    }
    store_new_job nj = {.id = id, .model_id = spec.model, .spec = spec_text, .idempotency_key = key,
                        .idempotency_hash = hash};
    store_job job;
    store_result got = store_job_create(d->store, &nj, &job, &err);
    free(spec_text);
    switch (got) {
    case STORE_OK:
        reply_job(r, 202, &job);
        store_job_free(&job);
        perqd_wake(d);
        return;
    case STORE_EXISTS:
        reply_job(r, 202, &job);
        http_reply_header(r, "Idempotent-Replayed", "true");
        store_job_free(&job);
        return;
    case STORE_CONFLICT:
        http_reply_problem(r, 409, "idempotency-key-reused",
                           "Idempotency-Key \"%s\" was used for a different job spec; use a new key for a new job",
                           key);
        return;
    case STORE_NOT_FOUND:
        http_reply_problem(r, 404, "model-not-found", "no model with id \"%s\"", spec.model);
        return;
    case STORE_NOT_READY:
        http_reply_problem(r, 409, "model-not-ready",
                           "model %s is not ready; upload its files and commit it with POST /v1/models/%s/commit",
                           spec.model, spec.model);
        return;
    default: routes_internal_error(r, &err); return;
    }
}

void jobs_list(http_req *r)
{
    perqd *d = http_app(r);
    char status[32];
    int has = http_query(r, "status", status, sizeof status);
    if (has < 0 || (has == 1 && !store_job_status_valid(status))) {
        http_reply_problem(r, 400, "invalid-query",
                           "status must be one of queued, running, succeeded, failed, cancelled");
        return;
    }
    store_job *jobs;
    size_t n;
    perq_err err = {0};
    if (store_job_list(d->store, has == 1 ? status : NULL, &jobs, &n, &err) != 0) {
        routes_internal_error(r, &err);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, job_json(&jobs[i]));
    store_jobs_free(jobs, n);
    http_reply_json(r, 200, json_pack("{so}", "jobs", list));
}

void jobs_get(http_req *r)
{
    store_job j;
    if (!load_job(r, &j))
        return;
    reply_job(r, 200, &j);
    store_job_free(&j);
}

void jobs_cancel(http_req *r)
{
    perqd *d = http_app(r);
    const char *id = http_param(r, 0);
    bool was_running;
    perq_err err = {0};
    store_job j;
    switch (store_job_cancel(d->store, id, &was_running, &err)) {
    case STORE_OK: break;
    case STORE_NOT_FOUND: http_reply_problem(r, 404, "job-not-found", "no job with id \"%s\"", id); return;
    case STORE_CONFLICT:
        if (load_job(r, &j)) {
            http_reply_problem(r, 409, "job-ended", "job %s has already ended: %s", id, j.status);
            store_job_free(&j);
        }
        return;
    default: routes_internal_error(r, &err); return;
    }
    if (was_running)
        perqd_wake(d);
    if (load_job(r, &j)) {
        http_reply_json(r, 202, job_json(&j));
        store_job_free(&j);
    }
}

/* A non-negative integer query parameter: 1 set, 0 absent, -1 replied 400. */
static int query_count(http_req *r, const char *name, long long max, long long *out)
{
    char buf[32];
    int has = http_query(r, name, buf, sizeof buf);
    if (has == 0)
        return 0;
    char *end = NULL;
    long long v = has > 0 ? strtoll(buf, &end, 10) : -1;
    if (has < 0 || !end || end == buf || *end != '\0' || v < 0 || v > max || buf[0] == '-' || buf[0] == '+') {
        http_reply_problem(r, 400, "invalid-query", "%s must be an integer from 0 to %lld", name, max);
        return -1;
    }
    *out = v;
    return 1;
}

void jobs_events(http_req *r)
{
    perqd *d = http_app(r);
    long long after = 0, limit = EVENTS_DEFAULT_LIMIT;
    if (query_count(r, "after", INT64_MAX, &after) < 0 || query_count(r, "limit", EVENTS_MAX_LIMIT, &limit) < 0)
        return;
    store_job j;
    if (!load_job(r, &j))
        return;
    store_job_free(&j);
    json_t *events;
    perq_err err = {0};
    if (store_event_list(d->store, http_param(r, 0), after, (int)limit, &events, &err) != 0) {
        routes_internal_error(r, &err);
        return;
    }
    http_reply_json(r, 200, json_pack("{so}", "events", events));
}
