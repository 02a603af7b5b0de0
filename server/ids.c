#include "ids.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>

int perqd_new_id(const char *prefix, char out[PERQD_ID_MAX])
{
    uint8_t bytes[8];
    size_t got = 0;
    while (got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    int len = snprintf(out, PERQD_ID_MAX, "%s", prefix);
    for (size_t i = 0; i < sizeof bytes && len + 2 < PERQD_ID_MAX; i++)
        len += snprintf(out + len, (size_t)(PERQD_ID_MAX - len), "%02x", bytes[i]);
    return 0;
}
