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
    add(&t, "# HELP perq_jobs Jobs in the store by status.\n# TYPE perq_jobs gauge\n");
    for (int i = 0; i < STORE_N_JOB_STATUS; i++)
        add(&t, "perq_jobs{status=\"%s\"} %lld\n", store_job_statuses[i], (long long)counts[i]);
    add(&t, "# HELP perq_workers_running Worker processes running now.\n# TYPE perq_workers_running gauge\n"
            "perq_workers_running %d\n",
        atomic_load(&m->workers_running));
    add(&t, "# HELP perq_workers_started_total Worker processes started.\n"
            "# TYPE perq_workers_started_total counter\nperq_workers_started_total %llu\n",
        (unsigned long long)atomic_load(&m->workers_started));
    add(&t, "# HELP perq_workers_failed_total Workers that ended without a result (error, crash, kill).\n"
            "# TYPE perq_workers_failed_total counter\nperq_workers_failed_total %llu\n",
        (unsigned long long)atomic_load(&m->workers_failed));
    add(&t, "# HELP perq_http_requests_total HTTP responses sent, by status code.\n"
            "# TYPE perq_http_requests_total counter\n");
    for (int code = 100; code < PERQD_STATUS_CODES; code++) {
        uint_fast64_t n = atomic_load(&m->http_responses[code]);
        if (n)
            add(&t, "perq_http_requests_total{code=\"%d\"} %llu\n", code, (unsigned long long)n);
    }
    add(&t, "# HELP perq_upload_bytes_total Bytes of file bodies received (models and datasets).\n"
            "# TYPE perq_upload_bytes_total counter\nperq_upload_bytes_total %llu\n",
        (unsigned long long)atomic_load(&m->upload_bytes));
    add(&t, "# HELP perq_download_bytes_total Bytes of artifacts sent.\n"
            "# TYPE perq_download_bytes_total counter\nperq_download_bytes_total %llu\n",
        (unsigned long long)atomic_load(&m->download_bytes));
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
