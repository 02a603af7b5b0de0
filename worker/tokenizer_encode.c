/* Encoding a text: added tokens, normalizer, added tokens again (the
 * normalized ones), pre-tokenizer, BPE; each stage hands a list of pieces to
 * the next. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

/* ---- pieces ---------------------------------------------------------------- */

int tok_pieces_push(tok_pieces *p, tok_piece piece, perq_err *err)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        tok_piece *v = realloc(p->v, cap * sizeof *v);
        if (!v)
            return perq_fail(err, PERQ_E_NOMEM, "tokenizer: out of memory");
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = piece;
    return 0;
}

int tok_pieces_close(tok_pieces *p, size_t off, bool at_start, perq_err *err)
{
    if (p->text.len == off)
        return 0;
    return tok_pieces_push(p, (tok_piece){off, p->text.len - off, -1, at_start}, err);
}

int tok_pieces_add_text(tok_pieces *p, const char *s, size_t len, bool at_start, perq_err *err)
{
    size_t off = p->text.len;
    if (!len)
        return 0;
    return tok_buf_append(&p->text, s, len, err) || tok_pieces_close(p, off, at_start, err) ? -1 : 0;
}

int tok_pieces_add_token(tok_pieces *p, int32_t id, perq_err *err)
{
    return tok_pieces_push(p, (tok_piece){p->text.len, 0, id, false}, err);
}

void tok_pieces_free(tok_pieces *p)
{
    tok_buf_free(&p->text);
    free(p->v);
    memset(p, 0, sizeof *p);
}

/* ---- the stages ------------------------------------------------------------- */

static int normalize_pieces(const perq_tokenizer *t, const tok_pieces *in, tok_pieces *out, perq_err *err)
{
    tok_buf normalized = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) {
        const tok_piece *pc = &in->v[i];
        if (pc->id >= 0) {
            rc = tok_pieces_add_token(out, pc->id, err);
            continue;
        }
        const char *s = in->text.data + pc->off;
        size_t len = pc->len;
        if (t->normalizer) {
            normalized.len = 0;
            rc = tok_normalize(t->normalizer, s, len, &normalized, err);
            s = normalized.data ? normalized.data : "";
            len = normalized.len;
        }
        if (!rc)
            rc = tok_added_split(&t->added, true, s, len, pc->at_start, out, err);
    }
    tok_buf_free(&normalized);
    return rc;
}

static int model_pieces(const perq_tokenizer *t, const tok_pieces *in, tok_ids *out, perq_err *err)
{
    tok_bpe_work *work = tok_bpe_work_new();
    if (!work)
        return perq_fail(err, PERQ_E_NOMEM, "tokenizer: out of memory");
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) {
        const tok_piece *pc = &in->v[i];
        rc = pc->id >= 0 ? tok_ids_push(out, pc->id, err)
                         : tok_bpe_encode(&t->model, in->text.data + pc->off, pc->len, work, out, err);
    }
    tok_bpe_work_free(work);
    return rc;
}

int perq_tokenizer_encode(const perq_tokenizer *t, const char *text, size_t len, bool add_bos,
                          int32_t **ids, size_t *n_ids, perq_err *err)
{
    *ids = NULL;
    *n_ids = 0;
    if (!text && len)
        return perq_fail(err, PERQ_E_INVALID, "tokenizer: no text");
    size_t valid = tok_utf8_valid_prefix(text, len);
    if (valid != len)
        return perq_fail(err, PERQ_E_INVALID, "tokenizer: the text is not UTF-8 (byte %zu)", valid);

    tok_pieces raw = {0}, normalized = {0}, pre = {0};
    tok_ids out = {0};
    int rc = 0;
    if (add_bos && t->bos_id >= 0)
        rc = tok_ids_push(&out, t->bos_id, err);
    if (!rc)
        rc = tok_added_split(&t->added, false, text ? text : "", len, true, &raw, err);
    if (!rc)
        rc = normalize_pieces(t, &raw, &normalized, err);
    tok_pieces_free(&raw);
    if (!rc && t->pretok)
        rc = tok_pretokenize(t->pretok, &normalized, &pre, err);
    if (!rc)
        rc = model_pieces(t, t->pretok ? &pre : &normalized, &out, err);
    tok_pieces_free(&normalized);
    tok_pieces_free(&pre);
    if (!rc && !out.v && !(out.v = malloc(sizeof *out.v)))
        rc = perq_fail(err, PERQ_E_NOMEM, "tokenizer: out of memory");
    if (rc) {
        free(out.v);
        return -1;
    }
    *ids = out.v;
    *n_ids = out.n;
    return 0;
}
