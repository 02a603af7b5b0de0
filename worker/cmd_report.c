/* perq report --json REPORT.json --out REPORT.html [--manifest MANIFEST.json]
 * The HTML page of a job's report. Stage timings come from the manifest: the
 * one given, else manifest.json beside the report when there is one. */
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "report_html.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: perq report --json REPORT.json --out REPORT.html [--manifest MANIFEST.json]\n"
            "\n"
            "Writes the report of a job as one self-contained HTML page (inline SVG\n"
            "charts, no scripts, nothing fetched). Stage timings are read from the\n"
            "manifest: MANIFEST.json, or manifest.json beside REPORT.json if present.\n");
}

typedef struct report_args {
    const char *json, *out, *manifest;
} report_args;

/* Returns 0, or the exit status to leave with (-1: help was asked for). */
static int parse_args(int argc, char **argv, report_args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout);
            return -1;
        }
        const char **slot = !strcmp(arg, "--json") ? &a->json
                            : !strcmp(arg, "--out") ? &a->out
                            : !strcmp(arg, "--manifest") ? &a->manifest
                            : NULL;
        if (!slot) {
            fprintf(stderr, "perq report: unknown option '%s'\n", arg);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "perq report: %s needs a value\n", arg);
            return 2;
        }
        *slot = argv[++i];
    }
    if (!a->json || !a->out) {
        usage(stderr);
        return 2;
    }
    return 0;
}

static json_t *load_json(const char *path)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        fprintf(stderr, "perq report: %s: %s (line %d)\n", path, jerr.text, jerr.line);
    return doc;
}

/* manifest.json in the folder of the report, if it exists; NULL otherwise. */
static json_t *sibling_manifest(const char *report_path)
{
    char *copy = strdup(report_path), *path = NULL;
    json_t *doc = NULL;
    if (copy && asprintf(&path, "%s/manifest.json", dirname(copy)) > 0 && access(path, R_OK) == 0)
        doc = load_json(path);
    free(path);
    free(copy);
    return doc;
}

int perq_cmd_report(int argc, char **argv)
{
    report_args a;
    int status = parse_args(argc, argv, &a);
    if (status)
        return status < 0 ? 0 : status;
    json_t *report = load_json(a.json);
    if (!report)
        return 1;
    json_t *manifest = a.manifest ? load_json(a.manifest) : sibling_manifest(a.json);
    if (a.manifest && !manifest) {
        json_decref(report);
        return 1;
    }
    perq_err err = {0};
    int rc = perq_report_html_write(report, manifest, a.out, &err);
    if (rc != 0)
        fprintf(stderr, "perq report: %s\n", err.msg);
    json_decref(manifest);
    json_decref(report);
    return rc == 0 ? 0 : 1;
}
