/* The BPE model of Hugging Face tokenizers: a pre-token is split into
 * characters (or byte tokens, or unk), then the adjacent pair with the lowest
 * merge rank is merged, the leftmost first among equals, until no pair has a
 * merge.
 *
 * Linear-ish on long pre-tokens (a Llama 2 text has no pre-tokenizer, so the
 * whole text is one): a merge can only join two symbols when some merge's left
 * side ends with the last character of the left symbol and its right side
 * starts with the first character of the right symbol. Where no merge joins the
 * two characters, no merge will ever cross, and the two sides evolve
 * independently; the word is cut there and each part is merged with its own
 * small priority queue. This gives exactly the result of merging the whole word. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

#define NO_CHAR UINT32_MAX /* first/last character of the empty token */

/* ---- loading -------------------------------------------------------------- */

static int parse_options(const json_t *model, tok_bpe *b, perq_err *err)
{
    const char *type = tok_json_type(model);
    if (type && strcmp(type, "BPE"))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "model: type '%s' is not supported (only BPE)", type);
    if (!type && !json_object_get(model, "merges"))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "model: a model without type or merges is not supported");

    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "model: dropout %g is not supported (only null or 0)",
                         json_is_number(dropout) ? json_number_value(dropout) : -1.0);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        json_t *a = json_object_get(model, affixes[i]);
        if (a && !json_is_null(a) && !(json_is_string(a) && json_string_length(a) == 0))
            return perq_fail(err, PERQ_E_UNSUPPORTED, "model: %s is not supported", affixes[i]);
    }
    if (tok_json_bool(model, "fuse_unk", "model", &b->fuse_unk, err) ||
        tok_json_bool(model, "byte_fallback", "model", &b->byte_fallback, err) ||
        tok_json_bool(model, "ignore_merges", "model", &b->ignore_merges, err))
        return -1;

    json_t *unk = json_object_get(model, "unk_token");
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk))
            return perq_fail(err, PERQ_E_FORMAT, "model.unk_token is not a string");
        b->unk_token = strdup(json_string_value(unk));
        if (!b->unk_token)
            return perq_fail(err, PERQ_E_NOMEM, "model: out of memory");
    }
    return 0;
}

/* First and last character of every token, and the direct tables. */
static int index_tokens(tok_bpe *b, perq_err *err)
{
    size_t n = b->vocab.n_ids;
    b->first_char = malloc((n + 1) * sizeof *b->first_char);
    b->last_char = malloc((n + 1) * sizeof *b->last_char);
    if (!b->first_char || !b->last_char)
        return perq_fail(err, PERQ_E_NOMEM, "model: out of memory");
    for (size_t i = 0; i < TOK_DIRECT_CHARS; i++)
        b->direct[i] = -1;
    for (size_t id = 0; id < n; id++) {
        size_t len;
        const char *s = tok_vocab_str(&b->vocab, (int32_t)id, &len);
        b->first_char[id] = b->last_char[id] = NO_CHAR;
        if (!s || !len)
            continue;
        uint32_t cp;
        size_t first_len = tok_utf8_decode(s, len, 0, &cp);
        b->first_char[id] = cp;
        size_t last = len - 1;
        while (last > 0 && ((unsigned char)s[last] & 0xC0) == 0x80)
            last--;
        tok_utf8_decode(s, len, last, &b->last_char[id]);
        if (first_len == len && cp < TOK_DIRECT_CHARS)
            b->direct[cp] = (int32_t)id;
    }
    for (int byte = 0; byte < 256; byte++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", byte);
        b->byte_id[byte] = tok_vocab_find(&b->vocab, name, 6);
    }
    b->unk_id = -1;
    if (b->unk_token) {
        int32_t id = tok_vocab_find(&b->vocab, b->unk_token, strlen(b->unk_token));
        b->unk_id = id >= 0 ? id : -2;
    }
    return 0;
}

/* A merge as "left right" or ["left", "right"]. */
static int merge_sides(const json_t *m, size_t rank, const char **a, size_t *a_len, const char **b,
                       size_t *b_len, perq_err *err)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        size_t len = json_string_length(m);
        const char *space = memchr(s, ' ', len);
        if (!space || memchr(space + 1, ' ', len - (size_t)(space + 1 - s)))
            return perq_fail(err, PERQ_E_FORMAT, "model.merges[%zu]: '%.80s' is not two tokens separated by one space",
                             rank, s);
        *a = s;
        *a_len = (size_t)(space - s);
        *b = space + 1;
        *b_len = len - *a_len - 1;
        return 0;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *a_len = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *b_len = json_string_length(json_array_get(m, 1));
        return 0;
    }
    return perq_fail(err, PERQ_E_FORMAT, "model.merges[%zu] is neither a string nor a pair of strings", rank);
}

static int32_t merge_token(const tok_bpe *b, const char *s, size_t len, size_t rank, perq_err *err)
{
    int32_t id = tok_vocab_find(&b->vocab, s, len);
    if (id < 0)
        perq_fail(err, PERQ_E_FORMAT, "model.merges[%zu]: token '%.*s' is not in the vocabulary", rank,
                  (int)(len > 80 ? 80 : len), s);
    return id;
}

static int parse_merges(const json_t *merges, tok_bpe *b, perq_err *err)
{
    if (!json_is_array(merges))
        return perq_fail(err, PERQ_E_FORMAT, "model.merges is %s", merges ? "not an array" : "missing");
    size_t n = json_array_size(merges);
    if (n >= UINT32_MAX)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "model.merges: too many merges");
    if (tok_pairmap_init(&b->merges, n, err) || tok_pairmap_init(&b->joins, n / 8 + 16, err))
        return -1;
    b->cut_words = true;
    tok_buf joined = {0};
    int rc = 0;
    for (size_t rank = 0; rank < n && !rc; rank++) {
        const char *a = NULL, *c = NULL;
        size_t a_len = 0, c_len = 0;
        int32_t a_id, c_id, ac_id;
        joined.len = 0;
        if (merge_sides(json_array_get(merges, rank), rank, &a, &a_len, &c, &c_len, err) ||
            (a_id = merge_token(b, a, a_len, rank, err)) < 0 ||
            (c_id = merge_token(b, c, c_len, rank, err)) < 0 ||
            tok_buf_append(&joined, a, a_len, err) || tok_buf_append(&joined, c, c_len, err) ||
            (ac_id = merge_token(b, joined.data, joined.len, rank, err)) < 0) {
            rc = -1;
            break;
        }
        /* a later duplicate of a pair wins, as in a Rust HashMap built from the list */
        rc = tok_pairmap_put(&b->merges, (uint32_t)a_id, (uint32_t)c_id, (uint32_t)rank,
                             (uint32_t)ac_id, err);
        if (!a_len || !c_len)
            b->cut_words = false; /* an empty side has no characters to reason about */
        else if (!rc)
            rc = tok_pairmap_put(&b->joins, b->last_char[a_id], b->first_char[c_id], 0, 0, err);
    }
    tok_buf_free(&joined);
    return rc;
}

int tok_bpe_parse(const json_t *model, size_t extra_ids, tok_bpe *b, perq_err *err)
{
    memset(b, 0, sizeof *b);
    if (!json_is_object(model))
        return perq_fail(err, PERQ_E_FORMAT, "model is %s", model ? "not an object" : "missing");
    if (parse_options(model, b, err) ||
        tok_vocab_parse(json_object_get(model, "vocab"), extra_ids, &b->vocab, err) ||
        index_tokens(b, err) || parse_merges(json_object_get(model, "merges"), b, err)) {
        tok_bpe_free(b);
        return -1;
    }
    return 0;
}

void tok_bpe_free(tok_bpe *b)
{
    tok_vocab_free(&b->vocab);
    tok_pairmap_free(&b->merges);
    tok_pairmap_free(&b->joins);
    free(b->first_char);
    free(b->last_char);
    free(b->unk_token);
    b->first_char = b->last_char = NULL;
    b->unk_token = NULL;
}

/* ---- encoding ------------------------------------------------------------- */

typedef struct {
    int32_t id; /* -1 once merged into its left neighbour */
    int32_t prev, next;
} symbol;

typedef struct {
    uint32_t rank;
    uint32_t pos; /* index of the left symbol */
    int32_t merged;
} candidate;

struct tok_bpe_work {
    tok_ids initial; /* the symbols of the whole pre-token */
    symbol *syms;
    candidate *heap;
    size_t cap_syms, cap_heap;
};

tok_bpe_work *tok_bpe_work_new(void)
{
    return calloc(1, sizeof(tok_bpe_work));
}

void tok_bpe_work_free(tok_bpe_work *w)
{
    if (!w)
        return;
    free(w->initial.v);
    free(w->syms);
    free(w->heap);
    free(w);
}

static int work_reserve(tok_bpe_work *w, size_t n, perq_err *err)
{
    if (n > w->cap_syms) {
        size_t cap = n < 64 ? 64 : n;
        symbol *s = realloc(w->syms, cap * sizeof *s);
        if (!s)
            return perq_fail(err, PERQ_E_NOMEM, "tokenizer: out of memory");
        w->syms = s;
        w->cap_syms = cap;
    }
    /* every merge pops one candidate and pushes at most two */
    if (3 * n > w->cap_heap) {
        size_t cap = 3 * n < 192 ? 192 : 3 * n;
        candidate *h = realloc(w->heap, cap * sizeof *h);
        if (!h)
            return perq_fail(err, PERQ_E_NOMEM, "tokenizer: out of memory");
        w->heap = h;
        w->cap_heap = cap;
    }
    return 0;
}

static bool before(candidate a, candidate b)
{
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

static void sift_down(candidate *h, size_t n, size_t i)
{
    candidate c = h[i];
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= n)
            break;
        if (k + 1 < n && before(h[k + 1], h[k]))
            k++;
        if (!before(h[k], c))
            break;
        h[i] = h[k];
        i = k;
    }
    h[i] = c;
}

static void heap_push(candidate *h, size_t *n, candidate c)
{
    size_t i = (*n)++;
    while (i > 0 && before(c, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static candidate heap_pop(candidate *h, size_t *n)
{
    candidate top = h[0];
    h[0] = h[--*n];
    if (*n)
        sift_down(h, *n, 0);
    return top;
}

static bool find_merge(const tok_bpe *b, int32_t left, int32_t right, uint32_t pos, candidate *c)
{
    uint32_t rank, merged;
    if (!tok_pairmap_get(&b->merges, (uint32_t)left, (uint32_t)right, &rank, &merged))
        return false;
    *c = (candidate){rank, pos, (int32_t)merged};
    return true;
}

/* Merges the n symbols ids[0..n) and appends the result. */
static int merge_part(const tok_bpe *b, const int32_t *ids, size_t n, tok_bpe_work *w, tok_ids *out,
                      perq_err *err)
{
    if (n == 1)
        return tok_ids_push(out, ids[0], err);
    if (work_reserve(w, n, err))
        return -1;
    symbol *sym = w->syms;
    candidate *heap = w->heap, c;
    size_t n_heap = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = (symbol){ids[i], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
        if (i + 1 < n && find_merge(b, ids[i], ids[i + 1], (uint32_t)i, &c))
            heap[n_heap++] = c;
    }
    for (size_t i = n_heap / 2; i-- > 0;)
        sift_down(heap, n_heap, i);

    while (n_heap) {
        candidate top = heap_pop(heap, &n_heap);
        symbol *left = &sym[top.pos];
        if (left->id < 0 || left->next < 0)
            continue;
        symbol *right = &sym[left->next];
        /* a stale candidate: one of its symbols has changed since */
        if (!find_merge(b, left->id, right->id, top.pos, &c) || c.merged != top.merged)
            continue;
        left->id = top.merged;
        left->next = right->next;
        right->id = -1;
        if (left->next >= 0)
            sym[left->next].prev = (int32_t)top.pos;
        if (left->prev >= 0 && find_merge(b, sym[left->prev].id, left->id, (uint32_t)left->prev, &c))
            heap_push(heap, &n_heap, c);
        if (left->next >= 0 && find_merge(b, left->id, sym[left->next].id, top.pos, &c))
            heap_push(heap, &n_heap, c);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next)
        if (tok_ids_push(out, sym[i].id, err))
            return -1;
    return 0;
}

static int32_t char_id(const tok_bpe *b, const char *s, size_t len, uint32_t cp)
{
    if (cp < TOK_DIRECT_CHARS)
        return b->direct[cp];
    return tok_vocab_find(&b->vocab, s, len);
}

/* The initial symbols, as Hugging Face's BPE::merge_word makes them: a
 * character's token, else its byte tokens (byte_fallback), else unk. A pending
 * unk is only written when the next known character comes, so byte tokens
 * that follow an unk come out before it, as they do there. */
static int initial_symbols(const tok_bpe *b, const char *s, size_t len, tok_ids *syms, perq_err *err)
{
    syms->n = 0;
    bool unk_pending = false;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = tok_utf8_decode(s, len, i, &cp);
        int32_t id = char_id(b, s + i, n, cp);
        if (id >= 0) {
            if (unk_pending && tok_ids_push(syms, b->unk_id, err))
                return -1;
            unk_pending = false;
            if (tok_ids_push(syms, id, err))
                return -1;
        } else {
            bool bytes_known = b->byte_fallback;
            for (size_t k = 0; k < n && bytes_known; k++)
                bytes_known = b->byte_id[(unsigned char)s[i + k]] >= 0;
            if (bytes_known) {
                for (size_t k = 0; k < n; k++)
                    if (tok_ids_push(syms, b->byte_id[(unsigned char)s[i + k]], err))
                        return -1;
            } else if (b->unk_token) {
                if (b->unk_id < 0)
                    return perq_fail(err, PERQ_E_FORMAT, "model: unk_token '%.80s' is not in the vocabulary",
                                     b->unk_token);
                if (unk_pending && !b->fuse_unk && tok_ids_push(syms, b->unk_id, err))
                    return -1;
                unk_pending = true;
            }
            /* with no unk token, an unknown character gives no token at all */
        }
        i += n;
    }
    if (unk_pending && tok_ids_push(syms, b->unk_id, err))
        return -1;
    return 0;
}

static bool can_join(const tok_bpe *b, int32_t left, int32_t right)
{
    uint32_t unused_x, unused_y;
    return tok_pairmap_get(&b->joins, b->last_char[left], b->first_char[right], &unused_x, &unused_y);
}

int tok_bpe_encode(const tok_bpe *b, const char *s, size_t len, tok_bpe_work *w, tok_ids *out,
                   perq_err *err)
{
    if (!len)
        return 0;
    if (b->ignore_merges) {
        int32_t id = tok_vocab_find(&b->vocab, s, len);
        if (id >= 0)
            return tok_ids_push(out, id, err);
    }
    if (initial_symbols(b, s, len, &w->initial, err))
        return -1;
    const int32_t *ids = w->initial.v;
    size_t n = w->initial.n, start = 0;
    for (size_t i = 1; i < n && b->cut_words; i++) {
        if (can_join(b, ids[i - 1], ids[i]))
            continue;
        if (merge_part(b, ids + start, i - start, w, out, err))
            return -1;
        start = i;
    }
    return n > start ? merge_part(b, ids + start, n - start, w, out, err) : 0;
}
