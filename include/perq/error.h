/* Errors are values: a code and a message, filled in where the failure is seen
 * and prefixed with context by each caller on the way up. */
#ifndef PERQ_ERROR_H
#define PERQ_ERROR_H

#include <stddef.h>

typedef enum {
    PERQ_OK = 0,
    PERQ_E_INVALID,      /* bad argument or bad input from a user */
    PERQ_E_FORMAT,       /* malformed file contents (header, JSON, ...) */
    PERQ_E_UNSUPPORTED,  /* well-formed but not handled (architecture, dtype, ...) */
    PERQ_E_IO,           /* the operating system said no */
    PERQ_E_NOMEM,
    PERQ_E_CANCELLED,
    PERQ_E_INTERNAL
} perq_errcode;

typedef struct perq_err {
    perq_errcode code;
    char msg[1024];
} perq_err;

/* Sets err (when not NULL) and returns -1, so that `return perq_fail(...)` reads naturally. */
int perq_fail(perq_err *err, perq_errcode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same, appending ": strerror(errno)". */
int perq_fail_errno(perq_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "context: " to the message already in err; returns -1. */
int perq_err_context(perq_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *perq_errcode_name(perq_errcode code);

#endif
