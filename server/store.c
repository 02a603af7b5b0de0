#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
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

/* Prepares sql and binds ?1, ?2, ... from the arguments, one letter of
 * `types` each: t text (const char *, NULL binds NULL), i int, I int64_t,
 * d double. NULL (err set) when it does not prepare. */
static sqlite3_stmt *vstatement(store *s, perq_err *err, const char *sql, const char *types, va_list ap)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(s, err, "preparing a statement");
        return NULL;
    }
    for (int i = 1; *types; types++, i++) {
        switch (*types) {
        case 't': bind_text(st, i, va_arg(ap, const char *)); break;
        case 'i': sqlite3_bind_int(st, i, va_arg(ap, int)); break;
        case 'I': sqlite3_bind_int64(st, i, va_arg(ap, int64_t)); break;
        case 'd': sqlite3_bind_double(st, i, va_arg(ap, double)); break;
        }
    }
    return st;
}

static sqlite3_stmt *statement(store *s, perq_err *err, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    sqlite3_stmt *st = vstatement(s, err, sql, types, ap);
    va_end(ap);
    return st;
}

/* Runs a statement that returns no rows (arguments as for statement());
 * returns the rows changed or -1. */
static int update(store *s, perq_err *err, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    sqlite3_stmt *st = vstatement(s, err, sql, types, ap);
    va_end(ap);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, err, "writing");
    return sqlite3_changes(s->db);
}

/* Reads the current row of st into *row, 0 or -1 (err set). */
typedef int (*row_fn)(sqlite3_stmt *st, void *row, perq_err *err);

/* The one row of st (NULL: it did not prepare) read into *row by read_row;
 * STORE_NOT_FOUND when there is none. Finalizes st; `what` names the read
 * in an error. */
static store_result read_one(store *s, sqlite3_stmt *st, row_fn read_row, void *row, const char *what,
                             perq_err *err)
{
    if (!st)
        return STORE_ERROR;
    int step = sqlite3_step(st);
    store_result result;
    if (step == SQLITE_ROW)
        result = read_row(st, row, err) == 0 ? STORE_OK : STORE_ERROR;
    else if (step == SQLITE_DONE)
        result = STORE_NOT_FOUND;
    else
        result = db_fail(s, err, what);
    sqlite3_finalize(st);
    return result;
}

/* Calls each_row(st, ctx) for every row of st (NULL: it did not prepare),
 * stopping at the first failure. Finalizes st. */
static int for_each_row(store *s, sqlite3_stmt *st, row_fn each_row, void *ctx, const char *what, perq_err *err)
{
    if (!st)
        return -1;
    int step = SQLITE_DONE, rc = 0;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = each_row(st, ctx, err);
    if (rc == 0 && step != SQLITE_DONE)
        rc = db_fail(s, err, what);
    sqlite3_finalize(st);
    return rc;
}

/* Grows *items (of `size` bytes each) to hold one more; returns the new
 * slot, zeroed, or NULL when out of memory. */
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

typedef struct row_array {
    void **items;
    size_t *n, cap, size;
    row_fn read_row;
} row_array;

static int append_row(sqlite3_stmt *st, void *ctx, perq_err *err)
{
    row_array *a = ctx;
    void *row = push(a->items, a->n, &a->cap, a->size);
    if (!row)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (a->read_row(st, row, err) != 0) {
        (*a->n)--; /* read_row cleaned up after itself */
        return -1;
    }
    return 0;
}

/* Every row of st, read by read_row, into a new array *items of *n
 * elements of `size` bytes. On failure the rows read so far stay there for
 * the caller to free. */
static int read_rows(store *s, sqlite3_stmt *st, row_fn read_row, void *items, size_t *n, size_t size,
                     const char *what, perq_err *err)
{
    *(void **)items = NULL;
    *n = 0;
    row_array a = {.items = items, .n = n, .size = size, .read_row = read_row};
    return for_each_row(s, st, append_row, &a, what, err);
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

/* A row of one id column, into char[PERQD_ID_MAX]. */
static int read_id(sqlite3_stmt *st, void *id, perq_err *err)
{
    (void)err;
    copy_col(id, PERQD_ID_MAX, st, 0);
    return 0;
}

/* A row of one status column, into char[16]. */
static int read_status(sqlite3_stmt *st, void *status, perq_err *err)
{
    (void)err;
    copy_col(status, 16, st, 0);
    return 0;
}

static void now_text(char out[PERQD_TIME_MAX])
{
    perqd_format_time(perqd_now(), out);
}

/* After an UPDATE guarded by the row's state changed nothing: STORE_CONFLICT
 * when the row (found by exists_sql, ?1 = id) is there in another state,
 * STORE_NOT_FOUND when it is not. */
static store_result conflict_unless_missing(store *s, const char *exists_sql, const char *id, const char *what,
                                            perq_err *err)
{
    char found[PERQD_ID_MAX];
    store_result result = read_one(s, statement(s, err, exists_sql, "t", id), read_id, found, what, err);
    return result == STORE_OK ? STORE_CONFLICT : result;
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
    sqlite3_stmt *st = statement(s, err, "SELECT count(*) FROM models", "");
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
    int rc = update(s, err,
                    "INSERT INTO models(id, name, status, created_at, seq) "
                    "VALUES (?1, ?2, 'uploading', ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM models))",
                    "ttt", id, name, now);
    unlock(s);
    return rc < 0 ? -1 : 0;
}

static int read_file_row(sqlite3_stmt *st, void *row, perq_err *err)
{
    (void)err;
    store_file *f = row;
    copy_col(f->name, sizeof f->name, st, 0);
    f->bytes = sqlite3_column_int64(st, 1);
    copy_col(f->sha256, sizeof f->sha256, st, 2);
    return 0;
}

static int load_files(store *s, store_model *m, perq_err *err)
{
    sqlite3_stmt *st =
        statement(s, err, "SELECT name, bytes, sha256 FROM model_files WHERE model_id = ?1 ORDER BY name", "t", m->id);
    return read_rows(s, st, read_file_row, &m->files, &m->n_files, sizeof *m->files, "reading model files", err);
}

#define MODEL_COLUMNS "id, name, status, created_at"

static int read_model_row(sqlite3_stmt *st, void *row, perq_err *err)
{
    (void)err;
    store_model *m = row;
    memset(m, 0, sizeof *m);
    copy_col(m->id, sizeof m->id, st, 0);
    copy_col(m->name, sizeof m->name, st, 1);
    copy_col(m->status, sizeof m->status, st, 2);
    copy_col(m->created_at, sizeof m->created_at, st, 3);
    return 0;
}

store_result store_model_get(store *s, const char *id, store_model *out, perq_err *err)
{
    lock(s);
    sqlite3_stmt *st = statement(s, err, "SELECT " MODEL_COLUMNS " FROM models WHERE id = ?1", "t", id);
    store_result result = read_one(s, st, read_model_row, out, "reading a model", err);
    if (result == STORE_OK && load_files(s, out, err) != 0) {
        store_model_free(out);
        result = STORE_ERROR;
    }
    unlock(s);
    return result;
}

int store_model_list(store *s, store_model **out, size_t *n, perq_err *err)
{
    lock(s);
    sqlite3_stmt *st = statement(s, err, "SELECT " MODEL_COLUMNS " FROM models ORDER BY seq", "");
    int rc = read_rows(s, st, read_model_row, out, n, sizeof **out, "listing models", err);
    for (size_t i = 0; rc == 0 && i < *n; i++)
        rc = load_files(s, &(*out)[i], err);
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
    sqlite3_stmt *st = statement(s, err, "SELECT status FROM models WHERE id = ?1", "t", id);
    return read_one(s, st, read_status, status, "reading a model", err);
}

store_result store_model_transition(store *s, const char *id, const char *from, const char *to, perq_err *err)
{
    lock(s);
    int changed = update(s, err, "UPDATE models SET status = ?3 WHERE id = ?1 AND status = ?2", "ttt", id, from, to);
    store_result result = changed < 0  ? STORE_ERROR
                          : changed > 0 ? STORE_OK
                                        : conflict_unless_missing(s, "SELECT id FROM models WHERE id = ?1", id,
                                                                  "reading a model", err);
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
    if (result == STORE_OK &&
        update(s, err,
               "INSERT INTO model_files(model_id, name, bytes, sha256, uploaded_at) "
               "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (model_id, name) DO UPDATE SET "
               "bytes = excluded.bytes, sha256 = excluded.sha256, uploaded_at = excluded.uploaded_at",
               "ttItt", model_id, f->name, (int64_t)f->bytes, f->sha256, now) < 0)
        result = STORE_ERROR;
    unlock(s);
    return result;
}

static int count_active_jobs(store *s, const char *model_id, perq_err *err)
{
    sqlite3_stmt *st = statement(
        s, err, "SELECT count(*) FROM jobs WHERE model_id = ?1 AND status IN ('queued', 'running')", "t", model_id);
    if (!st)
        return -1;
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
    if (result == STORE_OK && update(s, err, "UPDATE models SET status = 'deleting' WHERE id = ?1", "t", id) < 0)
        result = STORE_ERROR;
    unlock(s);
    return result;
}

int store_model_delete_row(store *s, const char *id, perq_err *err)
{
    lock(s);
    int rc = update(s, err, "DELETE FROM models WHERE id = ?1 AND status = 'deleting'", "t", id);
    unlock(s);
    return rc < 0 ? -1 : 0;
}

/* ---- datasets --------------------------------------------------------------- */

int store_dataset_put(store *s, const store_dataset *ds, store_commit_fn commit, void *ctx, perq_err *err)
{
    char now[PERQD_TIME_MAX];
    now_text(now);
    lock(s);
    int rc = commit ? commit(ctx, err) : 0;
    if (rc == 0 && update(s, err,
                          "INSERT INTO datasets(name, bytes, sha256, created_at) VALUES (?1, ?2, ?3, ?4) "
                          "ON CONFLICT (name) DO UPDATE SET bytes = excluded.bytes, "
                          "sha256 = excluded.sha256, created_at = excluded.created_at",
                          "tItt", ds->name, (int64_t)ds->bytes, ds->sha256, now) < 0)
        rc = -1;
    unlock(s);
    return rc;
}

#define DATASET_COLUMNS "name, bytes, sha256, created_at"

static int read_dataset_row(sqlite3_stmt *st, void *row, perq_err *err)
{
    (void)err;
    store_dataset *d = row;
    memset(d, 0, sizeof *d);
    copy_col(d->name, sizeof d->name, st, 0);
    d->bytes = sqlite3_column_int64(st, 1);
    copy_col(d->sha256, sizeof d->sha256, st, 2);
    copy_col(d->created_at, sizeof d->created_at, st, 3);
    return 0;
}

store_result store_dataset_get(store *s, const char *name, store_dataset *out, perq_err *err)
{
    lock(s);
    sqlite3_stmt *st = statement(s, err, "SELECT " DATASET_COLUMNS " FROM datasets WHERE name = ?1", "t", name);
    store_result result = read_one(s, st, read_dataset_row, out, "reading a dataset", err);
    unlock(s);
    return result;
}

int store_dataset_list(store *s, store_dataset **out, size_t *n, perq_err *err)
{
    lock(s);
    sqlite3_stmt *st = statement(s, err, "SELECT " DATASET_COLUMNS " FROM datasets ORDER BY name", "");
    int rc = read_rows(s, st, read_dataset_row, out, n, sizeof **out, "listing datasets", err);
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

static int read_job_row(sqlite3_stmt *st, void *row, perq_err *err)
{
    store_job *j = row;
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

/* One job (locked); STORE_NOT_FOUND when none. */
static store_result job_by_id(store *s, const char *id, store_job *out, perq_err *err)
{
    sqlite3_stmt *st = statement(s, err, "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1", "t", id);
    return read_one(s, st, read_job_row, out, "reading a job", err);
}

static store_result job_conflict_unless_missing(store *s, const char *id, perq_err *err)
{
    return conflict_unless_missing(s, "SELECT id FROM jobs WHERE id = ?1", id, "reading a job", err);
}

static int add_event_locked(store *s, const char *job_id, const char *level, const char *stage,
                            const char *message, const char *data, perq_err *err);

/* add_event_locked as a store_result. */
static store_result job_event(store *s, const char *job_id, const char *level, const char *message, perq_err *err)
{
    return add_event_locked(s, job_id, level, NULL, message, NULL, err) == 0 ? STORE_OK : STORE_ERROR;
}

/* The job holding an idempotency key: its id, and whether the request hash
 * stored with it is `hash`. */
typedef struct key_owner {
    const char *hash;
    char id[PERQD_ID_MAX];
    bool same;
} key_owner;

static int read_key_owner(sqlite3_stmt *st, void *row, perq_err *err)
{
    (void)err;
    key_owner *k = row;
    copy_col(k->id, sizeof k->id, st, 0);
    const unsigned char *h = sqlite3_column_text(st, 1);
    k->same = h && k->hash && strcmp((const char *)h, k->hash) == 0;
    return 0;
}

/* The job of an idempotency key (locked): STORE_EXISTS with *out when its
 * hash is `hash`, STORE_CONFLICT when another, STORE_NOT_FOUND when none. */
static store_result job_by_key(store *s, const char *key, const char *hash, store_job *out, perq_err *err)
{
    key_owner owner = {.hash = hash};
    sqlite3_stmt *st = statement(s, err, "SELECT id, idempotency_hash FROM jobs WHERE idempotency_key = ?1", "t", key);
    store_result result = read_one(s, st, read_key_owner, &owner, "reading a job", err);
    if (result != STORE_OK)
        return result;
    if (!owner.same)
        return STORE_CONFLICT;
    result = job_by_id(s, owner.id, out, err);
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
    if (update(s, err,
               "INSERT INTO jobs(id, model_id, status, created_at, spec, idempotency_key, "
               "idempotency_hash) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6)",
               "tttttt", nj->id, nj->model_id, now, nj->spec, nj->idempotency_key,
               nj->idempotency_key ? nj->idempotency_hash : NULL) < 0 ||
        add_event_locked(s, nj->id, "info", NULL, "queued", NULL, err) != 0 ||
        job_by_id(s, nj->id, out, err) != STORE_OK) {
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
    store_result result = job_by_id(s, id, out, err);
    unlock(s);
    return result;
}

int store_job_list(store *s, const char *status, store_job **out, size_t *n, perq_err *err)
{
    lock(s);
    sqlite3_stmt *st = status ? statement(s, err, "SELECT " JOB_COLUMNS " FROM jobs WHERE status = ?1 ORDER BY seq",
                                          "t", status)
                              : statement(s, err, "SELECT " JOB_COLUMNS " FROM jobs ORDER BY seq", "");
    int rc = read_rows(s, st, read_job_row, out, n, sizeof **out, "listing jobs", err);
    unlock(s);
    if (rc != 0) {
        store_jobs_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

static int count_status_row(sqlite3_stmt *st, void *counts, perq_err *err)
{
    (void)err;
    const char *status = (const char *)sqlite3_column_text(st, 0);
    for (int i = 0; status && i < STORE_N_JOB_STATUS; i++)
        if (strcmp(status, store_job_statuses[i]) == 0)
            ((int64_t *)counts)[i] = sqlite3_column_int64(st, 1);
    return 0;
}

int store_job_counts(store *s, int64_t counts[STORE_N_JOB_STATUS], perq_err *err)
{
    memset(counts, 0, sizeof(int64_t) * STORE_N_JOB_STATUS);
    lock(s);
    sqlite3_stmt *st = statement(s, err, "SELECT status, count(*) FROM jobs GROUP BY status", "");
    int rc = for_each_row(s, st, count_status_row, counts, "counting jobs", err);
    unlock(s);
    return rc;
}

store_result store_job_claim_next(store *s, store_job *out, perq_err *err)
{
    char now[PERQD_TIME_MAX], id[PERQD_ID_MAX];
    now_text(now);
    lock(s);
    sqlite3_stmt *st = statement(s, err, "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1", "");
    store_result result = read_one(s, st, read_id, id, "finding a queued job", err);
    if (result == STORE_OK) {
        int changed = update(s, err,
                             "UPDATE jobs SET status = 'running', started_at = ?2, stage = NULL, progress_done = 0, "
                             "progress_total = 0, stage_started = NULL, cancel_requested = 0 "
                             "WHERE id = ?1 AND status = 'queued'",
                             "tt", id, now);
        result = changed < 0 ? STORE_ERROR : changed == 1 ? job_by_id(s, id, out, err) : STORE_NOT_FOUND;
    }
    unlock(s);
    return result;
}

int store_job_set_stage(store *s, const char *id, const char *stage, perq_err *err)
{
    lock(s);
    int rc = update(s, err,
                    "UPDATE jobs SET stage = ?2, progress_done = 0, progress_total = 0, "
                    "stage_started = ?3 WHERE id = ?1 AND status = 'running'",
                    "ttd", id, stage, perqd_now());
    unlock(s);
    return rc < 0 ? -1 : 0;
}

int store_job_set_progress(store *s, const char *id, int64_t done, int64_t total, perq_err *err)
{
    lock(s);
    int rc = update(s, err,
                    "UPDATE jobs SET progress_done = ?2, progress_total = ?3, "
                    "stage_started = COALESCE(stage_started, ?4) WHERE id = ?1 AND status = 'running'",
                    "tIId", id, done, total, perqd_now());
    unlock(s);
    return rc < 0 ? -1 : 0;
}

store_result store_job_finish(store *s, const char *id, const char *status, const char *error_type,
                              const char *error_detail, const char *metrics, perq_err *err)
{
    if (!store_job_status_terminal(status))
        return perq_fail(err, PERQ_E_INTERNAL, "store: %s is not a terminal status", status);
    char now[PERQD_TIME_MAX];
    now_text(now);
    bool succeeded = strcmp(status, "succeeded") == 0;
    char message[1200];
    if (error_type)
        snprintf(message, sizeof message, "%s: %s", status, error_detail ? error_detail : error_type);
    else
        snprintf(message, sizeof message, "%s", status);
    lock(s);
    int changed = update(s, err,
                         "UPDATE jobs SET status = ?2, finished_at = ?3, error_type = ?4, error_detail = ?5, "
                         "metrics = ?6, progress_done = CASE WHEN ?7 THEN progress_total ELSE "
                         "progress_done END WHERE id = ?1 AND status IN ('queued', 'running')",
                         "tttttti", id, status, now, error_type,
                         error_type ? (error_detail ? error_detail : "") : NULL, metrics, (int)succeeded);
    store_result result = changed < 0   ? STORE_ERROR
                          : changed == 1 ? job_event(s, id, error_type && !succeeded ? "error" : "info", message, err)
                                         : job_conflict_unless_missing(s, id, err);
    unlock(s);
    return result;
}

store_result store_job_requeue(store *s, const char *id, const char *reason, bool count_it, perq_err *err)
{
    lock(s);
    int changed = update(s, err,
                         "UPDATE jobs SET status = 'queued', started_at = NULL, stage = NULL, "
                         "progress_done = 0, progress_total = 0, stage_started = NULL, "
                         "requeues = requeues + ?2 WHERE id = ?1 AND status = 'running'",
                         "ti", id, count_it ? 1 : 0);
    store_result result = changed < 0    ? STORE_ERROR
                          : changed == 0 ? STORE_CONFLICT
                                         : job_event(s, id, "warn", reason, err);
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
    int changed = update(s, err,
                         "UPDATE jobs SET status = 'cancelled', finished_at = ?2, error_type = 'cancelled', "
                         "error_detail = 'cancelled by request before it started' "
                         "WHERE id = ?1 AND status = 'queued'",
                         "tt", id, now);
    if (changed < 0) {
        result = STORE_ERROR;
    } else if (changed == 1) {
        result = job_event(s, id, "info", "cancelled before it started", err);
    } else {
        changed = update(s, err, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND status = 'running'", "t", id);
        *was_running = changed == 1;
        result = changed < 0    ? STORE_ERROR
                 : changed == 1 ? job_event(s, id, "info", "cancel requested: stopping the worker", err)
                                : job_conflict_unless_missing(s, id, err);
    }
    unlock(s);
    return result;
}

/* A job that was running when the daemon stopped. */
typedef struct interrupted {
    char id[PERQD_ID_MAX];
    int requeues;
} interrupted;

static int read_interrupted(sqlite3_stmt *st, void *row, perq_err *err)
{
    (void)err;
    interrupted *j = row;
    copy_col(j->id, sizeof j->id, st, 0);
    j->requeues = sqlite3_column_int(st, 1);
    return 0;
}

/* Re-queues an interrupted job, or fails it once it has been re-queued
 * STORE_MAX_REQUEUES times, with an event saying which (locked). */
static int recover_job(store *s, const interrupted *j, const char *now, int *requeued, int *failed, perq_err *err)
{
    char message[256];
    int rc;
    bool give_up = j->requeues >= STORE_MAX_REQUEUES;
    if (give_up) {
        snprintf(message, sizeof message, "the daemon stopped while this job ran, %d times; not starting it again",
                 j->requeues + 1);
        rc = update(s, err,
                    "UPDATE jobs SET status = 'failed', finished_at = ?2, error_type = 'interrupted', "
                    "error_detail = ?3 WHERE id = ?1 AND status = 'running'",
                    "ttt", j->id, now, message);
        (*failed)++;
    } else {
        snprintf(message, sizeof message, "re-queued after daemon restart (%d of %d)", j->requeues + 1,
                 STORE_MAX_REQUEUES);
        rc = update(s, err,
                    "UPDATE jobs SET status = 'queued', started_at = NULL, stage = NULL, progress_done = 0, "
                    "progress_total = 0, stage_started = NULL, requeues = requeues + 1 "
                    "WHERE id = ?1 AND status = 'running'",
                    "t", j->id);
        (*requeued)++;
    }
    if (rc < 0)
        return -1;
    return add_event_locked(s, j->id, give_up ? "error" : "warn", NULL, message, NULL, err);
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
    interrupted *jobs = NULL;
    size_t n = 0;
    if (rc == 0)
        rc = read_rows(s, statement(s, err, "SELECT id, requeues FROM jobs WHERE status = 'running'", ""),
                       read_interrupted, &jobs, &n, sizeof *jobs, "finding interrupted jobs", err);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = recover_job(s, &jobs[i], now, requeued, failed, err);
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
    int changed = update(s, err,
                         "INSERT INTO events(job_id, seq, time, level, stage, message, data) VALUES "
                         "(?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?1), ?2, ?3, "
                         "COALESCE(?4, (SELECT stage FROM jobs WHERE id = ?1)), ?5, ?6)",
                         "tttttt", job_id, now, level, stage, message, data);
    return changed < 0 ? -1 : 0;
}

int store_event_add(store *s, const char *job_id, const char *level, const char *stage, const char *message,
                    const char *data, perq_err *err)
{
    lock(s);
    int rc = add_event_locked(s, job_id, level, stage, message, data, err);
    unlock(s);
    return rc;
}

/* Appends the event of the current row to the JSON array `events`. */
static int append_event(sqlite3_stmt *st, void *events, perq_err *err)
{
    (void)err;
    const char *stage = (const char *)sqlite3_column_text(st, 3);
    const char *data = (const char *)sqlite3_column_text(st, 5);
    json_t *data_json = data ? json_loads(data, 0, NULL) : NULL;
    json_array_append_new(events, json_pack("{sI ss ss so ss so}", "seq", (json_int_t)sqlite3_column_int64(st, 0),
                                            "time", (const char *)sqlite3_column_text(st, 1), "level",
                                            (const char *)sqlite3_column_text(st, 2), "stage",
                                            stage ? json_string(stage) : json_null(), "message",
                                            (const char *)sqlite3_column_text(st, 4), "data",
                                            data_json ? data_json : json_null()));
    return 0;
}

int store_event_list(store *s, const char *job_id, int64_t after, int limit, json_t **events, perq_err *err)
{
    *events = json_array();
    lock(s);
    sqlite3_stmt *st = statement(s, err,
                                 "SELECT seq, time, level, stage, message, data FROM events "
                                 "WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                                 "tIi", job_id, after, limit);
    int rc = for_each_row(s, st, append_event, *events, "reading events", err);
    unlock(s);
    if (rc != 0) {
        json_decref(*events);
        *events = NULL;
    }
    return rc;
}
