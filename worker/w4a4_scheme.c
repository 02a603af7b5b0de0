/* What a W4A4 artifact's quantization_config asks of inference: input
 * activations and transform_config (see perq/w4a4.h). Everything not
 * understood is refused with its reason. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "perq/fsutil.h"
#include "perq/w4a4.h"

#define MAX_CONFIG_BYTES ((size_t)16 << 20)
#define MAX_R3_BLOCK (1 << 20)

static const char *str_field(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* key absent, null or false. */
static bool absent_or_false(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return !v || json_is_null(v) || json_is_false(v);
}

/* ---- input_activations ---------------------------------------------------------- */

static int parse_activations(const json_t *acts, perq_w4a4_scheme *s, perq_err *err)
{
    if (!acts || json_is_null(acts))
        return 0;
    if (!json_is_object(acts))
        return perq_fail(err, PERQ_E_FORMAT, "input_activations is not an object");
    const json_t *bits = json_object_get(acts, "num_bits");
    const char *type = str_field(acts, "type"), *strategy = str_field(acts, "strategy");
    if (!json_is_integer(bits))
        return perq_fail(err, PERQ_E_FORMAT, "input_activations without num_bits");
    if (json_integer_value(bits) != 4)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "input_activations: %lld-bit (only INT4 per token)",
                         (long long)json_integer_value(bits));
    if (type && strcmp(type, "int") != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "input_activations: type \"%s\" (only int)", type);
    if (!strategy || strcmp(strategy, "token") != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "input_activations: strategy \"%s\" (only token)",
                         strategy ? strategy : "(none)");
    if (!json_is_true(json_object_get(acts, "dynamic")))
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "input_activations: static scales (only dynamic, computed per token at inference)");
    /* compressed-tensors' default is symmetric, so asymmetric must be said. */
    if (!json_is_false(json_object_get(acts, "symmetric")))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "input_activations: symmetric (only asymmetric, min-max)");
    s->act_bits = 4;
    return 0;
}

/* ---- transform_config ----------------------------------------------------------- */

static int parse_apply(const json_t *apply, perq_err *err)
{
    if (!json_is_array(apply) || json_array_size(apply) != 1 || !json_is_object(json_array_get(apply, 0)))
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "transform_config: apply must be one entry (R3 at the input of every down_proj)");
    const json_t *a = json_array_get(apply, 0);
    const json_t *targets = json_object_get(a, "targets");
    const char *target = json_string_value(json_array_get(targets, 0));
    if (!json_is_array(targets) || json_array_size(targets) != 1 || !target ||
        strcmp(target, PERQ_W4A4_R3_TARGET) != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "transform_config: targets other than [\"%s\"]",
                         PERQ_W4A4_R3_TARGET);
    const char *location = str_field(a, "location");
    if (!location || strcmp(location, "input") != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "transform_config: location \"%s\" (only input: a rotation applied online)",
                         location ? location : "(none)");
    if (!absent_or_false(a, "inverse"))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "transform_config: an inverse transform at the input");
    return 0;
}

static int parse_r3(const json_t *g, perq_w4a4_scheme *s, perq_err *err)
{
    if (!json_is_object(g))
        return perq_fail(err, PERQ_E_FORMAT, "transform_config: a transform group is not an object");
    const char *type = str_field(g, "type");
    if (!type || strcmp(type, "hadamard") != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "transform_config: transform type \"%s\" (only hadamard)",
                         type ? type : "(none)");
    if (!absent_or_false(g, "randomize"))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "transform_config: a randomized hadamard transform");
    const json_t *block = json_object_get(g, "head_dim");
    if (block && !json_is_null(block)) {
        if (!json_is_integer(block) || json_integer_value(block) < 1 || json_integer_value(block) > MAX_R3_BLOCK)
            return perq_fail(err, PERQ_E_FORMAT, "transform_config: head_dim must be an integer in 1..%d",
                             MAX_R3_BLOCK);
        s->r3_block = (int)json_integer_value(block);
    }
    const json_t *seed = json_object_get(g, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed) || json_integer_value(seed) < 0)
            return perq_fail(err, PERQ_E_FORMAT, "transform_config: seed must be a non-negative integer");
        s->r3_has_seed = true;
        s->r3_seed = (uint64_t)json_integer_value(seed);
    }
    const json_t *how = json_object_get(g, "construction");
    if (how && !json_is_null(how)) {
        if (!json_is_string(how) || json_string_length(how) >= sizeof s->r3_construction)
            return perq_fail(err, PERQ_E_FORMAT, "transform_config: construction must be a string of under %zu bytes",
                             sizeof s->r3_construction);
        snprintf(s->r3_construction, sizeof s->r3_construction, "%s", json_string_value(how));
    }
    if (parse_apply(json_object_get(g, "apply"), err) != 0)
        return -1;
    s->has_r3 = true;
    return 0;
}

static int parse_transforms(const json_t *tc, perq_w4a4_scheme *s, perq_err *err)
{
    if (!tc || json_is_null(tc))
        return 0;
    const json_t *groups = json_object_get(tc, "config_groups");
    if (!json_is_object(tc) || !json_is_object(groups))
        return perq_fail(err, PERQ_E_FORMAT, "transform_config: no config_groups object");
    size_t n = json_object_size(groups);
    if (n == 0)
        return 0;
    if (n > 1)
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "transform_config: %zu transform groups (only one, R3 at the down_proj input)", n);
    return parse_r3(json_object_iter_value(json_object_iter((json_t *)groups)), s, err);
}

/* ---- entry points ------------------------------------------------------------------ */

int perq_w4a4_scheme_from_qc(const json_t *qc, perq_w4a4_scheme *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    if (!qc || json_is_null(qc))
        return 0;
    const json_t *groups = json_object_get(qc, "config_groups");
    if (!json_is_object(groups) || json_object_size(groups) != 1)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: exactly one config group is supported");
    const json_t *group = json_object_iter_value(json_object_iter((json_t *)groups));
    int rc = parse_activations(json_object_get(group, "input_activations"), out, err);
    if (rc == 0)
        rc = parse_transforms(json_object_get(qc, "transform_config"), out, err);
    if (rc != 0) {
        memset(out, 0, sizeof *out);
        return perq_err_context(err, "quantization_config");
    }
    return 0;
}

int perq_w4a4_scheme_parse(const char *config_json, size_t len, perq_w4a4_scheme *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(config_json, len, 0, &jerr);
    if (!root)
        return perq_fail(err, PERQ_E_FORMAT, "config.json: %s (line %d)", jerr.text, jerr.line);
    const json_t *qc = json_object_get(root, "quantization_config");
    int rc = 0;
    if (qc && !json_is_null(qc) && !json_is_object(qc))
        rc = perq_fail(err, PERQ_E_FORMAT, "config.json: quantization_config is not an object");
    else
        rc = perq_w4a4_scheme_from_qc(qc, out, err);
    json_decref(root);
    return rc;
}

int perq_w4a4_scheme_read(const char *dir, perq_w4a4_scheme *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    char *path, *text;
    size_t len;
    if (asprintf(&path, "%s/config.json", dir) < 0)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int rc = perq_read_file(path, MAX_CONFIG_BYTES, &text, &len, err);
    if (rc == 0) {
        rc = perq_w4a4_scheme_parse(text, len, out, err);
        free(text);
    }
    if (rc != 0)
        perq_err_context(err, "%s", path);
    free(path);
    return rc;
}

bool perq_w4a4_scheme_active(const perq_w4a4_scheme *s)
{
    return s->act_bits > 0 || s->has_r3;
}
