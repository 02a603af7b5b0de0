/* config.json of the Llama family (LlamaForCausalLM, MistralForCausalLM). */
#ifndef PERQ_LLAMA_CONFIG_H
#define PERQ_LLAMA_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "perq/dtype.h"
#include "perq/error.h"

typedef enum { PERQ_ROPE_DEFAULT, PERQ_ROPE_LLAMA3, PERQ_ROPE_LINEAR } perq_rope_type;

typedef struct perq_llama_config {
    char architecture[64];      /* "LlamaForCausalLM" or "MistralForCausalLM" */
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;    /* = num_attention_heads when absent */
    int head_dim;               /* = hidden_size / num_attention_heads when absent */
    int vocab_size;
    int max_position_embeddings;
    float rms_norm_eps;
    float rope_theta;
    struct {
        perq_rope_type type;
        float factor, low_freq_factor, high_freq_factor;
        int original_max_position_embeddings;
    } rope_scaling;
    bool tie_word_embeddings;
    int bos_token_id;           /* -1 when absent */
    int eos_token_id;           /* first one when a list; -1 when absent */
    perq_dtype torch_dtype;     /* F32 when absent */
} perq_llama_config;

int perq_llama_config_parse(const char *json_text, size_t len, perq_llama_config *out, perq_err *err);
int perq_llama_config_load(const char *path, perq_llama_config *out, perq_err *err);

/* The tensors a checkpoint of this config must hold, with their shapes. */
typedef struct perq_expected_tensor {
    char name[96];
    int ndim;
    long long shape[2];
} perq_expected_tensor;

/* Fills a newly allocated array (caller frees) and its length. */
int perq_llama_expected_tensors(const perq_llama_config *cfg, perq_expected_tensor **out,
                                size_t *n, perq_err *err);

#endif
