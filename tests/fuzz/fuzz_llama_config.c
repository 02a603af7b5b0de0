/* config.json from untrusted bytes: parsing never crashes, rejections are
 * format or unsupported errors, and an accepted config is consistent and
 * yields a tensor list of the size its layers imply. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perq/llama_config.h"

static void check_accepted(const perq_llama_config *c)
{
    if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_hidden_layers <= 0 || c->vocab_size <= 0 ||
        c->head_dim <= 0 || c->num_key_value_heads <= 0 || c->num_attention_heads % c->num_key_value_heads != 0)
        abort();
    if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0) || !perq_dtype_is_float(c->torch_dtype))
        abort();
    perq_expected_tensor *ts;
    size_t n;
    perq_err err;
    if (perq_llama_expected_tensors(c, &ts, &n, &err) != 0)
        return;
    if (n != 2 + 9 * (size_t)c->num_hidden_layers + (c->tie_word_embeddings ? 0 : 1))
        abort();
    for (size_t i = 0; i < n; i++)
        if (ts[i].shape[0] <= 0 || (ts[i].ndim == 2 && ts[i].shape[1] <= 0) || !memchr(ts[i].name, 0, sizeof ts[i].name))
            abort();
    free(ts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    perq_llama_config cfg;
    perq_err err;
    if (perq_llama_config_parse((const char *)data, size, &cfg, &err) == 0)
        check_accepted(&cfg);
    else if ((err.code != PERQ_E_FORMAT && err.code != PERQ_E_UNSUPPORTED) || err.msg[0] == '\0')
        abort();
    return 0;
}
