/* The job store: schema, model files, job life cycle (terminal states never
 * change), idempotency keys, recovery after a daemon that died, events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <unistd.h>

#include "store.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/perq-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/perq.db", f->dir);
    perq_err err = {0};
    assert_int_equal(store_open(f->path, &f->s, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void reopen(fixture *f)
{
    store_close(f->s);
    perq_err err = {0};
    assert_int_equal(store_open(f->path, &f->s, &err), 0);
}

/* A ready model "m_1" with one file. */
static void ready_model(store *s, const char *id)
{
    perq_err err = {0};
    assert_int_equal(store_model_create(s, id, "tiny", &err), 0);
    store_file file = {.name = "config.json", .bytes = 12, .sha256 = "ab"};
    assert_int_equal(store_model_put_file(s, id, &file, NULL, NULL, &err), STORE_OK);
    assert_int_equal(store_model_transition(s, id, "uploading", "ready", &err), STORE_OK);
}

static void new_job(store *s, const char *id, const char *model, const char *key, const char *hash,
                    store_result want)
{
    perq_err err = {0};
    store_new_job nj = {.id = id, .model_id = model, .spec = "{\"method\":\"rtn\"}", .idempotency_key = key,
                        .idempotency_hash = hash};
    store_job j;
    store_result got = store_job_create(s, &nj, &j, &err);
    assert_int_equal(got, want);
    if (got == STORE_OK || got == STORE_EXISTS)
        store_job_free(&j);
}

static void job_status(store *s, const char *id, const char *want)
{
    perq_err err = {0};
    store_job j;
    assert_int_equal(store_job_get(s, id, &j, &err), STORE_OK);
    assert_string_equal(j.status, want);
    store_job_free(&j);
}

static void test_schema(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
    reopen(f); /* migration runs once; a second open finds the schema in place */
    assert_int_equal(store_schema_version(f->s), STORE_SCHEMA_VERSION);
    perq_err err = {0};
    assert_int_equal(store_ping(f->s, &err), 0);
}

static void test_models_and_files(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    assert_int_equal(store_model_create(f->s, "m_1", "tiny", &err), 0);
    store_file a = {.name = "config.json", .bytes = 10, .sha256 = "aa"};
    store_file b = {.name = "config.json", .bytes = 20, .sha256 = "bb"};
    assert_int_equal(store_model_put_file(f->s, "m_1", &a, NULL, NULL, &err), STORE_OK);
    assert_int_equal(store_model_put_file(f->s, "m_1", &b, NULL, NULL, &err), STORE_OK); /* replaces */
    assert_int_equal(store_model_put_file(f->s, "m_nope", &a, NULL, NULL, &err), STORE_NOT_FOUND);

    store_model m;
    assert_int_equal(store_model_get(f->s, "m_1", &m, &err), STORE_OK);
    assert_string_equal(m.status, "uploading");
    assert_int_equal(m.n_files, 1);
    assert_int_equal(m.files[0].bytes, 20);
    assert_string_equal(m.files[0].sha256, "bb");
    store_model_free(&m);

    assert_int_equal(store_model_transition(f->s, "m_1", "uploading", "ready", &err), STORE_OK);
    assert_int_equal(store_model_transition(f->s, "m_1", "uploading", "ready", &err), STORE_CONFLICT);
    assert_int_equal(store_model_transition(f->s, "m_nope", "uploading", "ready", &err), STORE_NOT_FOUND);
    /* a ready model takes no more files */
    assert_int_equal(store_model_put_file(f->s, "m_1", &a, NULL, NULL, &err), STORE_CONFLICT);

    store_model *list;
    size_t n;
    assert_int_equal(store_model_list(f->s, &list, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, "m_1");
    assert_int_equal(list[0].n_files, 1);
    store_models_free(list, n);
}

static int failing_commit(void *ctx, perq_err *err)
{
    (*(int *)ctx)++;
    return perq_fail(err, PERQ_E_IO, "disk full");
}

static void test_failed_commit_keeps_previous_file(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    assert_int_equal(store_model_create(f->s, "m_1", "tiny", &err), 0);
    store_file a = {.name = "w.bin", .bytes = 10, .sha256 = "aa"};
    store_file b = {.name = "w.bin", .bytes = 20, .sha256 = "bb"};
    assert_int_equal(store_model_put_file(f->s, "m_1", &a, NULL, NULL, &err), STORE_OK);
    int calls = 0;
    assert_int_equal(store_model_put_file(f->s, "m_1", &b, failing_commit, &calls, &err), STORE_ERROR);
    assert_int_equal(calls, 1);
    store_model m;
    assert_int_equal(store_model_get(f->s, "m_1", &m, &err), STORE_OK);
    assert_string_equal(m.files[0].sha256, "aa");
    store_model_free(&m);
}

static void test_delete_refused_while_in_use(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    ready_model(f->s, "m_1");
    new_job(f->s, "j_1", "m_1", NULL, NULL, STORE_OK);
    assert_int_equal(store_model_begin_delete(f->s, "m_1", &err), STORE_CONFLICT);
    assert_int_equal(store_job_finish(f->s, "j_1", "failed", "internal", "x", NULL, &err), STORE_OK);
    assert_int_equal(store_model_begin_delete(f->s, "m_1", &err), STORE_OK);
    /* a model being deleted takes no job */
    new_job(f->s, "j_2", "m_1", NULL, NULL, STORE_NOT_READY);
    assert_int_equal(store_model_delete_row(f->s, "m_1", &err), 0);
    store_model m;
    assert_int_equal(store_model_get(f->s, "m_1", &m, &err), STORE_NOT_FOUND);
    assert_int_equal(store_model_begin_delete(f->s, "m_1", &err), STORE_NOT_FOUND);
}

static void test_job_needs_ready_model(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    new_job(f->s, "j_1", "m_nope", NULL, NULL, STORE_NOT_FOUND);
    assert_int_equal(store_model_create(f->s, "m_1", "tiny", &err), 0);
    new_job(f->s, "j_1", "m_1", NULL, NULL, STORE_NOT_READY);
    store_job *jobs;
    size_t n;
    assert_int_equal(store_job_list(f->s, NULL, &jobs, &n, &err), 0);
    assert_int_equal(n, 0);
    free(jobs);
}

static void test_queue_order_and_claim(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    ready_model(f->s, "m_1");
    new_job(f->s, "j_b", "m_1", NULL, NULL, STORE_OK);
    new_job(f->s, "j_a", "m_1", NULL, NULL, STORE_OK);
    new_job(f->s, "j_c", "m_1", NULL, NULL, STORE_OK);

    store_job j;
    assert_int_equal(store_job_claim_next(f->s, &j, &err), STORE_OK);
    assert_string_equal(j.id, "j_b"); /* creation order, not id order */
    assert_string_equal(j.status, "running");
    assert_true(j.started_at[0] != '\0');
    store_job_free(&j);

    bool was_running;
    assert_int_equal(store_job_cancel(f->s, "j_a", &was_running, &err), STORE_OK);
    assert_false(was_running);
    job_status(f->s, "j_a", "cancelled");

    assert_int_equal(store_job_claim_next(f->s, &j, &err), STORE_OK);
    assert_string_equal(j.id, "j_c"); /* the cancelled job is skipped */
    store_job_free(&j);
    assert_int_equal(store_job_claim_next(f->s, &j, &err), STORE_NOT_FOUND);

    store_job *jobs;
    size_t n;
    assert_int_equal(store_job_list(f->s, "running", &jobs, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(jobs[0].id, "j_b");
    assert_string_equal(jobs[1].id, "j_c");
    store_jobs_free(jobs, n);

    int64_t counts[STORE_N_JOB_STATUS];
    assert_int_equal(store_job_counts(f->s, counts, &err), 0);
    assert_int_equal(counts[0], 0); /* queued */
    assert_int_equal(counts[1], 2); /* running */
    assert_int_equal(counts[4], 1); /* cancelled */
}

static void test_terminal_states_never_change(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    ready_model(f->s, "m_1");
    new_job(f->s, "j_1", "m_1", NULL, NULL, STORE_OK);
    store_job j;
    assert_int_equal(store_job_claim_next(f->s, &j, &err), STORE_OK);
    store_job_free(&j);
    assert_int_equal(store_job_set_stage(f->s, "j_1", "quantizing", &err), 0);
    assert_int_equal(store_job_set_progress(f->s, "j_1", 3, 7, &err), 0);
    assert_int_equal(store_job_finish(f->s, "j_1", "succeeded", NULL, NULL, "{\"ppl\":1.5}", &err), STORE_OK);

    /* every way out of succeeded is refused */
    assert_int_equal(store_job_finish(f->s, "j_1", "failed", "internal", "late", NULL, &err), STORE_CONFLICT);
    assert_int_equal(store_job_finish(f->s, "j_1", "cancelled", NULL, NULL, NULL, &err), STORE_CONFLICT);
    assert_int_equal(store_job_requeue(f->s, "j_1", "again", true, &err), STORE_CONFLICT);
    bool was_running;
    assert_int_equal(store_job_cancel(f->s, "j_1", &was_running, &err), STORE_CONFLICT);
    assert_int_equal(store_job_set_progress(f->s, "j_1", 0, 9, &err), 0); /* ignored */
    assert_int_equal(store_job_finish(f->s, "j_nope", "failed", NULL, NULL, NULL, &err), STORE_NOT_FOUND);
    assert_int_equal(store_job_cancel(f->s, "j_nope", &was_running, &err), STORE_NOT_FOUND);
    assert_int_equal(store_job_finish(f->s, "j_1", "running", NULL, NULL, NULL, &err), STORE_ERROR);

    assert_int_equal(store_job_get(f->s, "j_1", &j, &err), STORE_OK);
    assert_string_equal(j.status, "succeeded");
    assert_string_equal(j.stage, "quantizing");
    assert_int_equal(j.progress_done, 7); /* shown complete */
    assert_int_equal(j.progress_total, 7);
    assert_string_equal(j.metrics, "{\"ppl\":1.5}");
    assert_true(j.finished_at[0] != '\0');
    assert_null(j.error_detail);
    store_job_free(&j);
}

static void test_cancel_running_is_a_request(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    ready_model(f->s, "m_1");
    new_job(f->s, "j_1", "m_1", NULL, NULL, STORE_OK);
    store_job j;
    assert_int_equal(store_job_claim_next(f->s, &j, &err), STORE_OK);
    assert_false(j.cancel_requested);
    store_job_free(&j);
    bool was_running;
    assert_int_equal(store_job_cancel(f->s, "j_1", &was_running, &err), STORE_OK);
    assert_true(was_running);
    assert_int_equal(store_job_get(f->s, "j_1", &j, &err), STORE_OK);
    assert_string_equal(j.status, "running");
    assert_true(j.cancel_requested);
    store_job_free(&j);
    assert_int_equal(store_job_finish(f->s, "j_1", "cancelled", "cancelled", "by request", NULL, &err), STORE_OK);
    job_status(f->s, "j_1", "cancelled");
}

static void test_idempotency(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    ready_model(f->s, "m_1");
    new_job(f->s, "j_1", "m_1", "key-1", "hash-a", STORE_OK);
    /* same key, same body: the same job, nothing new */
    store_new_job nj = {.id = "j_2", .model_id = "m_1", .spec = "{}", .idempotency_key = "key-1",
                        .idempotency_hash = "hash-a"};
    store_job j;
    assert_int_equal(store_job_create(f->s, &nj, &j, &err), STORE_EXISTS);
    assert_string_equal(j.id, "j_1");
    store_job_free(&j);
    /* same key, another body */
    new_job(f->s, "j_3", "m_1", "key-1", "hash-b", STORE_CONFLICT);
    /* another key */
    new_job(f->s, "j_4", "m_1", "key-2", "hash-b", STORE_OK);
    /* the replay holds even after the model is gone */
    assert_int_equal(store_job_finish(f->s, "j_1", "failed", "internal", "x", NULL, &err), STORE_OK);
    assert_int_equal(store_job_finish(f->s, "j_4", "failed", "internal", "x", NULL, &err), STORE_OK);
    assert_int_equal(store_model_begin_delete(f->s, "m_1", &err), STORE_OK);
    new_job(f->s, "j_5", "m_1", "key-1", "hash-a", STORE_EXISTS);

    store_job *jobs;
    size_t n;
    assert_int_equal(store_job_list(f->s, NULL, &jobs, &n, &err), 0);
    assert_int_equal(n, 2);
    store_jobs_free(jobs, n);
}

/* A daemon that died with jobs running: each is re-queued, and after
 * STORE_MAX_REQUEUES re-queues it is failed instead. */
static void test_restart_requeues_then_fails(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    ready_model(f->s, "m_1");
    new_job(f->s, "j_1", "m_1", NULL, NULL, STORE_OK);
    new_job(f->s, "j_2", "m_1", NULL, NULL, STORE_OK); /* stays queued throughout */
    assert_int_equal(store_model_create(f->s, "m_2", "half", &err), 0);
    assert_int_equal(store_model_transition(f->s, "m_2", "uploading", "validating", &err), STORE_OK);

    for (int round = 0; round <= STORE_MAX_REQUEUES; round++) {
        store_job j;
        assert_int_equal(store_job_claim_next(f->s, &j, &err), STORE_OK);
        assert_string_equal(j.id, "j_1");
        assert_int_equal(j.requeues, round);
        store_job_free(&j);
        reopen(f); /* the daemon died */
        int requeued, failed;
        assert_int_equal(store_recover(f->s, &requeued, &failed, &err), 0);
        if (round < STORE_MAX_REQUEUES) {
            assert_int_equal(requeued, 1);
            assert_int_equal(failed, 0);
            job_status(f->s, "j_1", "queued");
        } else {
            assert_int_equal(requeued, 0);
            assert_int_equal(failed, 1);
        }
    }
    store_job j;
    assert_int_equal(store_job_get(f->s, "j_1", &j, &err), STORE_OK);
    assert_string_equal(j.status, "failed");
    assert_string_equal(j.error_type, "interrupted");
    assert_non_null(strstr(j.error_detail, "daemon stopped"));
    store_job_free(&j);
    job_status(f->s, "j_2", "queued");

    store_model m;
    assert_int_equal(store_model_get(f->s, "m_2", &m, &err), STORE_OK);
    assert_string_equal(m.status, "uploading");
    store_model_free(&m);

    json_t *events;
    assert_int_equal(store_event_list(f->s, "j_1", 0, 100, &events, &err), 0);
    size_t n = json_array_size(events);
    assert_true(n >= 4); /* queued, two re-queues, the failure */
    const char *last = json_string_value(json_object_get(json_array_get(events, n - 1), "message"));
    assert_non_null(strstr(last, "not starting it again"));
    json_decref(events);
}

static void test_clean_requeue_does_not_count(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    ready_model(f->s, "m_1");
    new_job(f->s, "j_1", "m_1", NULL, NULL, STORE_OK);
    store_job j;
    assert_int_equal(store_job_claim_next(f->s, &j, &err), STORE_OK);
    store_job_free(&j);
    assert_int_equal(store_job_requeue(f->s, "j_1", "daemon shut down", false, &err), STORE_OK);
    assert_int_equal(store_job_requeue(f->s, "j_1", "again", false, &err), STORE_CONFLICT); /* not running */
    assert_int_equal(store_job_get(f->s, "j_1", &j, &err), STORE_OK);
    assert_string_equal(j.status, "queued");
    assert_int_equal(j.requeues, 0);
    assert_string_equal(j.started_at, "");
    store_job_free(&j);
}

static void test_events(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    ready_model(f->s, "m_1");
    new_job(f->s, "j_1", "m_1", NULL, NULL, STORE_OK);
    new_job(f->s, "j_2", "m_1", NULL, NULL, STORE_OK);
    store_job j;
    assert_int_equal(store_job_claim_next(f->s, &j, &err), STORE_OK);
    store_job_free(&j);
    assert_int_equal(store_job_set_stage(f->s, "j_1", "loading", &err), 0);
    assert_int_equal(store_event_add(f->s, "j_1", "info", NULL, "hello", "{\"k\":1}", &err), 0);
    assert_int_equal(store_event_add(f->s, "j_1", "warn", "exporting", "careful", NULL, &err), 0);

    json_t *events;
    assert_int_equal(store_event_list(f->s, "j_1", 0, 100, &events, &err), 0);
    assert_int_equal(json_array_size(events), 3); /* queued, hello, careful */
    json_t *hello = json_array_get(events, 1);
    assert_int_equal(json_integer_value(json_object_get(hello, "seq")), 2);
    assert_string_equal(json_string_value(json_object_get(hello, "stage")), "loading"); /* the job's stage */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(hello, "data"), "k")), 1);
    json_t *careful = json_array_get(events, 2);
    assert_string_equal(json_string_value(json_object_get(careful, "stage")), "exporting");
    assert_true(json_is_null(json_object_get(careful, "data")));
    json_decref(events);

    assert_int_equal(store_event_list(f->s, "j_1", 2, 100, &events, &err), 0);
    assert_int_equal(json_array_size(events), 1);
    json_decref(events);
    assert_int_equal(store_event_list(f->s, "j_1", 0, 1, &events, &err), 0);
    assert_int_equal(json_array_size(events), 1);
    json_decref(events);
    /* each job numbers its own events */
    assert_int_equal(store_event_list(f->s, "j_2", 0, 100, &events, &err), 0);
    assert_int_equal(json_array_size(events), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(events, 0), "seq")), 1);
    json_decref(events);
}

static void test_datasets(void **state)
{
    fixture *f = *state;
    perq_err err = {0};
    store_dataset d = {.name = "wiki", .bytes = 5, .sha256 = "cc"};
    assert_int_equal(store_dataset_put(f->s, &d, NULL, NULL, &err), 0);
    d.bytes = 6;
    assert_int_equal(store_dataset_put(f->s, &d, NULL, NULL, &err), 0);
    int calls = 0;
    d.bytes = 7;
    assert_int_equal(store_dataset_put(f->s, &d, failing_commit, &calls, &err), -1);
    store_dataset got;
    assert_int_equal(store_dataset_get(f->s, "wiki", &got, &err), STORE_OK);
    assert_int_equal(got.bytes, 6);
    assert_int_equal(store_dataset_get(f->s, "nope", &got, &err), STORE_NOT_FOUND);
    store_dataset *list;
    size_t n;
    assert_int_equal(store_dataset_list(f->s, &list, &n, &err), 0);
    assert_int_equal(n, 1);
    free(list);
}

static void test_newer_schema_is_refused(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    perq_err err = {0};
    assert_int_equal(store_open(f->path, &f->s, &err), -1);
    assert_non_null(strstr(err.msg, "schema version 99"));
    f->s = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_models_and_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_keeps_previous_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_refused_while_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_needs_ready_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_order_and_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_terminal_states_never_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_running_is_a_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_requeues_then_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clean_requeue_does_not_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_datasets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
