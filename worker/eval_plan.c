#include "eval_plan.h"

#include <stdlib.h>
#include <string.h>

#include "perq/fsutil.h"

#define MAX_TEXT_BYTES ((size_t)1 << 30)

int perq_chunk_plan_make(size_t n_ids, const perq_eval_options *opt, perq_chunk_plan *p, perq_err *err)
{
    memset(p, 0, sizeof *p);
    p->ctx = opt->ctx > 0 ? opt->ctx : 256;
    if (p->ctx < 4)
        return perq_fail(err, PERQ_E_INVALID, "ctx %d is too small (at least 4)", p->ctx);
    if (opt->protocol == PERQ_PPL_LLAMACPP) {
        p->first = p->ctx / 2;
        p->n_scored = p->ctx - 1 - p->first;
        p->replace_bos = true;
    } else {
        p->first = p->ctx / 2 - 1;
        p->n_scored = p->ctx - p->ctx / 2;
    }
    size_t whole = n_ids / (size_t)p->ctx;
    if (opt->chunks > 0 && (size_t)opt->chunks < whole)
        whole = (size_t)opt->chunks;
    if (whole == 0)
        return perq_fail(err, PERQ_E_INVALID, "the text has %zu tokens, fewer than one chunk of %d", n_ids, p->ctx);
    if (whole > (size_t)(1 << 30) / (size_t)p->ctx)
        return perq_fail(err, PERQ_E_INVALID, "too many chunks (%zu)", whole);
    p->n_chunks = (int)whole;
    return 0;
}

int perq_eval_text_ids(const char *model_dir, const char *text_path, perq_tokenizer **tok, int32_t **ids,
                       size_t *n_ids, perq_err *err)
{
    char *text;
    size_t len;
    *tok = NULL;
    if (perq_read_file(text_path, MAX_TEXT_BYTES, &text, &len, err) != 0)
        return -1;
    if (len > 0 && text[len - 1] == '\n')
        len--;
    int rc = perq_tokenizer_load(model_dir, tok, err);
    if (rc == 0)
        rc = perq_tokenizer_encode(*tok, text, len, true, ids, n_ids, err);
    free(text);
    return rc;
}
