/* Running one job spec on one model: what `perq quantize` and the worker share.
 * Progress leaves through a reporter, so the same run can print to a terminal
 * or send protocol messages to the daemon. */
#ifndef PERQ_JOB_H
#define PERQ_JOB_H

#include <jansson.h>

#include "perq/error.h"
#include "perq/jobspec.h"

typedef enum { PERQ_LOG_DEBUG, PERQ_LOG_INFO, PERQ_LOG_WARN, PERQ_LOG_ERROR } perq_log_level;

typedef struct perq_reporter {
    void *ctx;
    /* stage: "loading", "calibrating", "permuting", "rotating", "quantizing", "exporting", "evaluating" */
    void (*stage)(void *ctx, const char *stage);
    void (*progress)(void *ctx, long long done, long long total);
    /* data: borrowed, may be NULL */
    void (*event)(void *ctx, perq_log_level level, const char *message, json_t *data);
    /* Polled between units of work; nonzero stops the run with PERQ_E_CANCELLED. */
    int (*cancelled)(void *ctx);
} perq_reporter;

/* Where a job finds its inputs and puts its outputs. Dataset fields of the
 * spec have already been resolved to file paths here. */
typedef struct perq_job_paths {
    const char *model_dir;
    const char *out_dir;         /* created if missing; artifacts appear there complete */
    const char *calibration_text;/* NULL when the spec has no calibration */
    const char *eval_text;       /* NULL when the spec has no eval */
} perq_job_paths;

/* Runs the job; on success *metrics (new reference) holds the figures the job
 * object reports (ppl, timings, sizes). */
int perq_job_run(const perq_jobspec *spec, const perq_job_paths *paths, const perq_reporter *rep,
                 json_t **metrics, perq_err *err);

/* Reporter helpers that tolerate NULL callbacks. */
void perq_report_stage(const perq_reporter *r, const char *stage);
void perq_report_progress(const perq_reporter *r, long long done, long long total);
void perq_report_event(const perq_reporter *r, perq_log_level level, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int perq_report_cancelled(const perq_reporter *r);

#endif
