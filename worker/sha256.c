#include "perq/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <unistd.h>

#define FILE_CHUNK ((size_t)1 << 20)

struct perq_sha256 {
    EVP_MD_CTX *ctx;
};

perq_sha256 *perq_sha256_new(void)
{
    perq_sha256 *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    s->ctx = EVP_MD_CTX_new();
    if (!s->ctx || EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(s->ctx);
        free(s);
        return NULL;
    }
    return s;
}

void perq_sha256_update(perq_sha256 *s, const void *data, size_t len)
{
    if (len > 0)
        EVP_DigestUpdate(s->ctx, data, len);
}

static void digest_to_hex(const unsigned char md[32], char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
}

void perq_sha256_final_hex(perq_sha256 *s, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE] = {0};
    EVP_DigestFinal_ex(s->ctx, md, NULL);
    digest_to_hex(md, hex);
    EVP_MD_CTX_free(s->ctx);
    free(s);
}

void perq_sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE] = {0};
    EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL);
    digest_to_hex(md, hex);
}

int perq_sha256_file(const char *path, char hex[65], uint64_t *bytes, perq_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return perq_fail_errno(err, "opening %s", path);
    unsigned char *buf = malloc(FILE_CHUNK);
    perq_sha256 *s = perq_sha256_new();
    if (!buf || !s) {
        free(buf);
        if (s)
            perq_sha256_final_hex(s, hex);
        close(fd);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory hashing %s", path);
    }
    uint64_t total = 0;
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, buf, FILE_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = perq_fail_errno(err, "reading %s", path);
            break;
        }
        if (n == 0)
            break;
        perq_sha256_update(s, buf, (size_t)n);
        total += (uint64_t)n;
    }
    perq_sha256_final_hex(s, hex);
    free(buf);
    close(fd);
    if (rc != 0)
        hex[0] = '\0';
    else if (bytes)
        *bytes = total;
    return rc;
}
