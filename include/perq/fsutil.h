/* Files that appear only complete, folders, digests. */
#ifndef PERQ_FSUTIL_H
#define PERQ_FSUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "perq/error.h"

/* mkdir -p */
int perq_mkdirs(const char *path, perq_err *err);
/* Writes bytes to path via "path.tmp.<pid>", fsync, rename. */
int perq_write_file_atomic(const char *path, const void *data, size_t len, perq_err *err);
/* Copies a file, through a temporary name. */
int perq_copy_file(const char *src, const char *dst, perq_err *err);
/* Reads a whole file into a new NUL-terminated buffer (caller frees). max_len 0: no limit. */
int perq_read_file(const char *path, size_t max_len, char **data, size_t *len, perq_err *err);
/* rm -rf (does not follow symlinks). */
int perq_remove_tree(const char *path, perq_err *err);

/* SHA-256, hex lowercase (65 bytes with the NUL). */
typedef struct perq_sha256 perq_sha256;
perq_sha256 *perq_sha256_new(void);
void perq_sha256_update(perq_sha256 *s, const void *data, size_t len);
void perq_sha256_final_hex(perq_sha256 *s, char hex[65]); /* also frees s */
void perq_sha256_hex(const void *data, size_t len, char hex[65]);
int perq_sha256_file(const char *path, char hex[65], uint64_t *bytes, perq_err *err);

#endif
