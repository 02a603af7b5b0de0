/* Counters for /metrics, bumped from any thread. */
#ifndef PERQD_METRICS_H
#define PERQD_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#define PERQD_STATUS_CODES 600

typedef struct perqd_metrics {
    atomic_uint_fast64_t http_responses[PERQD_STATUS_CODES]; /* by status code */
    atomic_uint_fast64_t upload_bytes;       /* file bodies received (models and datasets) */
    atomic_uint_fast64_t download_bytes;     /* artifact bytes sent */
    atomic_int workers_running;
    atomic_uint_fast64_t workers_started;
    atomic_uint_fast64_t workers_failed;     /* ended without a result (crash, kill, error) */
} perqd_metrics;

#endif
