/* Shared between the model loader's files (model_load.c, model_packed.c). */
#ifndef PERQ_MODEL_INTERNAL_H
#define PERQ_MODEL_INTERNAL_H

#include <stdint.h>

#include <jansson.h>

#include "perq/model.h"
#include "perq/w4a4.h"

/* quantization_config of config.json (the whole file's text); absent is fine. */
int perq_quant_config_parse(const char *json_text, size_t len, perq_quant_config *out, perq_err *err);

/* The W4A4 scheme of a quantization_config object (may be NULL or null):
 * input activations and transform_config, anything not understood refused
 * (worker/w4a4_scheme.c). perq_quant_config_parse runs it too, so a model
 * that declares what perq cannot apply does not open. */
int perq_w4a4_scheme_from_qc(const json_t *qc, perq_w4a4_scheme *out, perq_err *err);

/* The linear layer `prefix` ("model.layers.3.mlp.up_proj", "lm_head") is
 * stored pack-quantized in the checkpoint (prefix.weight_packed exists). */
bool perq_linear_is_packed(const perq_checkpoint *c, const char *prefix);
/* Checks prefix.weight_packed, .weight_scale and .weight_shape against
 * [out][in] and the group size of q. */
int perq_packed_check(const perq_checkpoint *c, const perq_quant_config *q, const char *prefix, int out,
                      int in, perq_err *err);
/* Dequantizes into w [out][in] (checked first). */
int perq_packed_load(const perq_checkpoint *c, const perq_quant_config *q, const char *prefix, int out,
                     int in, float *w, perq_err *err);

#endif
