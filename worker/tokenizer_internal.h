/* The parts of the tokenizer (perq/tokenizer.h), as Hugging Face tokenizers
 * runs them on a text:
 *
 *   added tokens (matched in the raw text)  -> tokenizer_added.c
 *   normalizer                              -> tokenizer_normalize.c
 *   added tokens (matched after normalizing)-> tokenizer_added.c
 *   pre-tokenizer                           -> tokenizer_pretokenize.c
 *   BPE model                               -> tokenizer_bpe.c
 *   BOS from the post-processor / configs   -> tokenizer_special.c
 *
 * and back: decoders in tokenizer_decode.c. tokenizer_load.c reads
 * tokenizer.json into these parts, tokenizer_encode.c runs them. Text between
 * the stages travels as a list of pieces; a piece is either text still to be
 * tokenized or an added token already recognised. */
#ifndef PERQ_TOKENIZER_INTERNAL_H
#define PERQ_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perq/error.h"
#include "perq/tokenizer.h"

/* ---- growable arrays (tokenizer_utf8.c) ---------------------------------- */

typedef struct tok_buf {
    char *data;
    size_t len, cap;
} tok_buf;

int tok_buf_reserve(tok_buf *b, size_t extra, perq_err *err);
int tok_buf_append(tok_buf *b, const void *bytes, size_t n, perq_err *err);
void tok_buf_free(tok_buf *b);

typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;

int tok_ids_push(tok_ids *ids, int32_t id, perq_err *err);

typedef struct tok_span {
    size_t start, end;
} tok_span;

typedef struct tok_spans {
    tok_span *v;
    size_t n, cap;
} tok_spans;

int tok_spans_push(tok_spans *s, size_t start, size_t end, perq_err *err);

/* ---- UTF-8 and character classes (tokenizer_utf8.c) ---------------------- */

/* Length of the valid UTF-8 prefix of s (len when all of s is valid). */
size_t tok_utf8_valid_prefix(const char *s, size_t len);
/* Decodes the character at s[i] of valid UTF-8; returns its length in bytes. */
size_t tok_utf8_decode(const char *s, size_t len, size_t i, uint32_t *cp);
size_t tok_utf8_encode(uint32_t cp, char out[4]);
/* Appends s with every invalid sequence replaced by U+FFFD, one per maximal
 * invalid subpart (Rust's String::from_utf8_lossy). */
int tok_utf8_append_lossy(tok_buf *out, const char *s, size_t len, perq_err *err);

bool tok_is_whitespace(uint32_t cp); /* Unicode White_Space (Rust char::is_whitespace) */
bool tok_is_word_char(uint32_t cp);  /* regex \w */
bool tok_is_numeric(uint32_t cp);    /* Rust char::is_numeric: Nd, Nl, No */

/* GPT-2's reversible map of bytes to printable characters (ByteLevel). */
uint32_t tok_byte_to_char(uint8_t byte);
int tok_char_to_byte(uint32_t cp); /* -1 when cp is not the image of a byte */

/* ---- JSON helpers (tokenizer_load.c) ------------------------------------- */

/* Type string of a component object ("type" member), NULL when missing. */
const char *tok_json_type(const json_t *obj);
/* Optional boolean member: *out keeps its default when absent or null. */
int tok_json_bool(const json_t *obj, const char *key, const char *where, bool *out, perq_err *err);
/* Required string member. */
int tok_json_string(const json_t *obj, const char *key, const char *where, const char **s,
                    size_t *len, perq_err *err);
/* A member that must be a single character (Metaspace replacement, Strip content). */
int tok_json_char(const json_t *obj, const char *key, const char *where, uint32_t *cp,
                  perq_err *err);
int tok_unsupported_type(const char *where, const json_t *obj, perq_err *err);

/* ---- patterns: a literal string or a PCRE2 regex (tokenizer_pattern.c) --- */

typedef struct tok_pattern {
    char *literal; /* non-empty literal, searched with memmem */
    size_t literal_len;
    pcre2_code *re; /* otherwise */
} tok_pattern;

/* {"String": "..."} or {"Regex": "..."}, as Replace and Split declare them. */
int tok_pattern_parse(const json_t *j, const char *where, tok_pattern *p, perq_err *err);
int tok_pattern_regex(const char *re, size_t len, const char *where, tok_pattern *p,
                      perq_err *err);
void tok_pattern_free(tok_pattern *p);
/* Non-overlapping matches, left to right, with Oniguruma's rule for empty
 * matches (none right where the previous match ended). s is valid UTF-8. */
int tok_pattern_find(const tok_pattern *p, const char *s, size_t len, tok_spans *out,
                     perq_err *err);

/* ---- pieces of text between stages (tokenizer_encode.c) ------------------ */

typedef struct tok_piece {
    size_t off, len; /* bytes in the owning tok_pieces' text */
    int32_t id;      /* >= 0: an added token, already final; -1: text */
    bool at_start;   /* the text begins at offset 0 of the input (Metaspace "first") */
} tok_piece;

typedef struct tok_pieces {
    tok_buf text;
    tok_piece *v;
    size_t n, cap;
} tok_pieces;

int tok_pieces_push(tok_pieces *p, tok_piece piece, perq_err *err);
/* Adds the text now at text[off .. text.len) as one piece (nothing when empty). */
int tok_pieces_close(tok_pieces *p, size_t off, bool at_start, perq_err *err);
int tok_pieces_add_text(tok_pieces *p, const char *s, size_t len, bool at_start, perq_err *err);
int tok_pieces_add_token(tok_pieces *p, int32_t id, perq_err *err);
void tok_pieces_free(tok_pieces *p);

/* ---- normalizers (tokenizer_normalize.c) --------------------------------- */

typedef struct tok_normalizer tok_normalizer;

/* j may be JSON null: *out is then NULL (no normalizer). */
int tok_normalizer_parse(const json_t *j, const char *where, tok_normalizer **out, perq_err *err);
void tok_normalizer_free(tok_normalizer *n);
/* Appends the normalized form of s (valid UTF-8) to out. */
int tok_normalize(const tok_normalizer *n, const char *s, size_t len, tok_buf *out, perq_err *err);

/* ---- pre-tokenizers (tokenizer_pretokenize.c) ---------------------------- */

typedef struct tok_pretok tok_pretok;

int tok_pretok_parse(const json_t *j, const char *where, tok_pretok **out, perq_err *err);
void tok_pretok_free(tok_pretok *p);
/* Splits every text piece of in into out; added-token pieces pass through. */
int tok_pretokenize(const tok_pretok *p, const tok_pieces *in, tok_pieces *out, perq_err *err);

/* ---- added tokens (tokenizer_added.c) ------------------------------------ */

typedef struct tok_added_token {
    char *content;
    size_t len;
    int32_t id;
    bool special, normalized, lstrip, rstrip, single_word;
} tok_added_token;

typedef struct tok_trie tok_trie;

typedef struct tok_added {
    tok_added_token *tokens;
    size_t n;
    int32_t min_id, max_id; /* range of the ids, for a quick no */
    tok_trie *raw;        /* tokens with normalized: false, matched in the input */
    tok_trie *normalized; /* the others, matched in normalized text */
} tok_added;

/* Reads the "added_tokens" array; ids are checked against the model's vocabulary. */
struct tok_bpe;
int tok_added_parse(const json_t *arr, const struct tok_bpe *model, tok_added *a, perq_err *err);
/* Builds the matchers; normalized tokens are matched in their normalized form. */
int tok_added_build(tok_added *a, const tok_normalizer *norm, perq_err *err);
/* Splits s into added tokens and text pieces, appended to out. */
int tok_added_split(const tok_added *a, bool normalized, const char *s, size_t len, bool at_start,
                    tok_pieces *out, perq_err *err);
const tok_added_token *tok_added_by_id(const tok_added *a, int32_t id);
const tok_added_token *tok_added_by_content(const tok_added *a, const char *s, size_t len);
void tok_added_free(tok_added *a);

/* ---- vocabulary and pair maps (tokenizer_vocab.c) ------------------------ */

typedef struct tok_vocab {
    char *strings;      /* every token string, back to back */
    uint32_t *off;      /* per id: offset into strings */
    uint32_t *len;      /* per id: length, TOK_NO_TOKEN for ids without a token */
    size_t n_ids;       /* max id + 1 */
    int32_t *table;     /* open addressing: ids, -1 empty */
    size_t table_mask;
} tok_vocab;

#define TOK_NO_TOKEN UINT32_MAX

/* From the JSON object {"token": id, ...}; extra_ids widens the sparse-id
 * check by the number of tokens defined elsewhere (added tokens). */
int tok_vocab_parse(const json_t *obj, size_t extra_ids, tok_vocab *v, perq_err *err);
int32_t tok_vocab_find(const tok_vocab *v, const char *s, size_t len); /* -1 when absent */
const char *tok_vocab_str(const tok_vocab *v, int32_t id, size_t *len); /* NULL when none */
void tok_vocab_free(tok_vocab *v);

/* Map from a pair of 32-bit keys to a pair of 32-bit values. */
typedef struct tok_pairmap {
    struct tok_pair_slot *slots;
    size_t mask, n;
} tok_pairmap;

int tok_pairmap_init(tok_pairmap *m, size_t expected, perq_err *err);
int tok_pairmap_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t x, uint32_t y, perq_err *err);
bool tok_pairmap_get(const tok_pairmap *m, uint32_t a, uint32_t b, uint32_t *x, uint32_t *y);
void tok_pairmap_free(tok_pairmap *m);

/* ---- BPE model (tokenizer_bpe.c) ----------------------------------------- */

#define TOK_DIRECT_CHARS 0x3000 /* one-character tokens below this have a direct table */

typedef struct tok_bpe {
    tok_vocab vocab;
    tok_pairmap merges;   /* (left id, right id) -> (rank, merged id) */
    tok_pairmap joins;    /* (last char of a left side, first char of a right side) */
    bool cut_words;       /* joins is exact: words may be cut where no merge can join */
    uint32_t *first_char; /* per id */
    uint32_t *last_char;
    int32_t unk_id;       /* -1: no unk token; -2: named but not in the vocabulary */
    char *unk_token;
    bool fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_id[256]; /* <0xXX> tokens, -1 when absent */
    int32_t direct[TOK_DIRECT_CHARS];
} tok_bpe;

/* Reads "model" (type BPE); extra_ids: number of added tokens. */
int tok_bpe_parse(const json_t *model, size_t extra_ids, tok_bpe *b, perq_err *err);
void tok_bpe_free(tok_bpe *b);

typedef struct tok_bpe_work tok_bpe_work;
tok_bpe_work *tok_bpe_work_new(void);
void tok_bpe_work_free(tok_bpe_work *w);
/* Appends the ids of one pre-token (valid UTF-8) to out. */
int tok_bpe_encode(const tok_bpe *b, const char *s, size_t len, tok_bpe_work *w, tok_ids *out,
                   perq_err *err);

/* ---- decoders (tokenizer_decode.c) --------------------------------------- */

typedef struct tok_decoder tok_decoder;

int tok_decoder_parse(const json_t *j, const char *where, tok_decoder **out, perq_err *err);
void tok_decoder_free(tok_decoder *d);

/* ---- BOS and EOS (tokenizer_special.c) ----------------------------------- */

struct perq_tokenizer;
/* From the post-processor of tokenizer.json. */
int tok_special_from_post_processor(struct perq_tokenizer *t, const json_t *pp, perq_err *err);
/* tokenizer_config.json and config.json (either may be NULL) override it. */
int tok_special_from_configs(struct perq_tokenizer *t, const json_t *tokenizer_config,
                             const json_t *config, perq_err *err);
/* Id of a token string: added tokens first, then the model's vocabulary; -1 when absent. */
int32_t tok_token_id(const struct perq_tokenizer *t, const char *s, size_t len);

/* ---- the whole tokenizer ------------------------------------------------- */

struct perq_tokenizer {
    tok_bpe model;
    tok_added added;
    tok_normalizer *normalizer;
    tok_pretok *pretok;
    tok_decoder *decoder;
    int32_t bos_id, eos_id;
    size_t vocab_size;
};

#endif
