/* perq quantize --model DIR --out DIR --spec FILE|-
 * Runs a job spec locally and writes the artifacts a job would write. The
 * spec's dataset fields are file paths here and its model may be omitted.
 * Progress goes to standard error; on success the job's metrics (JSON) go to
 * standard output. Ctrl-C cancels between tensors. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "perq/job.h"
#include "perq/jobspec.h"

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: perq quantize --model DIR --out DIR --spec FILE|-\n"
            "\n"
            "Runs a job spec (see API.md) on a local model folder and writes the\n"
            "artifacts into --out (created; must be empty). Dataset fields of the spec\n"
            "are file paths; \"model\" may be omitted. --spec - reads standard input.\n"
            "Progress goes to standard error, the job's metrics (JSON) to standard output.\n");
}

/* ---- a reporter for a terminal ----------------------------------------------- */

typedef struct term {
    int tty;
    int last_decile;
    const char *stage;
} term;

static void term_stage(void *ctx, const char *stage)
{
    term *t = ctx;
    if (t->tty && t->stage)
        fputc('\n', stderr);
    t->stage = stage;
    t->last_decile = -1;
    fprintf(stderr, "perq: %s\n", stage);
}

static void term_progress(void *ctx, long long done, long long total)
{
    term *t = ctx;
    if (total <= 0)
        return;
    int decile = (int)(10 * done / total);
    if (t->tty) {
        fprintf(stderr, "\r  %lld/%lld", done, total);
    } else if (decile != t->last_decile) {
        fprintf(stderr, "  %s %lld/%lld\n", t->stage ? t->stage : "", done, total);
        t->last_decile = decile;
    }
}

static void term_event(void *ctx, perq_log_level level, const char *message, json_t *data)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    term *t = ctx;
    (void)data;
    if (level == PERQ_LOG_DEBUG)
        return;
    fprintf(stderr, "%sperq: [%s] %s\n", t->tty ? "\n" : "", names[level], message);
}

static int term_cancelled(void *ctx)
{
    (void)ctx;
    return interrupted;
}

/* ---- the command ------------------------------------------------------------ */

static json_t *read_spec(const char *path, perq_err *err)
{
    json_error_t jerr;
    int stdin_spec = !strcmp(path, "-");
    json_t *doc = stdin_spec ? json_loadf(stdin, JSON_REJECT_DUPLICATES, &jerr)
                             : json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        perq_fail(err, PERQ_E_INVALID, "spec %s: %s (line %d)", stdin_spec ? "(stdin)" : path, jerr.text,
                  jerr.line);
    return doc;
}

int perq_cmd_quantize(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *spec_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        const char **slot = !strcmp(a, "--model") ? &model : !strcmp(a, "--out") ? &out
                          : !strcmp(a, "--spec")  ? &spec_path : NULL;
        if (!slot || i + 1 >= argc) {
            fprintf(stderr, "perq quantize: %s '%s'\n", slot ? "missing value after" : "unknown option", a);
            usage(stderr);
            return 2;
        }
        *slot = argv[++i];
    }
    if (!model || !out || !spec_path) {
        usage(stderr);
        return 2;
    }

    perq_err err = {0};
    perq_jobspec spec;
    json_t *doc = read_spec(spec_path, &err);
    int rc = doc ? perq_jobspec_parse(doc, false, &spec, &err) : -1;
    json_decref(doc);
    if (rc != 0) {
        fprintf(stderr, "perq quantize: %s\n", err.msg);
        return 1;
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    term t = {isatty(STDERR_FILENO), -1, NULL};
    perq_reporter rep = {&t, term_stage, term_progress, term_event, term_cancelled};
    perq_job_paths paths = {model, out, spec.calibration.present ? spec.calibration.dataset : NULL,
                            spec.eval.present ? spec.eval.dataset : NULL};
    json_t *metrics = NULL;
    rc = perq_job_run(&spec, &paths, &rep, &metrics, &err);
    if (t.tty)
        fputc('\n', stderr);
    if (rc != 0) {
        fprintf(stderr, "perq quantize: %s: %s\n", perq_errcode_name(err.code), err.msg);
        return 1;
    }
    fprintf(stderr, "perq: artifacts in %s\n", out);
    json_dumpf(metrics, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(metrics);
    return 0;
}
