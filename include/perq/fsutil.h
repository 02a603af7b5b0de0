/* Files that appear only complete, folders, digests. */
#ifndef PERQ_FSUTIL_H
#define PERQ_FSUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "perq/error.h"

/* mkdir -p */
int perq_mkdirs(const char *path, perq_err *err);
/* Writes bytes to path via "path.tmp.<pid>.<n>", fsync, rename. */
int perq_write_file_atomic(const char *path, const void *data, size_t len, perq_err *err);
/* Copies a file, through a temporary name. */
int perq_copy_file(const char *src, const char *dst, perq_err *err);
/* Reads a whole file into a new NUL-terminated buffer (caller frees). max_len 0: no limit. */
int perq_read_file(const char *path, size_t max_len, char **data, size_t *len, perq_err *err);
/* rm -rf (does not follow symlinks). */
int perq_remove_tree(const char *path, perq_err *err);

/* A file written in steps that appears under its name only once committed:
 * open creates "path.tmp.<pid>.<n>" in the same folder; commit fsyncs it,
 * renames it over path and fsyncs the folder, and on failure removes it.
 * abort gives up a file not committed (after a failed write, say) and
 * removes the temporary file; it is harmless after commit. */
typedef struct perq_atomic_file {
    int fd;
    char *path;
    char *tmp_path;
} perq_atomic_file;

int perq_atomic_open(perq_atomic_file *f, const char *path, perq_err *err);
/* Writes all len bytes (in large write() calls, retrying short writes). */
int perq_atomic_write(perq_atomic_file *f, const void *data, size_t len, perq_err *err);
int perq_atomic_commit(perq_atomic_file *f, perq_err *err);
void perq_atomic_abort(perq_atomic_file *f);
/* write() until all len bytes are written, retrying short writes and EINTR. */
int perq_write_all(int fd, const void *data, size_t len, perq_err *err);
/* fsync of the folder holding path, so that a rename in it is durable. */
int perq_fsync_parent(const char *path, perq_err *err);

/* SHA-256, hex lowercase (65 bytes with the NUL). */
typedef struct perq_sha256 perq_sha256;
perq_sha256 *perq_sha256_new(void);
void perq_sha256_update(perq_sha256 *s, const void *data, size_t len);
void perq_sha256_final_hex(perq_sha256 *s, char hex[65]); /* also frees s */
void perq_sha256_hex(const void *data, size_t len, char hex[65]);
int perq_sha256_file(const char *path, char hex[65], uint64_t *bytes, perq_err *err);

#endif
