/* The daemon: its configuration and the parts every module reaches.
 *
 * Threads: the libuv loop runs on the main thread and owns the workers
 * (scheduler.c, supervisor.c). libmicrohttpd serves requests on a pool of
 * its own threads (http.c); handlers touch only the store and the data
 * folder, and wake the loop with perqd_wake() when there may be work for it
 * (a job queued or cancelled). */
#ifndef PERQD_PERQD_H
#define PERQD_PERQD_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "metrics.h"
#include "store.h"

#define PERQD_VERSION "0.1.0"
#define PERQD_API_VERSION "v1"
#define PERQD_PROTOCOL_VERSION 1

typedef struct perqd_config {
    char listen[256];            /* HOST:PORT */
    char data_dir[PATH_MAX];     /* absolute once the daemon runs */
    int workers;                 /* jobs running at once */
    uint64_t max_body;           /* bytes of one request body (file uploads) */
    double kill_grace;           /* seconds between SIGTERM and SIGKILL */
    char worker_bin[PATH_MAX];   /* the perq-worker program */
} perqd_config;

typedef struct scheduler scheduler;
typedef struct http_server http_server;

typedef struct perqd {
    perqd_config cfg;
    store *store;
    uv_loop_t *loop;
    uv_async_t wake;             /* any thread -> the loop: look at the queue */
    atomic_bool wake_ready;      /* wake is initialised and not closed */
    scheduler *sched;
    http_server *http;
    perqd_metrics metrics;
} perqd;

/* Tells the loop to look at the queue and at cancel requests (any thread). */
void perqd_wake(perqd *d);

/* DATA_DIR + "/" + the formatted rest into buf; -1 when it does not fit. */
int perqd_path(const perqd *d, char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
