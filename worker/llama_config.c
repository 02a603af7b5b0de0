/* config.json of Llama-family checkpoints, as Hugging Face transformers writes
 * them. Anything that would change the computation and that perq does not
 * implement is refused by name rather than silently ignored. */
#include "perq/llama_config.h"

#include "perq/fsutil.h"

#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONFIG_BYTES ((size_t)4 << 20)
#define MAX_LAYERS 1024 /* far above any real model; keeps tensor lists bounded */

static const char *const supported_architectures[] = {"LlamaForCausalLM", "MistralForCausalLM"};

/* A field that is absent or null takes its default. */
static json_t *field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static int get_positive_int(json_t *obj, const char *key, int dflt, int *out, perq_err *err)
{
    json_t *v = field(obj, key);
    if (!v) {
        if (dflt <= 0)
            return perq_fail(err, PERQ_E_FORMAT, "missing %s", key);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v))
        return perq_fail(err, PERQ_E_FORMAT, "%s is not an integer", key);
    json_int_t x = json_integer_value(v);
    if (x <= 0 || x > INT_MAX)
        return perq_fail(err, PERQ_E_FORMAT, "%s must be a positive integer, not %lld", key,
                         (long long)x);
    *out = (int)x;
    return 0;
}

static int get_positive_float(json_t *obj, const char *key, double dflt, float *out, perq_err *err)
{
    json_t *v = field(obj, key);
    if (!v) {
        *out = (float)dflt;
        return 0;
    }
    if (!json_is_number(v))
        return perq_fail(err, PERQ_E_FORMAT, "%s is not a number", key);
    double x = json_number_value(v);
    if (!(x >= FLT_MIN && x <= FLT_MAX)) /* positive, and still positive as a float */
        return perq_fail(err, PERQ_E_FORMAT, "%s must be a positive number in float range, not %g", key, x);
    *out = (float)x;
    return 0;
}

/* A token id: a non-negative integer, or the first of a list of them; -1 when absent. */
static int get_token_id(json_t *obj, const char *key, int *out, perq_err *err)
{
    json_t *v = field(obj, key);
    *out = -1;
    if (json_is_array(v))
        v = json_array_size(v) > 0 ? json_array_get(v, 0) : NULL;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
        return perq_fail(err, PERQ_E_FORMAT, "%s is not a token id (or a list of them)", key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int parse_architecture(json_t *root, perq_llama_config *cfg, perq_err *err)
{
    json_t *archs = json_object_get(root, "architectures");
    if (!json_is_array(archs) || json_array_size(archs) == 0)
        return perq_fail(err, PERQ_E_FORMAT, "missing architectures list");
    const char *arch = json_string_value(json_array_get(archs, 0));
    if (!arch)
        return perq_fail(err, PERQ_E_FORMAT, "architectures[0] is not a string");
    for (size_t i = 0; i < sizeof supported_architectures / sizeof *supported_architectures; i++) {
        if (strcmp(arch, supported_architectures[i]) == 0) {
            snprintf(cfg->architecture, sizeof cfg->architecture, "%s", arch);
            return 0;
        }
    }
    return perq_fail(err, PERQ_E_UNSUPPORTED,
                     "architecture \"%.200s\" is not supported (supported: LlamaForCausalLM, "
                     "MistralForCausalLM)",
                     arch);
}

static int parse_sizes(json_t *root, perq_llama_config *cfg, perq_err *err)
{
    if (get_positive_int(root, "hidden_size", 0, &cfg->hidden_size, err) ||
        get_positive_int(root, "intermediate_size", 0, &cfg->intermediate_size, err) ||
        get_positive_int(root, "num_hidden_layers", 0, &cfg->num_hidden_layers, err) ||
        get_positive_int(root, "num_attention_heads", 0, &cfg->num_attention_heads, err) ||
        get_positive_int(root, "vocab_size", 0, &cfg->vocab_size, err) ||
        get_positive_int(root, "max_position_embeddings", 0, &cfg->max_position_embeddings, err) ||
        get_positive_int(root, "num_key_value_heads", cfg->num_attention_heads, &cfg->num_key_value_heads,
                         err))
        return -1;
    int heads = cfg->num_attention_heads, kv = cfg->num_key_value_heads;
    if (cfg->num_hidden_layers > MAX_LAYERS)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "num_hidden_layers %d is more than %d",
                         cfg->num_hidden_layers, MAX_LAYERS);
    if (heads % kv != 0)
        return perq_fail(err, PERQ_E_FORMAT,
                         "num_key_value_heads %d does not divide num_attention_heads %d", kv, heads);
    if (!field(root, "head_dim") && cfg->hidden_size % heads != 0)
        return perq_fail(err, PERQ_E_FORMAT,
                         "num_attention_heads %d does not divide hidden_size %d (and no head_dim)",
                         heads, cfg->hidden_size);
    if (get_positive_int(root, "head_dim", cfg->hidden_size / heads, &cfg->head_dim, err))
        return -1;
    if ((long long)heads * cfg->head_dim > INT_MAX)
        return perq_fail(err, PERQ_E_FORMAT, "num_attention_heads * head_dim is too large");
    if (cfg->head_dim % 2 != 0)
        return perq_fail(err, PERQ_E_FORMAT, "head_dim %d is odd, which rotary embeddings cannot use",
                         cfg->head_dim);
    return 0;
}

static int parse_rope_scaling(json_t *root, perq_llama_config *cfg, perq_err *err)
{
    cfg->rope_scaling.type = PERQ_ROPE_DEFAULT;
    json_t *rs = field(root, "rope_scaling");
    if (!rs)
        return 0;
    if (!json_is_object(rs))
        return perq_fail(err, PERQ_E_FORMAT, "rope_scaling is not an object");
    json_t *type = field(rs, "rope_type");
    if (!type)
        type = field(rs, "type");
    const char *name = json_string_value(type);
    if (!name)
        return perq_fail(err, PERQ_E_FORMAT, "rope_scaling has no rope_type");
    if (strcmp(name, "default") == 0)
        return 0;
    if (strcmp(name, "linear") == 0)
        cfg->rope_scaling.type = PERQ_ROPE_LINEAR;
    else if (strcmp(name, "llama3") == 0)
        cfg->rope_scaling.type = PERQ_ROPE_LLAMA3;
    else
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "rope_scaling type \"%.100s\" is not supported (supported: default, linear, "
                         "llama3)",
                         name);

    if (!field(rs, "factor"))
        return perq_fail(err, PERQ_E_FORMAT, "rope_scaling %s needs a factor", name);
    if (get_positive_float(rs, "factor", 0, &cfg->rope_scaling.factor, err))
        return perq_err_context(err, "rope_scaling");
    if (cfg->rope_scaling.type == PERQ_ROPE_LINEAR)
        return 0;
    if (get_positive_float(rs, "low_freq_factor", 1.0, &cfg->rope_scaling.low_freq_factor, err) ||
        get_positive_float(rs, "high_freq_factor", 4.0, &cfg->rope_scaling.high_freq_factor, err) ||
        get_positive_int(rs, "original_max_position_embeddings", 0,
                         &cfg->rope_scaling.original_max_position_embeddings, err))
        return perq_err_context(err, "rope_scaling");
    if (cfg->rope_scaling.high_freq_factor <= cfg->rope_scaling.low_freq_factor)
        return perq_fail(err, PERQ_E_FORMAT, "rope_scaling high_freq_factor must exceed low_freq_factor");
    return 0;
}

static int parse_dtype(json_t *root, perq_llama_config *cfg, perq_err *err)
{
    /* Newer transformers write "dtype", older ones "torch_dtype". */
    json_t *v = field(root, "torch_dtype");
    if (!v)
        v = field(root, "dtype");
    cfg->torch_dtype = PERQ_DT_F32;
    if (!v)
        return 0;
    const char *name = json_string_value(v);
    if (name && strcmp(name, "float32") == 0)
        cfg->torch_dtype = PERQ_DT_F32;
    else if (name && strcmp(name, "float16") == 0)
        cfg->torch_dtype = PERQ_DT_F16;
    else if (name && strcmp(name, "bfloat16") == 0)
        cfg->torch_dtype = PERQ_DT_BF16;
    else
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "torch_dtype %s%.60s%s is not supported (supported: float32, float16, bfloat16)",
                         name ? "\"" : "", name ? name : "(not a string)", name ? "\"" : "");
    return 0;
}

/* Features of the family that change the computation and that perq does not implement. */
static int refuse_unsupported_features(json_t *root, perq_err *err)
{
    static const char *const no_bias[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = field(root, no_bias[i]);
        if (v && !json_is_boolean(v))
            return perq_fail(err, PERQ_E_FORMAT, "%s is not a boolean", no_bias[i]);
        if (json_is_true(v))
            return perq_fail(err, PERQ_E_UNSUPPORTED, "%s true is not supported", no_bias[i]);
    }
    json_t *act = field(root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "hidden_act %.60s is not supported (only silu)",
                         json_is_string(act) ? json_string_value(act) : "(not a string)");
    return 0;
}

static int parse_root(json_t *root, perq_llama_config *cfg, perq_err *err)
{
    if (!json_is_object(root))
        return perq_fail(err, PERQ_E_FORMAT, "config.json is not a JSON object");
    if (parse_architecture(root, cfg, err) || parse_sizes(root, cfg, err) ||
        get_positive_float(root, "rms_norm_eps", 1e-6, &cfg->rms_norm_eps, err) ||
        get_positive_float(root, "rope_theta", 10000.0, &cfg->rope_theta, err) ||
        parse_rope_scaling(root, cfg, err) || parse_dtype(root, cfg, err) ||
        get_token_id(root, "bos_token_id", &cfg->bos_token_id, err) ||
        get_token_id(root, "eos_token_id", &cfg->eos_token_id, err) || refuse_unsupported_features(root, err))
        return perq_err_context(err, "config.json");
    json_t *tie = field(root, "tie_word_embeddings");
    if (tie && !json_is_boolean(tie))
        return perq_fail(err, PERQ_E_FORMAT, "config.json: tie_word_embeddings is not a boolean");
    cfg->tie_word_embeddings = json_is_true(tie);
    return 0;
}

int perq_llama_config_parse(const char *json_text, size_t len, perq_llama_config *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(json_text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return perq_fail(err, PERQ_E_FORMAT, "config.json is not valid JSON: %s (line %d, column %d)", jerr.text,
                         jerr.line, jerr.column);
    int rc = parse_root(root, out, err);
    json_decref(root);
    return rc;
}

int perq_llama_config_load(const char *path, perq_llama_config *out, perq_err *err)
{
    char *text;
    size_t len;
    if (perq_read_file(path, MAX_CONFIG_BYTES, &text, &len, err) != 0)
        return -1;
    int rc = perq_llama_config_parse(text, len, out, err);
    free(text);
    return rc;
}

static void expect(perq_expected_tensor *t, int ndim, long long rows, long long cols, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void expect(perq_expected_tensor *t, int ndim, long long rows, long long cols, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->shape[0] = rows;
    t->shape[1] = ndim == 2 ? cols : 0;
}

int perq_llama_expected_tensors(const perq_llama_config *cfg, perq_expected_tensor **out, size_t *n,
                                perq_err *err)
{
    long long hidden = cfg->hidden_size, inter = cfg->intermediate_size, vocab = cfg->vocab_size;
    long long q_rows = (long long)cfg->num_attention_heads * cfg->head_dim;
    long long kv_rows = (long long)cfg->num_key_value_heads * cfg->head_dim;
    size_t count = 2 + 9 * (size_t)cfg->num_hidden_layers + (cfg->tie_word_embeddings ? 0 : 1);
    perq_expected_tensor *ts = calloc(count, sizeof *ts);
    if (!ts)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    size_t i = 0;
    expect(&ts[i++], 2, vocab, hidden, "model.embed_tokens.weight");
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        expect(&ts[i++], 1, hidden, 0, "model.layers.%d.input_layernorm.weight", l);
        expect(&ts[i++], 2, q_rows, hidden, "model.layers.%d.self_attn.q_proj.weight", l);
        expect(&ts[i++], 2, kv_rows, hidden, "model.layers.%d.self_attn.k_proj.weight", l);
        expect(&ts[i++], 2, kv_rows, hidden, "model.layers.%d.self_attn.v_proj.weight", l);
        expect(&ts[i++], 2, hidden, q_rows, "model.layers.%d.self_attn.o_proj.weight", l);
        expect(&ts[i++], 1, hidden, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        expect(&ts[i++], 2, inter, hidden, "model.layers.%d.mlp.gate_proj.weight", l);
        expect(&ts[i++], 2, inter, hidden, "model.layers.%d.mlp.up_proj.weight", l);
        expect(&ts[i++], 2, hidden, inter, "model.layers.%d.mlp.down_proj.weight", l);
    }
    expect(&ts[i++], 1, hidden, 0, "model.norm.weight");
    if (!cfg->tie_word_embeddings)
        expect(&ts[i++], 2, vocab, hidden, "lm_head.weight");
    *out = ts;
    *n = i;
    return 0;
}
