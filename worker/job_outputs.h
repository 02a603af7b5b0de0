/* Where a job writes its compressed-tensors folder.
 *
 * A job evaluates the model it quantized by reading a compressed-tensors
 * folder back (perq_eval_perplexity, perq_model_open), so that folder is
 * written whenever the spec asks for compressed-tensors or for an evaluation.
 * When only the evaluation needs it (outputs ["gguf"] with eval), it goes to a
 * scratch folder inside the output folder, removed before manifest.json is
 * written. The INT4 values evaluated are those model.gguf holds; only its
 * Q4_0 scales differ, by their rounding to fp16 (report.json's
 * gguf.scale_fp16 measures it). */
#ifndef PERQ_JOB_OUTPUTS_H
#define PERQ_JOB_OUTPUTS_H

#include <stdbool.h>
#include <stddef.h>

#include "perq/error.h"
#include "perq/job.h"
#include "perq/jobspec.h"

#define PERQ_JOB_SCRATCH_DIR ".eval-compressed-tensors"

/* The folder the job's compressed-tensors export goes to (out_dir, or the
 * scratch folder in buf), or NULL when the job needs none. *scratch tells
 * which; the scratch folder is not created here. */
const char *perq_job_ct_dir(const perq_jobspec *spec, const perq_job_paths *paths, char *buf, size_t cap,
                            bool *scratch);
/* Removes the scratch folder; nothing to do when there is none. */
int perq_job_remove_scratch(const perq_job_paths *paths, perq_err *err);

#endif
