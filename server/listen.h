/* The listening socket, bound before the HTTP server starts so that port 0
 * can be resolved and announced. */
#ifndef PERQD_LISTEN_H
#define PERQD_LISTEN_H

#include <stddef.h>

#include "perq/error.h"

/* Binds and listens on "HOST:PORT" ("[::1]:PORT" for IPv6, ":PORT" for every
 * interface). Returns the socket, and in url "http://HOST:PORT" with the
 * port actually bound; -1 with err on failure. */
int perqd_listen(const char *host_port, char *url, size_t url_size, perq_err *err);

#endif
