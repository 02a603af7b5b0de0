/* A job's report artifacts: report.json and the page made from it. */
#ifndef PERQ_REPORT_FILES_H
#define PERQ_REPORT_FILES_H

#include <jansson.h>

#include "manifest.h"
#include "perq/error.h"

/* Writes out_dir/report.json and out_dir/report.html (timings: stage ->
 * seconds, may be NULL) and lists both in files. */
int perq_report_files_write(const char *out_dir, const json_t *report, const json_t *timings,
                            perq_artifact_list *files, perq_err *err);

#endif
