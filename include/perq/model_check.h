/* Validation of an uploaded model folder: everything a job will rely on,
 * each problem reported separately so that a user can fix them all at once. */
#ifndef PERQ_MODEL_CHECK_H
#define PERQ_MODEL_CHECK_H

#include <stddef.h>

typedef struct perq_problems {
    char **items;
    size_t n, cap;
} perq_problems;

void perq_problems_add(perq_problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void perq_problems_free(perq_problems *p);

/* Checks config.json (supported architecture, sane sizes), every safetensors
 * header, that each expected tensor is present once with its shape and a float
 * dtype, and tokenizer.json. Returns the number of problems found (0: valid). */
size_t perq_model_check(const char *dir, perq_problems *out);

#endif
