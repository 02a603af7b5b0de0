/* Added tokens (special or not): found in the text before the model sees it,
 * as Hugging Face does. Tokens marked normalized: false are matched in the
 * input as written, the others in the normalized text. At each position the
 * longest token wins, the leftmost position first (Aho-Corasick's
 * leftmost-longest); single_word, lstrip and rstrip apply as there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

/* ---- a byte trie of the token contents ------------------------------------ */

typedef struct {
    int32_t first_child, next_sibling;
    int32_t token; /* index into tok_added.tokens, -1 when no token ends here */
    uint8_t byte;
} trie_node;

struct tok_trie {
    trie_node *nodes;
    size_t n, cap;
    bool starts[256]; /* bytes that begin some token */
};

static int32_t trie_child(const struct tok_trie *t, int32_t node, uint8_t byte)
{
    for (int32_t c = t->nodes[node].first_child; c >= 0; c = t->nodes[c].next_sibling)
        if (t->nodes[c].byte == byte)
            return c;
    return -1;
}

static int32_t trie_add_node(struct tok_trie *t, int32_t parent, uint8_t byte, perq_err *err)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        trie_node *v = realloc(t->nodes, cap * sizeof *v);
        if (!v)
            return perq_fail(err, PERQ_E_NOMEM, "added_tokens: out of memory");
        t->nodes = v;
        t->cap = cap;
    }
    int32_t id = (int32_t)t->n++;
    t->nodes[id] = (trie_node){-1, -1, -1, byte};
    if (parent >= 0) {
        t->nodes[id].next_sibling = t->nodes[parent].first_child;
        t->nodes[parent].first_child = id;
    }
    return id;
}

/* A content already present keeps its first token, as the first pattern wins there. */
static int trie_insert(struct tok_trie *t, const char *s, size_t len, int32_t token, perq_err *err)
{
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t child = trie_child(t, node, (uint8_t)s[i]);
        if (child < 0 && (child = trie_add_node(t, node, (uint8_t)s[i], err)) < 0)
            return -1;
        node = child;
    }
    if (t->nodes[node].token < 0)
        t->nodes[node].token = token;
    t->starts[(uint8_t)s[0]] = true;
    return 0;
}

/* The longest token starting at s[i]; returns its index or -1, and its end. */
static int32_t trie_longest(const struct tok_trie *t, const char *s, size_t len, size_t i, size_t *end)
{
    int32_t best = -1;
    int32_t node = 0;
    for (size_t k = i; k < len; k++) {
        node = trie_child(t, node, (uint8_t)s[k]);
        if (node < 0)
            break;
        if (t->nodes[node].token >= 0) {
            best = t->nodes[node].token;
            *end = k + 1;
        }
    }
    return best;
}

static void trie_free(struct tok_trie *t)
{
    if (t) {
        free(t->nodes);
        free(t);
    }
}

/* ---- loading -------------------------------------------------------------- */

static int parse_token(const json_t *j, size_t i, tok_added_token *tok, perq_err *err)
{
    char where[64];
    snprintf(where, sizeof where, "added_tokens[%zu]", i);
    if (!json_is_object(j))
        return perq_fail(err, PERQ_E_FORMAT, "%s is not an object", where);
    json_t *id = json_object_get(j, "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX)
        return perq_fail(err, PERQ_E_FORMAT, "%s.id is not a valid id", where);
    const char *content;
    size_t len;
    tok->normalized = true; /* the defaults of Hugging Face's AddedToken */
    if (tok_json_string(j, "content", where, &content, &len, err) ||
        tok_json_bool(j, "special", where, &tok->special, err) ||
        tok_json_bool(j, "normalized", where, &tok->normalized, err) ||
        tok_json_bool(j, "lstrip", where, &tok->lstrip, err) ||
        tok_json_bool(j, "rstrip", where, &tok->rstrip, err) ||
        tok_json_bool(j, "single_word", where, &tok->single_word, err))
        return -1;
    tok->id = (int32_t)json_integer_value(id);
    tok->content = malloc(len + 1);
    if (!tok->content)
        return perq_fail(err, PERQ_E_NOMEM, "%s: out of memory", where);
    memcpy(tok->content, content, len + 1);
    tok->len = len;
    return 0;
}

/* The id of an added token that is also in the model's vocabulary must be the
 * vocabulary's; and an id the vocabulary gives to another string is taken. */
static int check_id(const tok_added_token *tok, const tok_vocab *vocab, perq_err *err)
{
    int32_t in_vocab = tok_vocab_find(vocab, tok->content, tok->len);
    size_t other_len;
    const char *other = tok_vocab_str(vocab, tok->id, &other_len);
    if (in_vocab >= 0 && in_vocab != tok->id)
        return perq_fail(err, PERQ_E_FORMAT, "added token '%.80s' has id %d but the vocabulary gives it %d",
                         tok->content, tok->id, in_vocab);
    if (in_vocab < 0 && other)
        return perq_fail(err, PERQ_E_FORMAT, "added token '%.80s' has id %d, which the vocabulary gives to '%.*s'",
                         tok->content, tok->id, (int)(other_len > 80 ? 80 : other_len), other);
    return 0;
}

int tok_added_parse(const json_t *arr, const tok_bpe *model, tok_added *a, perq_err *err)
{
    memset(a, 0, sizeof *a);
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return perq_fail(err, PERQ_E_FORMAT, "added_tokens is not an array");
    a->tokens = calloc(json_array_size(arr) + 1, sizeof *a->tokens);
    if (!a->tokens)
        return perq_fail(err, PERQ_E_NOMEM, "added_tokens: out of memory");
    for (size_t i = 0; i < json_array_size(arr); i++) {
        tok_added_token *tok = &a->tokens[a->n];
        if (parse_token(json_array_get(arr, i), i, tok, err))
            return -1;
        a->n++;
        if (a->n == 1 || tok->id < a->min_id)
            a->min_id = tok->id;
        if (a->n == 1 || tok->id > a->max_id)
            a->max_id = tok->id;
        if (check_id(tok, &model->vocab, err))
            return perq_err_context(err, "added_tokens[%zu]", i);
        for (size_t k = 0; k + 1 < a->n; k++)
            if (a->tokens[k].id == tok->id && strcmp(a->tokens[k].content, tok->content))
                return perq_fail(err, PERQ_E_FORMAT, "added_tokens[%zu]: id %d is also '%.80s'", i, tok->id,
                                 a->tokens[k].content);
    }
    return 0;
}

static int build_trie(tok_added *a, bool normalized, const tok_normalizer *norm, struct tok_trie **out,
                      perq_err *err)
{
    struct tok_trie *t = calloc(1, sizeof *t);
    if (!t || trie_add_node(t, -1, 0, err) < 0) {
        trie_free(t);
        return perq_fail(err, PERQ_E_NOMEM, "added_tokens: out of memory");
    }
    *out = t;
    tok_buf form = {0};
    int rc = 0;
    /* special tokens first, then the others, each in file order */
    for (int special = 1; special >= 0 && !rc; special--)
        for (size_t i = 0; i < a->n && !rc; i++) {
            tok_added_token *tok = &a->tokens[i];
            if (tok->special != special || tok->normalized != normalized || !tok->len)
                continue;
            form.len = 0;
            rc = normalized && norm ? tok_normalize(norm, tok->content, tok->len, &form, err)
                                    : tok_buf_append(&form, tok->content, tok->len, err);
            if (!rc && form.len)
                rc = trie_insert(t, form.data, form.len, (int32_t)i, err);
        }
    tok_buf_free(&form);
    return rc;
}

int tok_added_build(tok_added *a, const tok_normalizer *norm, perq_err *err)
{
    return build_trie(a, false, NULL, &a->raw, err) || build_trie(a, true, norm, &a->normalized, err) ? -1 : 0;
}

void tok_added_free(tok_added *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->tokens[i].content);
    free(a->tokens);
    trie_free(a->raw);
    trie_free(a->normalized);
    memset(a, 0, sizeof *a);
}

const tok_added_token *tok_added_by_id(const tok_added *a, int32_t id)
{
    if (!a->n || id < a->min_id || id > a->max_id)
        return NULL;
    for (size_t i = 0; i < a->n; i++)
        if (a->tokens[i].id == id && a->tokens[i].len)
            return &a->tokens[i];
    return NULL;
}

const tok_added_token *tok_added_by_content(const tok_added *a, const char *s, size_t len)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->tokens[i].len == len && !memcmp(a->tokens[i].content, s, len))
            return &a->tokens[i];
    return NULL;
}

/* ---- splitting ------------------------------------------------------------- */

static uint32_t char_before(const char *s, size_t i)
{
    size_t k = i - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    uint32_t cp;
    tok_utf8_decode(s, i, k, &cp);
    return cp;
}

static bool is_single_word(const char *s, size_t len, size_t start, size_t end)
{
    uint32_t cp;
    if (start > 0 && tok_is_word_char(char_before(s, start)))
        return false;
    if (end < len && (tok_utf8_decode(s, len, end, &cp), tok_is_word_char(cp)))
        return false;
    return true;
}

/* Whitespace before start (down to floor) or after end. */
static size_t spaces_before(const char *s, size_t start, size_t floor)
{
    while (start > floor) {
        size_t k = start - 1;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
            k--;
        uint32_t cp;
        tok_utf8_decode(s, start, k, &cp);
        if (!tok_is_whitespace(cp))
            break;
        start = k;
    }
    return start < floor ? floor : start;
}

static size_t spaces_after(const char *s, size_t len, size_t end)
{
    while (end < len) {
        uint32_t cp;
        size_t n = tok_utf8_decode(s, len, end, &cp);
        if (!tok_is_whitespace(cp))
            break;
        end += n;
    }
    return end;
}

int tok_added_split(const tok_added *a, bool normalized, const char *s, size_t len, bool at_start,
                    tok_pieces *out, perq_err *err)
{
    const struct tok_trie *t = normalized ? a->normalized : a->raw;
    size_t done = 0; /* end of the last piece written */
    for (size_t i = 0; t && t->n > 1 && i < len;) {
        size_t end = 0;
        int32_t k = t->starts[(uint8_t)s[i]] ? trie_longest(t, s, len, i, &end) : -1;
        if (k < 0) {
            i++;
            continue;
        }
        const tok_added_token *tok = &a->tokens[k];
        size_t start = i;
        i = end; /* the search goes on after this match, used or not */
        if (start < done || (tok->single_word && !is_single_word(s, len, start, end)))
            continue;
        if (tok->lstrip)
            start = spaces_before(s, start, done);
        if (tok->rstrip)
            end = spaces_after(s, len, end);
        if (tok_pieces_add_text(out, s + done, start - done, at_start && done == 0, err) ||
            tok_pieces_add_token(out, tok->id, err))
            return -1;
        done = end;
    }
    return tok_pieces_add_text(out, s + done, len - done, at_start && done == 0, err);
}
