/* manifest.json and the artifact list it is made from. */
#include "manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perq/fsutil.h"

int perq_artifacts_add(perq_artifact_list *l, const char *name, const char *format, perq_err *err)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].name, name))
            return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        perq_artifact *items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return perq_fail(err, PERQ_E_NOMEM, "out of memory");
        l->items = items;
        l->cap = cap;
    }
    perq_artifact a = {strdup(name), strdup(format)};
    if (!a.name || !a.format) {
        free(a.name);
        free(a.format);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    l->items[l->n++] = a;
    return 0;
}

void perq_artifacts_free(perq_artifact_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].name);
        free(l->items[i].format);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

int perq_write_json_atomic(const char *path, const json_t *doc, perq_err *err)
{
    char *text = json_dumps(doc, JSON_INDENT(2));
    if (!text)
        return perq_fail(err, PERQ_E_NOMEM, "%s: cannot serialise JSON", path);
    size_t len = strlen(text);
    char *with_newline = realloc(text, len + 2);
    if (!with_newline) {
        free(text);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    memcpy(with_newline + len, "\n", 2);
    int rc = perq_write_file_atomic(path, with_newline, len + 1, err);
    free(with_newline);
    return rc;
}

static json_t *file_entry(const char *dir, const perq_artifact *a, perq_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, a->name) >= (int)sizeof path) {
        perq_fail(err, PERQ_E_INVALID, "path too long: %s/%s", dir, a->name);
        return NULL;
    }
    char hex[65];
    uint64_t bytes = 0;
    if (perq_sha256_file(path, hex, &bytes, err) != 0)
        return NULL;
    return json_pack("{ss sI ss ss}", "name", a->name, "bytes", (json_int_t)bytes, "sha256", hex, "format",
                     a->format);
}

static json_t *utc_now(void)
{
    char buf[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

int perq_manifest_write(const char *dir, const perq_artifact_list *files, const json_t *spec,
                        const json_t *timings, perq_err *err)
{
    json_t *list = json_array();
    for (size_t i = 0; i < files->n; i++) {
        json_t *entry = file_entry(dir, &files->items[i], err);
        if (!entry) {
            json_decref(list);
            return perq_err_context(err, "manifest");
        }
        json_array_append_new(list, entry);
    }
    json_t *m = json_pack("{si s{ss ss} so sO so sO}", "format_version", PERQ_MANIFEST_FORMAT_VERSION, "tool",
                          "name", "perq", "version", PERQ_VERSION, "created_at", utc_now(), "spec",
                          (json_t *)spec, "files", list, "timings", (json_t *)timings);
    if (!m)
        return perq_fail(err, PERQ_E_NOMEM, "manifest: cannot build JSON");
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    int rc = perq_write_json_atomic(path, m, err);
    json_decref(m);
    return rc;
}
