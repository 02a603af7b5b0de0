/* BOS and EOS. The BOS id is the token the model puts before a text when asked
 * to add special tokens: tokenizer_config.json's add_bos_token and bos_token
 * when present, else the TemplateProcessing post-processor of tokenizer.json;
 * -1 when the model adds none (Qwen, say). transformers' Llama and Gemma
 * tokenizer classes rebuild their post-processor from add_bos_token, which is
 * true when not given. */
#include <string.h>

#include "tokenizer_internal.h"

int32_t tok_token_id(const perq_tokenizer *t, const char *s, size_t len)
{
    const tok_added_token *added = tok_added_by_content(&t->added, s, len);
    return added ? added->id : tok_vocab_find(&t->model.vocab, s, len);
}

/* ---- post_processor ---------------------------------------------------------- */

/* The ids of one template item {"SpecialToken": {"id": name}}. */
static int special_ids(const json_t *pp, const json_t *item, const json_t **ids, perq_err *err)
{
    json_t *name = json_object_get(json_object_get(item, "SpecialToken"), "id");
    json_t *entry = json_object_get(json_object_get(pp, "special_tokens"), json_string_value(name));
    *ids = json_object_get(entry, "ids");
    if (!json_is_string(name) || !json_is_array(*ids))
        return perq_fail(err, PERQ_E_FORMAT, "post_processor: special token '%.80s' has no ids",
                         json_is_string(name) ? json_string_value(name) : "?");
    for (size_t i = 0; i < json_array_size(*ids); i++) {
        json_t *id = json_array_get(*ids, i);
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX)
            return perq_fail(err, PERQ_E_FORMAT, "post_processor: special token '%.80s' has a bad id",
                             json_string_value(name));
    }
    return 0;
}

static int template_processing(perq_tokenizer *t, const json_t *pp, perq_err *err)
{
    json_t *single = json_object_get(pp, "single");
    if (!json_is_array(single))
        return perq_fail(err, PERQ_E_FORMAT, "post_processor.single is not an array");
    size_t before = 0, after = 0;
    bool seen_text = false;
    int32_t first = -1;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *item = json_array_get(single, i);
        if (json_object_get(item, "Sequence")) {
            seen_text = true;
            continue;
        }
        const json_t *ids;
        if (special_ids(pp, item, &ids, err))
            return -1;
        if (seen_text) {
            after += json_array_size(ids);
        } else {
            if (!before && json_array_size(ids))
                first = (int32_t)json_integer_value(json_array_get(ids, 0));
            before += json_array_size(ids);
        }
    }
    if (!seen_text)
        return perq_fail(err, PERQ_E_FORMAT, "post_processor.single has no $A");
    if (before > 1 || after > 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "post_processor: a template with %zu tokens before the text and %zu after is not "
                         "supported (only a BOS before)", before, after);
    t->bos_id = first;
    return 0;
}

int tok_special_from_post_processor(perq_tokenizer *t, const json_t *pp, perq_err *err)
{
    if (!pp || json_is_null(pp))
        return 0;
    const char *type = tok_json_type(pp);
    if (type && !strcmp(type, "TemplateProcessing"))
        return template_processing(t, pp, err);
    if (type && !strcmp(type, "ByteLevel")) /* offsets only */
        return 0;
    if (type && !strcmp(type, "Sequence")) {
        json_t *list = json_object_get(pp, "processors");
        if (!json_is_array(list))
            return perq_fail(err, PERQ_E_FORMAT, "post_processor.processors is not an array");
        for (size_t i = 0; i < json_array_size(list); i++)
            if (tok_special_from_post_processor(t, json_array_get(list, i), err))
                return -1;
        return 0;
    }
    return tok_unsupported_type("post_processor", pp, err);
}

/* ---- tokenizer_config.json and config.json ------------------------------------ */

/* bos_token / eos_token: a string or an AddedToken object {"content": ...}. */
static int32_t config_token(const perq_tokenizer *t, const json_t *tc, const char *key)
{
    json_t *v = json_object_get(tc, key);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return -1;
    return tok_token_id(t, json_string_value(v), json_string_length(v));
}

static int32_t config_id(const json_t *config, const char *key)
{
    json_t *v = json_object_get(config, key);
    if (json_is_array(v))
        v = json_array_get(v, 0);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= INT32_MAX)
        return -1;
    return (int32_t)json_integer_value(v);
}

/* The classes whose add_bos_token defaults to true. */
static bool adds_bos_by_default(const json_t *tc)
{
    static const char *const classes[] = {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer",
                                          "CodeLlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast"};
    json_t *cls = json_object_get(tc, "tokenizer_class");
    for (size_t i = 0; json_is_string(cls) && i < sizeof classes / sizeof classes[0]; i++)
        if (!strcmp(json_string_value(cls), classes[i]))
            return true;
    return false;
}

int tok_special_from_configs(perq_tokenizer *t, const json_t *tc, const json_t *config, perq_err *err)
{
    json_t *add_bos = json_object_get(tc, "add_bos_token");
    json_t *add_eos = json_object_get(tc, "add_eos_token");
    if (json_is_true(add_eos))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "tokenizer_config.json: add_eos_token true is not supported");
    if (json_is_false(add_bos))
        t->bos_id = -1;
    if (json_is_true(add_bos) || (!json_is_boolean(add_bos) && adds_bos_by_default(tc))) {
        int32_t id = config_token(t, tc, "bos_token");
        t->bos_id = id >= 0 ? id : config_id(config, "bos_token_id");
        if (t->bos_id < 0)
            return perq_fail(err, PERQ_E_FORMAT, "tokenizer_config.json: add_bos_token is true but no BOS token is known");
    }
    int32_t eos = config_token(t, tc, "eos_token");
    t->eos_id = eos >= 0 ? eos : config_id(config, "eos_token_id");
    if (t->bos_id >= 0 && (size_t)t->bos_id >= t->vocab_size)
        return perq_fail(err, PERQ_E_FORMAT, "BOS id %d is outside the vocabulary", t->bos_id);
    if (t->eos_id >= 0 && (size_t)t->eos_id >= t->vocab_size)
        t->eos_id = -1;
    return 0;
}
