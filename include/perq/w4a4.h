/* W4A4 artifacts read back: the activation quantization and the online
 * rotation a perq compressed-tensors artifact declares in config.json, and
 * the evaluation hook that applies them (the one the job's own W4A4
 * evaluation uses, so `perq eval` on the artifact gives the job's figure).
 *
 * What is understood, inside quantization_config:
 *   config_groups.<one group>.input_activations
 *       null (weights only), or exactly {num_bits 4, type int, strategy
 *       token, dynamic true, symmetric false}: INT4 per token, min-max,
 *       asymmetric (perq/actquant.h) at the input of every linear but lm_head.
 *   transform_config.config_groups.<one group>
 *       {type "hadamard", randomize false, head_dim b (null: the full
 *       intermediate width), apply [{targets ["re:.*mlp.down_proj$"],
 *       location "input", inverse false}], construction "<how>", seed S}:
 *       x <- x diag(R3, ..., R3) at every down_proj input, R3 the b x b
 *       rotation perq/hadamard.h builds (construction, when present, must
 *       name the same matrix; seed is needed only for a random orthogonal
 *       factor).
 * Anything else (another transform type or location, other targets, several
 * transforms, another activation scheme) is PERQ_E_UNSUPPORTED with the
 * reason: never evaluated silently with fp32 activations. */
#ifndef PERQ_W4A4_H
#define PERQ_W4A4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perq/error.h"
#include "perq/forward.h"
#include "perq/llama_config.h"

#define PERQ_W4A4_R3_TARGET "re:.*mlp.down_proj$"

typedef struct perq_w4a4_scheme {
    int act_bits;               /* 4, or 0 when activations stay in full precision */
    bool has_r3;                /* a transform_config with the R3 group */
    int r3_block;               /* its width; 0: the full intermediate width */
    bool r3_has_seed;
    uint64_t r3_seed;
    char r3_construction[224];  /* "" when the config does not name it */
} perq_w4a4_scheme;

/* From the text of a whole config.json. No quantization_config: a scheme
 * that does nothing. */
int perq_w4a4_scheme_parse(const char *config_json, size_t len, perq_w4a4_scheme *out, perq_err *err);
/* DIR/config.json. */
int perq_w4a4_scheme_read(const char *dir, perq_w4a4_scheme *out, perq_err *err);
/* Anything to do at inference beyond dequantized weights. */
bool perq_w4a4_scheme_active(const perq_w4a4_scheme *s);

/* The scheme made runnable for a model of shape cfg: R3 built (its width must
 * divide intermediate_size), the hook ready. */
typedef struct perq_w4a4_runtime perq_w4a4_runtime;

int perq_w4a4_runtime_new(const perq_w4a4_scheme *s, const perq_llama_config *cfg, perq_w4a4_runtime **out,
                          perq_err *err);
void perq_w4a4_runtime_free(perq_w4a4_runtime *rt);
/* The hook for every forward pass (borrowed from rt), or NULL when the scheme
 * does nothing or rt is NULL. */
const perq_linear_hook *perq_w4a4_runtime_hook(const perq_w4a4_runtime *rt);
/* "INT4 per-token activations, R3 sylvester(4) in blocks of 4 at down_proj". */
void perq_w4a4_runtime_describe(const perq_w4a4_runtime *rt, char *buf, size_t size);

#endif
