#include "perq/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Linux transfers at most about 2 GiB per write(); stay well under it. */
#define MAX_WRITE_CHUNK ((size_t)1 << 30)
#define COPY_CHUNK ((size_t)1 << 20)

int perq_mkdirs(const char *path, perq_err *err)
{
    if (path[0] == '\0')
        return perq_fail(err, PERQ_E_INVALID, "creating folder: empty path");
    char *p = strdup(path);
    if (!p)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    /* Create each prefix ending before a '/', then the whole path. */
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            perq_fail_errno(err, "creating folder %s", p);
            free(p);
            return -1;
        }
        *s = saved;
        if (saved == '\0')
            break;
    }
    free(p);
    struct stat st;
    if (stat(path, &st) != 0)
        return perq_fail_errno(err, "creating folder %s", path);
    if (!S_ISDIR(st.st_mode))
        return perq_fail(err, PERQ_E_IO, "creating folder %s: a file of that name exists", path);
    return 0;
}

int perq_write_all(int fd, const void *data, size_t len, perq_err *err)
{
    const char *p = data;
    while (len > 0) {
        size_t want = len < MAX_WRITE_CHUNK ? len : MAX_WRITE_CHUNK;
        ssize_t n = write(fd, p, want);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return perq_fail_errno(err, "write");
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int perq_fsync_parent(const char *path, perq_err *err)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (!dir)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        perq_fail_errno(err, "syncing folder %s", dir);
        if (fd >= 0)
            close(fd);
        free(dir);
        return -1;
    }
    close(fd);
    free(dir);
    return 0;
}

int perq_atomic_open(perq_atomic_file *f, const char *path, perq_err *err)
{
    static atomic_uint counter;
    f->fd = -1;
    f->tmp_path = NULL;
    f->path = strdup(path);
    if (asprintf(&f->tmp_path, "%s.tmp.%ld.%u", path, (long)getpid(),
                 atomic_fetch_add(&counter, 1)) < 0)
        f->tmp_path = NULL;
    if (!f->path || !f->tmp_path) {
        perq_atomic_abort(f);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        perq_fail_errno(err, "creating %s", f->tmp_path);
        free(f->tmp_path); /* not ours to unlink: creating it failed */
        f->tmp_path = NULL;
        perq_atomic_abort(f);
        return -1;
    }
    return 0;
}

int perq_atomic_write(perq_atomic_file *f, const void *data, size_t len, perq_err *err)
{
    if (perq_write_all(f->fd, data, len, err) != 0)
        return perq_err_context(err, "writing %s", f->tmp_path);
    return 0;
}

int perq_atomic_commit(perq_atomic_file *f, perq_err *err)
{
    if (fsync(f->fd) != 0) {
        perq_fail_errno(err, "syncing %s", f->tmp_path);
        perq_atomic_abort(f);
        return -1;
    }
    int rc = close(f->fd);
    f->fd = -1;
    if (rc != 0) {
        perq_fail_errno(err, "closing %s", f->tmp_path);
        perq_atomic_abort(f);
        return -1;
    }
    if (rename(f->tmp_path, f->path) != 0) {
        perq_fail_errno(err, "renaming %s to %s", f->tmp_path, f->path);
        perq_atomic_abort(f);
        return -1;
    }
    free(f->tmp_path);
    f->tmp_path = NULL;
    rc = perq_fsync_parent(f->path, err);
    perq_atomic_abort(f);
    return rc;
}

void perq_atomic_abort(perq_atomic_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    if (f->tmp_path)
        unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->path);
    f->fd = -1;
    f->tmp_path = NULL;
    f->path = NULL;
}

int perq_write_file_atomic(const char *path, const void *data, size_t len, perq_err *err)
{
    perq_atomic_file f;
    if (perq_atomic_open(&f, path, err) != 0)
        return -1;
    if (perq_atomic_write(&f, data, len, err) != 0) {
        perq_atomic_abort(&f);
        return -1;
    }
    return perq_atomic_commit(&f, err);
}

int perq_copy_file(const char *src, const char *dst, perq_err *err)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return perq_fail_errno(err, "opening %s", src);
    char *buf = malloc(COPY_CHUNK);
    perq_atomic_file out;
    if (!buf) {
        close(in);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    if (perq_atomic_open(&out, dst, err) != 0) {
        free(buf);
        close(in);
        return -1;
    }
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, COPY_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = perq_fail_errno(err, "reading %s", src);
            break;
        }
        if (n == 0)
            break;
        if ((rc = perq_atomic_write(&out, buf, (size_t)n, err)) != 0)
            break;
    }
    free(buf);
    close(in);
    if (rc != 0) {
        perq_atomic_abort(&out);
        return -1;
    }
    return perq_atomic_commit(&out, err);
}

int perq_read_file(const char *path, size_t max_len, char **data, size_t *len, perq_err *err)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return perq_fail_errno(err, "opening %s", path);
    size_t limit = max_len ? max_len : SIZE_MAX - 1;
    struct stat st;
    size_t cap = 4096;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        if ((uint64_t)st.st_size > limit) {
            close(fd);
            return perq_fail(err, PERQ_E_INVALID, "%s is %lld bytes, more than the limit of %zu",
                             path, (long long)st.st_size, limit);
        }
        cap = (size_t)st.st_size + 2; /* the NUL, and room to see end of file without growing */
    }
    char *buf = malloc(cap);
    size_t n = 0;
    int rc = buf ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory reading %s", path);
    while (rc == 0) {
        if (n + 1 >= cap) { /* the file grew, or is not a regular file */
            size_t grown = cap * 2;
            char *bigger = grown > cap ? realloc(buf, grown) : NULL;
            if (!bigger) {
                rc = perq_fail(err, PERQ_E_NOMEM, "out of memory reading %s", path);
                break;
            }
            buf = bigger;
            cap = grown;
        }
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            rc = perq_fail_errno(err, "reading %s", path);
        else if (got == 0)
            break;
        else if ((n += (size_t)got) > limit)
            rc = perq_fail(err, PERQ_E_INVALID, "%s is more than the limit of %zu bytes", path, limit);
    }
    close(fd);
    if (rc != 0) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

/* Removes name inside the folder dirfd, descending into folders without
 * following symbolic links (they are removed, not their targets). */
static int remove_at(int dirfd, const char *name, const char *shown, perq_err *err)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : perq_fail_errno(err, "removing %s", shown);
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT)
            return perq_fail_errno(err, "removing %s", shown);
        return 0;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return perq_fail_errno(err, "opening folder %s", shown);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return perq_fail_errno(err, "opening folder %s", shown);
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (errno = 0, e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char child[PATH_MAX];
        snprintf(child, sizeof child, "%s/%s", shown, e->d_name);
        rc = remove_at(fd, e->d_name, child, err);
    }
    if (rc == 0 && errno != 0)
        rc = perq_fail_errno(err, "listing folder %s", shown);
    closedir(d);
    if (rc == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
        rc = perq_fail_errno(err, "removing folder %s", shown);
    return rc;
}

int perq_remove_tree(const char *path, perq_err *err)
{
    return remove_at(AT_FDCWD, path, path, err);
}
