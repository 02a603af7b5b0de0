#include "clock.h"

#include <stdio.h>
#include <time.h>

double perqd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void perqd_format_time(double t, char out[PERQD_TIME_MAX])
{
    time_t secs = (time_t)t;
    unsigned millis = (unsigned)((t - (double)secs) * 1000.0) % 1000u;
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, PERQD_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, PERQD_TIME_MAX - n, ".%03uZ", millis);
}
