/* tokenizer.json and tokenizer_config.json for a synthetic checkpoint, of the
 * family the real model uses and exactly its vocabulary size:
 *
 * - SentencePiece-style BPE (Llama 2, TinyLlama, Mistral): <unk> <s> </s>, the
 *   256 <0xXX> byte-fallback tokens, the printable ASCII characters and "▁",
 *   then merged pieces; normalizer Prepend("▁") + Replace(" ", "▁").
 * - Byte-level BPE (Llama 3): the 256 byte symbols of GPT-2's byte map, merged
 *   pieces up to id 127999, and the 256 special tokens <|begin_of_text|> ...
 *   from 128000, with Llama 3's pre-tokenizer regex.
 *
 * Merges are learnt by plain BPE training on a built-in list of common English
 * words weighted by rank (Zipf), so real text tokenizes into plausible pieces;
 * the rest of the vocabulary is filled by extending pieces with one letter.
 * Every merge joins two tokens of the vocabulary into a token of the
 * vocabulary, so any BPE implementation accepts the file. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perq/fsutil.h"
#include "synth.h"

#define SP_SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's word boundary */
#define LLAMA3_SPECIAL_TOKENS 256

/* Common English words in rough order of frequency, and those of children's
 * stories (the texts perq evaluates on). Weight of the word of rank r: 1/(r+1). */
static const char word_list[] =
    "the of and to a in is it you that he was for on are with as I his they be at one have "
    "this from or had by not word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round "
    "man year came show every good me give our under name very through just form sentence "
    "great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men change went light kind "
    "off need house picture try us again animal point mother world near build self earth "
    "father head stand own page should country found answer school grow study still learn "
    "plant cover food sun four between state keep eye never last let thought city tree cross "
    "farm hard start might story saw far sea draw left late run while press close night real "
    "life few north open seem together next white children begin got walk example ease paper "
    "group always music those both mark often letter until mile river car feet care second "
    "book carry took science eat room friend began idea fish mountain stop once base hear horse "
    "cut sure watch color face wood main enough plain girl usual young ready above ever red list "
    "though feel talk bird soon body dog family direct pose leave song measure door product "
    "black short numeral class wind question happen complete ship area half rock order fire "
    "south problem piece told knew pass since top whole king space heard best hour better true "
    "during hundred five remember step early hold west ground interest reach fast verb sing "
    "listen six table travel less morning ten simple several vowel toward war lay against "
    "pattern slow center love person money serve appear road map rain rule govern pull cold "
    "notice voice unit power town fine certain fly fall lead cry dark machine note wait plan "
    "figure star box noun field rest correct able pound done beauty drive stood contain front "
    "teach week final gave green quick develop ocean warm free minute strong special mind "
    "behind clear tail produce fact street inch multiply nothing course stay wheel full force "
    "blue object decide surface deep moon island foot system busy test record boat common gold "
    "possible plane instead dry wonder laugh thousand ago ran check game shape equate hot miss "
    "brought heat snow tire bring yes distant fill east paint language among upon happy named "
    "Lily Tim Ben Sue Max Mia Tom Anna mom dad cat toy ball park sky sad smile hug share "
    "played wanted looked asked jumped loved liked saw said went ran found felt gave decided "
    "bunny puppy kitty bear duck frog cake cookie garden flower grass rainbow castle dragon "
    "princess magic shiny pretty lovely sweet tiny scared excited proud brave kind gentle "
    "careful funny silly angry surprised worried nice wonderful beautiful together outside "
    "inside something everything nothing anything someone everyone because could would "
    "should really very again soon then suddenly finally always never sometimes";

/* ---- a vocabulary: token strings by id, found by string ------------------- */

typedef struct vocab {
    char **str;
    size_t n, cap;
    int32_t *slot; /* open addressing over ids; -1 empty */
    size_t mask;
} vocab;

typedef struct merges {
    int32_t (*pair)[2];
    size_t n, cap;
} merges;

static uint64_t hash_str(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static int vocab_init(vocab *v, size_t capacity)
{
    memset(v, 0, sizeof *v);
    size_t slots = 16;
    while (slots < 2 * capacity)
        slots *= 2;
    v->str = calloc(capacity, sizeof *v->str);
    v->slot = malloc(slots * sizeof *v->slot);
    if (!v->str || !v->slot)
        return -1;
    memset(v->slot, 0xff, slots * sizeof *v->slot);
    v->cap = capacity;
    v->mask = slots - 1;
    return 0;
}

static void vocab_free(vocab *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->str[i]);
    free(v->str);
    free(v->slot);
}

static int32_t vocab_find(const vocab *v, const char *s, size_t len)
{
    for (size_t i = hash_str(s, len) & v->mask;; i = (i + 1) & v->mask) {
        int32_t id = v->slot[i];
        if (id < 0)
            return -1;
        if (strlen(v->str[id]) == len && memcmp(v->str[id], s, len) == 0)
            return id;
    }
}

/* Adds a string not yet in v; returns its id, -1 when full or out of memory. */
static int32_t vocab_add(vocab *v, const char *s, size_t len)
{
    if (v->n >= v->cap)
        return -1;
    char *copy = strndup(s, len);
    if (!copy)
        return -1;
    size_t i = hash_str(s, len) & v->mask;
    while (v->slot[i] >= 0)
        i = (i + 1) & v->mask;
    int32_t id = (int32_t)v->n++;
    v->str[id] = copy;
    v->slot[i] = id;
    return id;
}

static int merges_push(merges *m, int32_t a, int32_t b)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1024;
        void *bigger = realloc(m->pair, cap * sizeof *m->pair);
        if (!bigger)
            return -1;
        m->pair = bigger;
        m->cap = cap;
    }
    m->pair[m->n][0] = a;
    m->pair[m->n][1] = b;
    m->n++;
    return 0;
}

/* ---- the training corpus ----------------------------------------------------- */

typedef struct word {
    int32_t *sym;
    int n;
    uint64_t weight;
} word;

typedef struct corpus {
    word *w;
    size_t n, cap;
} corpus;

static void corpus_free(corpus *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->w[i].sym);
    free(c->w);
}

static size_t utf8_len(unsigned char lead)
{
    return lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
}

/* Adds text (UTF-8 whose every character is a token of v) as a word. */
static int corpus_add(corpus *c, const vocab *v, const char *text, uint64_t weight)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 256;
        void *bigger = realloc(c->w, cap * sizeof *c->w);
        if (!bigger)
            return -1;
        c->w = bigger;
        c->cap = cap;
    }
    size_t len = strlen(text);
    word *w = &c->w[c->n];
    w->sym = malloc(len * sizeof *w->sym);
    w->n = 0;
    w->weight = weight;
    if (!w->sym)
        return -1;
    c->n++;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_len((unsigned char)text[i]);
        int32_t id = vocab_find(v, text + i, k);
        if (id < 0)
            return -1;
        w->sym[w->n++] = id;
        i += k;
    }
    return 0;
}

/* ---- BPE training -------------------------------------------------------------- */

typedef struct pair_count {
    int32_t a, b;
    uint64_t count;
} pair_count;

static int cmp_pair(const void *x, const void *y)
{
    const pair_count *p = x, *q = y;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    return p->b < q->b ? -1 : p->b > q->b;
}

/* The most frequent adjacent pair (ties: the smallest ids); 0 when none. */
static int best_pair(const corpus *c, pair_count *scratch, int32_t *a, int32_t *b)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++)
        for (int k = 0; k + 1 < c->w[i].n; k++)
            scratch[n++] = (pair_count){c->w[i].sym[k], c->w[i].sym[k + 1], c->w[i].weight};
    if (n == 0)
        return 0;
    qsort(scratch, n, sizeof *scratch, cmp_pair);
    uint64_t best = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        uint64_t sum = 0;
        for (; j < n && scratch[j].a == scratch[i].a && scratch[j].b == scratch[i].b; j++)
            sum += scratch[j].count;
        if (sum > best) {
            best = sum;
            *a = scratch[i].a;
            *b = scratch[i].b;
        }
        i = j;
    }
    return 1;
}

static void apply_merge(corpus *c, int32_t a, int32_t b, int32_t merged)
{
    for (size_t i = 0; i < c->n; i++) {
        word *w = &c->w[i];
        int out = 0;
        for (int k = 0; k < w->n; k++) {
            if (k + 1 < w->n && w->sym[k] == a && w->sym[k + 1] == b) {
                w->sym[out++] = merged;
                k++;
            } else {
                w->sym[out++] = w->sym[k];
            }
        }
        w->n = out;
    }
}

static char *concat(const vocab *v, int32_t a, int32_t b)
{
    char *s;
    return asprintf(&s, "%s%s", v->str[a], v->str[b]) < 0 ? NULL : s;
}

/* Adds the merge a+b, and the merged string to v when new. */
static int add_merge(vocab *v, merges *m, int32_t a, int32_t b, int32_t *merged)
{
    char *s = concat(v, a, b);
    if (!s)
        return -1;
    size_t len = strlen(s);
    int32_t id = vocab_find(v, s, len);
    if (id < 0)
        id = vocab_add(v, s, len);
    free(s);
    if (id < 0 || merges_push(m, a, b) != 0)
        return -1;
    *merged = id;
    return 0;
}

/* Greedy BPE on the corpus until the vocabulary holds `target` tokens or
 * every word is one token. */
static int train(vocab *v, merges *m, corpus *c, size_t target)
{
    size_t total = 0;
    for (size_t i = 0; i < c->n; i++)
        total += (size_t)c->w[i].n;
    pair_count *scratch = malloc((total + 1) * sizeof *scratch);
    if (!scratch)
        return -1;
    int32_t a = 0, b = 0;
    while (v->n < target && best_pair(c, scratch, &a, &b)) {
        int32_t merged;
        if (add_merge(v, m, a, b, &merged) != 0) {
            free(scratch);
            return -1;
        }
        apply_merge(c, a, b, merged);
    }
    free(scratch);
    return 0;
}

/* Fills the vocabulary up to target by extending pieces, oldest first, with a
 * letter: each new token comes with the merge that makes it. */
static int pad(vocab *v, merges *m, int32_t first_base, size_t target)
{
    static const char letters[] = "etaoinshrdlcumwfgypbvkjxqz";
    int32_t letter_id[sizeof letters - 1];
    for (size_t i = 0; i < sizeof letters - 1; i++)
        if ((letter_id[i] = vocab_find(v, &letters[i], 1)) < 0)
            return -1;
    for (int32_t base = first_base; v->n < target && (size_t)base < v->n; base++) {
        for (size_t i = 0; i < sizeof letters - 1 && v->n < target; i++) {
            char *s = concat(v, base, letter_id[i]);
            if (!s)
                return -1;
            size_t len = strlen(s);
            int fresh = vocab_find(v, s, len) < 0;
            free(s);
            int32_t merged;
            if (fresh && add_merge(v, m, base, letter_id[i], &merged) != 0)
                return -1;
        }
    }
    return v->n == target ? 0 : -1;
}

/* Calls add(word, rank) for each word of the built-in list. */
static int each_word(int (*add)(void *ctx, const char *w, size_t rank), void *ctx)
{
    const char *p = word_list;
    size_t rank = 0;
    while (*p) {
        size_t len = strcspn(p, " ");
        char w[32];
        if (len > 0 && len < sizeof w) {
            memcpy(w, p, len);
            w[len] = '\0';
            if (add(ctx, w, rank++) != 0)
                return -1;
        }
        p += len + (p[len] == ' ');
    }
    return 0;
}

/* ---- the two families ------------------------------------------------------------ */

typedef struct builder {
    vocab v;
    merges m;
    corpus c;
    const char *space; /* what marks a word start: "▁" or "Ġ" */
} builder;

static uint64_t zipf_weight(size_t rank)
{
    return 1000000u / (rank + 1);
}

/* SentencePiece sees every word with "▁" before it (the normalizer turns
 * spaces into it and prepends one); byte-level BPE sees " word" mostly, and
 * sometimes the word alone (after a newline or a quote). */
static int add_word(void *ctx, const char *w, size_t rank)
{
    builder *b = ctx;
    char buf[64];
    snprintf(buf, sizeof buf, "%s%s", b->space, w);
    if (corpus_add(&b->c, &b->v, buf, zipf_weight(rank)) != 0)
        return -1;
    if (strcmp(b->space, SP_SPACE) == 0)
        return 0;
    return corpus_add(&b->c, &b->v, w, zipf_weight(rank) / 4);
}

static void builder_free(builder *b)
{
    vocab_free(&b->v);
    free(b->m.pair);
    corpus_free(&b->c);
}

static int build_sentencepiece(builder *b, size_t size)
{
    if (vocab_init(&b->v, size) != 0)
        return -1;
    b->space = SP_SPACE;
    const char *special[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++)
        vocab_add(&b->v, special[i], strlen(special[i]));
    for (int byte = 0; byte < 256; byte++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", byte);
        vocab_add(&b->v, s, strlen(s));
    }
    vocab_add(&b->v, SP_SPACE, strlen(SP_SPACE));
    for (char ch = '!'; ch <= '~'; ch++)
        vocab_add(&b->v, &ch, 1);
    int32_t first_piece = (int32_t)b->v.n;
    if (b->v.n > size || each_word(add_word, b) != 0 || train(&b->v, &b->m, &b->c, size) != 0)
        return -1;
    return pad(&b->v, &b->m, first_piece, size);
}

/* GPT-2's map of bytes to printable characters: printable Latin-1 bytes stand
 * for themselves, the others for U+0100 onwards in byte order. */
static int byte_is_printable(int byte)
{
    return (byte >= '!' && byte <= '~') || (byte >= 0xa1 && byte <= 0xac) ||
           (byte >= 0xae && byte <= 0xff);
}

static int utf8_encode(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static int build_byte_level(builder *b, size_t size)
{
    if (vocab_init(&b->v, size) != 0)
        return -1;
    b->space = "\xc4\xa0"; /* U+0120 "Ġ", the image of the space byte */
    /* The byte symbols in the order byte-level vocabularies list them:
     * printable ones first, then the rest. */
    unsigned next = 256;
    unsigned image[256];
    for (int byte = 0; byte < 256; byte++)
        image[byte] = byte_is_printable(byte) ? (unsigned)byte : next++;
    for (int pass = 0; pass < 2; pass++)
        for (int byte = 0; byte < 256; byte++) {
            if (byte_is_printable(byte) != (pass == 0))
                continue;
            char s[4];
            int len = utf8_encode(image[byte], s);
            vocab_add(&b->v, s, (size_t)len);
        }
    if (each_word(add_word, b) != 0 || train(&b->v, &b->m, &b->c, size) != 0)
        return -1;
    return pad(&b->v, &b->m, 256, size);
}

/* ---- tokenizer.json ------------------------------------------------------------------ */

static json_t *vocab_json(const vocab *v)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < v->n; i++)
        if (json_object_set_new(obj, v->str[i], json_integer((json_int_t)i)) != 0) {
            json_decref(obj);
            return NULL;
        }
    return obj;
}

static json_t *merges_json(const vocab *v, const merges *m)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < m->n; i++) {
        char *s;
        if (asprintf(&s, "%s %s", v->str[m->pair[i][0]], v->str[m->pair[i][1]]) < 0)
            s = NULL;
        if (!s || json_array_append_new(arr, json_string(s)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
        free(s);
    }
    return arr;
}

static json_t *added_token(int id, const char *content)
{
    return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                     "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

/* The names of Llama 3's 256 special tokens, from id 128000. */
static void llama3_special_name(int i, char *buf, size_t len)
{
    static const char *named[] = {
        "<|begin_of_text|>", "<|end_of_text|>", NULL, NULL, "<|finetune_right_pad_id|>", NULL,
        "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
    };
    static const int reserved_below[] = {0, 0, 0, 1, 0, 2}; /* reserved number at 2, 3, 5 */
    int n_named = (int)(sizeof named / sizeof named[0]);
    if (i < n_named && named[i])
        snprintf(buf, len, "%s", named[i]);
    else if (i < n_named)
        snprintf(buf, len, "<|reserved_special_token_%d|>", reserved_below[i]);
    else
        snprintf(buf, len, "<|reserved_special_token_%d|>", i - n_named + 3);
}

static json_t *template_processor(const char *bos, int bos_id)
{
    return json_pack(
        "{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], "
        "s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}], "
        "s:{s:{s:s, s:[i], s:[s]}}}",
        "type", "TemplateProcessing", "single", "SpecialToken", "id", bos, "type_id", 0,
        "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", bos, "type_id", 0,
        "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", bos, "type_id", 1, "Sequence",
        "id", "B", "type_id", 1, "special_tokens", bos, "id", bos, "ids", bos_id, "tokens", bos);
}

static json_t *sentencepiece_json(const builder *b)
{
    return json_pack(
        "{s:s, s:n, s:n, s:[o,o,o], "
        "s:{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}, s:n, s:o, "
        "s:{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}, "
        "s:{s:s, s:n, s:s, s:n, s:n, s:b, s:b, s:o, s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens", added_token(0, "<unk>"),
        added_token(1, "<s>"), added_token(2, "</s>"), "normalizer", "type", "Sequence",
        "normalizers", "type", "Prepend", "prepend", SP_SPACE, "type", "Replace", "pattern",
        "String", " ", "content", SP_SPACE, "pre_tokenizer", "post_processor",
        template_processor("<s>", 1), "decoder", "type", "Sequence", "decoders", "type",
        "Replace", "pattern", "String", SP_SPACE, "content", " ", "type", "ByteFallback", "type",
        "Fuse", "type", "Strip", "content", " ", "start", 1, "stop", 0, "model", "type", "BPE",
        "dropout", "unk_token", "<unk>", "continuing_subword_prefix", "end_of_word_suffix",
        "fuse_unk", 1, "byte_fallback", 1, "vocab", vocab_json(&b->v), "merges",
        merges_json(&b->v, &b->m));
}

/* Llama 3's pre-tokenizer split (the cl100k pattern). */
static const char llama3_split[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static json_t *llama3_added_tokens(int first_id)
{
    json_t *arr = json_array();
    for (int i = 0; arr && i < LLAMA3_SPECIAL_TOKENS; i++) {
        char name[64];
        llama3_special_name(i, name, sizeof name);
        if (json_array_append_new(arr, added_token(first_id + i, name)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

static json_t *byte_level_json(const builder *b, int bos_id)
{
    return json_pack(
        "{s:s, s:n, s:n, s:o, s:n, "
        "s:{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}, "
        "s:{s:s, s:[{s:s, s:b, s:b, s:b}, o]}, "
        "s:{s:s, s:b, s:b, s:b}, "
        "s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
        "version", "1.0", "truncation", "padding", "added_tokens",
        llama3_added_tokens((int)b->v.n), "normalizer", "pre_tokenizer", "type", "Sequence",
        "pretokenizers", "type", "Split", "pattern", "Regex", llama3_split, "behavior",
        "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
        "use_regex", 0, "post_processor", "type", "Sequence", "processors", "type", "ByteLevel",
        "add_prefix_space", 1, "trim_offsets", 0, "use_regex", 1,
        template_processor("<|begin_of_text|>", bos_id), "decoder", "type", "ByteLevel",
        "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1, "model", "type", "BPE",
        "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
        "byte_fallback", 0, "ignore_merges", 1, "vocab", vocab_json(&b->v), "merges",
        merges_json(&b->v, &b->m));
}

/* ---- tokenizer_config.json ---------------------------------------------------------- */

static json_t *added_tokens_decoder(const json_t *added)
{
    json_t *obj = json_object();
    size_t i;
    json_t *t;
    json_array_foreach(added, i, t) {
        char key[16];
        snprintf(key, sizeof key, "%lld", (long long)json_integer_value(json_object_get(t, "id")));
        json_t *entry = json_deep_copy(t);
        if (!obj || !entry || json_object_del(entry, "id") != 0 ||
            json_object_set_new(obj, key, entry) != 0) {
            json_decref(entry);
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

static json_t *tokenizer_config(const synth_preset *p, const json_t *tokenizer)
{
    json_t *decoder = added_tokens_decoder(json_object_get(tokenizer, "added_tokens"));
    if (p->tokenizer == SYNTH_TOK_LLAMA3)
        return json_pack("{s:o, s:s, s:b, s:s, s:[s,s], s:i, s:s}", "added_tokens_decoder",
                         decoder, "bos_token", "<|begin_of_text|>",
                         "clean_up_tokenization_spaces", 1, "eos_token", "<|end_of_text|>",
                         "model_input_names", "input_ids", "attention_mask", "model_max_length",
                         p->max_position_embeddings, "tokenizer_class",
                         "PreTrainedTokenizerFast");
    return json_pack("{s:b, s:b, s:o, s:s, s:b, s:s, s:b, s:i, s:n, s:{}, s:b, s:s, s:s, s:b}",
                     "add_bos_token", 1, "add_eos_token", 0, "added_tokens_decoder", decoder,
                     "bos_token", "<s>", "clean_up_tokenization_spaces", 0, "eos_token", "</s>",
                     "legacy", 1, "model_max_length", p->max_position_embeddings, "pad_token",
                     "sp_model_kwargs", "spaces_between_special_tokens", 0, "tokenizer_class",
                     "LlamaTokenizer", "unk_token", "<unk>", "use_default_system_prompt", 0);
}

static int write_tokenizer_json(const json_t *tokenizer, const char *dir, perq_err *err)
{
    char *path = synth_path(dir, "tokenizer.json");
    char *text = json_dumps(tokenizer, JSON_INDENT(2));
    int rc = !path || !text ? perq_fail(err, PERQ_E_NOMEM, "writing tokenizer.json: out of memory")
                            : perq_write_file_atomic(path, text, strlen(text), err);
    free(path);
    free(text);
    return rc;
}

int synth_write_tokenizer(const synth_preset *p, const char *dir, perq_err *err)
{
    builder b;
    memset(&b, 0, sizeof b);
    bool llama3 = p->tokenizer == SYNTH_TOK_LLAMA3;
    if (llama3 && p->vocab_size <= LLAMA3_SPECIAL_TOKENS + 1024)
        return perq_fail(err, PERQ_E_INVALID, "vocabulary of %d too small for Llama 3 tokens",
                         p->vocab_size);
    int built = llama3 ? build_byte_level(&b, (size_t)p->vocab_size - LLAMA3_SPECIAL_TOKENS)
                       : build_sentencepiece(&b, (size_t)p->vocab_size);
    if (built != 0) {
        builder_free(&b);
        return perq_fail(err, PERQ_E_INTERNAL, "building a vocabulary of %d tokens failed",
                         p->vocab_size);
    }
    json_t *tokenizer = llama3 ? byte_level_json(&b, p->bos_token_id) : sentencepiece_json(&b);
    builder_free(&b);
    json_t *config = tokenizer ? tokenizer_config(p, tokenizer) : NULL;
    int rc;
    if (!tokenizer || !config)
        rc = perq_fail(err, PERQ_E_NOMEM, "building tokenizer.json: out of memory");
    else if ((rc = write_tokenizer_json(tokenizer, dir, err)) == 0)
        rc = synth_write_json(dir, "tokenizer_config.json", config, err);
    json_decref(tokenizer);
    json_decref(config);
    return rc;
}
