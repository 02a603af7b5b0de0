#include "listen.h"

#include <netdb.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int split_host_port(const char *in, char *host, size_t host_size, char *port, size_t port_size)
{
    const char *colon = strrchr(in, ':');
    if (!colon || !colon[1])
        return -1;
    size_t host_len = (size_t)(colon - in);
    const char *h = in;
    if (host_len >= 2 && in[0] == '[' && in[host_len - 1] == ']') {
        h++;
        host_len -= 2;
    }
    if (host_len >= host_size || strlen(colon + 1) >= port_size)
        return -1;
    memcpy(host, h, host_len);
    host[host_len] = '\0';
    snprintf(port, port_size, "%s", colon + 1);
    return 0;
}

int perqd_listen(const char *host_port, char *url, size_t url_size, perq_err *err)
{
    char host[256], port[16];
    if (split_host_port(host_port, host, sizeof host, port, sizeof port) != 0)
        return perq_fail(err, PERQ_E_INVALID, "--listen: expected HOST:PORT, got \"%s\"", host_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (gai != 0)
        return perq_fail(err, PERQ_E_INVALID, "--listen %s: %s", host_port, gai_strerror(gai));
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 128) != 0) {
            perq_fail_errno(err, "--listen %s", host_port);
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;

    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char shown[NI_MAXHOST], serv[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
        getnameinfo((struct sockaddr *)&ss, len, shown, sizeof shown, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        perq_fail_errno(err, "--listen %s: reading the bound address", host_port);
        close(fd);
        return -1;
    }
    bool v6 = ss.ss_family == AF_INET6;
    snprintf(url, url_size, "http://%s%s%s:%s", v6 ? "[" : "", shown, v6 ? "]" : "", serv);
    return fd;
}
