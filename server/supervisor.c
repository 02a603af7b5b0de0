#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perq/fsutil.h"

/* After the process has exited, how long its pipes may stay open (a
 * grandchild holding them, say) before the job is settled anyway. */
#define DRAIN_MS 2000
/* Progress is written to the store at most this often (and at each stage
 * change, and at the end). */
#define PROGRESS_MS 250

struct worker {
    worker_options o;
    char job_id[PERQD_ID_MAX];
    char out_dir[PATH_MAX];
    uv_process_t proc;
    uv_pipe_t in, out, err;
    uv_timer_t timer;          /* kill grace, then the drain deadline */
    int open_handles;
    int log_fd;

    char *line;                /* stdout not yet split into lines */
    size_t line_len, line_cap;

    /* what the worker said */
    bool got_result, got_error;
    char *metrics;             /* JSON text of result.metrics */
    char error_type[32];
    char *error_detail;
    char protocol_error[256];
    int64_t done, total;
    bool progress_dirty;
    uint64_t progress_written_ms;
    unsigned events;

    /* how it ended */
    worker_stop_reason stop;
    bool exited, out_eof, err_eof, settled;
    int64_t exit_status;
    int term_signal;
};

static const char *const stages[] = {"loading",    "calibrating", "permuting", "rotating",
                                     "quantizing", "exporting",   "evaluating"};

const char *worker_job_id(const worker *w) { return w->job_id; }
int worker_pid(const worker *w) { return w->proc.pid; }

/* Notes for people go to worker.log, beside the worker's own stderr. */
static void log_note(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_note(worker *w, const char *fmt, ...)
{
    if (w->log_fd < 0)
        return;
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "[perqd] ");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    perq_write_all(w->log_fd, buf, (size_t)n, NULL);
}

static void event(worker *w, const char *level, const char *message, const char *data)
{
    perq_err err = {0};
    if (store_event_add(w->o.store, w->job_id, level, NULL, message, data, &err) != 0)
        fprintf(stderr, "perqd: job %s: %s\n", w->job_id, err.msg);
}

static void flush_progress(worker *w)
{
    if (!w->progress_dirty)
        return;
    perq_err err = {0};
    if (store_job_set_progress(w->o.store, w->job_id, w->done, w->total, &err) != 0)
        fprintf(stderr, "perqd: job %s: %s\n", w->job_id, err.msg);
    w->progress_dirty = false;
    w->progress_written_ms = uv_now(w->o.loop);
}

/* ---- protocol messages --------------------------------------------------- */

static void protocol_violation(worker *w, const char *what)
{
    if (!w->protocol_error[0])
        snprintf(w->protocol_error, sizeof w->protocol_error, "protocol error: %s", what);
    log_note(w, "%s", w->protocol_error);
    worker_stop(w, WORKER_PROTOCOL);
}

static void on_stage(worker *w, json_t *msg)
{
    const char *stage = json_string_value(json_object_get(msg, "stage"));
    bool known = false;
    for (size_t i = 0; stage && i < sizeof stages / sizeof stages[0]; i++)
        known = known || strcmp(stage, stages[i]) == 0;
    if (!known) {
        log_note(w, "ignoring an unknown stage");
        return;
    }
    flush_progress(w);
    w->done = w->total = 0;
    perq_err err = {0};
    if (store_job_set_stage(w->o.store, w->job_id, stage, &err) != 0)
        fprintf(stderr, "perqd: job %s: %s\n", w->job_id, err.msg);
    char message[64];
    snprintf(message, sizeof message, "stage %s", stage);
    event(w, "info", message, NULL);
}

static void on_progress(worker *w, json_t *msg)
{
    json_t *done = json_object_get(msg, "done"), *total = json_object_get(msg, "total");
    if (!json_is_integer(done) || !json_is_integer(total) || json_integer_value(done) < 0 ||
        json_integer_value(total) < 0)
        return;
    w->done = json_integer_value(done);
    w->total = json_integer_value(total);
    w->progress_dirty = true;
    if (uv_now(w->o.loop) - w->progress_written_ms >= PROGRESS_MS || w->done >= w->total)
        flush_progress(w);
}

static void on_event(worker *w, json_t *msg)
{
    const char *level = json_string_value(json_object_get(msg, "level"));
    const char *message = json_string_value(json_object_get(msg, "message"));
    json_t *data = json_object_get(msg, "data");
    if (!level || (strcmp(level, "debug") != 0 && strcmp(level, "info") != 0 && strcmp(level, "warn") != 0 &&
                   strcmp(level, "error") != 0))
        level = "info";
    if (!message)
        message = "";
    if (++w->events > WORKER_MAX_EVENTS) {
        if (w->events == WORKER_MAX_EVENTS + 1)
            event(w, "warn", "the worker sent too many events; the rest are dropped", NULL);
        return;
    }
    char *data_text = json_is_object(data) ? json_dumps(data, JSON_COMPACT) : NULL;
    event(w, level, message, data_text);
    free(data_text);
}

static void on_hello(worker *w, json_t *msg)
{
    json_t *version = json_object_get(msg, "version");
    char message[128];
    snprintf(message, sizeof message, "worker pid %d says hello (protocol %lld)", w->proc.pid,
             (long long)json_integer_value(version));
    char *data = json_dumps(msg, JSON_COMPACT);
    event(w, "debug", message, data);
    free(data);
    if (json_integer_value(version) != 1)
        log_note(w, "the worker speaks protocol version %lld; this daemon knows version 1",
                 (long long)json_integer_value(version));
}

static void on_result(worker *w, json_t *msg)
{
    json_t *metrics = json_object_get(msg, "metrics");
    free(w->metrics);
    w->metrics = json_dumps(json_is_object(metrics) ? metrics : json_object(), JSON_COMPACT);
    w->got_result = true;
}

static void on_error(worker *w, json_t *msg)
{
    json_t *e = json_object_get(msg, "error");
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *detail = json_string_value(json_object_get(e, "detail"));
    snprintf(w->error_type, sizeof w->error_type, "%s", type ? type : "internal");
    free(w->error_detail);
    w->error_detail = strdup(detail ? detail : "the worker reported an error without detail");
    w->got_error = true;
}

static void handle_line(worker *w, const char *line, size_t len)
{
    if (len == 0)
        return;
    json_t *msg = json_loadb(line, len, 0, NULL);
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!json_is_object(msg) || !type) {
        log_note(w, "ignoring a stdout line that is not a protocol message: %.200s", line);
        json_decref(msg);
        return;
    }
    if (strcmp(type, "hello") == 0)
        on_hello(w, msg);
    else if (strcmp(type, "stage") == 0)
        on_stage(w, msg);
    else if (strcmp(type, "progress") == 0)
        on_progress(w, msg);
    else if (strcmp(type, "event") == 0)
        on_event(w, msg);
    else if (strcmp(type, "result") == 0)
        on_result(w, msg);
    else if (strcmp(type, "error") == 0)
        on_error(w, msg);
    /* other types: a newer worker may say more */
    json_decref(msg);
}

/* Splits what arrived on stdout into lines. */
static void take_output(worker *w, const char *data, size_t n)
{
    if (w->protocol_error[0])
        return;
    if (w->line_len + n > w->line_cap) {
        size_t want = w->line_cap ? w->line_cap : 4096;
        while (want < w->line_len + n)
            want *= 2;
        if (want > WORKER_LINE_MAX + 65536)
            want = WORKER_LINE_MAX + 65536;
        char *grown = want >= w->line_len + n ? realloc(w->line, want) : NULL;
        if (!grown) {
            protocol_violation(w, "a message line is longer than 1 MiB");
            return;
        }
        w->line = grown;
        w->line_cap = want;
    }
    memcpy(w->line + w->line_len, data, n);
    w->line_len += n;
    size_t start = 0;
    for (size_t i = w->line_len - n; i < w->line_len; i++) {
        if (w->line[i] != '\n')
            continue;
        w->line[i] = '\0';
        handle_line(w, w->line + start, i - start);
        start = i + 1;
    }
    memmove(w->line, w->line + start, w->line_len - start);
    w->line_len -= start;
    if (w->line_len > WORKER_LINE_MAX)
        protocol_violation(w, "a message line is longer than 1 MiB");
}

/* ---- the end ------------------------------------------------------------- */

static void free_worker(worker *w)
{
    if (w->log_fd >= 0)
        close(w->log_fd);
    free(w->line);
    free(w->metrics);
    free(w->error_detail);
    free(w);
}

static void on_closed(uv_handle_t *h)
{
    worker *w = h->data;
    if (--w->open_handles > 0)
        return;
    if (w->o.on_exit)
        w->o.on_exit(w, w->o.ctx);
    free_worker(w);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_closed);
}

static void how_it_ended(const worker *w, char *buf, size_t size)
{
    if (w->term_signal) {
        const char *name = sigabbrev_np(w->term_signal);
        snprintf(buf, size, "worker killed by signal %d%s%s", w->term_signal, name ? " SIG" : "", name ? name : "");
    } else if (w->exit_status == 0) {
        snprintf(buf, size, "worker exited with status 0 %s", w->got_result ? "after its result" : "without a result");
    } else {
        snprintf(buf, size, "worker exited with status %lld", (long long)w->exit_status);
    }
}

static bool has_manifest(const worker *w)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/manifest.json", w->out_dir);
    return access(path, R_OK) == 0;
}

/* The job's final state, from how the worker ended and what it said. */
static void settle(worker *w)
{
    if (w->settled)
        return;
    w->settled = true;
    if (w->line_len > 0 && !w->protocol_error[0]) /* a last line without its newline */
        handle_line(w, w->line, w->line_len);
    flush_progress(w);

    bool clean_exit = w->exited && w->exit_status == 0 && w->term_signal == 0;
    bool succeeded = clean_exit && w->got_result && !w->protocol_error[0] && w->stop != WORKER_CANCEL;
    char how[128];
    how_it_ended(w, how, sizeof how);
    perq_err err = {0};
    store_result rc;
    if (succeeded && !has_manifest(w)) {
        rc = store_job_finish(w->o.store, w->job_id, "failed", "worker",
                              "the worker reported success but wrote no manifest.json", NULL, &err);
    } else if (succeeded) {
        rc = store_job_finish(w->o.store, w->job_id, "succeeded", NULL, NULL, w->metrics, &err);
    } else if (w->stop == WORKER_CANCEL) {
        rc = store_job_finish(w->o.store, w->job_id, "cancelled", "cancelled", "cancelled by request", NULL, &err);
    } else if (w->stop == WORKER_SHUTDOWN) {
        rc = store_job_requeue(w->o.store, w->job_id, "re-queued: the daemon shut down while the job ran", false,
                               &err);
    } else if (w->protocol_error[0]) {
        rc = store_job_finish(w->o.store, w->job_id, "failed", "protocol", w->protocol_error, NULL, &err);
    } else if (w->got_error) {
        rc = store_job_finish(w->o.store, w->job_id, "failed", w->error_type, w->error_detail, NULL, &err);
    } else {
        rc = store_job_finish(w->o.store, w->job_id, "failed", "worker", how, NULL, &err);
    }
    if (rc == STORE_ERROR)
        fprintf(stderr, "perqd: job %s: %s\n", w->job_id, err.msg);
    if (!succeeded)
        atomic_fetch_add(&w->o.metrics->workers_failed, 1);
    log_note(w, "%s", how);

    uv_timer_stop(&w->timer);
    close_handle((uv_handle_t *)&w->proc);
    close_handle((uv_handle_t *)&w->in);
    close_handle((uv_handle_t *)&w->out);
    close_handle((uv_handle_t *)&w->err);
    close_handle((uv_handle_t *)&w->timer);
}

static void maybe_settle(worker *w)
{
    if (w->exited && w->out_eof && w->err_eof)
        settle(w);
}

static void on_drain_deadline(uv_timer_t *t)
{
    worker *w = t->data;
    log_note(w, "the worker's pipes stayed open after it exited; settling the job anyway");
    settle(w);
}

static void on_process_exit(uv_process_t *p, int64_t status, int signal)
{
    worker *w = p->data;
    w->exited = true;
    w->exit_status = status;
    w->term_signal = signal;
    if (w->out_eof && w->err_eof)
        settle(w);
    else
        uv_timer_start(&w->timer, on_drain_deadline, DRAIN_MS, 0);
}

/* The worker leads its own process group (UV_PROCESS_DETACHED): signal the
 * group, so that any process it started stops too and lets go of its pipes. */
static void signal_worker(worker *w, int sig)
{
    if (kill(-w->proc.pid, sig) != 0)
        uv_process_kill(&w->proc, sig);
}

static void on_grace_over(uv_timer_t *t)
{
    worker *w = t->data;
    if (!w->exited) {
        log_note(w, "the worker did not stop within the grace period: SIGKILL");
        signal_worker(w, SIGKILL);
    }
}

void worker_stop(worker *w, worker_stop_reason why)
{
    if (w->stop != WORKER_RUN || w->settled)
        return;
    w->stop = why;
    if (w->exited)
        return;
    signal_worker(w, SIGTERM);
    uint64_t grace_ms = w->o.kill_grace > 0 ? (uint64_t)(w->o.kill_grace * 1000.0) : 0;
    uv_timer_start(&w->timer, on_grace_over, grace_ms, 0);
}

/* ---- reading the pipes --------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char chunk[65536]; /* the loop thread only; each read is consumed before the next */
    *buf = uv_buf_init(chunk, sizeof chunk);
}

static void on_stdout(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    worker *w = s->data;
    if (n > 0) {
        take_output(w, buf->base, (size_t)n);
    } else if (n < 0) {
        uv_read_stop(s);
        w->out_eof = true;
        maybe_settle(w);
    }
}

static void on_stderr(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    worker *w = s->data;
    if (n > 0) {
        if (w->log_fd >= 0)
            perq_write_all(w->log_fd, buf->base, (size_t)n, NULL);
    } else if (n < 0) {
        uv_read_stop(s);
        w->err_eof = true;
        maybe_settle(w);
    }
}

/* ---- start --------------------------------------------------------------- */

int worker_start(const worker_options *o, const char *job_id, worker **out, perq_err *err)
{
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    w->o = *o;
    w->log_fd = -1;
    snprintf(w->job_id, sizeof w->job_id, "%s", job_id);
    snprintf(w->out_dir, sizeof w->out_dir, "%s", o->out_dir);

    char log_path[PATH_MAX + 16];
    snprintf(log_path, sizeof log_path, "%s/worker.log", o->job_dir);
    w->log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w->log_fd < 0) {
        perq_fail_errno(err, "opening %s", log_path);
        free_worker(w);
        return -1;
    }

    const char *argv[16];
    int argc = 0;
    argv[argc++] = o->program;
    argv[argc++] = "--job-id", argv[argc++] = job_id;
    argv[argc++] = "--spec", argv[argc++] = o->spec_path;
    argv[argc++] = "--model-dir", argv[argc++] = o->model_dir;
    argv[argc++] = "--out-dir", argv[argc++] = o->out_dir;
    if (o->calibration)
        argv[argc++] = "--calibration", argv[argc++] = o->calibration;
    if (o->eval)
        argv[argc++] = "--eval", argv[argc++] = o->eval;
    argv[argc] = NULL;

    uv_pipe_init(o->loop, &w->in, 0);
    uv_pipe_init(o->loop, &w->out, 0);
    uv_pipe_init(o->loop, &w->err, 0);
    uv_timer_init(o->loop, &w->timer);
    w->in.data = w->out.data = w->err.data = w->timer.data = w->proc.data = w;
    w->open_handles = 5;

    uv_stdio_container_t stdio[3] = {
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&w->in},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&w->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&w->err},
    };
    uv_process_options_t po = {
        .exit_cb = on_process_exit,
        .file = o->program,
        .args = (char **)argv,
        .cwd = o->job_dir,
        .flags = UV_PROCESS_DETACHED, /* its own process group: a terminal's ^C is for the daemon */
        .stdio_count = 3,
        .stdio = stdio,
    };
    int rc = uv_spawn(o->loop, &w->proc, &po);
    if (rc != 0) {
        perq_fail(err, PERQ_E_IO, "starting %s: %s", o->program, uv_strerror(rc));
        /* The handles were initialised: close them and let on_closed free w,
         * without telling the scheduler about a worker it never had. */
        w->settled = true;
        w->o.on_exit = NULL;
        close_handle((uv_handle_t *)&w->proc);
        close_handle((uv_handle_t *)&w->in);
        close_handle((uv_handle_t *)&w->out);
        close_handle((uv_handle_t *)&w->err);
        close_handle((uv_handle_t *)&w->timer);
        return -1;
    }
    uv_read_start((uv_stream_t *)&w->out, on_alloc, on_stdout);
    uv_read_start((uv_stream_t *)&w->err, on_alloc, on_stderr);
    atomic_fetch_add(&o->metrics->workers_started, 1);
    log_note(w, "started %s for job %s, pid %d", o->program, job_id, w->proc.pid);
    *out = w;
    return 0;
}
