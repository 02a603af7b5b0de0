/* safetensors images from untrusted bytes: the parser never crashes or reads
 * outside the buffer, and whatever it accepts tiles the data exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perq/safetensors.h"

static void check_accepted(const perq_st_file *f, const uint8_t *data, size_t size)
{
    const uint8_t *at = NULL;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const perq_tensor *t = &f->tensors[i];
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size)
            abort();
        if (at && p != at) /* sorted by offset, each where the previous ended */
            abort();
        if (perq_tensor_numel(t) * perq_dtype_size(t->dtype) != t->nbytes)
            abort();
        if (perq_st_find(f, t->name) != t)
            abort();
        for (size_t k = 0; k < t->nbytes; k++) /* every byte readable */
            sink ^= p[k];
        at = p + t->nbytes;
    }
    if (at && at != data + size) /* the data ends at the end of the file */
        abort();
    for (size_t i = 0; i < f->n_meta; i++)
        if (!f->meta[i].key || !f->meta[i].value)
            abort();
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    perq_st_file f;
    perq_err err;
    if (perq_st_parse(data, size, &f, &err) == 0) {
        check_accepted(&f, data, size);
        perq_st_close(&f);
    } else if (err.code != PERQ_E_FORMAT && err.code != PERQ_E_NOMEM) {
        abort(); /* malformed bytes are a format error, with a reason */
    } else if (err.msg[0] == '\0') {
        abort();
    }
    return 0;
}
