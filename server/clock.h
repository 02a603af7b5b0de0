/* Wall-clock time for the store and the API: seconds since the epoch as a
 * double, and RFC 3339 UTC timestamps with milliseconds. */
#ifndef PERQD_CLOCK_H
#define PERQD_CLOCK_H

#define PERQD_TIME_MAX 32

double perqd_now(void);
/* "2024-05-01T12:00:00.123Z" */
void perqd_format_time(double t, char out[PERQD_TIME_MAX]);

#endif
