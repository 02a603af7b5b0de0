/* quantization_config of config.json from untrusted bytes: never a crash;
 * what is accepted is a configuration the loader can dequantize, and every
 * rejection says why. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    perq_quant_config q;
    perq_err err;
    memset(&err, 0, sizeof err);
    if (perq_quant_config_parse((const char *)data, size, &q, &err) == 0) {
        if (q.present && q.weight_bits != 4)
            abort();
        if (q.group_size < 0 || q.act_bits < 0 || q.act_bits > 16)
            abort();
        if (!memchr(q.act_strategy, '\0', sizeof q.act_strategy))
            abort();
    } else if ((err.code != PERQ_E_FORMAT && err.code != PERQ_E_UNSUPPORTED) || err.msg[0] == '\0') {
        abort();
    }
    return 0;
}
