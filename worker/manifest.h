/* The files a job leaves behind: the list of artifacts as they are written,
 * report.json, and manifest.json (every file with its bytes and sha256, the
 * spec, the tool, the timings), written last. */
#ifndef PERQ_MANIFEST_H
#define PERQ_MANIFEST_H

#include <stddef.h>

#include <jansson.h>

#include "perq/error.h"

#ifndef PERQ_VERSION
#define PERQ_VERSION "0.1.0"
#endif
#define PERQ_MANIFEST_FORMAT_VERSION 1

typedef struct perq_artifact {
    char *name;     /* relative to the job's folder */
    char *format;   /* "compressed-tensors", "report", ... */
} perq_artifact;

typedef struct perq_artifact_list {
    perq_artifact *items;
    size_t n, cap;
} perq_artifact_list;

/* Adds a file (names are copied; adding a name twice keeps one entry). */
int perq_artifacts_add(perq_artifact_list *l, const char *name, const char *format, perq_err *err);
void perq_artifacts_free(perq_artifact_list *l);

/* Writes doc as indented JSON to path, through a temporary file. */
int perq_write_json_atomic(const char *path, const json_t *doc, perq_err *err);

/* Writes DIR/manifest.json: {format_version, tool {name, version}, created_at,
 * spec, files [{name, bytes, sha256, format}], timings}. Every listed file is
 * read back and hashed. spec and timings are borrowed. */
int perq_manifest_write(const char *dir, const perq_artifact_list *files, const json_t *spec,
                        const json_t *timings, perq_err *err);

#endif
