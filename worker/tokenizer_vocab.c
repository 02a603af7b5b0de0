/* The model's vocabulary (token string <-> id) and the small hash map of id
 * pairs that holds the merges. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3u;
    }
    return h ^ (h >> 29);
}

static size_t table_size_for(size_t n)
{
    size_t size = 16;
    while (size < 2 * n)
        size *= 2;
    return size;
}

int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t len)
{
    if (!v->table)
        return -1;
    for (size_t i = hash_bytes(s, len) & v->table_mask;; i = (i + 1) & v->table_mask) {
        int32_t id = v->table[i];
        if (id < 0)
            return -1;
        if (v->len[id] == len && !memcmp(v->strings + v->off[id], s, len))
            return id;
    }
}

const char *tok_vocab_str(const tok_vocab *v, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= v->n_ids || v->len[id] == TOK_NO_TOKEN)
        return NULL;
    *len = v->len[id];
    return v->strings + v->off[id];
}

/* Ids above this many per token defined are refused: a vocabulary is dense,
 * and arrays indexed by id must stay small. */
static bool ids_too_sparse(int64_t max_id, size_t n_tokens)
{
    return max_id >= 4 * (int64_t)n_tokens + 1024;
}

static int vocab_first_pass(const json_t *obj, size_t extra_ids, int64_t *max_id, size_t *bytes,
                            perq_err *err)
{
    const char *key;
    json_t *val;
    *max_id = -1;
    *bytes = 0;
    json_object_foreach((json_t *)obj, key, val) {
        if (!json_is_integer(val))
            return perq_fail(err, PERQ_E_FORMAT, "model.vocab: the id of '%.80s' is not an integer",
                             key);
        json_int_t id = json_integer_value(val);
        if (id < 0 || id >= INT32_MAX)
            return perq_fail(err, PERQ_E_FORMAT, "model.vocab: the id of '%.80s' (%lld) is out of range",
                             key, (long long)id);
        if (id > *max_id)
            *max_id = id;
        *bytes += strlen(key);
    }
    if (ids_too_sparse(*max_id, json_object_size(obj) + extra_ids))
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "model.vocab: ids are too sparse (id %lld for %zu tokens)",
                         (long long)*max_id, json_object_size(obj));
    if (*bytes >= UINT32_MAX)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "model.vocab: token strings exceed 4 GB");
    return 0;
}

static void table_insert(tok_vocab *v, int32_t id)
{
    size_t i = hash_bytes(v->strings + v->off[id], v->len[id]) & v->table_mask;
    while (v->table[i] >= 0)
        i = (i + 1) & v->table_mask;
    v->table[i] = id;
}

int tok_vocab_parse(const json_t *obj, size_t extra_ids, tok_vocab *v, perq_err *err)
{
    *v = (tok_vocab){0};
    if (!json_is_object(obj))
        return perq_fail(err, PERQ_E_FORMAT, "model.vocab is not an object");
    int64_t max_id;
    size_t bytes;
    if (vocab_first_pass(obj, extra_ids, &max_id, &bytes, err))
        return -1;
    size_t n_tokens = json_object_size(obj);
    v->n_ids = (size_t)(max_id + 1);
    size_t table_size = table_size_for(n_tokens);
    v->strings = malloc(bytes + 1);
    v->off = malloc((v->n_ids + 1) * sizeof *v->off);
    v->len = malloc((v->n_ids + 1) * sizeof *v->len);
    v->table = malloc(table_size * sizeof *v->table);
    if (!v->strings || !v->off || !v->len || !v->table) {
        tok_vocab_free(v);
        return perq_fail(err, PERQ_E_NOMEM, "model.vocab: out of memory");
    }
    v->table_mask = table_size - 1;
    memset(v->table, 0xFF, table_size * sizeof *v->table);
    for (size_t i = 0; i < v->n_ids; i++)
        v->len[i] = TOK_NO_TOKEN;

    const char *key;
    json_t *val;
    size_t used = 0;
    json_object_foreach((json_t *)obj, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        size_t len = strlen(key);
        if (v->len[id] != TOK_NO_TOKEN) {
            perq_fail(err, PERQ_E_FORMAT, "model.vocab: id %d is given to both '%.80s' and '%.*s'",
                      id, key, (int)(v->len[id] > 80 ? 80 : v->len[id]), v->strings + v->off[id]);
            tok_vocab_free(v);
            return -1;
        }
        memcpy(v->strings + used, key, len);
        v->off[id] = (uint32_t)used;
        v->len[id] = (uint32_t)len;
        used += len;
        table_insert(v, id);
    }
    return 0;
}

void tok_vocab_free(tok_vocab *v)
{
    free(v->strings);
    free(v->off);
    free(v->len);
    free(v->table);
    *v = (tok_vocab){0};
}

/* ---- pair map ------------------------------------------------------------ */

struct tok_pair_slot {
    uint64_t key; /* EMPTY_KEY when free */
    uint32_t x, y;
};

#define EMPTY_KEY UINT64_MAX

static size_t slot_of(const tok_pairmap *m, uint64_t key)
{
    key ^= key >> 31; /* splitmix64's finalizer */
    key *= 0x7fb5d329728ea185u;
    key ^= key >> 27;
    key *= 0x81dadef4bc2dd44du;
    key ^= key >> 33;
    return key & m->mask;
}

int tok_pairmap_init(tok_pairmap *m, size_t expected, perq_err *err)
{
    size_t size = table_size_for(expected);
    m->slots = malloc(size * sizeof *m->slots);
    if (!m->slots)
        return perq_fail(err, PERQ_E_NOMEM, "tokenizer: out of memory for %zu merges", expected);
    for (size_t i = 0; i < size; i++)
        m->slots[i].key = EMPTY_KEY;
    m->mask = size - 1;
    m->n = 0;
    return 0;
}

static int pairmap_grow(tok_pairmap *m, perq_err *err)
{
    tok_pairmap bigger;
    if (tok_pairmap_init(&bigger, 2 * (m->mask + 1), err))
        return -1;
    for (size_t i = 0; i <= m->mask; i++) {
        struct tok_pair_slot *s = &m->slots[i];
        if (s->key != EMPTY_KEY)
            tok_pairmap_put(&bigger, (uint32_t)(s->key >> 32), (uint32_t)s->key, s->x, s->y, err);
    }
    free(m->slots);
    *m = bigger;
    return 0;
}

int tok_pairmap_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t x, uint32_t y, perq_err *err)
{
    if (2 * (m->n + 1) > m->mask + 1 && pairmap_grow(m, err))
        return -1;
    uint64_t key = (uint64_t)a << 32 | b;
    size_t i = slot_of(m, key);
    while (m->slots[i].key != EMPTY_KEY && m->slots[i].key != key)
        i = (i + 1) & m->mask;
    if (m->slots[i].key == EMPTY_KEY)
        m->n++;
    m->slots[i] = (struct tok_pair_slot){key, x, y};
    return 0;
}

bool tok_pairmap_get(const tok_pairmap *m, uint32_t a, uint32_t b, uint32_t *x, uint32_t *y)
{
    if (!m->slots)
        return false;
    uint64_t key = (uint64_t)a << 32 | b;
    for (size_t i = slot_of(m, key);; i = (i + 1) & m->mask) {
        const struct tok_pair_slot *s = &m->slots[i];
        if (s->key == key) {
            *x = s->x;
            *y = s->y;
            return true;
        }
        if (s->key == EMPTY_KEY)
            return false;
    }
}

void tok_pairmap_free(tok_pairmap *m)
{
    free(m->slots);
    *m = (tok_pairmap){0};
}
