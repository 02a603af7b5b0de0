/* Start-up housekeeping of the data folder, after a daemon that may have
 * died mid-way: finishes model deletions, and removes what no row of the
 * store accounts for (temporary files of interrupted uploads, the folder of a
 * model never created). Files the store lists are never touched. */
#ifndef PERQD_TIDY_H
#define PERQD_TIDY_H

#include "perqd.h"

int perqd_tidy(perqd *d, perq_err *err);

#endif
