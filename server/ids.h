/* Opaque ids: a prefix ("m_" models, "j_" jobs) and 16 random hex digits. */
#ifndef PERQD_IDS_H
#define PERQD_IDS_H

#include <stddef.h>

#define PERQD_ID_MAX 32

/* Writes prefix + 16 hex digits from getrandom(); returns 0, or -1 when the
 * kernel gave no randomness. */
int perqd_new_id(const char *prefix, char out[PERQD_ID_MAX]);

#endif
