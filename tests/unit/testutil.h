/* Helpers shared by the unit tests: shared-data paths, temporary directories
 * and deterministic random numbers. Everything is static inline, so a test
 * includes this header (after <cmocka.h>) and nothing is linked twice. */
#ifndef PERQ_TESTUTIL_H
#define PERQ_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perq/fsutil.h"
#include "perq/job.h"
#include "perq/jobspec.h"

/* dir/name in a new string; the caller frees it. */
static inline char *in_dir(const char *dir, const char *name)
{
    char *p;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

/* rel under $PERQ_SHARED (../shared when unset or empty); the caller frees it. */
static inline char *shared_path(const char *rel)
{
    const char *root = getenv("PERQ_SHARED");
    return in_dir(root && *root ? root : "../shared", rel);
}

/* A new empty directory /tmp/perq-<tag>-XXXXXX; the caller frees the name. */
static inline char *test_tmpdir(const char *tag)
{
    char *tmpl;
    assert_true(asprintf(&tmpl, "/tmp/perq-%s-XXXXXX", tag) > 0);
    assert_non_null(mkdtemp(tmpl));
    return tmpl;
}

/* cmocka teardown for a state made by test_tmpdir: removes the tree, frees the name. */
static inline int test_remove_tmpdir(void **state)
{
    int rc = perq_remove_tree(*state, NULL);
    free(*state);
    return rc;
}

/* Marsaglia's xorshift32 (13, 17, 5). Each test file keeps its own state and
 * seed: its tolerances were checked on the numbers that seed gives. */
static inline uint32_t xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* Uniform in [-1, 3), not (-1, 1) as the tests' comments used to say: 24 bits
 * over 2^23 is [0, 2). Kept as is because the tests' data and tolerances were
 * settled on it. */
static inline float xorshift32_float(uint32_t *state)
{
    return ((float)(xorshift32(state) >> 8) / 8388608.0f) * 2.0f - 1.0f;
}

/* Uniform in the open interval (0, 1): never 0, so log() of it is finite. */
static inline double xorshift32_unit(uint32_t *state)
{
    return ((double)(xorshift32(state) >> 8) + 0.5) / 16777216.0;
}

/* xorshift64 (13, 7, 17). */
static inline uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* Parses a job spec written as JSON and runs it (perq_job_run, no reporter).
 * Returns 0, or -1 with err set. *metrics (may be NULL) takes the job's metrics. */
static inline int test_run_spec(const char *spec_json, const perq_job_paths *paths, json_t **metrics,
                                perq_err *err)
{
    json_error_t jerr;
    json_t *doc = json_loads(spec_json, 0, &jerr);
    if (!doc)
        return perq_fail(err, PERQ_E_INVALID, "spec: %s", jerr.text);
    perq_jobspec spec;
    int rc = perq_jobspec_parse(doc, false, &spec, err);
    json_decref(doc);
    json_t *m = NULL;
    if (rc == 0)
        rc = perq_job_run(&spec, paths, NULL, &m, err);
    if (metrics)
        *metrics = m;
    else
        json_decref(m);
    return rc;
}

#endif
