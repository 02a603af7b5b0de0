/* perq-worker (or `perq worker`): one job for perqd, speaking proto/protocol.md.
 *
 *   perq-worker --job-id ID --spec FILE --model-dir DIR --out-dir DIR
 *               [--calibration FILE] [--eval FILE]
 *
 * Standard output carries only protocol messages, one JSON object per line,
 * flushed as written (anything else the process prints to fd 1 is sent to
 * standard error). Standard input is the lifeline: end of file means the
 * daemon is gone, and the worker exits with status 3. SIGTERM asks the job to
 * stop between units of work; a second SIGTERM, or the grace period running
 * out, ends the process at once. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "perq/blas.h"
#include "perq/fsutil.h"
#include "perq/job.h"
#include "perq/jobspec.h"

#define PROTOCOL_VERSION 1
#define EXIT_ORPHANED 3
#define EXIT_TERMINATED (128 + SIGTERM)
#define CANCEL_GRACE_SECONDS 3
#define MAX_LINE (1024 * 1024)
#define PROGRESS_INTERVAL 0.05 /* seconds between progress messages */

static volatile sig_atomic_t cancel_requested;

static void on_sigterm(int sig)
{
    (void)sig;
    if (cancel_requested)
        _exit(EXIT_TERMINATED);
    cancel_requested = 1;
    alarm(CANCEL_GRACE_SECONDS);
}

static void on_alarm(int sig)
{
    (void)sig;
    _exit(EXIT_TERMINATED);
}

/* The daemon never writes to our standard input; end of file (or an error)
 * means it has died. */
static void *watch_lifeline(void *arg)
{
    (void)arg;
    char buf[256];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR))
            _exit(EXIT_ORPHANED);
    }
    return NULL;
}

/* ---- protocol messages ------------------------------------------------------ */

typedef struct channel {
    FILE *out;
    pthread_mutex_t lock;
    double last_progress;
} channel;

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sends msg (consumed) as one line. */
static void send_message(channel *ch, json_t *msg)
{
    if (!msg)
        return;
    char *line = json_dumps(msg, JSON_COMPACT);
    if (line && strlen(line) >= MAX_LINE && json_object_get(msg, "data")) {
        free(line); /* too long for the daemon: the event goes without its data */
        json_object_set_new(msg, "data", json_null());
        line = json_dumps(msg, JSON_COMPACT);
    }
    json_decref(msg);
    if (!line)
        return;
    pthread_mutex_lock(&ch->lock);
    fputs(line, ch->out);
    fputc('\n', ch->out);
    fflush(ch->out);
    pthread_mutex_unlock(&ch->lock);
    free(line);
}

static void msg_stage(void *ctx, const char *stage)
{
    send_message(ctx, json_pack("{ss ss}", "type", "stage", "stage", stage));
}

static void msg_progress(void *ctx, long long done, long long total)
{
    channel *ch = ctx;
    double now = monotonic_seconds();
    if (done != 0 && done < total && now - ch->last_progress < PROGRESS_INTERVAL)
        return;
    ch->last_progress = now;
    send_message(ch, json_pack("{ss sI sI}", "type", "progress", "done", (json_int_t)done, "total",
                               (json_int_t)total));
}

static void msg_event(void *ctx, perq_log_level level, const char *message, json_t *data)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    send_message(ctx, json_pack("{ss ss ss sO?}", "type", "event", "level", levels[level], "message", message,
                                "data", data));
}

static int job_cancelled(void *ctx)
{
    (void)ctx;
    return cancel_requested;
}

static void msg_error(channel *ch, perq_errcode code, const char *detail)
{
    send_message(ch, json_pack("{ss s{ss ss}}", "type", "error", "error", "type", perq_errcode_name(code), "detail",
                               detail));
}

/* ---- setting up -------------------------------------------------------------- */

typedef struct worker_args {
    const char *job_id, *spec, *model_dir, *out_dir, *calibration, *eval;
} worker_args;

static int parse_args(int argc, char **argv, worker_args *a, perq_err *err)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char **slot = !strcmp(o, "--job-id")        ? &a->job_id
                          : !strcmp(o, "--spec")          ? &a->spec
                          : !strcmp(o, "--model-dir")     ? &a->model_dir
                          : !strcmp(o, "--out-dir")       ? &a->out_dir
                          : !strcmp(o, "--calibration")   ? &a->calibration
                          : !strcmp(o, "--eval")          ? &a->eval
                                                          : NULL;
        if (!slot)
            return perq_fail(err, PERQ_E_INVALID, "worker: unknown option '%s'", o);
        if (i + 1 >= argc)
            return perq_fail(err, PERQ_E_INVALID, "worker: missing value after %s", o);
        *slot = argv[++i];
    }
    if (!a->job_id || !a->spec || !a->model_dir || !a->out_dir)
        return perq_fail(err, PERQ_E_INVALID, "worker: --job-id, --spec, --model-dir and --out-dir are required");
    return 0;
}

/* Protocol messages get their own descriptor; fd 1 becomes standard error so
 * that nothing else can corrupt the message stream. */
static FILE *take_stdout(void)
{
    int fd = dup(STDOUT_FILENO);
    if (fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
        return NULL;
    return fdopen(fd, "w");
}

static void install_signals(void)
{
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_sigterm;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
}

static int start_lifeline(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, watch_lifeline, NULL) != 0)
        return -1;
    pthread_detach(t);
    return 0;
}

static int load_spec(const char *path, perq_jobspec *spec, perq_err *err)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return perq_fail(err, PERQ_E_INVALID, "spec %s: %s (line %d)", path, jerr.text, jerr.line);
    int rc = perq_jobspec_parse(doc, false, spec, err);
    json_decref(doc);
    return rc;
}

/* The daemon owns the output folder: what an earlier, interrupted attempt of
 * this job left there goes, so that the manifest describes the folder. */
static int run_job(const worker_args *a, channel *ch, json_t **metrics, perq_err *err)
{
    perq_jobspec spec;
    if (load_spec(a->spec, &spec, err) != 0)
        return -1;
    if (perq_remove_tree(a->out_dir, err) != 0)
        return perq_err_context(err, "clearing %s", a->out_dir);
    perq_reporter rep = {ch, msg_stage, msg_progress, msg_event, job_cancelled};
    perq_job_paths paths = {a->model_dir, a->out_dir, a->calibration, a->eval};
    perq_report_event(&rep, PERQ_LOG_INFO, NULL, "job %s: %s on %s", a->job_id, perq_method_name(spec.method),
                      a->model_dir);
    return perq_job_run(&spec, &paths, &rep, metrics, err);
}

int perq_cmd_worker(int argc, char **argv)
{
    install_signals();
    FILE *out = take_stdout();
    if (!out || start_lifeline() != 0) {
        fprintf(stderr, "perq-worker: cannot set up its standard streams\n");
        return 1;
    }
    channel ch = {out, PTHREAD_MUTEX_INITIALIZER, 0};
    send_message(&ch, json_pack("{ss si si ss?}", "type", "hello", "version", PROTOCOL_VERSION, "pid", (int)getpid(),
                                "blas_core", perq_blas_core()));

    worker_args a;
    perq_err err = {0};
    json_t *metrics = NULL;
    if (parse_args(argc, argv, &a, &err) != 0 || run_job(&a, &ch, &metrics, &err) != 0) {
        fprintf(stderr, "perq-worker: %s: %s\n", perq_errcode_name(err.code), err.msg);
        msg_error(&ch, err.code, err.msg);
        return 1;
    }
    send_message(&ch, json_pack("{ss so}", "type", "result", "metrics", metrics));
    return 0;
}
