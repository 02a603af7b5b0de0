#include "perq/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int perq_fail(perq_err *err, perq_errcode code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return -1;
}

int perq_fail_errno(perq_err *err, const char *fmt, ...)
{
    int saved = errno;
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < sizeof err->msg)
            snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", strerror(saved));
        err->code = saved == ENOMEM ? PERQ_E_NOMEM : PERQ_E_IO;
    }
    return -1;
}

int perq_err_context(perq_err *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char joined[sizeof err->msg];
    if (snprintf(joined, sizeof joined, "%s: %s", prefix, err->msg) < 0) /* truncation is fine */
        return -1;
    memcpy(err->msg, joined, sizeof err->msg);
    return -1;
}

const char *perq_errcode_name(perq_errcode code)
{
    switch (code) {
    case PERQ_OK: return "ok";
    case PERQ_E_INVALID: return "invalid";
    case PERQ_E_FORMAT: return "format";
    case PERQ_E_UNSUPPORTED: return "unsupported";
    case PERQ_E_IO: return "io";
    case PERQ_E_NOMEM: return "nomem";
    case PERQ_E_CANCELLED: return "cancelled";
    case PERQ_E_INTERNAL: return "internal";
    }
    return "unknown";
}
