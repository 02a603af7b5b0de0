/* The daemon's durable state: models, their files, datasets, jobs and job
 * events, in one SQLite database (WAL). The store is the single source of
 * truth for every status; the files it describes live beside it in the data
 * folder. Every function is safe to call from any thread (one connection
 * behind a mutex) and every status change is one UPDATE whose WHERE clause
 * says which states it may leave, so terminal states cannot change. */
#ifndef PERQD_STORE_H
#define PERQD_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "perq/error.h"
#include "clock.h"
#include "ids.h"

#define STORE_SCHEMA_VERSION 1
/* A job that was running when the daemon died this many times is failed
 * rather than started again (it may be what kills the daemon). */
#define STORE_MAX_REQUEUES 2

typedef enum {
    STORE_ERROR = -1,   /* err says why */
    STORE_OK = 0,
    STORE_NOT_FOUND,    /* no such row */
    STORE_CONFLICT,     /* the row's state does not allow it */
    STORE_EXISTS,       /* idempotent replay: the existing row is returned */
    STORE_NOT_READY,    /* the model exists but is not ready */
} store_result;

typedef struct store store;

int store_open(const char *path, store **out, perq_err *err);
void store_close(store *s);
/* A trivial query: is the database reachable? */
int store_ping(store *s, perq_err *err);
int store_schema_version(store *s);

/* ---- models --------------------------------------------------------------- */

/* statuses: "uploading" -> "validating" -> "ready"; "deleting" on the way out */
typedef struct store_file {
    char name[256];
    int64_t bytes;
    char sha256[65];
} store_file;

typedef struct store_model {
    char id[PERQD_ID_MAX];
    char name[256];
    char status[16];
    char created_at[PERQD_TIME_MAX];
    store_file *files; /* sorted by name */
    size_t n_files;
} store_model;

void store_model_free(store_model *m);
void store_models_free(store_model *models, size_t n);

int store_model_create(store *s, const char *id, const char *name, perq_err *err);
store_result store_model_get(store *s, const char *id, store_model *out, perq_err *err);
int store_model_list(store *s, store_model **out, size_t *n, perq_err *err);
/* from -> to; STORE_CONFLICT when the model is not in `from`. */
store_result store_model_transition(store *s, const char *id, const char *from, const char *to,
                                    perq_err *err);

/* Called with the store locked, after the state check and before the row is
 * written: puts the file in place (a rename). A failure aborts the whole step. */
typedef int (*store_commit_fn)(void *ctx, perq_err *err);

/* Adds or replaces a file of a model that is "uploading" (else STORE_CONFLICT
 * and commit is not called). */
store_result store_model_put_file(store *s, const char *model_id, const store_file *f, store_commit_fn commit,
                                  void *ctx, perq_err *err);
/* Marks the model "deleting" unless a queued or running job uses it
 * (STORE_CONFLICT); the caller then removes its files and calls
 * store_model_delete_row. */
store_result store_model_begin_delete(store *s, const char *id, perq_err *err);
int store_model_delete_row(store *s, const char *id, perq_err *err);

/* ---- datasets ------------------------------------------------------------- */

typedef struct store_dataset {
    char name[256];
    int64_t bytes;
    char sha256[65];
    char created_at[PERQD_TIME_MAX];
} store_dataset;

/* Adds or replaces a dataset; commit puts the file in place (store locked). */
int store_dataset_put(store *s, const store_dataset *ds, store_commit_fn commit, void *ctx, perq_err *err);
store_result store_dataset_get(store *s, const char *name, store_dataset *out, perq_err *err);
int store_dataset_list(store *s, store_dataset **out, size_t *n, perq_err *err);

/* ---- jobs ----------------------------------------------------------------- */

/* statuses: "queued" -> "running" -> "succeeded" | "failed" | "cancelled" */
#define STORE_N_JOB_STATUS 5
extern const char *const store_job_statuses[STORE_N_JOB_STATUS];
bool store_job_status_valid(const char *status);
bool store_job_status_terminal(const char *status);

typedef struct store_job {
    int64_t seq;                 /* queue order */
    char id[PERQD_ID_MAX];
    char model_id[PERQD_ID_MAX];
    char status[16];
    char stage[32];              /* "" before the first stage */
    int64_t progress_done, progress_total;
    double stage_started;        /* unix seconds; 0 when no stage yet */
    char created_at[PERQD_TIME_MAX];
    char started_at[PERQD_TIME_MAX];  /* "" when not started */
    char finished_at[PERQD_TIME_MAX]; /* "" while not finished */
    char error_type[32];         /* "" when no error */
    char *error_detail;          /* NULL when no error */
    char *metrics;               /* JSON text, NULL until succeeded */
    char *spec;                  /* JSON text of the normalised spec */
    int requeues;
    bool cancel_requested;
} store_job;

void store_job_free(store_job *j);
void store_jobs_free(store_job *jobs, size_t n);

typedef struct store_new_job {
    const char *id;
    const char *model_id;
    const char *spec;              /* JSON text */
    const char *idempotency_key;   /* NULL: none */
    const char *idempotency_hash;  /* of the request, to tell a replay from a reuse */
} store_new_job;

/* Inserts a queued job and fills *out with it. With an idempotency key
 * already used: STORE_EXISTS and *out is that job when the hash is the same,
 * STORE_CONFLICT (out untouched) when it differs. STORE_NOT_FOUND: no such
 * model; STORE_NOT_READY: the model is not ready. */
store_result store_job_create(store *s, const store_new_job *nj, store_job *out, perq_err *err);
store_result store_job_get(store *s, const char *id, store_job *out, perq_err *err);
/* All jobs (status NULL) or those of one status, in queue order. */
int store_job_list(store *s, const char *status, store_job **out, size_t *n, perq_err *err);
int store_job_counts(store *s, int64_t counts[STORE_N_JOB_STATUS], perq_err *err);

/* The first queued job becomes running (started_at now) and is returned;
 * STORE_NOT_FOUND when none is queued. */
store_result store_job_claim_next(store *s, store_job *out, perq_err *err);
/* Progress of a running job (ignored once it has ended). */
int store_job_set_stage(store *s, const char *id, const char *stage, perq_err *err);
int store_job_set_progress(store *s, const char *id, int64_t done, int64_t total, perq_err *err);
/* queued or running -> a terminal status; STORE_CONFLICT when already terminal.
 * error_type/detail and metrics (JSON text) may be NULL. On success the
 * progress is shown complete. */
store_result store_job_finish(store *s, const char *id, const char *status, const char *error_type,
                              const char *error_detail, const char *metrics, perq_err *err);
/* running -> queued, with an event giving the reason; count_it adds one to the
 * job's re-queue count (a daemon that died, not one that shut down cleanly). */
store_result store_job_requeue(store *s, const char *id, const char *reason, bool count_it, perq_err *err);
/* A queued job is cancelled at once (*was_running false); a running one is
 * marked for the supervisor to stop (*was_running true). STORE_CONFLICT for a
 * job already ended. */
store_result store_job_cancel(store *s, const char *id, bool *was_running, perq_err *err);
/* Start-up after a daemon that did not shut down cleanly: each job left
 * running is re-queued, or failed once it has been re-queued
 * STORE_MAX_REQUEUES times; a model left validating is uploading again. */
int store_recover(store *s, int *requeued, int *failed, perq_err *err);

/* ---- events --------------------------------------------------------------- */

/* level: debug, info, warn, error. stage and data (JSON text) may be NULL. */
int store_event_add(store *s, const char *job_id, const char *level, const char *stage, const char *message,
                    const char *data, perq_err *err);
/* Events with seq > after, at most limit, as a JSON array of
 * {seq, time, level, stage, message, data} (new reference in *events). */
int store_event_list(store *s, const char *job_id, int64_t after, int limit, json_t **events, perq_err *err);

#endif
