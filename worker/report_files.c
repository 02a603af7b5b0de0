#include "report_files.h"

#include <stdio.h>

#include "report_html.h"

static int write_reports(const char *out_dir, const json_t *report, const json_t *timings,
                         perq_artifact_list *files, perq_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/report.json", out_dir);
    if (perq_write_json_atomic(path, report, err) != 0 ||
        perq_artifacts_add(files, "report.json", "report", err) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/report.html", out_dir);
    if (perq_report_html_write(report, timings, path, err) != 0)
        return perq_err_context(err, "report.html");
    return perq_artifacts_add(files, "report.html", "report", err);
}

int perq_job_close_artifacts(const char *out_dir, const perq_jobspec *spec, const json_t *report,
                             const json_t *timings, perq_artifact_list *files, perq_err *err)
{
    if (write_reports(out_dir, report, timings, files, err) != 0)
        return -1;
    json_t *spec_json = perq_jobspec_to_json(spec);
    if (!spec_json)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int rc = perq_manifest_write(out_dir, files, spec_json, timings, err);
    json_decref(spec_json);
    return rc;
}
