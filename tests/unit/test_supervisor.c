/* The scheduler and the worker supervisor, with small shell scripts standing
 * in for perq-worker: each speaks (or breaks) proto/protocol.md in one way,
 * and the job must end in the state the protocol prescribes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "perq/fsutil.h"
#include "perqd.h"
#include "scheduler.h"

typedef struct fixture {
    char dir[64];
    perqd d;
    uv_loop_t loop;
    uv_timer_t timer;
    bool timer_used;
    char cancel_job[PERQD_ID_MAX];
    bool shutdown_done;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/perq-sup-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->d.cfg.data_dir, sizeof f->d.cfg.data_dir, "%s/data", f->dir);
    f->d.cfg.workers = 1;
    f->d.cfg.kill_grace = 0.3;
    perq_err err = {0};
    char path[PATH_MAX];
    assert_int_equal(perqd_path(&f->d, path, sizeof path, "models/m_1"), 0);
    assert_int_equal(perq_mkdirs(path, &err), 0);
    assert_int_equal(perqd_path(&f->d, path, sizeof path, "jobs"), 0);
    assert_int_equal(perq_mkdirs(path, &err), 0);
    assert_int_equal(perqd_path(&f->d, path, sizeof path, "perq.db"), 0);
    assert_int_equal(store_open(path, &f->d.store, &err), 0);
    assert_int_equal(store_model_create(f->d.store, "m_1", "tiny", &err), 0);
    assert_int_equal(store_model_transition(f->d.store, "m_1", "uploading", "ready", &err), STORE_OK);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->d.loop = &f->loop;
    f->d.sched = scheduler_new(&f->d);
    assert_non_null(f->d.sched);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->timer_used)
        uv_close((uv_handle_t *)&f->timer, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    scheduler_free(f->d.sched);
    store_close(f->d.store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* The worker program: a shell script. Its arguments are those of the
 * protocol, so $2 is the job id and $8 the output folder. */
static void worker_script(fixture *f, const char *body)
{
    snprintf(f->d.cfg.worker_bin, sizeof f->d.cfg.worker_bin, "%s/worker.sh", f->dir);
    FILE *out = fopen(f->d.cfg.worker_bin, "w");
    assert_non_null(out);
    fprintf(out, "#!/bin/sh\nout=\"$8\"\nmkdir -p \"$out\"\n%s\n", body);
    fclose(out);
    assert_int_equal(chmod(f->d.cfg.worker_bin, 0755), 0);
}

static void submit(fixture *f, const char *id)
{
    perq_err err = {0};
    store_new_job nj = {.id = id, .model_id = "m_1", .spec = "{\"method\":\"rtn\",\"eval\":null}"};
    store_job j;
    assert_int_equal(store_job_create(f->d.store, &nj, &j, &err), STORE_OK);
    store_job_free(&j);
}

/* Runs the loop until every job has ended and no worker is left. */
static void run(fixture *f)
{
    scheduler_poll(f->d.sched);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(atomic_load(&f->d.metrics.workers_running), 0);
}

static store_job get_job(fixture *f, const char *id)
{
    store_job j;
    perq_err err = {0};
    assert_int_equal(store_job_get(f->d.store, id, &j, &err), STORE_OK);
    return j;
}

static void expect_failed(fixture *f, const char *id, const char *type, const char *detail_part)
{
    store_job j = get_job(f, id);
    assert_string_equal(j.status, "failed");
    assert_string_equal(j.error_type, type);
    assert_non_null(j.error_detail);
    if (!strstr(j.error_detail, detail_part))
        fail_msg("error detail \"%s\" lacks \"%s\"", j.error_detail, detail_part);
    store_job_free(&j);
}

static char *read_job_file(fixture *f, const char *id, const char *name)
{
    char path[PATH_MAX];
    assert_int_equal(perqd_path(&f->d, path, sizeof path, "jobs/%s/%s", id, name), 0);
    char *text = NULL;
    size_t len;
    perq_err err = {0};
    assert_int_equal(perq_read_file(path, 0, &text, &len, &err), 0);
    return text;
}

static void test_success(void **state)
{
    fixture *f = *state;
    worker_script(f, "echo '{\"type\":\"hello\",\"version\":1,\"pid\":1,\"blas_core\":\"none\"}'\n"
                     "echo '{\"type\":\"stage\",\"stage\":\"quantizing\"}'\n"
                     "echo '{\"type\":\"progress\",\"done\":1,\"total\":4}'\n"
                     "echo '{\"type\":\"event\",\"level\":\"warn\",\"message\":\"careful\",\"data\":{\"k\":7}}'\n"
                     "echo 'this is not a message'\n"
                     "echo '{\"type\":\"from-the-future\",\"x\":1}'\n"
                     "echo '{\"type\":\"progress\",\"done\":3,\"total\":4}'\n"
                     "echo 'words for people' >&2\n"
                     "echo '{\"files\":[]}' > \"$out/manifest.json\"\n"
                     "printf '{\"type\":\"result\",\"metrics\":{\"ppl\":1.5}}'"); /* no final newline */
    submit(f, "j_1");
    run(f);
    store_job j = get_job(f, "j_1");
    assert_string_equal(j.status, "succeeded");
    assert_string_equal(j.stage, "quantizing");
    assert_int_equal(j.progress_total, 4);
    assert_int_equal(j.progress_done, 4); /* shown complete */
    assert_string_equal(j.metrics, "{\"ppl\":1.5}");
    assert_string_equal(j.error_type, "");
    store_job_free(&j);

    json_t *events;
    perq_err err = {0};
    assert_int_equal(store_event_list(f->d.store, "j_1", 0, 100, &events, &err), 0);
    bool careful = false, stage = false;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) {
        const char *message = json_string_value(json_object_get(e, "message"));
        if (strcmp(message, "careful") == 0) {
            careful = true;
            assert_string_equal(json_string_value(json_object_get(e, "level")), "warn");
            assert_string_equal(json_string_value(json_object_get(e, "stage")), "quantizing");
            assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "data"), "k")), 7);
        }
        stage = stage || strcmp(message, "stage quantizing") == 0;
    }
    assert_true(careful);
    assert_true(stage);
    json_decref(events);

    char *log = read_job_file(f, "j_1", "worker.log");
    assert_non_null(strstr(log, "words for people"));
    assert_non_null(strstr(log, "this is not a message"));
    free(log);
    char *spec = read_job_file(f, "j_1", "spec.json");
    assert_string_equal(spec, "{\"method\":\"rtn\",\"eval\":null}");
    free(spec);
    assert_int_equal(atomic_load(&f->d.metrics.workers_started), 1);
    assert_int_equal(atomic_load(&f->d.metrics.workers_failed), 0);
}

static void test_worker_error_is_the_reason(void **state)
{
    fixture *f = *state;
    worker_script(f, "echo '{\"type\":\"error\",\"error\":{\"type\":\"format\",\"detail\":\"bad header\"}}'\n"
                     "exit 1");
    submit(f, "j_1");
    run(f);
    expect_failed(f, "j_1", "format", "bad header");
}

static void test_crash(void **state)
{
    fixture *f = *state;
    worker_script(f, "echo '{\"type\":\"stage\",\"stage\":\"loading\"}'\nkill -9 $$");
    submit(f, "j_1");
    submit(f, "j_2"); /* the next job still runs */
    run(f);
    expect_failed(f, "j_1", "worker", "killed by signal 9");
    expect_failed(f, "j_2", "worker", "killed by signal 9");
    assert_int_equal(atomic_load(&f->d.metrics.workers_failed), 2);
}

static void test_exit_codes(void **state)
{
    fixture *f = *state;
    worker_script(f, "exit 7");
    submit(f, "j_1");
    run(f);
    expect_failed(f, "j_1", "worker", "exited with status 7");

    worker_script(f, "exit 0");
    submit(f, "j_2");
    run(f);
    expect_failed(f, "j_2", "worker", "without a result");

    /* a result, but the artifacts it promises are not there */
    worker_script(f, "echo '{\"type\":\"result\",\"metrics\":{}}'");
    submit(f, "j_3");
    run(f);
    expect_failed(f, "j_3", "worker", "manifest.json");
}

static void after(fixture *f, uint64_t ms, uv_timer_cb cb)
{
    uv_timer_init(&f->loop, &f->timer);
    f->timer.data = f;
    f->timer_used = true;
    uv_timer_start(&f->timer, cb, ms, 0);
}

/* What the HTTP handler does on POST /v1/jobs/{id}/cancel. */
static void on_cancel_timer(uv_timer_t *t)
{
    fixture *f = t->data;
    bool was_running;
    perq_err err = {0};
    assert_int_equal(store_job_cancel(f->d.store, f->cancel_job, &was_running, &err), STORE_OK);
    assert_true(was_running);
    scheduler_poll(f->d.sched);
}

/* The worker ignores SIGTERM: it gets SIGKILL after the grace period, and the
 * job ends cancelled whatever it said. */
static void test_cancel_escalates_to_sigkill(void **state)
{
    fixture *f = *state;
    worker_script(f, "trap '' TERM\n"
                     "echo '{\"type\":\"stage\",\"stage\":\"quantizing\"}'\n"
                     "echo '{\"type\":\"error\",\"error\":{\"type\":\"internal\",\"detail\":\"x\"}}'\n"
                     "while :; do sleep 0.05; done");
    submit(f, "j_1");
    snprintf(f->cancel_job, sizeof f->cancel_job, "j_1");
    after(f, 300, on_cancel_timer);
    run(f);
    store_job j = get_job(f, "j_1");
    assert_string_equal(j.status, "cancelled");
    assert_string_equal(j.error_type, "cancelled");
    store_job_free(&j);
    char *log = read_job_file(f, "j_1", "worker.log");
    assert_non_null(strstr(log, "SIGKILL"));
    free(log);
}

static void test_long_line_is_a_protocol_error(void **state)
{
    fixture *f = *state;
    worker_script(f, "head -c 1200000 /dev/zero | tr '\\0' a\n"
                     "echo\n"
                     "echo '{\"type\":\"result\",\"metrics\":{}}'\n"
                     "sleep 5");
    submit(f, "j_1");
    run(f);
    expect_failed(f, "j_1", "protocol", "longer than 1 MiB");
}

static void on_shutdown_done(void *ctx)
{
    fixture *f = ctx;
    f->shutdown_done = true;
}

static void on_shutdown_timer(uv_timer_t *t)
{
    fixture *f = t->data;
    scheduler_shutdown(f->d.sched, on_shutdown_done, f);
}

/* Daemon shutdown: the running job goes back to the queue, not counted as an
 * interruption, and nothing more starts. */
static void test_shutdown_requeues(void **state)
{
    fixture *f = *state;
    worker_script(f, "echo '{\"type\":\"stage\",\"stage\":\"loading\"}'\nwhile :; do sleep 0.05; done");
    submit(f, "j_1");
    submit(f, "j_2");
    after(f, 300, on_shutdown_timer);
    run(f);
    assert_true(f->shutdown_done);
    store_job j = get_job(f, "j_1");
    assert_string_equal(j.status, "queued");
    assert_int_equal(j.requeues, 0);
    assert_string_equal(j.started_at, "");
    store_job_free(&j);
    j = get_job(f, "j_2");
    assert_string_equal(j.status, "queued");
    store_job_free(&j);
}

static void test_queue_order_and_limit(void **state)
{
    fixture *f = *state;
    /* Each worker records when it ran; a second one running at the same time
     * would find the marker of the first. */
    char body[1024];
    snprintf(body, sizeof body,
             "if [ -e %s/busy ]; then echo overlap >> %s/order; fi\n"
             "touch %s/busy\necho \"$2\" >> %s/order\nsleep 0.1\nrm %s/busy\n"
             "echo '{}' > \"$out/manifest.json\"\necho '{\"type\":\"result\",\"metrics\":{}}'",
             f->dir, f->dir, f->dir, f->dir, f->dir);
    worker_script(f, body);
    submit(f, "j_c");
    submit(f, "j_a");
    submit(f, "j_b");
    run(f);
    char path[128], *order = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/order", f->dir);
    assert_int_equal(perq_read_file(path, 0, &order, &len, NULL), 0);
    assert_string_equal(order, "j_c\nj_a\nj_b\n");
    free(order);
}

static void test_workers_run_in_parallel_up_to_the_limit(void **state)
{
    fixture *f = *state;
    f->d.cfg.workers = 2;
    char body[512];
    snprintf(body, sizeof body,
             "touch %s/started.$2\nfor i in 1 2 3 4 5 6 7 8 9 10; do\n"
             "  n=$(ls %s | grep -c '^started')\n  [ $n -ge 2 ] && break\n  sleep 0.05\ndone\n"
             "echo $n > %s/seen.$2\necho '{}' > \"$out/manifest.json\"\necho '{\"type\":\"result\",\"metrics\":{}}'",
             f->dir, f->dir, f->dir);
    worker_script(f, body);
    submit(f, "j_1");
    submit(f, "j_2");
    run(f);
    char path[128], *seen = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/seen.j_1", f->dir);
    assert_int_equal(perq_read_file(path, 0, &seen, &len, NULL), 0);
    assert_string_equal(seen, "2\n"); /* both were running at once */
    free(seen);
}

static void test_missing_program(void **state)
{
    fixture *f = *state;
    snprintf(f->d.cfg.worker_bin, sizeof f->d.cfg.worker_bin, "%s/no-such-worker", f->dir);
    submit(f, "j_1");
    submit(f, "j_2");
    run(f);
    expect_failed(f, "j_1", "internal", "could not start the worker");
    expect_failed(f, "j_2", "internal", "could not start the worker");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_error_is_the_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_escalates_to_sigkill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_line_is_a_protocol_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_requeues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_order_and_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workers_run_in_parallel_up_to_the_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_program, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
