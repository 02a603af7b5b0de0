#include "upload.h"

#include <string.h>
#include <unistd.h>

int upload_open(upload *u, const char *path, perq_err *err)
{
    memset(u, 0, sizeof *u);
    u->sha = perq_sha256_new();
    if (!u->sha)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (perq_atomic_open(&u->file, path, err) != 0) {
        char discard[65];
        perq_sha256_final_hex(u->sha, discard);
        u->sha = NULL;
        return -1;
    }
    u->open = true;
    return 0;
}

int upload_write(upload *u, const void *data, size_t len, perq_err *err)
{
    perq_sha256_update(u->sha, data, len);
    u->bytes += len;
    return perq_atomic_write(&u->file, data, len, err);
}

int upload_finish(upload *u, perq_err *err)
{
    if (u->sha) {
        perq_sha256_final_hex(u->sha, u->sha256);
        u->sha = NULL;
    }
    if (fdatasync(u->file.fd) != 0)
        return perq_fail_errno(err, "flushing the upload to disk");
    return 0;
}

int upload_commit(void *ctx, perq_err *err)
{
    upload *u = ctx;
    int rc = perq_atomic_commit(&u->file, err);
    u->open = false;
    return rc;
}

void upload_abort(upload *u)
{
    if (u->sha) {
        char discard[65];
        perq_sha256_final_hex(u->sha, discard);
        u->sha = NULL;
    }
    if (u->open) {
        perq_atomic_abort(&u->file);
        u->open = false;
    }
}
