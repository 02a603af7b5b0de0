/* Reporter helpers: every callback of a perq_reporter is optional. */
#include "perq/job.h"

#include <stdarg.h>
#include <stdio.h>

void perq_report_stage(const perq_reporter *r, const char *stage)
{
    if (r && r->stage)
        r->stage(r->ctx, stage);
}

void perq_report_progress(const perq_reporter *r, long long done, long long total)
{
    if (r && r->progress)
        r->progress(r->ctx, done, total);
}

void perq_report_event(const perq_reporter *r, perq_log_level level, json_t *data, const char *fmt, ...)
{
    if (!r || !r->event)
        return;
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    r->event(r->ctx, level, message, data);
}

int perq_report_cancelled(const perq_reporter *r)
{
    return r && r->cancelled && r->cancelled(r->ctx);
}
