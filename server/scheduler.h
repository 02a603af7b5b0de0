/* Which jobs run: at most cfg.workers at once, the rest started in queue
 * order as workers finish; cancel requests found in the store are delivered
 * to the workers; at shutdown every worker is stopped and its job queued
 * again. Loop thread only. */
#ifndef PERQD_SCHEDULER_H
#define PERQD_SCHEDULER_H

#include "perqd.h"

scheduler *scheduler_new(perqd *d);
void scheduler_free(scheduler *s);
/* Delivers cancel requests, then starts queued jobs while there is room. */
void scheduler_poll(scheduler *s);
/* Stops every worker; done(ctx) is called once none is left (perhaps at once). */
void scheduler_shutdown(scheduler *s, void (*done)(void *ctx), void *ctx);

#endif
