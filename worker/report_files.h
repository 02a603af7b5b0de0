/* The files that close a job: report.json, the page made from it, and
 * manifest.json, written last so that it describes a finished folder. */
#ifndef PERQ_REPORT_FILES_H
#define PERQ_REPORT_FILES_H

#include <jansson.h>

#include "manifest.h"
#include "perq/error.h"
#include "perq/jobspec.h"

/* Writes out_dir/report.json and out_dir/report.html (timings: stage ->
 * seconds, may be NULL), lists both in files, then writes out_dir/manifest.json
 * of every listed file with the normalised spec. */
int perq_job_close_artifacts(const char *out_dir, const perq_jobspec *spec, const json_t *report,
                             const json_t *timings, perq_artifact_list *files, perq_err *err);

#endif
