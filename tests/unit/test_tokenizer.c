/* The tokenizer, feature by feature, on small tokenizer.json files made here.
 * Expected ids are worked out by hand from Hugging Face's rules (merge the
 * lowest-ranked pair, leftmost first; each pre-tokenizer's split behavior). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "perq/tokenizer.h"
#include "testutil.h"
#include "tokenizer_internal.h"

/* ---- building tokenizer.json ------------------------------------------------ */

/* JSON written with ' for " (a literal ' is \u0027). */
static json_t *J(const char *single_quoted)
{
    char *s = strdup(single_quoted);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t jerr;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &jerr);
    if (!j)
        fail_msg("bad test JSON (%s): %s", jerr.text, s);
    free(s);
    return j;
}

static void set(json_t *obj, const char *key, const char *single_quoted)
{
    json_object_set_new(obj, key, J(single_quoted));
}

static json_t *model_of(json_t *root)
{
    return json_object_get(root, "model");
}

static char *dump(json_t *root)
{
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static perq_tokenizer *build(json_t *root)
{
    char *text = dump(root);
    perq_err err = {0};
    perq_tokenizer *t = NULL;
    if (perq_tokenizer_parse(text, strlen(text), &t, &err))
        fail_msg("tokenizer did not load: %s", err.msg);
    free(text);
    return t;
}

static void expect_parse_error(json_t *root, perq_errcode code, const char *needle)
{
    char *text = dump(root);
    perq_err err = {0};
    perq_tokenizer *t = NULL;
    int rc = perq_tokenizer_parse(text, strlen(text), &t, &err);
    free(text);
    if (rc == 0) {
        perq_tokenizer_free(t);
        fail_msg("expected an error containing '%s'", needle);
    }
    assert_null(t);
    if (err.code != code || !strstr(err.msg, needle))
        fail_msg("expected %s error with '%s', got %s: %s", perq_errcode_name(code), needle,
                 perq_errcode_name(err.code), err.msg);
}

/* A Llama-2-style tokenizer: <unk> <s> </s>, the 256 byte pieces, then words. */
static json_t *sp_tokenizer(void)
{
    json_t *root = J("{'version':'1.0','truncation':null,'padding':null,"
                     "'added_tokens':["
                     "{'id':0,'content':'<unk>','single_word':false,'lstrip':false,'rstrip':false,'normalized':false,'special':true},"
                     "{'id':1,'content':'<s>','single_word':false,'lstrip':false,'rstrip':false,'normalized':false,'special':true},"
                     "{'id':2,'content':'</s>','single_word':false,'lstrip':false,'rstrip':false,'normalized':false,'special':true}],"
                     "'normalizer':{'type':'Sequence','normalizers':[{'type':'Prepend','prepend':'▁'},"
                     "{'type':'Replace','pattern':{'String':' '},'content':'▁'}]},"
                     "'pre_tokenizer':null,"
                     "'post_processor':{'type':'TemplateProcessing','single':[{'SpecialToken':{'id':'<s>','type_id':0}},"
                     "{'Sequence':{'id':'A','type_id':0}}],'pair':[],"
                     "'special_tokens':{'<s>':{'id':'<s>','ids':[1],'tokens':['<s>']}}},"
                     "'decoder':{'type':'Sequence','decoders':[{'type':'Replace','pattern':{'String':'▁'},'content':' '},"
                     "{'type':'ByteFallback'},{'type':'Fuse'},{'type':'Strip','content':' ','start':1,'stop':0}]},"
                     "'model':{'type':'BPE','dropout':null,'unk_token':'<unk>','continuing_subword_prefix':null,"
                     "'end_of_word_suffix':null,'fuse_unk':true,'byte_fallback':true,"
                     "'merges':['h e','l l','▁ he','ll o','▁he llo','▁ w','o r','▁w or','l d','▁wor ld','▁ ▁']}}");
    json_t *vocab = J("{'<unk>':0,'<s>':1,'</s>':2,'▁':259,'h':260,'e':261,'l':262,'o':263,'w':264,'r':265,"
                      "'d':266,'he':267,'ll':268,'▁he':269,'llo':270,'▁hello':271,'▁w':272,'or':273,'▁wor':274,"
                      "'ld':275,'▁world':276,'▁▁':277}");
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        json_object_set_new(vocab, name, json_integer(3 + b));
    }
    json_object_set_new(model_of(root), "vocab", vocab);
    return root;
}

enum { SP_HELLO = 271, SP_WORLD = 276, SP_SPACE = 259, SP_SPACE2 = 277, SP_HE = 267, SP_LLO = 270 };

/* A tokenizer with a model of single characters and chosen merges, no other parts. */
static json_t *plain_tokenizer(const char *vocab, const char *merges)
{
    json_t *root = J("{'added_tokens':[],'normalizer':null,'pre_tokenizer':null,'post_processor':null,"
                     "'decoder':null,'model':{'type':'BPE','dropout':null,'unk_token':null,"
                     "'fuse_unk':false,'byte_fallback':false}}");
    set(model_of(root), "vocab", vocab);
    set(model_of(root), "merges", merges);
    return root;
}

/* GPT-2's byte alphabet, written out here from its definition: the printable
 * Latin-1 bytes stand for themselves, the others take 256, 257, ... in order. */
static void byte_char(int b, char out[4])
{
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    int n = 0;
    for (int k = 0; k < b; k++)
        if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF)))
            n++;
    unsigned cp = printable ? (unsigned)b : 256u + (unsigned)n;
    memset(out, 0, 4);
    if (cp < 0x80) {
        out[0] = (char)cp;
    } else {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
    }
}

/* A GPT-2-style byte-level tokenizer: the 256 byte characters are ids 0..255. */
static json_t *byte_level_tokenizer(void)
{
    json_t *root = J("{'added_tokens':["
                     "{'id':271,'content':'<|end|>','special':true,'normalized':false},"
                     "{'id':272,'content':'<mask>','special':false,'normalized':false,'lstrip':true,'rstrip':true},"
                     "{'id':273,'content':'<x>','special':false,'normalized':false,'single_word':true},"
                     "{'id':274,'content':'<x><y>','special':false,'normalized':false}],"
                     "'normalizer':null,"
                     "'pre_tokenizer':{'type':'ByteLevel','add_prefix_space':false,'trim_offsets':true,'use_regex':true},"
                     "'post_processor':{'type':'ByteLevel','add_prefix_space':true,'trim_offsets':false,'use_regex':true},"
                     "'decoder':{'type':'ByteLevel','add_prefix_space':true,'trim_offsets':true,'use_regex':true},"
                     "'model':{'type':'BPE','dropout':null,'unk_token':null,'fuse_unk':false,'byte_fallback':false,"
                     "'ignore_merges':false,"
                     "'merges':[['h','e'],['l','l'],['ll','o'],['he','llo'],['Ġ','w'],['o','r'],['Ġw','or'],['l','d'],"
                     "['Ġwor','ld'],['\\u0027','s'],['1','2'],['12','3'],['4','5'],['Ġ','Ġ']]}}");
    json_t *vocab = J("{'he':256,'ll':257,'llo':258,'hello':259,'Ġw':260,'or':261,'Ġwor':262,'ld':263,"
                      "'Ġworld':264,'\\u0027s':265,'12':266,'123':267,'45':268,'ĠĠ':269,'wd':270}");
    for (int b = 0; b < 256; b++) {
        char c[4];
        byte_char(b, c);
        json_object_set_new(vocab, c, json_integer(b));
    }
    json_object_set_new(model_of(root), "vocab", vocab);
    return root;
}

enum { BL_HELLO = 259, BL_WORLD = 264, BL_END = 271, BL_MASK = 272, BL_X = 273, BL_XY = 274 };

/* ---- checking ------------------------------------------------------------------ */

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    print_error("%s [", label);
    for (size_t i = 0; i < n; i++)
        print_error(i ? ", %d" : "%d", ids[i]);
    print_error("]\n");
}

static void check_encode(const perq_tokenizer *t, const char *text, bool bos, const int32_t *want, size_t n_want)
{
    perq_err err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    if (perq_tokenizer_encode(t, text, strlen(text), bos, &ids, &n, &err))
        fail_msg("encoding '%s' failed: %s", text, err.msg);
    assert_non_null(ids);
    if (n != n_want || (n && memcmp(ids, want, n * sizeof *ids))) {
        print_error("text '%s'\n", text);
        print_ids("  want", want, n_want);
        print_ids("  got ", ids, n);
        free(ids);
        fail();
    }
    free(ids);
}

#define ENCODES(t, text, ...)                                                                   \
    do {                                                                                        \
        static const int32_t want_[] = {__VA_ARGS__};                                           \
        check_encode(t, text, false, want_, sizeof want_ / sizeof want_[0]);                    \
    } while (0)
#define ENCODES_WITH_BOS(t, text, ...)                                                          \
    do {                                                                                        \
        static const int32_t want_[] = {__VA_ARGS__};                                           \
        check_encode(t, text, true, want_, sizeof want_ / sizeof want_[0]);                     \
    } while (0)

static void check_decode(const perq_tokenizer *t, const int32_t *ids, size_t n, const char *want)
{
    perq_err err = {0};
    char *text = NULL;
    if (perq_tokenizer_decode(t, ids, n, &text, &err))
        fail_msg("decoding failed: %s", err.msg);
    assert_string_equal(text, want);
    free(text);
}

#define DECODES(t, want, ...)                                                                   \
    do {                                                                                        \
        static const int32_t ids_[] = {__VA_ARGS__};                                            \
        check_decode(t, ids_, sizeof ids_ / sizeof ids_[0], want);                              \
    } while (0)

static void check_round_trip(const perq_tokenizer *t, const char *text, size_t len)
{
    perq_err err = {0};
    int32_t *ids;
    size_t n;
    char *back;
    assert_int_equal(perq_tokenizer_encode(t, text, len, false, &ids, &n, &err), 0);
    assert_int_equal(perq_tokenizer_decode(t, ids, n, &back, &err), 0);
    if (strlen(back) != len || memcmp(back, text, len))
        fail_msg("round trip of '%.*s' gave '%s'", (int)len, text, back);
    free(ids);
    free(back);
}

/* ---- BPE merges ------------------------------------------------------------------ */

static void test_merges_by_rank(void **state)
{
    (void)state;
    const char *vocab = "{'a':0,'b':1,'c':2,'ab':3,'bc':4,'aa':5}";
    perq_tokenizer *t = build(plain_tokenizer(vocab, "['b c','a b','a a']"));
    ENCODES(t, "abc", 0, 4);  /* b+c has the lower rank */
    ENCODES(t, "aaa", 5, 0);  /* equal ranks: leftmost first */
    ENCODES(t, "aaaa", 5, 5);
    ENCODES(t, "cab", 2, 3);
    perq_tokenizer_free(t);

    t = build(plain_tokenizer(vocab, "['a b','b c']"));
    ENCODES(t, "abc", 3, 2);
    perq_tokenizer_free(t);
}

static void test_merges_as_pairs(void **state)
{
    (void)state;
    perq_tokenizer *t = build(plain_tokenizer("{'a':0,'b':1,'c':2,'ab':3,'bc':4}", "[['b','c'],['a','b']]"));
    ENCODES(t, "abc", 0, 4);
    perq_tokenizer_free(t);
}

static void test_sentencepiece_words(void **state)
{
    (void)state;
    perq_tokenizer *t = build(sp_tokenizer());
    ENCODES(t, "hello world", SP_HELLO, SP_WORLD);
    check_encode(t, "", false, NULL, 0);
    ENCODES(t, "  hello", SP_SPACE2, SP_HELLO); /* Prepend + Replace give ▁▁▁hello */
    ENCODES(t, "hello  ", SP_HELLO, SP_SPACE2);
    ENCODES_WITH_BOS(t, "hello world", 1, SP_HELLO, SP_WORLD);
    assert_int_equal(perq_tokenizer_bos_id(t), 1);
    assert_int_equal(perq_tokenizer_vocab_size(t), 278);
    perq_tokenizer_free(t);
}

static void test_byte_fallback(void **state)
{
    (void)state;
    perq_tokenizer *t = build(sp_tokenizer());
    ENCODES(t, "hé", SP_SPACE, 260, 3 + 0xC3, 3 + 0xA9);
    ENCODES(t, "a\nb", SP_SPACE, 3 + 'a', 3 + '\n', 3 + 'b');
    DECODES(t, "hé", 260, 3 + 0xC3, 3 + 0xA9);
    DECODES(t, "\xEF\xBF\xBD", 3 + 0xC3);                    /* a lone lead byte */
    DECODES(t, "\xEF\xBF\xBD\xEF\xBF\xBD", 3 + 0xC3, 3 + 0xC3); /* one U+FFFD per byte */
    DECODES(t, "\xEF\xBF\xBD hello", 3 + 0xA9, SP_HELLO);
    perq_tokenizer_free(t);
}

static void test_unk_and_fuse_unk(void **state)
{
    (void)state;
    json_t *root = plain_tokenizer("{'<unk>':0,'a':1,'b':2}", "[]");
    set(model_of(root), "unk_token", "'<unk>'");
    set(model_of(root), "fuse_unk", "true");
    perq_tokenizer *t = build(root);
    ENCODES(t, "aééb", 1, 0, 2);
    perq_tokenizer_free(t);

    root = plain_tokenizer("{'<unk>':0,'a':1,'b':2}", "[]");
    set(model_of(root), "unk_token", "'<unk>'");
    t = build(root);
    ENCODES(t, "aééb", 1, 0, 0, 2);
    perq_tokenizer_free(t);

    /* no unk token: unknown characters give nothing */
    t = build(plain_tokenizer("{'<unk>':0,'a':1,'b':2}", "[]"));
    ENCODES(t, "aééb", 1, 2);
    perq_tokenizer_free(t);

    /* bytes missing for €: unk; é falls back to bytes, and Hugging Face writes a
     * pending unk only before the next known character */
    root = plain_tokenizer("{'<unk>':0,'a':1,'<0xC3>':3,'<0xA9>':4}", "[]");
    set(model_of(root), "unk_token", "'<unk>'");
    set(model_of(root), "byte_fallback", "true");
    t = build(root);
    ENCODES(t, "€é", 3, 4, 0);
    ENCODES(t, "€a", 0, 1);
    perq_tokenizer_free(t);

    /* an unk token missing from the vocabulary is an error when needed */
    root = plain_tokenizer("{'a':1}", "[]");
    set(model_of(root), "unk_token", "'<unk>'");
    t = build(root);
    ENCODES(t, "a", 1);
    perq_err err = {0};
    int32_t *ids;
    size_t n;
    assert_int_equal(perq_tokenizer_encode(t, "b", 1, false, &ids, &n, &err), -1);
    assert_non_null(strstr(err.msg, "unk_token"));
    perq_tokenizer_free(t);
}

static void test_ignore_merges(void **state)
{
    (void)state;
    json_t *root = plain_tokenizer("{'a':0,'b':1,'ab':2,'ba':3,'aba':4}", "['a b']");
    perq_tokenizer *t = build(root);
    ENCODES(t, "aba", 2, 0);
    perq_tokenizer_free(t);
    root = plain_tokenizer("{'a':0,'b':1,'ab':2,'ba':3,'aba':4}", "['a b']");
    set(model_of(root), "ignore_merges", "true");
    t = build(root);
    ENCODES(t, "aba", 4); /* the whole pre-token is a token */
    ENCODES(t, "abab", 2, 2);
    perq_tokenizer_free(t);
}

/* ---- normalizers ---------------------------------------------------------------- */

static json_t *chars_tokenizer(const char *normalizer)
{
    json_t *root = plain_tokenizer("{'é':0,'e':1,'\\u0301':2,'f':3,'i':4,'ﬁ':5,'h':6,'l':7,'o':8,'▁':9,'x':10,' ':11}",
                                   "[]");
    set(root, "normalizer", normalizer);
    return root;
}

static void test_normalizers(void **state)
{
    (void)state;
    perq_tokenizer *t = build(chars_tokenizer("null"));
    ENCODES(t, "e\xCC\x81", 1, 2);
    perq_tokenizer_free(t);

    t = build(chars_tokenizer("{'type':'NFC'}"));
    ENCODES(t, "e\xCC\x81", 0);
    ENCODES(t, "ﬁ", 5);
    perq_tokenizer_free(t);

    t = build(chars_tokenizer("{'type':'NFD'}"));
    ENCODES(t, "é", 1, 2);
    perq_tokenizer_free(t);

    t = build(chars_tokenizer("{'type':'NFKC'}"));
    ENCODES(t, "ﬁ", 3, 4);
    perq_tokenizer_free(t);

    t = build(chars_tokenizer("{'type':'Lowercase'}"));
    ENCODES(t, "HeLLO", 6, 1, 7, 7, 8);
    perq_tokenizer_free(t);

    t = build(chars_tokenizer("{'type':'Replace','pattern':{'Regex':' +'},'content':'▁'}"));
    ENCODES(t, "x  x x", 10, 9, 10, 9, 10);
    perq_tokenizer_free(t);

    t = build(chars_tokenizer("{'type':'Strip','strip_left':true,'strip_right':true}"));
    ENCODES(t, " \t x x\u3000", 10, 11, 10);
    perq_tokenizer_free(t);

    t = build(chars_tokenizer("{'type':'Sequence','normalizers':[{'type':'Prepend','prepend':'▁'},{'type':'Lowercase'}]}"));
    ENCODES(t, "X", 9, 10);
    check_encode(t, "", false, NULL, 0); /* Prepend leaves an empty text empty */
    perq_tokenizer_free(t);
}

/* ---- pre-tokenizers -------------------------------------------------------------- */

static json_t *sp_with_metaspace(const char *scheme, bool split)
{
    json_t *root = sp_tokenizer();
    char pre[160];
    snprintf(pre, sizeof pre, "{'type':'Metaspace','replacement':'▁','prepend_scheme':'%s','split':%s}", scheme,
             split ? "true" : "false");
    set(root, "normalizer", "null");
    set(root, "pre_tokenizer", pre);
    return root;
}

static void test_metaspace(void **state)
{
    (void)state;
    perq_tokenizer *t = build(sp_with_metaspace("always", true));
    ENCODES(t, "hello world", SP_HELLO, SP_WORLD);
    ENCODES(t, "hello  ", SP_HELLO, SP_SPACE, SP_SPACE); /* each ▁ is split off */
    ENCODES(t, " hello", SP_HELLO);                     /* already starts with ▁: nothing prepended */
    ENCODES(t, "<s>hello", 1, SP_HELLO);                /* always: after an added token too */
    perq_tokenizer_free(t);

    t = build(sp_with_metaspace("always", false));
    ENCODES(t, "hello  ", SP_HELLO, SP_SPACE2);
    perq_tokenizer_free(t);

    t = build(sp_with_metaspace("first", false));
    ENCODES(t, "hello", SP_HELLO);
    ENCODES(t, "<s>hello", 1, SP_HE, SP_LLO); /* not the start of the text */
    perq_tokenizer_free(t);

    t = build(sp_with_metaspace("never", true));
    ENCODES(t, "hello world", SP_HE, SP_LLO, SP_WORLD);
    perq_tokenizer_free(t);
}

static json_t *split_tokenizer(const char *pre_tokenizer)
{
    json_t *root = plain_tokenizer("{'a':0,'b':1,'c':2,'-':3,'a-':4,'-b':5,'--':6,'b-':7,'-c':8,'1':9,'2':10,'12':11}",
                                   "['- -','a -','- b','b -','- c','1 2']");
    set(root, "pre_tokenizer", pre_tokenizer);
    return root;
}

static perq_tokenizer *split_by_dash(const char *behavior, bool invert)
{
    char pre[160];
    snprintf(pre, sizeof pre, "{'type':'Split','pattern':{'String':'-'},'behavior':'%s','invert':%s}", behavior,
             invert ? "true" : "false");
    return build(split_tokenizer(pre));
}

static void test_split_behaviors(void **state)
{
    (void)state;
    perq_tokenizer *t = build(split_tokenizer("null"));
    ENCODES(t, "a-b--c", 4, 1, 6, 2); /* no split: -- first (rank 0), then a- */
    perq_tokenizer_free(t);

    t = split_by_dash("Removed", false);
    ENCODES(t, "a-b--c", 0, 1, 2);
    perq_tokenizer_free(t);
    t = split_by_dash("Isolated", false);
    ENCODES(t, "a-b--c", 0, 3, 1, 3, 3, 2);
    perq_tokenizer_free(t);
    t = split_by_dash("MergedWithPrevious", false);
    ENCODES(t, "a-b--c", 4, 7, 3, 2);
    perq_tokenizer_free(t);
    t = split_by_dash("MergedWithNext", false);
    ENCODES(t, "a-b--c", 0, 5, 3, 8);
    perq_tokenizer_free(t);
    t = split_by_dash("Contiguous", false);
    ENCODES(t, "a-b--c", 0, 3, 1, 6, 2);
    perq_tokenizer_free(t);
    t = split_by_dash("Removed", true); /* inverted: the text between dashes goes */
    ENCODES(t, "a-b--c", 3, 3, 3);
    perq_tokenizer_free(t);

    t = build(split_tokenizer("{'type':'Split','pattern':{'Regex':'-+'},'behavior':'Isolated','invert':false}"));
    ENCODES(t, "a-b--c", 0, 3, 1, 6, 2);
    perq_tokenizer_free(t);
}

static void test_digits_and_sequence(void **state)
{
    (void)state;
    perq_tokenizer *t = build(split_tokenizer("{'type':'Digits','individual_digits':true}"));
    ENCODES(t, "a12", 0, 9, 10);
    perq_tokenizer_free(t);
    t = build(split_tokenizer("{'type':'Digits','individual_digits':false}"));
    ENCODES(t, "a12", 0, 11);
    perq_tokenizer_free(t);
    t = build(split_tokenizer("{'type':'Sequence','pretokenizers':[{'type':'Digits','individual_digits':false},"
                              "{'type':'Split','pattern':{'String':'-'},'behavior':'Isolated','invert':false}]}"));
    ENCODES(t, "12-b", 11, 3, 1);
    perq_tokenizer_free(t);
}

static void test_byte_level(void **state)
{
    (void)state;
    perq_tokenizer *t = build(byte_level_tokenizer());
    ENCODES(t, "hello world!", BL_HELLO, BL_WORLD, '!');
    ENCODES(t, "he's", 256, 265);
    ENCODES(t, "  world", ' ', BL_WORLD); /* \s+(?!\S) leaves the last space to the word */
    ENCODES(t, "1245", 266, 268);
    ENCODES(t, "é", 0xC3, 0xA9);
    ENCODES(t, "wd", 'w', 'd');
    DECODES(t, "hello world!", BL_HELLO, BL_WORLD, '!');
    DECODES(t, "é", 0xC3, 0xA9);
    DECODES(t, "\xEF\xBF\xBD", 0xC3); /* invalid UTF-8 is replaced */
    ENCODES_WITH_BOS(t, "hello", BL_HELLO); /* no BOS in this tokenizer */
    assert_int_equal(perq_tokenizer_bos_id(t), -1);
    perq_tokenizer_free(t);

    json_t *root = byte_level_tokenizer();
    set(root, "pre_tokenizer", "{'type':'ByteLevel','add_prefix_space':true,'trim_offsets':true,'use_regex':true}");
    t = build(root);
    ENCODES(t, "hello", ' ', BL_HELLO);
    ENCODES(t, " hello", ' ', BL_HELLO); /* no second space */
    perq_tokenizer_free(t);
}

/* Llama 3 and Qwen: a Split with the file's regex, then ByteLevel without its own. */
static void test_byte_level_with_split_regex(void **state)
{
    (void)state;
    json_t *root = byte_level_tokenizer();
    json_t *pre = J("{'type':'Sequence','pretokenizers':[{'type':'Split','behavior':'Isolated','invert':false},"
                    "{'type':'ByteLevel','add_prefix_space':false,'trim_offsets':true,'use_regex':false}]}");
    json_t *pattern = json_object();
    json_object_set_new(pattern, "Regex",
                        json_string("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"));
    json_object_set_new(json_array_get(json_object_get(pre, "pretokenizers"), 0), "pattern", pattern);
    json_object_set_new(root, "pre_tokenizer", pre);
    set(model_of(root), "ignore_merges", "true");
    perq_tokenizer *t = build(root);
    ENCODES(t, "hello world!", BL_HELLO, BL_WORLD, '!');
    ENCODES(t, "1245", 266, '4', '5'); /* digits in threes */
    ENCODES(t, "HE'S", 'H', 'E', '\'', 'S'); /* (?i:'s) takes 'S whole; no merge for it */
    ENCODES(t, "wd", 270);                    /* ignore_merges: the word is a token */
    perq_tokenizer_free(t);
}

/* ---- added tokens -------------------------------------------------------------- */

static void test_added_tokens(void **state)
{
    (void)state;
    perq_tokenizer *t = build(byte_level_tokenizer());
    ENCODES(t, "hello<|end|>world", BL_HELLO, BL_END, 'w', 261, 263);
    ENCODES(t, "hello <mask> world", BL_HELLO, BL_MASK, 'w', 261, 263); /* lstrip, rstrip */
    ENCODES(t, "a<x>", 'a', '<', 'x', '>');                           /* single_word: inside a word */
    ENCODES(t, " <x> ", ' ', BL_X, ' ');
    ENCODES(t, "<x><y>", BL_XY); /* the longest at the leftmost place */
    DECODES(t, "hello<|end|>", BL_HELLO, BL_END);
    assert_int_equal(perq_tokenizer_vocab_size(t), 275);
    perq_tokenizer_free(t);

    /* Llama 2: <s> in the text is its special token, and each side gets ▁ */
    t = build(sp_tokenizer());
    ENCODES(t, "hello<s>world", SP_HELLO, 1, SP_WORLD);
    DECODES(t, "<s> hello", 1, SP_HELLO);
    perq_tokenizer_free(t);
}

static void test_normalized_added_tokens(void **state)
{
    (void)state;
    json_t *root = chars_tokenizer("{'type':'Lowercase'}");
    set(root, "added_tokens", "[{'id':20,'content':'HELLO','normalized':true,'special':false},"
                              "{'id':21,'content':'ABC','normalized':false,'special':true}]");
    perq_tokenizer *t = build(root);
    ENCODES(t, "xHellox", 10, 20, 10); /* matched after lowercasing, as its lowercased form */
    ENCODES(t, "xABCx", 10, 21, 10);   /* matched in the input as written */
    ENCODES(t, "xabcx", 10, 10);       /* a, b and c are not in the vocabulary: dropped */
    perq_tokenizer_free(t);
}

/* ---- decoders --------------------------------------------------------------------- */

static void test_decoders(void **state)
{
    (void)state;
    perq_tokenizer *t = build(sp_tokenizer());
    DECODES(t, "hello world", SP_HELLO, SP_WORLD);
    DECODES(t, "  hello", SP_SPACE2, SP_HELLO); /* Strip removes one leading space only */
    perq_err err = {0};
    char *text;
    int32_t bad[] = {SP_HELLO, 5000};
    assert_int_equal(perq_tokenizer_decode(t, bad, 2, &text, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    int32_t negative = -1;
    assert_int_equal(perq_tokenizer_decode(t, &negative, 1, &text, &err), -1);
    check_decode(t, NULL, 0, "");
    perq_tokenizer_free(t);

    json_t *root = sp_tokenizer();
    set(root, "decoder", "{'type':'Metaspace','replacement':'▁','prepend_scheme':'always','split':true}");
    t = build(root);
    DECODES(t, "hello world", SP_HELLO, SP_WORLD);
    DECODES(t, " hello", SP_SPACE2, SP_HELLO); /* every ▁ of the first token goes */
    perq_tokenizer_free(t);

    root = sp_tokenizer();
    set(root, "decoder", "{'type':'Metaspace','replacement':'▁','prepend_scheme':'never','split':true}");
    t = build(root);
    DECODES(t, " hello world", SP_HELLO, SP_WORLD);
    perq_tokenizer_free(t);

    root = sp_tokenizer();
    set(root, "decoder", "null"); /* tokens joined with spaces */
    t = build(root);
    DECODES(t, "▁hello ▁world", SP_HELLO, SP_WORLD);
    perq_tokenizer_free(t);

    root = sp_tokenizer();
    set(root, "decoder", "{'type':'Sequence','decoders':[{'type':'Strip','content':'▁','start':1,'stop':1},"
                         "{'type':'Fuse'}]}");
    t = build(root);
    DECODES(t, "hellowor", SP_HELLO, 274);
    DECODES(t, "", SP_SPACE2);
    perq_tokenizer_free(t);
}

/* ---- BOS and EOS ----------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_dir(const char *dir)
{
    const char *names[] = {"tokenizer.json", "tokenizer_config.json", "config.json"};
    for (size_t i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void test_bos_eos_from_configs(void **state)
{
    (void)state;
    char dir[] = "/tmp/perq-test-tokenizer-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *json = dump(sp_tokenizer());
    write_file(dir, "tokenizer.json", json);
    free(json);
    perq_err err = {0};
    perq_tokenizer *t;

    assert_int_equal(perq_tokenizer_load(dir, &t, &err), 0); /* no configs: the template's <s> */
    assert_int_equal(perq_tokenizer_bos_id(t), 1);
    assert_int_equal(perq_tokenizer_eos_id(t), -1);
    perq_tokenizer_free(t);

    write_file(dir, "tokenizer_config.json", "{\"add_bos_token\": false, \"eos_token\": \"</s>\"}");
    assert_int_equal(perq_tokenizer_load(dir, &t, &err), 0);
    assert_int_equal(perq_tokenizer_bos_id(t), -1);
    assert_int_equal(perq_tokenizer_eos_id(t), 2);
    ENCODES_WITH_BOS(t, "hello", SP_HELLO);
    perq_tokenizer_free(t);

    write_file(dir, "tokenizer_config.json", "{\"add_bos_token\": true, \"bos_token\": {\"content\": \"</s>\"}}");
    write_file(dir, "config.json", "{\"eos_token_id\": [2, 0]}");
    assert_int_equal(perq_tokenizer_load(dir, &t, &err), 0);
    assert_int_equal(perq_tokenizer_bos_id(t), 2);
    assert_int_equal(perq_tokenizer_eos_id(t), 2);
    ENCODES_WITH_BOS(t, "hello", 2, SP_HELLO);
    perq_tokenizer_free(t);

    /* no template: a Llama tokenizer class adds a BOS unless told not to, others do not */
    json_t *root = sp_tokenizer();
    set(root, "post_processor", "null");
    json = dump(root);
    write_file(dir, "tokenizer.json", json);
    free(json);
    write_file(dir, "tokenizer_config.json", "{\"tokenizer_class\": \"LlamaTokenizer\", \"bos_token\": \"<s>\"}");
    assert_int_equal(perq_tokenizer_load(dir, &t, &err), 0);
    assert_int_equal(perq_tokenizer_bos_id(t), 1);
    perq_tokenizer_free(t);
    write_file(dir, "tokenizer_config.json", "{\"tokenizer_class\": \"PreTrainedTokenizerFast\", \"bos_token\": \"<s>\"}");
    assert_int_equal(perq_tokenizer_load(dir, &t, &err), 0);
    assert_int_equal(perq_tokenizer_bos_id(t), -1);
    perq_tokenizer_free(t);

    write_file(dir, "tokenizer_config.json", "{\"add_bos_token\": true, \"add_eos_token\": true}");
    assert_int_equal(perq_tokenizer_load(dir, &t, &err), -1);
    assert_int_equal(err.code, PERQ_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "add_eos_token"));

    write_file(dir, "tokenizer_config.json", "{\"add_bos_token\": true,");
    assert_int_equal(perq_tokenizer_load(dir, &t, &err), -1);
    assert_int_equal(err.code, PERQ_E_FORMAT);
    assert_non_null(strstr(err.msg, "tokenizer_config.json"));
    remove_dir(dir);

    assert_int_equal(perq_tokenizer_load("/nonexistent-perq-dir", &t, &err), -1);
    assert_int_equal(err.code, PERQ_E_IO);
}

/* ---- errors ------------------------------------------------------------------------- */

static void test_unsupported_parts_are_named(void **state)
{
    (void)state;
    json_t *root = sp_tokenizer();
    set(root, "pre_tokenizer", "{'type':'Whitespace'}");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "tokenizer.json: pre_tokenizer type 'Whitespace' is not supported");

    root = sp_tokenizer();
    set(root, "normalizer", "{'type':'Sequence','normalizers':[{'type':'NFC'},{'type':'Precompiled'}]}");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "normalizer.normalizers[1] type 'Precompiled' is not supported");

    root = sp_tokenizer();
    set(root, "decoder", "{'type':'CTC'}");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "decoder type 'CTC' is not supported");

    root = sp_tokenizer();
    set(model_of(root), "type", "'WordPiece'");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "model: type 'WordPiece' is not supported");

    root = sp_tokenizer();
    set(model_of(root), "dropout", "0.1");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "dropout");

    root = sp_tokenizer();
    set(model_of(root), "continuing_subword_prefix", "'##'");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "continuing_subword_prefix");

    root = sp_tokenizer();
    set(root, "pre_tokenizer", "{'type':'Split','pattern':{'String':'x'},'behavior':'Sideways','invert':false}");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "behavior 'Sideways'");

    root = sp_tokenizer();
    set(root, "pre_tokenizer", "{'type':'Split','pattern':{'Regex':'(a'},'behavior':'Isolated','invert':false}");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "regex '(a' is not supported");

    root = sp_tokenizer();
    set(root, "post_processor", "{'type':'RobertaProcessing'}");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "post_processor type 'RobertaProcessing'");

    root = sp_tokenizer();
    set(root, "post_processor", "{'type':'TemplateProcessing','single':[{'Sequence':{'id':'A'}},"
                                "{'SpecialToken':{'id':'</s>'}}],'special_tokens':{'</s>':{'ids':[2]}}}");
    expect_parse_error(root, PERQ_E_UNSUPPORTED, "1 after");

    /* a dropout of 0 is no dropout */
    root = sp_tokenizer();
    set(model_of(root), "dropout", "0.0");
    perq_tokenizer_free(build(root));
}

static void test_malformed_files(void **state)
{
    (void)state;
    perq_err err = {0};
    perq_tokenizer *t;
    assert_int_equal(perq_tokenizer_parse("{", 1, &t, &err), -1);
    assert_int_equal(err.code, PERQ_E_FORMAT);
    assert_non_null(strstr(err.msg, "JSON error"));
    assert_int_equal(perq_tokenizer_parse("[]", 2, &t, &err), -1);
    assert_int_equal(err.code, PERQ_E_FORMAT);

    expect_parse_error(plain_tokenizer("{'a':0,'b':1}", "['a b']"), PERQ_E_FORMAT, "token 'ab' is not in the vocabulary");
    expect_parse_error(plain_tokenizer("{'a':0,'b':1,'ab':2}", "['a b c']"), PERQ_E_FORMAT, "merges[0]");
    expect_parse_error(plain_tokenizer("{'a':0,'b':1,'ab':2}", "[['a']]"), PERQ_E_FORMAT, "merges[0]");
    expect_parse_error(plain_tokenizer("{'a':0,'b':0}", "[]"), PERQ_E_FORMAT, "id 0 is given to both");
    expect_parse_error(plain_tokenizer("{'a':'0'}", "[]"), PERQ_E_FORMAT, "not an integer");
    expect_parse_error(plain_tokenizer("{'a':-1}", "[]"), PERQ_E_FORMAT, "out of range");
    expect_parse_error(plain_tokenizer("{'a':100000000}", "[]"), PERQ_E_UNSUPPORTED, "too sparse");
    expect_parse_error(plain_tokenizer("[]", "[]"), PERQ_E_FORMAT, "model.vocab");

    json_t *root = plain_tokenizer("{'a':0,'b':1}", "[]");
    set(root, "added_tokens", "[{'id':1,'content':'a'}]");
    expect_parse_error(root, PERQ_E_FORMAT, "the vocabulary gives it 0");
    root = plain_tokenizer("{'a':0,'b':1}", "[]");
    set(root, "added_tokens", "[{'id':1,'content':'<x>'}]");
    expect_parse_error(root, PERQ_E_FORMAT, "which the vocabulary gives to 'b'");
    root = plain_tokenizer("{'a':0}", "[]");
    set(root, "pre_tokenizer", "{'type':'Metaspace','replacement':'ab'}");
    expect_parse_error(root, PERQ_E_FORMAT, "replacement is not one character");
}

static void test_text_must_be_utf8(void **state)
{
    (void)state;
    perq_tokenizer *t = build(sp_tokenizer());
    perq_err err = {0};
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    assert_int_equal(perq_tokenizer_encode(t, "ab\xC3(", 4, false, &ids, &n, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_null(ids);
    assert_int_equal(n, 0);
    assert_int_equal(perq_tokenizer_encode(t, "\xED\xA0\x80", 3, false, &ids, &n, &err), -1); /* a surrogate */
    perq_tokenizer_free(t);
}

/* ---- properties ---------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint32_t rnd(uint32_t n)
{
    return (uint32_t)(xorshift64(&rng_state) % n);
}

static size_t random_text(char *out, size_t max_pieces)
{
    static const char *const pieces[] = {"h", "e", "l", "o", " ", "  ", "w", "r", "d", "\n", "é", "日", "😀", "!",
                                         "'s", "1", "\t", "ﬁ", "a", "<", "x", ">"};
    size_t len = 0, n = rnd((uint32_t)max_pieces + 1);
    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[rnd(sizeof pieces / sizeof pieces[0])];
        memcpy(out + len, p, strlen(p));
        len += strlen(p);
    }
    out[len] = 0;
    return len;
}

/* Decoding gives back the text, for texts that hold no added token's content. */
static void test_round_trips(void **state)
{
    (void)state;
    perq_tokenizer *sp = build(sp_tokenizer());
    perq_tokenizer *bl = build(byte_level_tokenizer());
    char text[4 * 64 + 1];
    for (int i = 0; i < 2000; i++) {
        size_t len = random_text(text, 60);
        check_round_trip(sp, text, len);
        if (!strstr(text, "<x>") && !strstr(text, "<mask>"))
            check_round_trip(bl, text, len);
    }
    perq_tokenizer_free(sp);
    perq_tokenizer_free(bl);
}

/* Cutting words where no merge can join two characters gives what merging the
 * whole word gives: random merge tables over a small alphabet, random words. */
static void test_cut_words_is_exact(void **state)
{
    (void)state;
    static const char *const alphabet[] = {"a", "b", "▁", "c"};
    for (int trial = 0; trial < 40; trial++) {
        char tokens[64][32];
        size_t n_tokens = 4;
        for (size_t i = 0; i < 4; i++)
            strcpy(tokens[i], alphabet[i]);
        json_t *vocab = json_object(), *merges = json_array();
        for (size_t i = 0; i < 4; i++)
            json_object_set_new(vocab, tokens[i], json_integer((json_int_t)i));
        for (int m = 0; m < 30 && n_tokens < 64; m++) {
            const char *x = tokens[rnd((uint32_t)n_tokens)], *y = tokens[rnd((uint32_t)n_tokens)];
            if (strlen(x) + strlen(y) >= sizeof tokens[0])
                continue;
            char joined[64];
            snprintf(joined, sizeof joined, "%s%s", x, y);
            if (!json_object_get(vocab, joined)) {
                strcpy(tokens[n_tokens], joined);
                json_object_set_new(vocab, joined, json_integer((json_int_t)n_tokens++));
            }
            json_t *pair = json_array();
            json_array_append_new(pair, json_string(x));
            json_array_append_new(pair, json_string(y));
            json_array_append_new(merges, pair);
        }
        json_t *root = plain_tokenizer("{}", "[]");
        json_object_set_new(model_of(root), "vocab", vocab);
        json_object_set_new(model_of(root), "merges", merges);
        perq_tokenizer *t = build(root);
        for (int w = 0; w < 50; w++) {
            char word[4 * 40 + 1];
            size_t len = 0, n = rnd(40);
            for (size_t i = 0; i < n; i++) {
                const char *c = alphabet[rnd(4)];
                memcpy(word + len, c, strlen(c));
                len += strlen(c);
            }
            perq_err err = {0};
            int32_t *cut, *whole;
            size_t n_cut, n_whole;
            assert_true(t->model.cut_words);
            assert_int_equal(perq_tokenizer_encode(t, word, len, false, &cut, &n_cut, &err), 0);
            t->model.cut_words = false;
            assert_int_equal(perq_tokenizer_encode(t, word, len, false, &whole, &n_whole, &err), 0);
            t->model.cut_words = true;
            assert_int_equal(n_cut, n_whole);
            assert_memory_equal(cut, whole, n_cut * sizeof *cut);
            free(cut);
            free(whole);
        }
        perq_tokenizer_free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merges_by_rank),
        cmocka_unit_test(test_merges_as_pairs),
        cmocka_unit_test(test_sentencepiece_words),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_unk_and_fuse_unk),
        cmocka_unit_test(test_ignore_merges),
        cmocka_unit_test(test_normalizers),
        cmocka_unit_test(test_metaspace),
        cmocka_unit_test(test_split_behaviors),
        cmocka_unit_test(test_digits_and_sequence),
        cmocka_unit_test(test_byte_level),
        cmocka_unit_test(test_byte_level_with_split_regex),
        cmocka_unit_test(test_added_tokens),
        cmocka_unit_test(test_normalized_added_tokens),
        cmocka_unit_test(test_decoders),
        cmocka_unit_test(test_bos_eos_from_configs),
        cmocka_unit_test(test_unsupported_parts_are_named),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_text_must_be_utf8),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_cut_words_is_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
