#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "perq/llama_config.h"
#include "testutil.h"

static const char llama32_1b[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"head_dim\": 64,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 2048, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 8192, \"max_position_embeddings\": 131072, \"mlp_bias\": false,"
    " \"model_type\": \"llama\", \"num_attention_heads\": 32, \"num_hidden_layers\": 16,"
    " \"num_key_value_heads\": 8, \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05,"
    " \"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
    " \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},"
    " \"rope_theta\": 500000.0, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
    " \"transformers_version\": \"4.45.0.dev0\", \"use_cache\": true, \"vocab_size\": 128256}";

static const char mistral_7b[] =
    "{\"architectures\": [\"MistralForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 14336, \"max_position_embeddings\": 32768, \"model_type\": \"mistral\","
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
    " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"sliding_window\": 4096,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"use_cache\": true,"
    " \"vocab_size\": 32000}";

static int parse(const char *text, perq_llama_config *cfg, perq_err *err)
{
    return perq_llama_config_parse(text, strlen(text), cfg, err);
}

/* Parses base with one top-level field replaced (value NULL: removed). */
static int parse_with(const char *base, const char *key, const char *value_json, perq_llama_config *cfg,
                      perq_err *err)
{
    json_t *root = json_loads(base, 0, NULL);
    assert_non_null(root);
    if (value_json) {
        json_t *v = json_loads(value_json, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        json_object_set_new(root, key, v);
    } else {
        json_object_del(root, key);
    }
    char *text = json_dumps(root, 0);
    json_decref(root);
    int rc = parse(text, cfg, err);
    free(text);
    return rc;
}

static void expect_failure(const char *base, const char *key, const char *value_json, perq_errcode code,
                           const char *want)
{
    perq_llama_config cfg;
    perq_err err = {0};
    int rc = parse_with(base, key, value_json, &cfg, &err);
    if (rc == 0 || !strstr(err.msg, want))
        print_error("%s=%s: wanted \"%s\", got rc %d: %s\n", key, value_json ? value_json : "(removed)", want,
                    rc, err.msg);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, code);
    assert_non_null(strstr(err.msg, want));
}

static void test_stories260k(void **state)
{
    (void)state;
    char *path = shared_path("models/stories260K/config.json");
    perq_llama_config cfg;
    perq_err err;
    assert_int_equal(perq_llama_config_load(path, &cfg, &err), 0);
    free(path);
    assert_string_equal(cfg.architecture, "LlamaForCausalLM");
    assert_int_equal(cfg.hidden_size, 64);
    assert_int_equal(cfg.intermediate_size, 172);
    assert_int_equal(cfg.num_hidden_layers, 5);
    assert_int_equal(cfg.num_attention_heads, 8);
    assert_int_equal(cfg.num_key_value_heads, 4);
    assert_int_equal(cfg.head_dim, 8);
    assert_int_equal(cfg.vocab_size, 512);
    assert_int_equal(cfg.max_position_embeddings, 512);
    assert_float_equal(cfg.rms_norm_eps, 1e-5f, 1e-12f);
    assert_float_equal(cfg.rope_theta, 10000.0f, 0.0f);
    assert_int_equal(cfg.rope_scaling.type, PERQ_ROPE_DEFAULT);
    assert_true(cfg.tie_word_embeddings);
    assert_int_equal(cfg.bos_token_id, 1);
    assert_int_equal(cfg.eos_token_id, 2);
    assert_int_equal(cfg.torch_dtype, PERQ_DT_F32);
}

static void test_llama32_with_llama3_rope_and_eos_list(void **state)
{
    (void)state;
    perq_llama_config cfg;
    perq_err err;
    assert_int_equal(parse(llama32_1b, &cfg, &err), 0);
    assert_int_equal(cfg.head_dim, 64);
    assert_int_equal(cfg.num_key_value_heads, 8);
    assert_int_equal(cfg.vocab_size, 128256);
    assert_int_equal(cfg.rope_scaling.type, PERQ_ROPE_LLAMA3);
    assert_float_equal(cfg.rope_scaling.factor, 32.0f, 0.0f);
    assert_float_equal(cfg.rope_scaling.low_freq_factor, 1.0f, 0.0f);
    assert_float_equal(cfg.rope_scaling.high_freq_factor, 4.0f, 0.0f);
    assert_int_equal(cfg.rope_scaling.original_max_position_embeddings, 8192);
    assert_float_equal(cfg.rope_theta, 500000.0f, 0.0f);
    assert_int_equal(cfg.bos_token_id, 128000);
    assert_int_equal(cfg.eos_token_id, 128001);
    assert_int_equal(cfg.torch_dtype, PERQ_DT_BF16);
    assert_true(cfg.tie_word_embeddings);

    /* Older configs spell the key "type"; linear scaling needs only a factor. */
    assert_int_equal(parse_with(llama32_1b, "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", &cfg, &err), 0);
    assert_int_equal(cfg.rope_scaling.type, PERQ_ROPE_LINEAR);
    assert_float_equal(cfg.rope_scaling.factor, 2.0f, 0.0f);
    assert_int_equal(parse_with(llama32_1b, "rope_scaling", "{\"rope_type\": \"default\"}", &cfg, &err), 0);
    assert_int_equal(cfg.rope_scaling.type, PERQ_ROPE_DEFAULT);
}

static void test_mistral_defaults(void **state)
{
    (void)state;
    perq_llama_config cfg;
    perq_err err;
    assert_int_equal(parse(mistral_7b, &cfg, &err), 0);
    assert_string_equal(cfg.architecture, "MistralForCausalLM");
    assert_int_equal(cfg.head_dim, 128); /* 4096 / 32, no head_dim given */
    assert_int_equal(cfg.num_key_value_heads, 8);
    assert_false(cfg.tie_word_embeddings);
    assert_int_equal(cfg.rope_scaling.type, PERQ_ROPE_DEFAULT);

    /* Absent kv heads: as many as query heads. Absent ids and dtype: -1 and F32. */
    assert_int_equal(parse_with(mistral_7b, "num_key_value_heads", NULL, &cfg, &err), 0);
    assert_int_equal(cfg.num_key_value_heads, 32);
    assert_int_equal(parse_with(mistral_7b, "eos_token_id", NULL, &cfg, &err), 0);
    assert_int_equal(cfg.eos_token_id, -1);
    assert_int_equal(parse_with(mistral_7b, "torch_dtype", NULL, &cfg, &err), 0);
    assert_int_equal(cfg.torch_dtype, PERQ_DT_F32);
    assert_int_equal(parse_with(mistral_7b, "torch_dtype", "\"float16\"", &cfg, &err), 0);
    assert_int_equal(cfg.torch_dtype, PERQ_DT_F16);
    assert_int_equal(parse_with(mistral_7b, "tie_word_embeddings", NULL, &cfg, &err), 0);
    assert_false(cfg.tie_word_embeddings);
    assert_int_equal(parse_with(mistral_7b, "rms_norm_eps", NULL, &cfg, &err), 0);
    assert_float_equal(cfg.rms_norm_eps, 1e-6f, 1e-12f);
}

static void test_unsupported_architecture_is_named(void **state)
{
    (void)state;
    expect_failure(llama32_1b, "architectures", "[\"Qwen2ForCausalLM\"]", PERQ_E_UNSUPPORTED,
                   "architecture \"Qwen2ForCausalLM\" is not supported");
    expect_failure(llama32_1b, "architectures", NULL, PERQ_E_FORMAT, "missing architectures");
    expect_failure(llama32_1b, "architectures", "[3]", PERQ_E_FORMAT, "architectures[0] is not a string");
}

static void test_missing_and_bad_fields(void **state)
{
    (void)state;
    const char *required[] = {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                              "vocab_size", "max_position_embeddings"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        char want[64];
        snprintf(want, sizeof want, "config.json: missing %s", required[i]);
        expect_failure(llama32_1b, required[i], NULL, PERQ_E_FORMAT, want);
        expect_failure(llama32_1b, required[i], "0", PERQ_E_FORMAT, "must be a positive integer, not 0");
    }
    expect_failure(llama32_1b, "hidden_size", "\"2048\"", PERQ_E_FORMAT, "hidden_size is not an integer");
    expect_failure(llama32_1b, "num_key_value_heads", "5", PERQ_E_FORMAT,
                   "num_key_value_heads 5 does not divide num_attention_heads 32");
    expect_failure(mistral_7b, "num_attention_heads", "24", PERQ_E_FORMAT,
                   "num_attention_heads 24 does not divide hidden_size 4096");
    expect_failure(llama32_1b, "rms_norm_eps", "-1", PERQ_E_FORMAT, "rms_norm_eps must be a positive number");
    expect_failure(llama32_1b, "rms_norm_eps", "1e-50", PERQ_E_FORMAT, "rms_norm_eps must be a positive number");
    expect_failure(llama32_1b, "rope_theta", "1e300", PERQ_E_FORMAT, "rope_theta must be a positive number");
    expect_failure(llama32_1b, "torch_dtype", "\"float64\"", PERQ_E_UNSUPPORTED, "torch_dtype \"float64\"");
    expect_failure(llama32_1b, "eos_token_id", "\"</s>\"", PERQ_E_FORMAT, "eos_token_id is not a token id");
    expect_failure(llama32_1b, "tie_word_embeddings", "1", PERQ_E_FORMAT, "tie_word_embeddings is not a boolean");
    expect_failure(llama32_1b, "attention_bias", "true", PERQ_E_UNSUPPORTED, "attention_bias true");
    expect_failure(llama32_1b, "hidden_act", "\"gelu\"", PERQ_E_UNSUPPORTED, "hidden_act gelu");
    expect_failure(llama32_1b, "num_hidden_layers", "100000", PERQ_E_UNSUPPORTED, "num_hidden_layers 100000");

    perq_llama_config cfg;
    perq_err err;
    assert_int_equal(parse("[1]", &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "config.json is not a JSON object"));
    assert_int_equal(parse("{\"hidden_size\": 1, \"hidden_size\": 2}", &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "config.json is not valid JSON"));
    assert_int_equal(perq_llama_config_load("/nonexistent/config.json", &cfg, &err), -1);
    assert_int_equal(err.code, PERQ_E_IO);
}

static void test_rope_scaling_errors(void **state)
{
    (void)state;
    expect_failure(llama32_1b, "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", PERQ_E_UNSUPPORTED,
                   "rope_scaling type \"yarn\" is not supported");
    expect_failure(llama32_1b, "rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}", PERQ_E_UNSUPPORTED,
                   "rope_scaling type \"dynamic\"");
    expect_failure(llama32_1b, "rope_scaling", "{\"rope_type\": \"llama3\"}", PERQ_E_FORMAT,
                   "rope_scaling llama3 needs a factor");
    expect_failure(llama32_1b, "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", PERQ_E_FORMAT,
                   "missing original_max_position_embeddings");
    expect_failure(llama32_1b, "rope_scaling", "{\"factor\": 8.0}", PERQ_E_FORMAT, "rope_scaling has no rope_type");
    expect_failure(llama32_1b, "rope_scaling", "\"llama3\"", PERQ_E_FORMAT, "rope_scaling is not an object");
}

static const perq_expected_tensor *find(const perq_expected_tensor *ts, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ts[i].name, name) == 0)
            return &ts[i];
    }
    return NULL;
}

static void assert_shape(const perq_expected_tensor *ts, size_t n, const char *name, int ndim, long long rows,
                         long long cols)
{
    const perq_expected_tensor *t = find(ts, n, name);
    if (!t)
        print_error("no expected tensor %s\n", name);
    assert_non_null(t);
    assert_int_equal(t->ndim, ndim);
    assert_int_equal(t->shape[0], rows);
    if (ndim == 2)
        assert_int_equal(t->shape[1], cols);
}

static void test_expected_tensors_tied(void **state)
{
    (void)state;
    perq_llama_config cfg;
    perq_err err;
    assert_int_equal(parse(llama32_1b, &cfg, &err), 0);
    perq_expected_tensor *ts;
    size_t n;
    assert_int_equal(perq_llama_expected_tensors(&cfg, &ts, &n, &err), 0);
    assert_int_equal(n, 2 + 9 * 16);
    assert_null(find(ts, n, "lm_head.weight"));
    assert_shape(ts, n, "model.embed_tokens.weight", 2, 128256, 2048);
    assert_shape(ts, n, "model.norm.weight", 1, 2048, 0);
    assert_shape(ts, n, "model.layers.15.self_attn.q_proj.weight", 2, 2048, 2048);
    assert_shape(ts, n, "model.layers.15.self_attn.k_proj.weight", 2, 512, 2048);
    assert_shape(ts, n, "model.layers.0.self_attn.v_proj.weight", 2, 512, 2048);
    assert_shape(ts, n, "model.layers.7.self_attn.o_proj.weight", 2, 2048, 2048);
    assert_shape(ts, n, "model.layers.3.mlp.gate_proj.weight", 2, 8192, 2048);
    assert_shape(ts, n, "model.layers.3.mlp.up_proj.weight", 2, 8192, 2048);
    assert_shape(ts, n, "model.layers.3.mlp.down_proj.weight", 2, 2048, 8192);
    assert_shape(ts, n, "model.layers.9.input_layernorm.weight", 1, 2048, 0);
    assert_shape(ts, n, "model.layers.9.post_attention_layernorm.weight", 1, 2048, 0);
    assert_null(find(ts, n, "model.layers.16.input_layernorm.weight"));
    /* Names are unique. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(ts[i].name, ts[j].name);
    free(ts);
}

static void test_expected_tensors_untied_and_head_dim(void **state)
{
    (void)state;
    perq_llama_config cfg;
    perq_err err;
    perq_expected_tensor *ts;
    size_t n;
    assert_int_equal(parse(mistral_7b, &cfg, &err), 0);
    assert_int_equal(perq_llama_expected_tensors(&cfg, &ts, &n, &err), 0);
    assert_int_equal(n, 2 + 9 * 32 + 1);
    assert_string_equal(ts[n - 1].name, "lm_head.weight");
    assert_shape(ts, n, "lm_head.weight", 2, 32000, 4096);
    assert_shape(ts, n, "model.layers.31.self_attn.k_proj.weight", 2, 1024, 4096);
    free(ts);

    /* A head_dim that is not hidden/heads changes the attention shapes only. */
    assert_int_equal(parse_with(mistral_7b, "head_dim", "64", &cfg, &err), 0);
    assert_int_equal(perq_llama_expected_tensors(&cfg, &ts, &n, &err), 0);
    assert_shape(ts, n, "model.layers.0.self_attn.q_proj.weight", 2, 32 * 64, 4096);
    assert_shape(ts, n, "model.layers.0.self_attn.o_proj.weight", 2, 4096, 32 * 64);
    assert_shape(ts, n, "model.layers.0.self_attn.v_proj.weight", 2, 8 * 64, 4096);
    assert_shape(ts, n, "model.layers.0.mlp.down_proj.weight", 2, 4096, 14336);
    free(ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_llama32_with_llama3_rope_and_eos_list),
        cmocka_unit_test(test_mistral_defaults),
        cmocka_unit_test(test_unsupported_architecture_is_named),
        cmocka_unit_test(test_missing_and_bad_fields),
        cmocka_unit_test(test_rope_scaling_errors),
        cmocka_unit_test(test_expected_tensors_tied),
        cmocka_unit_test(test_expected_tensors_untied_and_head_dim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
