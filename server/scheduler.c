#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perq/fsutil.h"
#include "supervisor.h"

typedef struct running {
    worker *w;
    struct running *next;
} running;

struct scheduler {
    perqd *d;
    running *list;
    int n_running;
    bool shutting_down;
    void (*done)(void *ctx);
    void *done_ctx;
};

scheduler *scheduler_new(perqd *d)
{
    scheduler *s = calloc(1, sizeof *s);
    if (s)
        s->d = d;
    return s;
}

void scheduler_free(scheduler *s)
{
    free(s);
}

static void fail_job(scheduler *s, const char *id, const char *why)
{
    perq_err err = {0};
    fprintf(stderr, "perqd: job %s: %s\n", id, why);
    if (store_job_finish(s->d->store, id, "failed", "internal", why, NULL, &err) == STORE_ERROR)
        fprintf(stderr, "perqd: job %s: %s\n", id, err.msg);
}

static void on_worker_exit(worker *w, void *ctx)
{
    scheduler *s = ctx;
    for (running **p = &s->list; *p; p = &(*p)->next) {
        if ((*p)->w == w) {
            running *gone = *p;
            *p = gone->next;
            free(gone);
            s->n_running--;
            atomic_fetch_sub(&s->d->metrics.workers_running, 1);
            break;
        }
    }
    if (s->shutting_down) {
        if (s->n_running == 0 && s->done)
            s->done(s->done_ctx);
        return;
    }
    scheduler_poll(s);
}

/* The dataset a spec section names, as a file path; "" when none. */
static int dataset_path(perqd *d, json_t *spec, const char *section, char out[PATH_MAX])
{
    out[0] = '\0';
    const char *name = json_string_value(json_object_get(json_object_get(spec, section), "dataset"));
    if (!name)
        return 0;
    return perqd_path(d, out, PATH_MAX, "datasets/%s", name);
}

/* Prepares DATA/jobs/ID (spec.json, a fresh artifacts folder) and starts the
 * worker of a job just claimed. Returns -1 with err when it cannot. */
static int start_job(scheduler *s, const store_job *job, perq_err *err)
{
    perqd *d = s->d;
    char job_dir[PATH_MAX], spec_path[PATH_MAX], out_dir[PATH_MAX], model_dir[PATH_MAX];
    char calibration[PATH_MAX], eval[PATH_MAX];
    if (perqd_path(d, job_dir, sizeof job_dir, "jobs/%s", job->id) != 0 ||
        perqd_path(d, spec_path, sizeof spec_path, "jobs/%s/spec.json", job->id) != 0 ||
        perqd_path(d, out_dir, sizeof out_dir, "jobs/%s/artifacts", job->id) != 0 ||
        perqd_path(d, model_dir, sizeof model_dir, "models/%s", job->model_id) != 0)
        return perq_fail(err, PERQ_E_INVALID, "the data folder's path is too long");

    json_t *spec = json_loads(job->spec, 0, NULL);
    int rc = spec ? 0 : perq_fail(err, PERQ_E_FORMAT, "the stored job spec is not JSON");
    if (rc == 0 && (dataset_path(d, spec, "calibration", calibration) != 0 ||
                    dataset_path(d, spec, "eval", eval) != 0))
        rc = perq_fail(err, PERQ_E_INVALID, "a dataset path is too long");
    json_decref(spec);
    if (rc != 0)
        return -1;

    /* A job run before (re-queued after a restart) starts from nothing. */
    if (perq_mkdirs(job_dir, err) != 0 || perq_remove_tree(out_dir, err) != 0 ||
        perq_write_file_atomic(spec_path, job->spec, strlen(job->spec), err) != 0)
        return -1;

    running *r = calloc(1, sizeof *r);
    if (!r)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    worker_options o = {
        .loop = d->loop,
        .store = d->store,
        .metrics = &d->metrics,
        .program = d->cfg.worker_bin,
        .job_dir = job_dir,
        .spec_path = spec_path,
        .model_dir = model_dir,
        .out_dir = out_dir,
        .calibration = calibration[0] ? calibration : NULL,
        .eval = eval[0] ? eval : NULL,
        .kill_grace = d->cfg.kill_grace,
        .on_exit = on_worker_exit,
        .ctx = s,
    };
    if (worker_start(&o, job->id, &r->w, err) != 0) {
        free(r);
        return -1;
    }
    r->next = s->list;
    s->list = r;
    s->n_running++;
    atomic_fetch_add(&d->metrics.workers_running, 1);
    char message[96];
    snprintf(message, sizeof message, "started worker pid %d", worker_pid(r->w));
    store_event_add(d->store, job->id, "info", NULL, message, NULL, NULL);
    return 0;
}

static void deliver_cancels(scheduler *s)
{
    for (running *r = s->list; r; r = r->next) {
        store_job j;
        if (store_job_get(s->d->store, worker_job_id(r->w), &j, NULL) != STORE_OK)
            continue;
        if (j.cancel_requested)
            worker_stop(r->w, WORKER_CANCEL);
        store_job_free(&j);
    }
}

void scheduler_poll(scheduler *s)
{
    if (s->shutting_down)
        return;
    deliver_cancels(s);
    while (s->n_running < s->d->cfg.workers) {
        store_job job;
        perq_err err = {0};
        store_result got = store_job_claim_next(s->d->store, &job, &err);
        if (got == STORE_NOT_FOUND)
            break;
        if (got != STORE_OK) {
            fprintf(stderr, "perqd: scheduler: %s\n", err.msg);
            break;
        }
        if (start_job(s, &job, &err) != 0) {
            char why[1100];
            snprintf(why, sizeof why, "could not start the worker: %s", err.msg);
            fail_job(s, job.id, why);
        }
        store_job_free(&job);
    }
}

void scheduler_shutdown(scheduler *s, void (*done)(void *ctx), void *ctx)
{
    s->shutting_down = true;
    s->done = done;
    s->done_ctx = ctx;
    if (s->n_running == 0) {
        done(ctx);
        return;
    }
    for (running *r = s->list; r; r = r->next)
        worker_stop(r->w, WORKER_SHUTDOWN);
}
