/* Operations: liveness, readiness, Prometheus metrics, version. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "routes.h"

void ops_livez(http_req *r)
{
    http_reply_json(r, 200, json_pack("{ss}", "status", "ok"));
}

/* Ready when the store answers and a file can be created in the data folder. */
void ops_readyz(http_req *r)
{
    perqd *d = http_app(r);
    perq_err err = {0};
    if (store_ping(d->store, &err) != 0) {
        http_reply_problem(r, 503, "not-ready", "the job store does not answer: %s", err.msg);
        return;
    }
    char probe[PATH_MAX];
    int fd = perqd_path(d, probe, sizeof probe, ".readyz.XXXXXX") == 0 ? mkstemp(probe) : -1;
    if (fd < 0) {
        http_reply_problem(r, 503, "not-ready", "the data folder is not writable");
        return;
    }
    close(fd);
    unlink(probe);
    http_reply_json(r, 200, json_pack("{ss}", "status", "ready"));
}

typedef struct text {
    char *data;
    size_t len;
    bool failed;
} text;

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *line = NULL;
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    char *grown = n >= 0 ? realloc(t->data, t->len + (size_t)n + 1) : NULL;
    if (!grown) {
        free(line);
        t->failed = true;
        return;
    }
    memcpy(grown + t->len, line, (size_t)n + 1);
    t->data = grown;
    t->len += (size_t)n;
    free(line);
}

/* The HELP and TYPE lines that open a metric family (Prometheus text format). */
static void family(text *t, const char *name, const char *type, const char *help)
{
    add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A counter family with its one sample. */
static void counter(text *t, const char *name, const char *help, unsigned long long value)
{
    family(t, name, "counter", help);
    add(t, "%s %llu\n", name, value);
}

void ops_metrics(http_req *r)
{
    perqd *d = http_app(r);
    perqd_metrics *m = &d->metrics;
    int64_t counts[STORE_N_JOB_STATUS];
    perq_err err = {0};
    if (store_job_counts(d->store, counts, &err) != 0) {
        routes_internal_error(r, &err);
        return;
    }
    text t = {0};
    family(&t, "perq_jobs", "gauge", "Jobs in the store by status.");
    for (int i = 0; i < STORE_N_JOB_STATUS; i++)
        add(&t, "perq_jobs{status=\"%s\"} %lld\n", store_job_statuses[i], (long long)counts[i]);
    family(&t, "perq_workers_running", "gauge", "Worker processes running now.");
    add(&t, "perq_workers_running %d\n", atomic_load(&m->workers_running));
    counter(&t, "perq_workers_started_total", "Worker processes started.", atomic_load(&m->workers_started));
    counter(&t, "perq_workers_failed_total", "Workers that ended without a result (error, crash, kill).",
            atomic_load(&m->workers_failed));
    family(&t, "perq_http_requests_total", "counter", "HTTP responses sent, by status code.");
    for (int code = 100; code < PERQD_STATUS_CODES; code++) {
        uint_fast64_t n = atomic_load(&m->http_responses[code]);
        if (n)
            add(&t, "perq_http_requests_total{code=\"%d\"} %llu\n", code, (unsigned long long)n);
    }
    counter(&t, "perq_upload_bytes_total", "Bytes of file bodies received (models and datasets).",
            atomic_load(&m->upload_bytes));
    counter(&t, "perq_download_bytes_total", "Bytes of artifacts sent.", atomic_load(&m->download_bytes));
    if (t.failed) {
        free(t.data);
        http_reply_problem(r, 500, "internal", "out of memory");
        return;
    }
    http_reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", t.data);
    free(t.data);
}

void ops_version(http_req *r)
{
    http_reply_json(r, 200, json_pack("{ss ss si}", "version", PERQD_VERSION, "api", PERQD_API_VERSION,
                                      "worker_protocol", PERQD_PROTOCOL_VERSION));
}
