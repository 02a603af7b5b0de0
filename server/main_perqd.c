/* perqd: the REST daemon. Sets up the data folder, the store, the listening
 * socket, the HTTP server and the scheduler, then runs the libuv loop until
 * SIGTERM or SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "listen.h"
#include "perq/fsutil.h"
#include "perqd.h"
#include "routes.h"
#include "scheduler.h"
#include "tidy.h"

typedef struct daemon_main {
    perqd d;
    uv_signal_t sigterm, sigint;
    bool stopping;
} daemon_main;

static void on_wake(uv_async_t *a)
{
    perqd *d = a->data;
    scheduler_poll(d->sched);
}

/* Every worker has stopped: close the last handles so that the loop ends. */
static void on_workers_stopped(void *ctx)
{
    daemon_main *m = ctx;
    atomic_store(&m->d.wake_ready, false);
    uv_close((uv_handle_t *)&m->d.wake, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    daemon_main *m = s->data;
    if (m->stopping)
        return; /* already on the way out; the kill grace bounds how long it takes */
    m->stopping = true;
    fprintf(stderr, "perqd: %s: shutting down\n", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    http_stop(m->d.http); /* no new request; those in flight finish first */
    m->d.http = NULL;
    scheduler_shutdown(m->d.sched, on_workers_stopped, m);
}

/* DATA and its folders; cfg.data_dir becomes absolute (workers run elsewhere). */
static int prepare_data_dir(perqd *d, perq_err *err)
{
    if (perq_mkdirs(d->cfg.data_dir, err) != 0)
        return -1;
    char real[PATH_MAX];
    if (!realpath(d->cfg.data_dir, real))
        return perq_fail_errno(err, "resolving %s", d->cfg.data_dir);
    snprintf(d->cfg.data_dir, sizeof d->cfg.data_dir, "%s", real);
    static const char *const subdirs[] = {"models", "datasets", "jobs"};
    for (size_t i = 0; i < 3; i++) {
        char path[PATH_MAX];
        if (perqd_path(d, path, sizeof path, "%s", subdirs[i]) != 0)
            return perq_fail(err, PERQ_E_INVALID, "the data folder's path is too long");
        if (perq_mkdirs(path, err) != 0)
            return -1;
    }
    return 0;
}

static int open_store(perqd *d, perq_err *err)
{
    char path[PATH_MAX];
    if (perqd_path(d, path, sizeof path, "perq.db") != 0)
        return perq_fail(err, PERQ_E_INVALID, "the data folder's path is too long");
    if (store_open(path, &d->store, err) != 0)
        return -1;
    int requeued, failed;
    if (store_recover(d->store, &requeued, &failed, err) != 0)
        return -1;
    if (requeued || failed)
        fprintf(stderr, "perqd: jobs interrupted by the previous daemon: %d re-queued, %d failed\n", requeued,
                failed);
    return perqd_tidy(d, err);
}

static int run(daemon_main *m, perq_err *err)
{
    perqd *d = &m->d;
    if (prepare_data_dir(d, err) != 0 || open_store(d, err) != 0)
        return -1;
    if (access(d->cfg.worker_bin, X_OK) != 0)
        fprintf(stderr, "perqd: warning: the worker program %s is not executable; jobs will fail to start\n",
                d->cfg.worker_bin);

    char url[320];
    int fd = perqd_listen(d->cfg.listen, url, sizeof url, err);
    if (fd < 0)
        return -1;

    d->loop = uv_default_loop();
    uv_async_init(d->loop, &d->wake, on_wake);
    d->wake.data = d;
    atomic_store(&d->wake_ready, true);
    uv_signal_init(d->loop, &m->sigterm);
    uv_signal_init(d->loop, &m->sigint);
    m->sigterm.data = m->sigint.data = m;
    uv_signal_start(&m->sigterm, on_signal, SIGTERM);
    uv_signal_start(&m->sigint, on_signal, SIGINT);
    d->sched = scheduler_new(d);
    if (!d->sched) {
        close(fd);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }

    http_options ho = {
        .routes = perqd_routes,
        .n_routes = perqd_n_routes,
        .app = d,
        .metrics = &d->metrics,
        .max_body = d->cfg.max_body,
        .threads = 4,
    };
    if (http_start(fd, &ho, &d->http, err) != 0) {
        close(fd);
        return -1;
    }
    printf("listening on %s\n", url);
    fflush(stdout);
    fprintf(stderr, "perqd %s: data %s, %d worker%s, worker program %s\n", PERQD_VERSION, d->cfg.data_dir,
            d->cfg.workers, d->cfg.workers == 1 ? "" : "s", d->cfg.worker_bin);

    scheduler_poll(d->sched); /* jobs queued before a restart */
    uv_run(d->loop, UV_RUN_DEFAULT);
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            perqd_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("perqd %s\n", PERQD_VERSION);
            return 0;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    static daemon_main m;
    perq_err err = {0};
    if (perqd_config_load(argc, argv, &m.d.cfg, &err) != 0) {
        fprintf(stderr, "perqd: %s\n", err.msg);
        return 2;
    }
    int rc = run(&m, &err);
    if (rc != 0)
        fprintf(stderr, "perqd: %s\n", err.msg);
    http_stop(m.d.http);
    scheduler_free(m.d.sched);
    store_close(m.d.store);
    if (m.d.loop)
        uv_loop_close(m.d.loop);
    if (rc == 0)
        fprintf(stderr, "perqd: stopped\n");
    return rc == 0 ? 0 : 1;
}
