/* perqd's settings: defaults, then a JSON config file (--config), then the
 * command line, which wins. */
#ifndef PERQD_CONFIG_H
#define PERQD_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "perq/error.h"
#include "perqd.h"

#define PERQD_DEFAULT_LISTEN "127.0.0.1:8080"
#define PERQD_DEFAULT_MAX_BODY ((uint64_t)64 << 30)
#define PERQD_DEFAULT_KILL_GRACE 5.0
#define PERQD_MAX_WORKERS 256

/* Returns 0, or -1 with err for a bad option or config file. The worker
 * program defaults to perq-worker beside this executable. */
int perqd_config_load(int argc, char **argv, perqd_config *cfg, perq_err *err);
/* "2000000", "64G", "512MiB", "1k": a byte count, binary suffixes. */
int perqd_parse_size(const char *s, uint64_t *out);
void perqd_usage(FILE *to);

#endif
