#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store {
    sqlite3 *db;
    pthread_mutex_t lock;
};

const char *const store_job_statuses[STORE_N_JOB_STATUS] = {"queued", "running", "succeeded", "failed",
                                                             "cancelled"};

/* Version 1 of the schema. Times shown to users are RFC 3339 text; times
 * computed with are unix seconds (REAL). */
static const char *const schema_v1 =
    "CREATE TABLE models ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('uploading', 'validating', 'ready', 'deleting')),"
    "  created_at TEXT NOT NULL,"
    "  seq INTEGER NOT NULL);"
    "CREATE TABLE model_files ("
    "  model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  uploaded_at TEXT NOT NULL,"
    "  PRIMARY KEY (model_id, name));"
    "CREATE TABLE datasets ("
    "  name TEXT PRIMARY KEY,"
    "  bytes INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  created_at TEXT NOT NULL);"
    "CREATE TABLE jobs ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  model_id TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),"
    "  stage TEXT,"
    "  progress_done INTEGER NOT NULL DEFAULT 0,"
    "  progress_total INTEGER NOT NULL DEFAULT 0,"
    "  stage_started REAL,"
    "  created_at TEXT NOT NULL,"
    "  started_at TEXT,"
    "  finished_at TEXT,"
    "  error_type TEXT,"
    "  error_detail TEXT,"
    "  metrics TEXT,"
    "  spec TEXT NOT NULL,"
    "  idempotency_key TEXT UNIQUE,"
    "  idempotency_hash TEXT,"
    "  requeues INTEGER NOT NULL DEFAULT 0,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX jobs_by_status ON jobs(status, seq);"
    "CREATE INDEX jobs_by_model ON jobs(model_id, status);"
    "CREATE TABLE events ("
    "  job_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  time TEXT NOT NULL,"
    "  level TEXT NOT NULL,"
    "  stage TEXT,"
    "  message TEXT NOT NULL,"
    "  data TEXT,"
    "  PRIMARY KEY (job_id, seq)) WITHOUT ROWID;";

/* ---- plumbing --------------------------------------------------------------- */

static int db_fail(store *s, perq_err *err, const char *what)
{
    return perq_fail(err, PERQ_E_IO, "store: %s: %s", what, sqlite3_errmsg(s->db));
}

static sqlite3_stmt *prepare(store *s, const char *sql, perq_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "preparing a statement");
        return NULL;
    }
    return st;
}

static int exec_sql(store *s, const char *sql, perq_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        perq_fail(err, PERQ_E_IO, "store: %s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* Runs a statement that returns no rows; returns the rows changed or -1. */
static int run(store *s, sqlite3_stmt *st, perq_err *err)
{
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, err, "writing");
    return sqlite3_changes(s->db);
}

static void copy_col(char *dst, size_t cap, sqlite3_stmt *st, int col)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    snprintf(dst, cap, "%s", v ? (const char *)v : "");
}

static char *dup_col(sqlite3_stmt *st, int col)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    return v ? strdup((const char *)v) : NULL;
}

static void now_text(char out[PERQD_TIME_MAX])
{
    perqd_format_time(perqd_now(), out);
}

/* Grows *items (of `size` bytes each) to hold one more; returns the new slot. */
static void *push(void **items, size_t *n, size_t *cap, size_t size)
{
    if (*n == *cap) {
        size_t want = *cap ? *cap * 2 : 8;
        void *grown = realloc(*items, want * size);
        if (!grown)
            return NULL;
        *items = grown;
        *cap = want;
    }
    void *slot = (char *)*items + (*n)++ * size;
    memset(slot, 0, size);
    return slot;
}

/* ---- open, close ------------------------------------------------------------ */

static int migrate(store *s, perq_err *err)
{
    int version = store_schema_version(s);
    if (version < 0)
        return db_fail(s, err, "reading the schema version");
    if (version > STORE_SCHEMA_VERSION)
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "store: the database has schema version %d; this perqd knows up to %d (a newer perqd "
                         "wrote it)",
                         version, STORE_SCHEMA_VERSION);
    if (version == STORE_SCHEMA_VERSION)
        return 0;
    if (exec_sql(s, "BEGIN IMMEDIATE", err) != 0)
        return -1;
    char set_version[64];
    snprintf(set_version, sizeof set_version, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
    if (exec_sql(s, schema_v1, err) != 0 || exec_sql(s, set_version, err) != 0) {
        exec_sql(s, "ROLLBACK", NULL);
        return perq_err_context(err, "creating the schema");
    }
    return exec_sql(s, "COMMIT", err);
}

int store_open(const char *path, store **out, perq_err *err)
{
    store *s = calloc(1, sizeof *s);
    if (!s)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        perq_fail(err, PERQ_E_IO, "store: opening %s: %s", path,
                  s->db ? sqlite3_errmsg(s->db) : "out of memory");
        store_close(s);
        return -1;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (exec_sql(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;", err) !=
            0 ||
        migrate(s, err) != 0) {
        perq_err_context(err, "opening %s", path);
        store_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void store_close(store *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void lock(store *s) { pthread_mutex_lock(&s->lock); }
static void unlock(store *s) { pthread_mutex_unlock(&s->lock); }

int store_ping(store *s, perq_err *err)
{
    lock(s);
    int rc = -1;
    sqlite3_stmt *st = prepare(s, "SELECT count(*) FROM models", err);
    if (st) {
        rc = sqlite3_step(st) == SQLITE_ROW ? 0 : db_fail(s, err, "reading");
        sqlite3_finalize(st);
    }
    unlock(s);
    return rc;
}

int store_schema_version(store *s)
{
    sqlite3_stmt *st = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return version;
}

/* ---- models ----------------------------------------------------------------- */

void store_model_free(store_model *m)
{
    if (!m)
        return;
    free(m->files);
    m->files = NULL;
    m->n_files = 0;
}

void store_models_free(store_model *models, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_model_free(&models[i]);
    free(models);
}

int store_model_create(store *s, const char *id, const char *name, perq_err *err)
{
    char now[PERQD_TIME_MAX];
    now_text(now);
    lock(s);
    sqlite3_stmt *st = prepare(s,
                               "INSERT INTO models(id, name, status, created_at, seq) "
                               "VALUES (?1, ?2, 'uploading', ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM models))",
                               err);
    if (st) {
        bind_text(st, 1, id);
        bind_text(st, 2, name);
        bind_text(st, 3, now);
    }
    int rc = run(s, st, err) < 0 ? -1 : 0;
    unlock(s);
    return rc;
}

static int load_files(store *s, store_model *m, perq_err *err)
{
    sqlite3_stmt *st =
        prepare(s, "SELECT name, bytes, sha256 FROM model_files WHERE model_id = ?1 ORDER BY name", err);
    if (!st)
        return -1;
    bind_text(st, 1, m->id);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_file *f = push((void **)&m->files, &m->n_files, &cap, sizeof *f);
        if (!f) {
            sqlite3_finalize(st);
            return perq_fail(err, PERQ_E_NOMEM, "out of memory");
        }
        copy_col(f->name, sizeof f->name, st, 0);
        f->bytes = sqlite3_column_int64(st, 1);
        copy_col(f->sha256, sizeof f->sha256, st, 2);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, err, "reading model files");
}

static void read_model_row(sqlite3_stmt *st, store_model *m)
{
    memset(m, 0, sizeof *m);
    copy_col(m->id, sizeof m->id, st, 0);
    copy_col(m->name, sizeof m->name, st, 1);
    copy_col(m->status, sizeof m->status, st, 2);
    copy_col(m->created_at, sizeof m->created_at, st, 3);
}

store_result store_model_get(store *s, const char *id, store_model *out, perq_err *err)
{
    lock(s);
    store_result result = STORE_ERROR;
    sqlite3_stmt *st = prepare(s, "SELECT id, name, status, created_at FROM models WHERE id = ?1", err);
    if (st) {
        bind_text(st, 1, id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            read_model_row(st, out);
            result = load_files(s, out, err) == 0 ? STORE_OK : STORE_ERROR;
            if (result != STORE_OK)
                store_model_free(out);
        } else if (rc == SQLITE_DONE) {
            result = STORE_NOT_FOUND;
        } else {
            db_fail(s, err, "reading a model");
        }
        sqlite3_finalize(st);
    }
    unlock(s);
    return result;
}

int store_model_list(store *s, store_model **out, size_t *n, perq_err *err)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    lock(s);
    int rc = -1;
    sqlite3_stmt *st = prepare(s, "SELECT id, name, status, created_at FROM models ORDER BY seq", err);
    if (st) {
        int step;
        rc = 0;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            store_model *m = push((void **)out, n, &cap, sizeof *m);
            if (!m) {
                rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
                break;
            }
            read_model_row(st, m);
        }
        if (rc == 0 && step != SQLITE_DONE)
            rc = db_fail(s, err, "listing models");
        sqlite3_finalize(st);
        for (size_t i = 0; rc == 0 && i < *n; i++)
            rc = load_files(s, &(*out)[i], err);
    }
    unlock(s);
    if (rc != 0) {
        store_models_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

/* The status of a model (locked), into status; STORE_NOT_FOUND when none. */
static store_result model_status(store *s, const char *id, char status[16], perq_err *err)
{
    sqlite3_stmt *st = prepare(s, "SELECT status FROM models WHERE id = ?1", err);
    if (!st)
        return STORE_ERROR;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    store_result result = STORE_OK;
    if (rc == SQLITE_ROW)
        copy_col(status, 16, st, 0);
    else if (rc == SQLITE_DONE)
        result = STORE_NOT_FOUND;
    else
        result = db_fail(s, err, "reading a model");
    sqlite3_finalize(st);
    return result;
}

store_result store_model_transition(store *s, const char *id, const char *from, const char *to, perq_err *err)
{
    lock(s);
    store_result result;
    sqlite3_stmt *st = prepare(s, "UPDATE models SET status = ?3 WHERE id = ?1 AND status = ?2", err);
    if (st) {
        bind_text(st, 1, id);
        bind_text(st, 2, from);
        bind_text(st, 3, to);
    }
    int changed = run(s, st, err);
    if (changed < 0) {
        result = STORE_ERROR;
    } else if (changed > 0) {
        result = STORE_OK;
    } else {
        char status[16];
        result = model_status(s, id, status, err);
        if (result == STORE_OK)
            result = STORE_CONFLICT;
    }
    unlock(s);
    return result;
}

store_result store_model_put_file(store *s, const char *model_id, const store_file *f, store_commit_fn commit,
                                  void *ctx, perq_err *err)
{
    char now[PERQD_TIME_MAX], status[16];
    now_text(now);
    lock(s);
    store_result result = model_status(s, model_id, status, err);
    if (result == STORE_OK && strcmp(status, "uploading") != 0)
        result = STORE_CONFLICT;
    if (result == STORE_OK && commit && commit(ctx, err) != 0)
        result = STORE_ERROR;
    if (result == STORE_OK) {
        sqlite3_stmt *st = prepare(s,
                                   "INSERT INTO model_files(model_id, name, bytes, sha256, uploaded_at) "
                                   "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (model_id, name) DO UPDATE SET "
                                   "bytes = excluded.bytes, sha256 = excluded.sha256, "
                                   "uploaded_at = excluded.uploaded_at",
                                   err);
        if (st) {
            bind_text(st, 1, model_id);
            bind_text(st, 2, f->name);
            sqlite3_bind_int64(st, 3, f->bytes);
            bind_text(st, 4, f->sha256);
            bind_text(st, 5, now);
        }
        if (run(s, st, err) < 0)
            result = STORE_ERROR;
    }
    unlock(s);
    return result;
}

static int count_active_jobs(store *s, const char *model_id, perq_err *err)
{
    sqlite3_stmt *st = prepare(
        s, "SELECT count(*) FROM jobs WHERE model_id = ?1 AND status IN ('queued', 'running')", err);
    if (!st)
        return -1;
    bind_text(st, 1, model_id);
    int n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : db_fail(s, err, "counting jobs");
    sqlite3_finalize(st);
    return n;
}

store_result store_model_begin_delete(store *s, const char *id, perq_err *err)
{
    char status[16];
    lock(s);
    store_result result = model_status(s, id, status, err);
    if (result == STORE_OK) {
        int active = count_active_jobs(s, id, err);
        if (active < 0)
            result = STORE_ERROR;
        else if (active > 0 || strcmp(status, "validating") == 0)
            result = STORE_CONFLICT;
    }
    if (result == STORE_OK) {
        sqlite3_stmt *st = prepare(s, "UPDATE models SET status = 'deleting' WHERE id = ?1", err);
        if (st)
            bind_text(st, 1, id);
        if (run(s, st, err) < 0)
            result = STORE_ERROR;
    }
    unlock(s);
    return result;
}

int store_model_delete_row(store *s, const char *id, perq_err *err)
{
    lock(s);
    sqlite3_stmt *st = prepare(s, "DELETE FROM models WHERE id = ?1 AND status = 'deleting'", err);
    if (st)
        bind_text(st, 1, id);
    int rc = run(s, st, err) < 0 ? -1 : 0;
    unlock(s);
    return rc;
}

/* ---- datasets --------------------------------------------------------------- */

int store_dataset_put(store *s, const store_dataset *ds, store_commit_fn commit, void *ctx, perq_err *err)
{
    char now[PERQD_TIME_MAX];
    now_text(now);
    lock(s);
    int rc = commit ? commit(ctx, err) : 0;
    if (rc == 0) {
        sqlite3_stmt *st = prepare(s,
                                   "INSERT INTO datasets(name, bytes, sha256, created_at) VALUES (?1, ?2, ?3, ?4) "
                                   "ON CONFLICT (name) DO UPDATE SET bytes = excluded.bytes, "
                                   "sha256 = excluded.sha256, created_at = excluded.created_at",
                                   err);
        if (st) {
            bind_text(st, 1, ds->name);
            sqlite3_bind_int64(st, 2, ds->bytes);
            bind_text(st, 3, ds->sha256);
            bind_text(st, 4, now);
        }
        rc = run(s, st, err) < 0 ? -1 : 0;
    }
    unlock(s);
    return rc;
}

static void read_dataset_row(sqlite3_stmt *st, store_dataset *d)
{
    memset(d, 0, sizeof *d);
    copy_col(d->name, sizeof d->name, st, 0);
    d->bytes = sqlite3_column_int64(st, 1);
    copy_col(d->sha256, sizeof d->sha256, st, 2);
    copy_col(d->created_at, sizeof d->created_at, st, 3);
}

store_result store_dataset_get(store *s, const char *name, store_dataset *out, perq_err *err)
{
    lock(s);
    store_result result = STORE_ERROR;
    sqlite3_stmt *st = prepare(s, "SELECT name, bytes, sha256, created_at FROM datasets WHERE name = ?1", err);
    if (st) {
        bind_text(st, 1, name);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            read_dataset_row(st, out);
            result = STORE_OK;
        } else if (rc == SQLITE_DONE) {
            result = STORE_NOT_FOUND;
        } else {
            db_fail(s, err, "reading a dataset");
        }
        sqlite3_finalize(st);
    }
    unlock(s);
    return result;
}

int store_dataset_list(store *s, store_dataset **out, size_t *n, perq_err *err)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    lock(s);
    int rc = -1;
    sqlite3_stmt *st = prepare(s, "SELECT name, bytes, sha256, created_at FROM datasets ORDER BY name", err);
    if (st) {
        int step;
        rc = 0;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            store_dataset *d = push((void **)out, n, &cap, sizeof *d);
            if (!d) {
                rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
                break;
            }
            read_dataset_row(st, d);
        }
        if (rc == 0 && step != SQLITE_DONE)
            rc = db_fail(s, err, "listing datasets");
        sqlite3_finalize(st);
    }
    unlock(s);
    if (rc != 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

/* ---- jobs ------------------------------------------------------------------- */

bool store_job_status_valid(const char *status)
{
    for (int i = 0; i < STORE_N_JOB_STATUS; i++)
        if (strcmp(status, store_job_statuses[i]) == 0)
            return true;
    return false;
}

bool store_job_status_terminal(const char *status)
{
    return strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0;
}

void store_job_free(store_job *j)
{
    if (!j)
        return;
    free(j->error_detail);
    free(j->metrics);
    free(j->spec);
    j->error_detail = j->metrics = j->spec = NULL;
}

void store_jobs_free(store_job *jobs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_job_free(&jobs[i]);
    free(jobs);
}

#define JOB_COLUMNS                                                                                          \
    "seq, id, model_id, status, stage, progress_done, progress_total, stage_started, created_at, started_at, " \
    "finished_at, error_type, error_detail, metrics, spec, requeues, cancel_requested"

static int read_job_row(sqlite3_stmt *st, store_job *j, perq_err *err)
{
    memset(j, 0, sizeof *j);
    j->seq = sqlite3_column_int64(st, 0);
    copy_col(j->id, sizeof j->id, st, 1);
    copy_col(j->model_id, sizeof j->model_id, st, 2);
    copy_col(j->status, sizeof j->status, st, 3);
    copy_col(j->stage, sizeof j->stage, st, 4);
    j->progress_done = sqlite3_column_int64(st, 5);
    j->progress_total = sqlite3_column_int64(st, 6);
    j->stage_started = sqlite3_column_double(st, 7);
    copy_col(j->created_at, sizeof j->created_at, st, 8);
    copy_col(j->started_at, sizeof j->started_at, st, 9);
    copy_col(j->finished_at, sizeof j->finished_at, st, 10);
    copy_col(j->error_type, sizeof j->error_type, st, 11);
    j->error_detail = dup_col(st, 12);
    j->metrics = dup_col(st, 13);
    j->spec = dup_col(st, 14);
    j->requeues = sqlite3_column_int(st, 15);
    j->cancel_requested = sqlite3_column_int(st, 16) != 0;
    if (!j->spec || (sqlite3_column_type(st, 12) != SQLITE_NULL && !j->error_detail) ||
        (sqlite3_column_type(st, 13) != SQLITE_NULL && !j->metrics)) {
        store_job_free(j);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    return 0;
}

/* One job by a column (locked); STORE_NOT_FOUND when none. */
static store_result job_by(store *s, const char *column, const char *value, store_job *out, perq_err *err)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT " JOB_COLUMNS " FROM jobs WHERE %s = ?1", column);
    sqlite3_stmt *st = prepare(s, sql, err);
    if (!st)
        return STORE_ERROR;
    bind_text(st, 1, value);
    int rc = sqlite3_step(st);
    store_result result;
    if (rc == SQLITE_ROW)
        result = read_job_row(st, out, err) == 0 ? STORE_OK : STORE_ERROR;
    else if (rc == SQLITE_DONE)
        result = STORE_NOT_FOUND;
    else
        result = db_fail(s, err, "reading a job");
    sqlite3_finalize(st);
    return result;
}

static int add_event_locked(store *s, const char *job_id, const char *level, const char *stage,
                            const char *message, const char *data, perq_err *err);

/* The job of an idempotency key (locked): STORE_EXISTS with *out when its
 * hash is `hash`, STORE_CONFLICT when another, STORE_NOT_FOUND when none. */
static store_result job_by_key(store *s, const char *key, const char *hash, store_job *out, perq_err *err)
{
    sqlite3_stmt *st = prepare(s, "SELECT id, idempotency_hash FROM jobs WHERE idempotency_key = ?1", err);
    if (!st)
        return STORE_ERROR;
    bind_text(st, 1, key);
    int rc = sqlite3_step(st);
    char id[PERQD_ID_MAX] = "";
    bool same = false;
    if (rc == SQLITE_ROW) {
        copy_col(id, sizeof id, st, 0);
        const unsigned char *h = sqlite3_column_text(st, 1);
        same = h && hash && strcmp((const char *)h, hash) == 0;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE)
        return STORE_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return db_fail(s, err, "reading a job");
    if (!same)
        return STORE_CONFLICT;
    store_result result = job_by(s, "id", id, out, err);
    return result == STORE_OK ? STORE_EXISTS : result;
}

store_result store_job_create(store *s, const store_new_job *nj, store_job *out, perq_err *err)
{
    char now[PERQD_TIME_MAX], status[16];
    now_text(now);
    lock(s);
    store_result result = STORE_OK;
    if (nj->idempotency_key) {
        result = job_by_key(s, nj->idempotency_key, nj->idempotency_hash, out, err);
        if (result != STORE_NOT_FOUND)
            goto done;
    }
    result = model_status(s, nj->model_id, status, err);
    if (result == STORE_OK && strcmp(status, "ready") != 0)
        result = STORE_NOT_READY;
    if (result != STORE_OK)
        goto done;

    if (exec_sql(s, "SAVEPOINT create_job", err) != 0) {
        result = STORE_ERROR;
        goto done;
    }
    sqlite3_stmt *st = prepare(s,
                               "INSERT INTO jobs(id, model_id, status, created_at, spec, idempotency_key, "
                               "idempotency_hash) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6)",
                               err);
    if (st) {
        bind_text(st, 1, nj->id);
        bind_text(st, 2, nj->model_id);
        bind_text(st, 3, now);
        bind_text(st, 4, nj->spec);
        bind_text(st, 5, nj->idempotency_key);
        bind_text(st, 6, nj->idempotency_key ? nj->idempotency_hash : NULL);
    }
    if (run(s, st, err) < 0 || add_event_locked(s, nj->id, "info", NULL, "queued", NULL, err) != 0 ||
        job_by(s, "id", nj->id, out, err) != STORE_OK) {
        exec_sql(s, "ROLLBACK TO create_job; RELEASE create_job", NULL);
        result = STORE_ERROR;
        goto done;
    }
    if (exec_sql(s, "RELEASE create_job", err) != 0) {
        store_job_free(out);
        result = STORE_ERROR;
    }
done:
    unlock(s);
    return result;
}

store_result store_job_get(store *s, const char *id, store_job *out, perq_err *err)
{
    lock(s);
    store_result result = job_by(s, "id", id, out, err);
    unlock(s);
    return result;
}

int store_job_list(store *s, const char *status, store_job **out, size_t *n, perq_err *err)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    lock(s);
    int rc = -1;
    sqlite3_stmt *st = prepare(s,
                               status ? "SELECT " JOB_COLUMNS " FROM jobs WHERE status = ?1 ORDER BY seq"
                                      : "SELECT " JOB_COLUMNS " FROM jobs ORDER BY seq",
                               err);
    if (st) {
        if (status)
            bind_text(st, 1, status);
        int step;
        rc = 0;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            store_job *j = push((void **)out, n, &cap, sizeof *j);
            if (!j) {
                rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
                break;
            }
            if (read_job_row(st, j, err) != 0) {
                (*n)--;
                rc = -1;
                break;
            }
        }
        if (rc == 0 && step != SQLITE_DONE)
            rc = db_fail(s, err, "listing jobs");
        sqlite3_finalize(st);
    }
    unlock(s);
    if (rc != 0) {
        store_jobs_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int store_job_counts(store *s, int64_t counts[STORE_N_JOB_STATUS], perq_err *err)
{
    memset(counts, 0, sizeof(int64_t) * STORE_N_JOB_STATUS);
    lock(s);
    int rc = -1;
    sqlite3_stmt *st = prepare(s, "SELECT status, count(*) FROM jobs GROUP BY status", err);
    if (st) {
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            const char *status = (const char *)sqlite3_column_text(st, 0);
            for (int i = 0; status && i < STORE_N_JOB_STATUS; i++)
                if (strcmp(status, store_job_statuses[i]) == 0)
                    counts[i] = sqlite3_column_int64(st, 1);
        }
        rc = step == SQLITE_DONE ? 0 : db_fail(s, err, "counting jobs");
        sqlite3_finalize(st);
    }
    unlock(s);
    return rc;
}

store_result store_job_claim_next(store *s, store_job *out, perq_err *err)
{
    char now[PERQD_TIME_MAX];
    now_text(now);
    lock(s);
    store_result result = STORE_NOT_FOUND;
    char id[PERQD_ID_MAX] = "";
    sqlite3_stmt *st = prepare(s, "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1", err);
    if (!st) {
        result = STORE_ERROR;
    } else {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            copy_col(id, sizeof id, st, 0);
        else if (rc != SQLITE_DONE)
            result = db_fail(s, err, "finding a queued job");
        sqlite3_finalize(st);
    }
    if (id[0]) {
        st = prepare(s,
                     "UPDATE jobs SET status = 'running', started_at = ?2, stage = NULL, progress_done = 0, "
                     "progress_total = 0, stage_started = NULL, cancel_requested = 0 "
                     "WHERE id = ?1 AND status = 'queued'",
                     err);
        if (st) {
            bind_text(st, 1, id);
            bind_text(st, 2, now);
        }
        int changed = run(s, st, err);
        if (changed < 0)
            result = STORE_ERROR;
        else if (changed == 1)
            result = job_by(s, "id", id, out, err);
    }
    unlock(s);
    return result;
}

int store_job_set_stage(store *s, const char *id, const char *stage, perq_err *err)
{
    lock(s);
    sqlite3_stmt *st = prepare(s,
                               "UPDATE jobs SET stage = ?2, progress_done = 0, progress_total = 0, "
                               "stage_started = ?3 WHERE id = ?1 AND status = 'running'",
                               err);
    if (st) {
        bind_text(st, 1, id);
        bind_text(st, 2, stage);
        sqlite3_bind_double(st, 3, perqd_now());
    }
    int rc = run(s, st, err) < 0 ? -1 : 0;
    unlock(s);
    return rc;
}

int store_job_set_progress(store *s, const char *id, int64_t done, int64_t total, perq_err *err)
{
    lock(s);
    sqlite3_stmt *st = prepare(s,
                               "UPDATE jobs SET progress_done = ?2, progress_total = ?3, "
                               "stage_started = COALESCE(stage_started, ?4) WHERE id = ?1 AND status = 'running'",
                               err);
    if (st) {
        bind_text(st, 1, id);
        sqlite3_bind_int64(st, 2, done);
        sqlite3_bind_int64(st, 3, total);
        sqlite3_bind_double(st, 4, perqd_now());
    }
    int rc = run(s, st, err) < 0 ? -1 : 0;
    unlock(s);
    return rc;
}

store_result store_job_finish(store *s, const char *id, const char *status, const char *error_type,
                              const char *error_detail, const char *metrics, perq_err *err)
{
    if (!store_job_status_terminal(status))
        return perq_fail(err, PERQ_E_INTERNAL, "store: %s is not a terminal status", status);
    char now[PERQD_TIME_MAX];
    now_text(now);
    bool succeeded = strcmp(status, "succeeded") == 0;
    lock(s);
    store_result result;
    sqlite3_stmt *st = prepare(s,
                               "UPDATE jobs SET status = ?2, finished_at = ?3, error_type = ?4, error_detail = ?5, "
                               "metrics = ?6, progress_done = CASE WHEN ?7 THEN progress_total ELSE "
                               "progress_done END WHERE id = ?1 AND status IN ('queued', 'running')",
                               err);
    if (st) {
        bind_text(st, 1, id);
        bind_text(st, 2, status);
        bind_text(st, 3, now);
        bind_text(st, 4, error_type);
        bind_text(st, 5, error_type ? (error_detail ? error_detail : "") : NULL);
        bind_text(st, 6, metrics);
        sqlite3_bind_int(st, 7, succeeded);
    }
    int changed = run(s, st, err);
    if (changed < 0) {
        result = STORE_ERROR;
    } else if (changed == 1) {
        char message[1200];
        if (error_type)
            snprintf(message, sizeof message, "%s: %s", status, error_detail ? error_detail : error_type);
        else
            snprintf(message, sizeof message, "%s", status);
        result = add_event_locked(s, id, error_type && !succeeded ? "error" : "info", NULL, message, NULL, err) ==
                         0
                     ? STORE_OK
                     : STORE_ERROR;
    } else {
        store_job j;
        result = job_by(s, "id", id, &j, err);
        if (result == STORE_OK) {
            store_job_free(&j);
            result = STORE_CONFLICT;
        }
    }
    unlock(s);
    return result;
}

store_result store_job_requeue(store *s, const char *id, const char *reason, bool count_it, perq_err *err)
{
    lock(s);
    sqlite3_stmt *st = prepare(s,
                               "UPDATE jobs SET status = 'queued', started_at = NULL, stage = NULL, "
                               "progress_done = 0, progress_total = 0, stage_started = NULL, "
                               "requeues = requeues + ?2 WHERE id = ?1 AND status = 'running'",
                               err);
    if (st) {
        bind_text(st, 1, id);
        sqlite3_bind_int(st, 2, count_it ? 1 : 0);
    }
    int changed = run(s, st, err);
    store_result result = changed < 0    ? STORE_ERROR
                          : changed == 0 ? STORE_CONFLICT
                          : add_event_locked(s, id, "warn", NULL, reason, NULL, err) == 0 ? STORE_OK
                                                                                         : STORE_ERROR;
    unlock(s);
    return result;
}

store_result store_job_cancel(store *s, const char *id, bool *was_running, perq_err *err)
{
    char now[PERQD_TIME_MAX];
    now_text(now);
    *was_running = false;
    lock(s);
    store_result result;
    sqlite3_stmt *st = prepare(s,
                               "UPDATE jobs SET status = 'cancelled', finished_at = ?2, error_type = 'cancelled', "
                               "error_detail = 'cancelled by request before it started' "
                               "WHERE id = ?1 AND status = 'queued'",
                               err);
    if (st) {
        bind_text(st, 1, id);
        bind_text(st, 2, now);
    }
    int changed = run(s, st, err);
    if (changed < 0) {
        result = STORE_ERROR;
    } else if (changed == 1) {
        result = add_event_locked(s, id, "info", NULL, "cancelled before it started", NULL, err) == 0
                     ? STORE_OK
                     : STORE_ERROR;
    } else {
        st = prepare(s, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND status = 'running'", err);
        if (st)
            bind_text(st, 1, id);
        changed = run(s, st, err);
        if (changed < 0) {
            result = STORE_ERROR;
        } else if (changed == 1) {
            *was_running = true;
            result = add_event_locked(s, id, "info", NULL, "cancel requested: stopping the worker", NULL, err) == 0
                         ? STORE_OK
                         : STORE_ERROR;
        } else {
            store_job j;
            result = job_by(s, "id", id, &j, err);
            if (result == STORE_OK) {
                store_job_free(&j);
                result = STORE_CONFLICT;
            }
        }
    }
    unlock(s);
    return result;
}

int store_recover(store *s, int *requeued, int *failed, perq_err *err)
{
    *requeued = *failed = 0;
    char now[PERQD_TIME_MAX];
    now_text(now);
    lock(s);
    int rc = exec_sql(s, "BEGIN IMMEDIATE", err);
    if (rc == 0)
        rc = exec_sql(s, "UPDATE models SET status = 'uploading' WHERE status = 'validating'", err);

    /* Collect the jobs first: the events written below must not disturb the scan. */
    struct interrupted {
        char id[PERQD_ID_MAX];
        int requeues;
    } *jobs = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *st = rc == 0 ? prepare(s, "SELECT id, requeues FROM jobs WHERE status = 'running'", err) : NULL;
    if (rc == 0 && !st)
        rc = -1;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        struct interrupted *j = push((void **)&jobs, &n, &cap, sizeof *j);
        if (!j) {
            rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
            break;
        }
        copy_col(j->id, sizeof j->id, st, 0);
        j->requeues = sqlite3_column_int(st, 1);
    }
    sqlite3_finalize(st);

    for (size_t i = 0; rc == 0 && i < n; i++) {
        char message[256];
        if (jobs[i].requeues >= STORE_MAX_REQUEUES) {
            snprintf(message, sizeof message,
                     "the daemon stopped while this job ran, %d times; not starting it again", jobs[i].requeues + 1);
            st = prepare(s,
                         "UPDATE jobs SET status = 'failed', finished_at = ?2, error_type = 'interrupted', "
                         "error_detail = ?3 WHERE id = ?1 AND status = 'running'",
                         err);
            if (st) {
                bind_text(st, 1, jobs[i].id);
                bind_text(st, 2, now);
                bind_text(st, 3, message);
            }
            rc = run(s, st, err) < 0 ? -1 : 0;
            (*failed)++;
        } else {
            snprintf(message, sizeof message, "re-queued after daemon restart (%d of %d)", jobs[i].requeues + 1,
                     STORE_MAX_REQUEUES);
            st = prepare(s,
                         "UPDATE jobs SET status = 'queued', started_at = NULL, stage = NULL, progress_done = 0, "
                         "progress_total = 0, stage_started = NULL, requeues = requeues + 1 "
                         "WHERE id = ?1 AND status = 'running'",
                         err);
            if (st)
                bind_text(st, 1, jobs[i].id);
            rc = run(s, st, err) < 0 ? -1 : 0;
            (*requeued)++;
        }
        if (rc == 0)
            rc = add_event_locked(s, jobs[i].id, jobs[i].requeues >= STORE_MAX_REQUEUES ? "error" : "warn", NULL, message,
                                  NULL, err);
    }
    free(jobs);
    if (rc == 0)
        rc = exec_sql(s, "COMMIT", err);
    else
        exec_sql(s, "ROLLBACK", NULL);
    unlock(s);
    return rc;
}

/* ---- events ----------------------------------------------------------------- */

static int add_event_locked(store *s, const char *job_id, const char *level, const char *stage,
                            const char *message, const char *data, perq_err *err)
{
    char now[PERQD_TIME_MAX];
    now_text(now);
    sqlite3_stmt *st = prepare(s,
                               "INSERT INTO events(job_id, seq, time, level, stage, message, data) VALUES "
                               "(?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?1), ?2, ?3, "
                               "COALESCE(?4, (SELECT stage FROM jobs WHERE id = ?1)), ?5, ?6)",
                               err);
    if (st) {
        bind_text(st, 1, job_id);
        bind_text(st, 2, now);
        bind_text(st, 3, level);
        bind_text(st, 4, stage);
        bind_text(st, 5, message);
        bind_text(st, 6, data);
    }
    return run(s, st, err) < 0 ? -1 : 0;
}

int store_event_add(store *s, const char *job_id, const char *level, const char *stage, const char *message,
                    const char *data, perq_err *err)
{
    lock(s);
    int rc = add_event_locked(s, job_id, level, stage, message, data, err);
    unlock(s);
    return rc;
}

int store_event_list(store *s, const char *job_id, int64_t after, int limit, json_t **events, perq_err *err)
{
    *events = json_array();
    lock(s);
    int rc = -1;
    sqlite3_stmt *st = prepare(s,
                               "SELECT seq, time, level, stage, message, data FROM events "
                               "WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                               err);
    if (st) {
        bind_text(st, 1, job_id);
        sqlite3_bind_int64(st, 2, after);
        sqlite3_bind_int(st, 3, limit);
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            const char *stage = (const char *)sqlite3_column_text(st, 3);
            const char *data = (const char *)sqlite3_column_text(st, 5);
            json_t *data_json = data ? json_loads(data, 0, NULL) : NULL;
            json_array_append_new(
                *events, json_pack("{sI ss ss so ss so}", "seq", (json_int_t)sqlite3_column_int64(st, 0), "time",
                                   (const char *)sqlite3_column_text(st, 1), "level",
                                   (const char *)sqlite3_column_text(st, 2), "stage",
                                   stage ? json_string(stage) : json_null(), "message",
                                   (const char *)sqlite3_column_text(st, 4), "data",
                                   data_json ? data_json : json_null()));
        }
        rc = step == SQLITE_DONE ? 0 : db_fail(s, err, "reading events");
        sqlite3_finalize(st);
    }
    unlock(s);
    if (rc != 0) {
        json_decref(*events);
        *events = NULL;
    }
    return rc;
}
