/* One worker process for one running job (proto/protocol.md): spawned with
 * uv_spawn, stdin a lifeline pipe the daemon never writes, stdout read line
 * by line as protocol messages (stage, progress, events into the store),
 * stderr appended to the job's worker.log. When the process has exited and
 * its pipes are drained, the job gets its final state in the store, then
 * on_exit is called and the worker frees itself. Loop thread only. */
#ifndef PERQD_SUPERVISOR_H
#define PERQD_SUPERVISOR_H

#include <uv.h>

#include "metrics.h"
#include "perq/error.h"
#include "store.h"

/* Lines longer than this on the worker's stdout are a protocol error. */
#define WORKER_LINE_MAX ((size_t)1 << 20)
/* Events a worker may store per job; more are dropped (with one warning). */
#define WORKER_MAX_EVENTS 10000

typedef struct worker worker;
typedef void (*worker_exit_fn)(worker *w, void *ctx);

typedef enum {
    WORKER_RUN,       /* not being stopped */
    WORKER_CANCEL,    /* the user cancelled: the job ends cancelled */
    WORKER_SHUTDOWN,  /* the daemon stops: the job is queued again */
    WORKER_PROTOCOL,  /* the worker broke the protocol: the job fails */
} worker_stop_reason;

typedef struct worker_options {
    uv_loop_t *loop;
    store *store;
    perqd_metrics *metrics;
    const char *program;       /* perq-worker */
    const char *job_dir;       /* DATA/jobs/ID: the working folder, worker.log */
    const char *spec_path;
    const char *model_dir;
    const char *out_dir;
    const char *calibration;   /* NULL when the spec has none */
    const char *eval;          /* NULL when the spec has none */
    double kill_grace;         /* seconds from SIGTERM to SIGKILL */
    worker_exit_fn on_exit;
    void *ctx;
} worker_options;

/* Starts the worker of a job the store shows running. On failure nothing is
 * left running and the caller decides the job's fate. */
int worker_start(const worker_options *o, const char *job_id, worker **out, perq_err *err);
/* SIGTERM, then SIGKILL after the grace period; the reason decides the job's
 * final state. The first reason given wins. */
void worker_stop(worker *w, worker_stop_reason why);
const char *worker_job_id(const worker *w);
int worker_pid(const worker *w);

#endif
