/* Two blocks between the weight generator and a writer thread: the generator
 * fills one while the other goes to disk, so that making a large checkpoint
 * takes about the longer of the two instead of their sum. Blocks are written
 * in the order they are sent. */
#include <pthread.h>
#include <stdlib.h>

#include "perq/safetensors.h"
#include "synth.h"

struct synth_pipe {
    perq_st_writer *out;
    pthread_t writer;
    pthread_mutex_t mu;
    pthread_cond_t changed;
    unsigned char *block[2];
    size_t len[2];
    bool full[2];
    int next_fill; /* the block the generator fills next */
    bool closing;
    int rc; /* the writer's: -1 once a write failed, with err */
    perq_err err;
};

static void *writer_main(void *arg)
{
    synth_pipe *p = arg;
    perq_err err = {0};
    for (int i = 0;; i ^= 1) {
        pthread_mutex_lock(&p->mu);
        while (!p->full[i] && !p->closing)
            pthread_cond_wait(&p->changed, &p->mu);
        if (!p->full[i]) { /* closing, and every block sent is written */
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        bool failed = p->rc != 0;
        pthread_mutex_unlock(&p->mu);

        /* After a failure blocks are only drained, so the generator never waits forever. */
        int rc = failed ? 0 : perq_st_stream_write(p->out, p->block[i], p->len[i], &err);

        pthread_mutex_lock(&p->mu);
        if (rc != 0) {
            p->rc = -1;
            p->err = err;
        }
        p->full[i] = false;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->mu);
    }
}

int synth_pipe_open(synth_pipe **out, perq_st_writer *stream, size_t block_bytes, perq_err *err)
{
    synth_pipe *p = calloc(1, sizeof *p);
    if (!p)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    p->out = stream;
    p->block[0] = malloc(block_bytes);
    p->block[1] = malloc(block_bytes);
    if (!p->block[0] || !p->block[1]) {
        free(p->block[0]);
        free(p->block[1]);
        free(p);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->changed, NULL);
    if (pthread_create(&p->writer, NULL, writer_main, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->changed);
        free(p->block[0]);
        free(p->block[1]);
        free(p);
        return perq_fail(err, PERQ_E_INTERNAL, "cannot start the writer thread");
    }
    *out = p;
    return 0;
}

unsigned char *synth_pipe_block(synth_pipe *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->full[p->next_fill])
        pthread_cond_wait(&p->changed, &p->mu);
    unsigned char *block = p->block[p->next_fill];
    pthread_mutex_unlock(&p->mu);
    return block;
}

int synth_pipe_send(synth_pipe *p, size_t len, perq_err *err)
{
    pthread_mutex_lock(&p->mu);
    p->len[p->next_fill] = len;
    p->full[p->next_fill] = true;
    p->next_fill ^= 1;
    pthread_cond_broadcast(&p->changed);
    int rc = p->rc;
    if (rc != 0 && err)
        *err = p->err;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int synth_pipe_close(synth_pipe *p, perq_err *err)
{
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->writer, NULL);
    int rc = p->rc;
    if (rc != 0 && err)
        *err = p->err;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->changed);
    free(p->block[0]);
    free(p->block[1]);
    free(p);
    return rc;
}
