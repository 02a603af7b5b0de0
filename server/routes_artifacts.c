/* /v1/jobs/{id}/artifacts: the files a succeeded job's manifest.json lists
 * (and the manifest itself), served from DATA/jobs/ID/artifacts/ with an
 * ETag (their SHA-256) and byte ranges. Nothing else in that folder is served. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http_util.h"
#include "perq/fsutil.h"
#include "problem.h"
#include "routes.h"

#define MANIFEST "manifest.json"
#define MANIFEST_MAX ((size_t)16 << 20)

/* report.html is meant to be opened in a browser; the rest are downloads. */
static const char *artifact_media_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot && strcmp(dot, ".json") == 0)
        return "application/json";
    if (dot && strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    return "application/octet-stream";
}

static const char *guess_format(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return "binary";
    if (strcmp(dot, ".safetensors") == 0)
        return "safetensors";
    if (strcmp(dot, ".json") == 0)
        return "json";
    if (strcmp(dot, ".gguf") == 0)
        return "gguf";
    if (strcmp(dot, ".txt") == 0)
        return "text";
    return "binary";
}

/* One entry of the manifest's files, accepted as {name|path, bytes, sha256,
 * format?}; NULL when it is not well formed or names a file we would not serve. */
static json_t *artifact_entry(const char *name, json_t *e)
{
    json_t *bytes = json_object_get(e, "bytes"), *sha = json_object_get(e, "sha256");
    json_t *format = json_object_get(e, "format");
    if (!name || !http_name_valid(name) || strcmp(name, MANIFEST) == 0 || !json_is_integer(bytes) ||
        json_integer_value(bytes) < 0 || !json_is_string(sha) || json_string_length(sha) != 64)
        return NULL;
    return json_pack("{ss sI ss ss}", "name", name, "bytes", json_integer_value(bytes), "sha256",
                     json_string_value(sha), "format",
                     json_is_string(format) ? json_string_value(format) : guess_format(name));
}

/* The artifacts listed by the manifest of a job folder, then the manifest. */
static json_t *read_artifacts(const char *dir, perq_err *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, MANIFEST) >= (int)sizeof path) {
        perq_fail(err, PERQ_E_INVALID, "path too long");
        return NULL;
    }
    char *text = NULL;
    size_t len = 0;
    if (perq_read_file(path, MANIFEST_MAX, &text, &len, err) != 0)
        return NULL;
    json_error_t jerr;
    json_t *manifest = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!manifest) {
        perq_fail(err, PERQ_E_FORMAT, "%s: %s", path, jerr.text);
        return NULL;
    }
    json_t *files = json_object_get(manifest, "files"), *list = json_array();
    size_t i;
    json_t *e;
    const char *key;
    if (json_is_array(files)) {
        json_array_foreach(files, i, e) {
            json_t *name = json_object_get(e, "name");
            if (!name)
                name = json_object_get(e, "path");
            json_t *entry = artifact_entry(json_string_value(name), e);
            if (entry)
                json_array_append_new(list, entry);
        }
    } else if (json_is_object(files)) {
        json_object_foreach(files, key, e) {
            json_t *entry = artifact_entry(key, e);
            if (entry)
                json_array_append_new(list, entry);
        }
    }
    json_decref(manifest);

    char sum[65];
    uint64_t bytes = 0;
    if (perq_sha256_file(path, sum, &bytes, err) != 0) {
        json_decref(list);
        return NULL;
    }
    json_array_append_new(list, json_pack("{ss sI ss ss}", "name", MANIFEST, "bytes", (json_int_t)bytes, "sha256",
                                          sum, "format", "json"));
    return list;
}

/* The artifact list of the path's job, or replies (404, 409, 500) and
 * returns NULL. dir receives the artifacts folder. */
static json_t *job_artifacts(http_req *r, char dir[PATH_MAX])
{
    perqd *d = http_app(r);
    const char *id = http_param(r, 0);
    store_job j;
    perq_err err = {0};
    switch (store_job_get(d->store, id, &j, &err)) {
    case STORE_OK: break;
    case STORE_NOT_FOUND: http_reply_problem(r, 404, "job-not-found", "no job with id \"%s\"", id); return NULL;
    default: routes_internal_error(r, &err); return NULL;
    }
    bool succeeded = strcmp(j.status, "succeeded") == 0;
    if (!succeeded)
        http_reply_problem(r, 409, "job-not-succeeded",
                           "job %s is %s; its artifacts are available once it has succeeded", id, j.status);
    store_job_free(&j);
    if (!succeeded)
        return NULL;
    if (perqd_path(d, dir, PATH_MAX, "jobs/%s/artifacts", id) != 0) {
        http_reply_problem(r, 500, "internal", "path too long");
        return NULL;
    }
    json_t *list = read_artifacts(dir, &err);
    if (!list)
        routes_internal_error(r, &err);
    return list;
}

void artifacts_list(http_req *r)
{
    char dir[PATH_MAX];
    json_t *list = job_artifacts(r, dir);
    if (list)
        http_reply_json(r, 200, json_pack("{so}", "artifacts", list));
}

static json_t *find_artifact(json_t *list, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "name")), name) == 0)
            return e;
    }
    return NULL;
}

void artifacts_get(http_req *r)
{
    const char *name = http_param(r, 1);
    char dir[PATH_MAX];
    json_t *list = job_artifacts(r, dir);
    if (!list)
        return;
    json_t *entry = http_name_valid(name) ? find_artifact(list, name) : NULL;
    if (!entry) {
        http_reply_problem(r, 404, "artifact-not-found", "job %s has no artifact named \"%s\"", http_param(r, 0),
                           name);
        json_decref(list);
        return;
    }
    char etag[70], path[PATH_MAX];
    snprintf(etag, sizeof etag, "\"%s\"", json_string_value(json_object_get(entry, "sha256")));
    const char *type = artifact_media_type(name);
    json_decref(list);

    int fd = snprintf(path, sizeof path, "%s/%s", dir, name) < (int)sizeof path ? open(path, O_RDONLY | O_CLOEXEC)
                                                                                 : -1;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        perq_err err;
        perq_fail_errno(&err, "opening artifact %s", path);
        routes_internal_error(r, &err);
        return;
    }
    uint64_t size = (uint64_t)st.st_size, first = 0, length = size;

    if (http_etag_matches(http_header(r, "If-None-Match"), etag)) {
        /* No body goes out with a 304; the file only gives its length to
         * Content-Length, which must be that of the 200. */
        http_reply_fd(r, 304, fd, 0, size, type);
        http_reply_header(r, "ETag", etag);
        return;
    }
    /* If-Range with another tag: the client's copy is stale, send it all. */
    const char *if_range = http_header(r, "If-Range");
    const char *range = if_range && strcmp(if_range, etag) != 0 ? NULL : http_header(r, "Range");
    char content_range[96];
    switch (http_parse_range(range, size, &first, &length)) {
    case HTTP_RANGE_NONE: http_reply_fd(r, 200, fd, 0, size, type); break;
    case HTTP_RANGE_PARTIAL:
        http_reply_fd(r, 206, fd, first, length, type);
        snprintf(content_range, sizeof content_range, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, first,
                 first + length - 1, size);
        http_reply_header(r, "Content-Range", content_range);
        break;
    case HTTP_RANGE_UNSATISFIABLE:
        close(fd);
        http_reply_problem(r, 416, "range-not-satisfiable", "the range \"%s\" selects nothing of the %" PRIu64
                           " bytes of %s", range, size, name);
        snprintf(content_range, sizeof content_range, "bytes */%" PRIu64, size);
        http_reply_header(r, "Content-Range", content_range);
        break;
    }
    http_reply_header(r, "ETag", etag);
    http_reply_header(r, "Accept-Ranges", "bytes");
}
