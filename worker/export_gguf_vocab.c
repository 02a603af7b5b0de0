/* The tokenizer.ggml.* key-values of a GGUF export, from tokenizer.json.
 *
 * SentencePiece-style BPE (byte_fallback: Llama 2, TinyLlama, Mistral) is
 * tokenizer.ggml.model "llama": llama.cpp then tokenizes as SentencePiece
 * does, repeatedly merging the adjacent pair whose merged piece has the
 * highest score. tokenizer.json has no scores, and llama.cpp's own converter
 * (LlamaHfVocab) writes -1000 for every piece, which turns every merge into a
 * tie. Here the score of a piece is -(1 + rank of the first merge that makes
 * it), so llama.cpp merges in the order of the merge list, as Hugging Face's
 * BPE does; pieces no merge makes score 0 (single characters, bytes, special
 * tokens: llama.cpp never merges into them) or, when longer, below every
 * merge. For a vocabulary converted from SentencePiece (merges ordered by
 * piece score) this is the original order of scores.
 *
 * Byte-level BPE (Llama 3) is "gpt2": the vocabulary strings as they are, the
 * merge list, and the pre-tokenizer by name (tokenizer.ggml.pre): "llama-bpe"
 * for Llama 3's split regex, "gpt-2" for plain ByteLevel. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_gguf_internal.h"
#include "perq/fsutil.h"
#include "tokenizer_internal.h"

#define LLAMA3_SPLIT                                                                                              \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s+(?!\\S)|\\s+"

typedef enum { VOCAB_SPM, VOCAB_BYTE_LEVEL } vocab_kind;

typedef struct vocab_src {
    perq_tokenizer *tok;
    json_t *json;          /* tokenizer.json */
    const json_t *merges;  /* model.merges */
    vocab_kind kind;
    const char *pre;       /* tokenizer.ggml.pre */
    bool space_prefix;     /* SentencePiece's dummy prefix "▁" */
    int n_vocab;
} vocab_src;

/* ---- what kind of tokenizer ---------------------------------------------------- */

static bool is_type(const json_t *obj, const char *type)
{
    const char *t = tok_json_type(obj);
    return t && !strcmp(t, type);
}

/* The object of this type in a component or its Sequence, NULL when none. */
static const json_t *find_component(const json_t *c, const char *list_key, const char *type)
{
    if (is_type(c, type))
        return c;
    const json_t *list = json_object_get(c, list_key);
    for (size_t i = 0; is_type(c, "Sequence") && i < json_array_size(list); i++)
        if (is_type(json_array_get(list, i), type))
            return json_array_get(list, i);
    return NULL;
}

static bool adds_space_prefix(const json_t *tj)
{
    if (find_component(json_object_get(tj, "normalizer"), "normalizers", "Prepend"))
        return true;
    const json_t *ms = find_component(json_object_get(tj, "pre_tokenizer"), "pretokenizers", "Metaspace");
    if (!ms)
        return false;
    const char *scheme = json_string_value(json_object_get(ms, "prepend_scheme"));
    return scheme ? strcmp(scheme, "never") != 0 : json_is_true(json_object_get(ms, "add_prefix_space"));
}

static int classify(vocab_src *v, perq_err *err)
{
    const json_t *pre = json_object_get(v->json, "pre_tokenizer");
    if (v->tok->model.byte_fallback) {
        v->kind = VOCAB_SPM;
        v->pre = "default";
        v->space_prefix = adds_space_prefix(v->json);
        return 0;
    }
    if (!find_component(pre, "pretokenizers", "ByteLevel"))
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "tokenizer.json: neither SentencePiece-style BPE (byte_fallback) nor byte-level BPE: "
                         "no GGUF tokenizer model for it");
    v->kind = VOCAB_BYTE_LEVEL;
    const json_t *split = find_component(pre, "pretokenizers", "Split");
    const char *regex = json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex"));
    if (regex && !strcmp(regex, LLAMA3_SPLIT))
        v->pre = "llama-bpe";
    else if (!split && is_type(pre, "ByteLevel") && json_is_true(json_object_get(pre, "use_regex")))
        v->pre = "gpt-2";
    else
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "tokenizer.json: a byte-level pre-tokenizer llama.cpp knows by no name (only Llama 3's "
                         "split and GPT-2's are mapped)");
    return 0;
}

/* ---- merges ------------------------------------------------------------------------ */

/* Merge i as its two sides: "left right" or ["left", "right"]. */
static int merge_sides(const json_t *m, size_t i, const char **l, size_t *ll, const char **r, size_t *rl,
                       perq_err *err)
{
    const json_t *e = json_array_get(m, i);
    if (json_is_string(e)) {
        const char *s = json_string_value(e), *sp = strchr(s, ' ');
        if (sp && !strchr(sp + 1, ' ')) {
            *l = s, *ll = (size_t)(sp - s), *r = sp + 1, *rl = strlen(sp + 1);
            return 0;
        }
    } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
               json_is_string(json_array_get(e, 1))) {
        *l = json_string_value(json_array_get(e, 0)), *ll = json_string_length(json_array_get(e, 0));
        *r = json_string_value(json_array_get(e, 1)), *rl = json_string_length(json_array_get(e, 1));
        return 0;
    }
    return perq_fail(err, PERQ_E_FORMAT, "tokenizer.json: merge %zu is not a pair of pieces", i);
}

/* Per id: the rank of the first merge that makes the piece, -1 for none. */
static int merge_ranks(const vocab_src *v, long *rank, perq_err *err)
{
    for (int id = 0; id < v->n_vocab; id++)
        rank[id] = -1;
    char buf[1024];
    for (size_t i = 0; i < json_array_size(v->merges); i++) {
        const char *l, *r;
        size_t ll, rl;
        if (merge_sides(v->merges, i, &l, &ll, &r, &rl, err) != 0)
            return -1;
        if (ll + rl > sizeof buf)
            continue; /* no piece that long */
        memcpy(buf, l, ll);
        memcpy(buf + ll, r, rl);
        int32_t id = tok_vocab_find(&v->tok->model.vocab, buf, ll + rl);
        if (id >= 0 && id < v->n_vocab && rank[id] < 0)
            rank[id] = (long)i;
    }
    return 0;
}

/* ---- the tokens ------------------------------------------------------------------- */

/* The string of an id; NULL for an id no token has. */
static const char *token_str(const vocab_src *v, int id, size_t *len)
{
    const tok_added_token *a = tok_added_by_id(&v->tok->added, id);
    if (a) {
        *len = a->len;
        return a->content;
    }
    return tok_vocab_str(&v->tok->model.vocab, id, len);
}

static bool is_byte_piece(const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEFabcdef";
    return len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && strchr(hex, s[3]) && strchr(hex, s[4]);
}

static int32_t token_type(const vocab_src *v, int id, const char *s, size_t len)
{
    if (!s)
        return PERQ_GGUF_TOKEN_UNUSED;
    const tok_added_token *a = tok_added_by_id(&v->tok->added, id);
    if (v->kind == VOCAB_SPM && id == v->tok->model.unk_id)
        return PERQ_GGUF_TOKEN_UNKNOWN;
    if (a)
        return a->special ? PERQ_GGUF_TOKEN_CONTROL : PERQ_GGUF_TOKEN_USER_DEFINED;
    if (v->kind == VOCAB_SPM && is_byte_piece(s, len))
        return PERQ_GGUF_TOKEN_BYTE;
    return PERQ_GGUF_TOKEN_NORMAL;
}

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static void put_tokens(const vocab_src *v, gguf_kv *kv)
{
    gguf_kv_array(kv, "tokenizer.ggml.tokens", PERQ_GGUF_STRING, (uint64_t)v->n_vocab);
    for (int id = 0; id < v->n_vocab; id++) {
        size_t len;
        const char *s = token_str(v, id, &len);
        char pad[32];
        if (!s) {
            len = (size_t)snprintf(pad, sizeof pad, "[PAD%d]", id);
            s = pad;
        }
        gguf_put_str(kv, s, len);
    }
    gguf_kv_array(kv, "tokenizer.ggml.token_type", PERQ_GGUF_INT32, (uint64_t)v->n_vocab);
    for (int id = 0; id < v->n_vocab; id++) {
        size_t len = 0;
        const char *s = token_str(v, id, &len);
        int32_t type = token_type(v, id, s, len);
        gguf_put(kv, &type, 4);
    }
}

static int put_scores(const vocab_src *v, gguf_kv *kv, perq_err *err)
{
    long *rank = malloc((size_t)v->n_vocab * sizeof *rank);
    if (!rank)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (merge_ranks(v, rank, err) != 0) {
        free(rank);
        return -1;
    }
    float after_all = -(float)(json_array_size(v->merges) + 1);
    gguf_kv_array(kv, "tokenizer.ggml.scores", PERQ_GGUF_FLOAT32, (uint64_t)v->n_vocab);
    for (int id = 0; id < v->n_vocab; id++) {
        size_t len = 0;
        const char *s = token_str(v, id, &len);
        int32_t type = token_type(v, id, s, len);
        float score = 0;
        if (rank[id] >= 0)
            score = -(float)(rank[id] + 1);
        else if (type == PERQ_GGUF_TOKEN_UNUSED)
            score = -1000.0f;
        else if (type == PERQ_GGUF_TOKEN_NORMAL && utf8_chars(s, len) > 1)
            score = after_all;
        gguf_put(kv, &score, 4);
    }
    free(rank);
    return 0;
}

static int put_merges(const vocab_src *v, gguf_kv *kv, perq_err *err)
{
    gguf_kv_array(kv, "tokenizer.ggml.merges", PERQ_GGUF_STRING, json_array_size(v->merges));
    char buf[2048];
    for (size_t i = 0; i < json_array_size(v->merges); i++) {
        const char *l, *r;
        size_t ll, rl;
        if (merge_sides(v->merges, i, &l, &ll, &r, &rl, err) != 0)
            return -1;
        if (ll + rl + 1 > sizeof buf || memchr(l, ' ', ll) || memchr(r, ' ', rl))
            return perq_fail(err, PERQ_E_UNSUPPORTED, "tokenizer.json: merge %zu has a space or is too long", i);
        memcpy(buf, l, ll);
        buf[ll] = ' ';
        memcpy(buf + ll + 1, r, rl);
        gguf_put_str(kv, buf, ll + 1 + rl);
    }
    return 0;
}

static void put_specials(const vocab_src *v, gguf_kv *kv, int config_bos, int config_eos)
{
    int bos = v->tok->bos_id >= 0 ? v->tok->bos_id : config_bos;
    int eos = v->tok->eos_id >= 0 ? v->tok->eos_id : config_eos;
    if (bos >= 0 && bos < v->n_vocab)
        gguf_kv_u32(kv, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0 && eos < v->n_vocab)
        gguf_kv_u32(kv, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (v->tok->model.unk_id >= 0 && v->tok->model.unk_id < v->n_vocab)
        gguf_kv_u32(kv, "tokenizer.ggml.unknown_token_id", (uint32_t)v->tok->model.unk_id);
    gguf_kv_bool(kv, "tokenizer.ggml.add_bos_token", v->tok->bos_id >= 0);
    gguf_kv_bool(kv, "tokenizer.ggml.add_eos_token", false);
    if (v->kind == VOCAB_SPM)
        gguf_kv_bool(kv, "tokenizer.ggml.add_space_prefix", v->space_prefix);
}

int gguf_vocab_kv(gguf_kv *kv, const char *model_dir, int n_vocab, int config_bos, int config_eos, perq_err *err)
{
    vocab_src v = {.n_vocab = n_vocab};
    char path[4096], *text = NULL;
    size_t len;
    int rc = perq_tokenizer_load(model_dir, &v.tok, err);
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    if (rc == 0)
        rc = perq_read_file(path, 0, &text, &len, err);
    if (rc == 0) {
        json_error_t jerr;
        if (!(v.json = json_loadb(text, len, 0, &jerr)))
            rc = perq_fail(err, PERQ_E_FORMAT, "%s: %s", path, jerr.text);
    }
    free(text);
    if (rc == 0 && perq_tokenizer_vocab_size(v.tok) > (size_t)n_vocab)
        rc = perq_fail(err, PERQ_E_FORMAT, "the tokenizer has %zu tokens, the embedding %d rows",
                       perq_tokenizer_vocab_size(v.tok), n_vocab);
    if (rc == 0) {
        v.merges = json_object_get(json_object_get(v.json, "model"), "merges");
        rc = classify(&v, err);
    }
    if (rc == 0) {
        gguf_kv_str(kv, "tokenizer.ggml.model", v.kind == VOCAB_SPM ? "llama" : "gpt2");
        gguf_kv_str(kv, "tokenizer.ggml.pre", v.pre);
        put_tokens(&v, kv);
        rc = v.kind == VOCAB_SPM ? put_scores(&v, kv, err) : put_merges(&v, kv, err);
    }
    if (rc == 0)
        put_specials(&v, kv, config_bos, config_eos);
    json_decref(v.json);
    perq_tokenizer_free(v.tok);
    return rc == 0 ? 0 : perq_err_context(err, "tokenizer of %s", model_dir);
}
