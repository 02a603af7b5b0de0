/* A request body streamed into a file: hashed as it arrives, invisible under
 * its final name until committed, removed if anything goes wrong. */
#ifndef PERQD_UPLOAD_H
#define PERQD_UPLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "perq/error.h"
#include "perq/fsutil.h"

typedef struct upload {
    perq_atomic_file file;
    perq_sha256 *sha;
    uint64_t bytes;
    bool open;          /* a temporary file exists and is ours to remove */
    char sha256[65];    /* set by upload_finish */
} upload;

/* Creates the temporary file beside path. */
int upload_open(upload *u, const char *path, perq_err *err);
int upload_write(upload *u, const void *data, size_t len, perq_err *err);
/* All bytes received: sets u->sha256 and flushes the data to disk, so that
 * upload_commit (done under the store's lock) is only a rename. */
int upload_finish(upload *u, perq_err *err);
/* Renames the file into place. A store_commit_fn (ctx is the upload). */
int upload_commit(void *u, perq_err *err);
/* Removes the temporary file, if any; harmless after commit. */
void upload_abort(upload *u);

#endif
