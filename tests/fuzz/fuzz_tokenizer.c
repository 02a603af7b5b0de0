/* The tokenizer on untrusted bytes. First byte even: the rest is a
 * tokenizer.json; it loads or is refused with a message, and what loads
 * encodes and decodes a few texts without crashing. First byte odd: the rest
 * is a text for two tokenizers built once here (a Llama-2-style one like
 * stories260K's, and a GPT-2-style byte-level one); valid UTF-8 must encode,
 * give ids inside the vocabulary and decode back to the text. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perq/tokenizer.h"

static perq_tokenizer *from_json(json_t *root)
{
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    perq_err err;
    perq_tokenizer *t = NULL;
    if (!text || perq_tokenizer_parse(text, strlen(text), &t, &err) != 0)
        abort();
    free(text);
    return t;
}

static json_t *load(const char *json)
{
    json_error_t jerr;
    json_t *j = json_loads(json, 0, &jerr);
    if (!j)
        abort();
    return j;
}

static perq_tokenizer *sentencepiece_style(void)
{
    json_t *root = load(
        "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
        "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
        "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false}],"
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\u2581\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\u2581\"}]},"
        "\"pre_tokenizer\":null,"
        "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
        "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1]}}},"
        "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\u2581\"},"
        "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
        "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
        "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
        "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"\u2581\":259,\"t\":260,\"h\":261,\"e\":262,\"a\":263,"
        "\"n\":264,\"d\":265,\"th\":266,\"\u2581the\":267,\"\u2581t\":268,\"\u2581a\":269,\"nd\":270,"
        "\"\u2581and\":271,\"\u2581\u2581\":272,\"he\":273},"
        "\"merges\":[\"\u2581 t\",\"h e\",\"\u2581 a\",\"n d\",\"\u2581t he\",\"\u2581a nd\",\"\u2581 \u2581\",\"t h\"]}}");
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        json_object_set_new(vocab, name, json_integer(3 + b));
    }
    return from_json(root);
}

/* GPT-2's alphabet: printable Latin-1 bytes as themselves, the rest from U+0100 on. */
static int printable(int b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static perq_tokenizer *byte_level(void)
{
    json_t *root = load("{\"added_tokens\":[],\"normalizer\":{\"type\":\"NFC\"},"
                        "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
                        "\"decoder\":{\"type\":\"ByteLevel\"},"
                        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"th\":256,\"the\":257,\"\u0120t\":258,"
                        "\"\u0120the\":259},\"merges\":[[\"t\",\"h\"],[\"th\",\"e\"],[\"\u0120\",\"t\"],"
                        "[\"\u0120t\",\"he\"]]}}");
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_object_set_new(vocab, "he", json_integer(260));
    json_array_append_new(json_object_get(json_object_get(root, "model"), "merges"), json_pack("[ss]", "h", "e"));
    for (int b = 0, n = 0; b < 256; b++) {
        unsigned cp = printable(b) ? (unsigned)b : 256u + (unsigned)n++;
        char c[3] = {0};
        if (cp < 0x80) {
            c[0] = (char)cp;
        } else {
            c[0] = (char)(0xC0 | cp >> 6);
            c[1] = (char)(0x80 | (cp & 0x3F));
        }
        json_object_set_new(vocab, c, json_integer(b));
    }
    return from_json(root);
}

static void exercise(const perq_tokenizer *t, const char *text, size_t len)
{
    perq_err err;
    int32_t *ids;
    size_t n;
    if (perq_tokenizer_encode(t, text, len, true, &ids, &n, &err) != 0)
        return;
    char *back;
    if (perq_tokenizer_decode(t, ids, n, &back, &err) == 0)
        free(back);
    free(ids);
}

static void check_text(const perq_tokenizer *t, const char *text, size_t len, int round_trip)
{
    perq_err err;
    int32_t *ids;
    size_t n;
    int valid = perq_tokenizer_encode(t, text, len, false, &ids, &n, &err) == 0;
    if (!valid) {
        if (err.code != PERQ_E_INVALID)
            abort(); /* only a text that is not UTF-8 is refused */
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= perq_tokenizer_vocab_size(t))
            abort();
    char *back;
    if (perq_tokenizer_decode(t, ids, n, &back, &err) != 0)
        abort();
    if (round_trip && (strlen(back) != len || memcmp(back, text, len) != 0))
        abort();
    free(back);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static perq_tokenizer *sp, *bl;
    if (!sp) {
        sp = sentencepiece_style();
        bl = byte_level();
    }
    if (size == 0)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] % 2 == 0) {
        perq_tokenizer *t = NULL;
        perq_err err;
        if (perq_tokenizer_parse(rest, len, &t, &err) != 0) {
            if (t || !err.msg[0])
                abort();
            return 0;
        }
        static const char *const samples[] = {"", "Hello world", " the  and\n\tthe", "é日本😀 <s>x</s><unk>", "123 456"};
        for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
            exercise(t, samples[i], strlen(samples[i]));
        perq_tokenizer_free(t);
        return 0;
    }
    int has_nul = memchr(rest, 0, len) != NULL;
    int special = memmem(rest, len, "<s>", 3) || memmem(rest, len, "</s>", 4) || memmem(rest, len, "<unk>", 5) ||
                  memmem(rest, len, "\xE2\x96\x81", 3); /* ▁ decodes to a space */
    check_text(sp, rest, len, !has_nul && !special);
    /* NFC may change the text, so only ASCII round-trips exactly */
    int ascii = 1;
    for (size_t i = 0; i < len && ascii; i++)
        ascii = (unsigned char)rest[i] < 0x80;
    check_text(bl, rest, len, !has_nul && ascii);
    return 0;
}
