/* The shapes of the real models perq synth imitates, and their config.json as
 * Hugging Face publishes it (same keys, same values, only num_hidden_layers
 * and torch_dtype follow the options). */
#include <jansson.h>
#include <string.h>

#include "synth.h"

static const synth_preset presets[] = {
    {
        .name = "llama-3.2-1b", .architecture = "LlamaForCausalLM", .model_type = "llama",
        .hidden_size = 2048, .intermediate_size = 8192, .num_hidden_layers = 16,
        .num_attention_heads = 32, .num_key_value_heads = 8, .head_dim = 64,
        .vocab_size = 128256, .max_position_embeddings = 131072,
        .rms_norm_eps = 1e-5, .rope_theta = 500000.0,
        .llama3_rope = true, .rope_factor = 32.0, .rope_low_freq_factor = 1.0,
        .rope_high_freq_factor = 4.0, .rope_original_max_position_embeddings = 8192,
        .tie_word_embeddings = true, .bos_token_id = 128000, .eos_token_id = 128001,
        .tokenizer = SYNTH_TOK_LLAMA3,
    },
    {
        .name = "llama-3.1-8b", .architecture = "LlamaForCausalLM", .model_type = "llama",
        .hidden_size = 4096, .intermediate_size = 14336, .num_hidden_layers = 32,
        .num_attention_heads = 32, .num_key_value_heads = 8, .head_dim = 128,
        .vocab_size = 128256, .max_position_embeddings = 131072,
        .rms_norm_eps = 1e-5, .rope_theta = 500000.0,
        .llama3_rope = true, .rope_factor = 8.0, .rope_low_freq_factor = 1.0,
        .rope_high_freq_factor = 4.0, .rope_original_max_position_embeddings = 8192,
        .tie_word_embeddings = false, .bos_token_id = 128000, .eos_token_id = 128001,
        .tokenizer = SYNTH_TOK_LLAMA3,
    },
    {
        .name = "tinyllama-1.1b", .architecture = "LlamaForCausalLM", .model_type = "llama",
        .hidden_size = 2048, .intermediate_size = 5632, .num_hidden_layers = 22,
        .num_attention_heads = 32, .num_key_value_heads = 4, .head_dim = 64,
        .vocab_size = 32000, .max_position_embeddings = 2048,
        .rms_norm_eps = 1e-5, .rope_theta = 10000.0,
        .tie_word_embeddings = false, .bos_token_id = 1, .eos_token_id = 2,
        .tokenizer = SYNTH_TOK_SENTENCEPIECE,
    },
    {
        .name = "mistral-7b", .architecture = "MistralForCausalLM", .model_type = "mistral",
        .hidden_size = 4096, .intermediate_size = 14336, .num_hidden_layers = 32,
        .num_attention_heads = 32, .num_key_value_heads = 8, .head_dim = 128,
        .vocab_size = 32000, .max_position_embeddings = 32768,
        .rms_norm_eps = 1e-5, .rope_theta = 10000.0,
        .tie_word_embeddings = false, .bos_token_id = 1, .eos_token_id = 2,
        .sliding_window = 4096, .tokenizer = SYNTH_TOK_SENTENCEPIECE,
    },
    /* Small and fast, for tests: an intermediate width that is not a power of
     * two (16 * 43), like the real ones. */
    {
        .name = "tiny", .architecture = "LlamaForCausalLM", .model_type = "llama",
        .hidden_size = 256, .intermediate_size = 688, .num_hidden_layers = 2,
        .num_attention_heads = 8, .num_key_value_heads = 2, .head_dim = 32,
        .vocab_size = 512, .max_position_embeddings = 2048,
        .rms_norm_eps = 1e-5, .rope_theta = 10000.0,
        .tie_word_embeddings = true, .bos_token_id = 1, .eos_token_id = 2,
        .tokenizer = SYNTH_TOK_SENTENCEPIECE,
    },
    /* The tiny shapes with Llama 3's byte-level BPE and rope scaling: the
     * smallest vocabulary the Llama 3 tokenizer builder makes (1280 pieces and
     * the 256 special tokens after them), for tests of those paths. */
    {
        .name = "tiny-llama3", .architecture = "LlamaForCausalLM", .model_type = "llama",
        .hidden_size = 256, .intermediate_size = 688, .num_hidden_layers = 2,
        .num_attention_heads = 8, .num_key_value_heads = 2, .head_dim = 32,
        .vocab_size = 1536, .max_position_embeddings = 131072,
        .rms_norm_eps = 1e-5, .rope_theta = 500000.0,
        .llama3_rope = true, .rope_factor = 32.0, .rope_low_freq_factor = 1.0,
        .rope_high_freq_factor = 4.0, .rope_original_max_position_embeddings = 8192,
        .tie_word_embeddings = true, .bos_token_id = 1280, .eos_token_id = 1281,
        .tokenizer = SYNTH_TOK_LLAMA3,
    },
};

size_t synth_preset_count(void)
{
    return sizeof presets / sizeof presets[0];
}

const synth_preset *synth_preset_at(size_t i)
{
    return i < synth_preset_count() ? &presets[i] : NULL;
}

const synth_preset *synth_preset_find(const char *name)
{
    for (size_t i = 0; i < synth_preset_count(); i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}

static const char *torch_dtype_name(perq_dtype dtype)
{
    switch (dtype) {
    case PERQ_DT_BF16: return "bfloat16";
    case PERQ_DT_F16: return "float16";
    default: return "float32";
    }
}

static json_t *rope_scaling(const synth_preset *p)
{
    if (!p->llama3_rope)
        return json_null();
    return json_pack("{s:f, s:f, s:f, s:i, s:s}", "factor", p->rope_factor, "high_freq_factor",
                     p->rope_high_freq_factor, "low_freq_factor", p->rope_low_freq_factor,
                     "original_max_position_embeddings",
                     p->rope_original_max_position_embeddings, "rope_type", "llama3");
}

/* Keys in the alphabetical order Hugging Face writes them. */
static json_t *config_json(const synth_preset *p, int layers, perq_dtype dtype)
{
    bool llama = strcmp(p->model_type, "llama") == 0;
    json_t *c = json_object();
    if (!c)
        return NULL;
    int bad = 0;
    bad |= json_object_set_new(c, "architectures", json_pack("[s]", p->architecture));
    if (llama)
        bad |= json_object_set_new(c, "attention_bias", json_false());
    bad |= json_object_set_new(c, "attention_dropout", json_real(0.0));
    bad |= json_object_set_new(c, "bos_token_id", json_integer(p->bos_token_id));
    bad |= json_object_set_new(c, "eos_token_id", json_integer(p->eos_token_id));
    bad |= json_object_set_new(c, "head_dim", json_integer(p->head_dim));
    bad |= json_object_set_new(c, "hidden_act", json_string("silu"));
    bad |= json_object_set_new(c, "hidden_size", json_integer(p->hidden_size));
    bad |= json_object_set_new(c, "initializer_range", json_real(0.02));
    bad |= json_object_set_new(c, "intermediate_size", json_integer(p->intermediate_size));
    bad |= json_object_set_new(c, "max_position_embeddings",
                               json_integer(p->max_position_embeddings));
    if (llama)
        bad |= json_object_set_new(c, "mlp_bias", json_false());
    bad |= json_object_set_new(c, "model_type", json_string(p->model_type));
    bad |= json_object_set_new(c, "num_attention_heads", json_integer(p->num_attention_heads));
    bad |= json_object_set_new(c, "num_hidden_layers", json_integer(layers));
    bad |= json_object_set_new(c, "num_key_value_heads", json_integer(p->num_key_value_heads));
    if (llama)
        bad |= json_object_set_new(c, "pretraining_tp", json_integer(1));
    bad |= json_object_set_new(c, "rms_norm_eps", json_real(p->rms_norm_eps));
    if (llama)
        bad |= json_object_set_new(c, "rope_scaling", rope_scaling(p));
    bad |= json_object_set_new(c, "rope_theta", json_real(p->rope_theta));
    if (p->sliding_window > 0)
        bad |= json_object_set_new(c, "sliding_window", json_integer(p->sliding_window));
    bad |= json_object_set_new(c, "tie_word_embeddings", json_boolean(p->tie_word_embeddings));
    bad |= json_object_set_new(c, "torch_dtype", json_string(torch_dtype_name(dtype)));
    bad |= json_object_set_new(c, "use_cache", json_true());
    bad |= json_object_set_new(c, "vocab_size", json_integer(p->vocab_size));
    if (bad) {
        json_decref(c);
        return NULL;
    }
    return c;
}

int synth_write_config(const synth_preset *p, int layers, perq_dtype dtype, const char *dir,
                       perq_err *err)
{
    json_t *config = config_json(p, layers, dtype);
    json_t *generation = json_pack("{s:b, s:i, s:i}", "_from_model_config", 1, "bos_token_id",
                                   p->bos_token_id, "eos_token_id", p->eos_token_id);
    int rc = -1;
    if (!config || !generation)
        perq_fail(err, PERQ_E_NOMEM, "out of memory");
    else if (synth_write_json(dir, "config.json", config, err) == 0 &&
             synth_write_json(dir, "generation_config.json", generation, err) == 0)
        rc = 0;
    json_decref(config);
    json_decref(generation);
    return rc;
}
