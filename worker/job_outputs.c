/* Where a job writes its compressed-tensors folder (job_outputs.h). */
#include "job_outputs.h"

#include <stdio.h>

#include "perq/fsutil.h"

const char *perq_job_ct_dir(const perq_jobspec *spec, const perq_job_paths *paths, char *buf, size_t cap,
                            bool *scratch)
{
    *scratch = false;
    if (spec->outputs & PERQ_OUT_COMPRESSED_TENSORS)
        return paths->out_dir;
    if (!spec->eval.present)
        return NULL;
    *scratch = true;
    snprintf(buf, cap, "%s/%s", paths->out_dir, PERQ_JOB_SCRATCH_DIR);
    return buf;
}

int perq_job_remove_scratch(const perq_job_paths *paths, perq_err *err)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", paths->out_dir, PERQ_JOB_SCRATCH_DIR);
    return perq_remove_tree(dir, err);
}
