/* report.html: what a job did, on one self-contained page (inline CSS and
 * SVG, no script, nothing fetched) made from report.json:
 *   - a title with the model (when the spec names it) and the spec in short;
 *   - the perplexity of each variant evaluated (float, quantized);
 *   - per layer, the blockwise l1 mass ratio of the down_proj input before
 *     and after the permutation, max |x| after the block rotation before and
 *     after, and the per-token INT4 error;
 *   - the time of each stage;
 *   - the rotations and a table of the per-layer figures.
 * Sections whose data the report lacks (an rtn job has no permutation) say
 * so instead of drawing an empty chart. */
#ifndef PERQ_REPORT_HTML_H
#define PERQ_REPORT_HTML_H

#include <jansson.h>

#include "perq/error.h"

/* Writes the page to path atomically (temporary name, fsync, rename).
 * timings_from gives the stage timings and may be NULL: a manifest
 * ({"timings": {...}}), a job's metrics ({"seconds": {...}}), or the timings
 * object itself ({"loading": 0.1, ..., "total": 2.3}). */
int perq_report_html_write(const json_t *report, const json_t *timings_from, const char *path, perq_err *err);

#endif
