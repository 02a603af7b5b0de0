#include "perqd.h"

#include <stdarg.h>
#include <stdio.h>

void perqd_wake(perqd *d)
{
    if (d->wake_ready)
        uv_async_send(&d->wake);
}

int perqd_path(const perqd *d, char *buf, size_t size, const char *fmt, ...)
{
    int n = snprintf(buf, size, "%s/", d->cfg.data_dir);
    if (n < 0 || (size_t)n >= size)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, size - (size_t)n, fmt, ap);
    va_end(ap);
    return m < 0 || (size_t)m >= size - (size_t)n ? -1 : 0;
}
