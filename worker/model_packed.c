/* compressed-tensors pack-quantized linear layers: the quantization_config of
 * config.json, and weight_packed / weight_scale / weight_shape dequantized to
 * fp32 (w = q * scale of the group, groups per perq/int4.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "perq/int4.h"

static const char *str_field(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static int parse_weights(json_t *weights, perq_quant_config *q, perq_err *err)
{
    if (!json_is_object(weights))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: a config group without weights");
    json_t *bits = json_object_get(weights, "num_bits");
    const char *type = str_field(weights, "type");
    json_t *symmetric = json_object_get(weights, "symmetric");
    const char *strategy = str_field(weights, "strategy");
    if (!json_is_integer(bits) || json_integer_value(bits) != 4)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: only 4-bit weights are supported");
    if (type && strcmp(type, "int") != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: weight type \"%s\" (only int)", type);
    if (symmetric && !json_is_true(symmetric))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: asymmetric weights");
    q->weight_bits = 4;
    if (!strategy || !strcmp(strategy, "channel")) {
        q->group_size = 0;
    } else if (!strcmp(strategy, "group")) {
        json_t *group = json_object_get(weights, "group_size");
        if (!json_is_integer(group) || json_integer_value(group) < 1 || json_integer_value(group) > 1 << 20)
            return perq_fail(err, PERQ_E_FORMAT, "quantization_config: strategy group needs a group_size");
        q->group_size = (int)json_integer_value(group);
    } else {
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: weight strategy \"%s\"", strategy);
    }
    return 0;
}

static int parse_activations(json_t *acts, perq_quant_config *q, perq_err *err)
{
    if (!acts || json_is_null(acts))
        return 0;
    json_t *bits = json_object_get(acts, "num_bits");
    if (!json_is_object(acts) || !json_is_integer(bits) || json_integer_value(bits) < 1 ||
        json_integer_value(bits) > 16)
        return perq_fail(err, PERQ_E_FORMAT, "quantization_config: input_activations without num_bits");
    q->act_bits = (int)json_integer_value(bits);
    q->act_dynamic = json_is_true(json_object_get(acts, "dynamic"));
    const char *strategy = str_field(acts, "strategy");
    snprintf(q->act_strategy, sizeof q->act_strategy, "%s", strategy ? strategy : "");
    return 0;
}

static int parse_quantization(json_t *qc, perq_quant_config *q, perq_err *err)
{
    const char *method = str_field(qc, "quant_method");
    const char *format = str_field(qc, "format");
    if (!method || strcmp(method, "compressed-tensors") != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: quant_method \"%s\" (only compressed-tensors)",
                         method ? method : "(none)");
    if (format && strcmp(format, "pack-quantized") != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: format \"%s\" (only pack-quantized)", format);
    json_t *groups = json_object_get(qc, "config_groups");
    if (!json_is_object(groups) || json_object_size(groups) != 1)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: exactly one config group is supported");
    json_t *group = json_object_iter_value(json_object_iter(groups));
    const char *group_format = str_field(group, "format");
    if (group_format && strcmp(group_format, "pack-quantized") != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "quantization_config: format \"%s\" (only pack-quantized)",
                         group_format);
    q->present = true;
    if (parse_weights(json_object_get(group, "weights"), q, err) != 0 ||
        parse_activations(json_object_get(group, "input_activations"), q, err) != 0)
        return -1;
    perq_w4a4_scheme scheme;
    return perq_w4a4_scheme_from_qc(qc, &scheme, err);
}

int perq_quant_config_parse(const char *json_text, size_t len, perq_quant_config *out, perq_err *err)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(json_text, len, 0, &jerr);
    if (!root)
        return perq_fail(err, PERQ_E_FORMAT, "config.json: %s (line %d)", jerr.text, jerr.line);
    json_t *qc = json_object_get(root, "quantization_config");
    int rc = 0;
    if (qc && !json_is_null(qc))
        rc = json_is_object(qc) ? parse_quantization(qc, out, err)
                                : perq_fail(err, PERQ_E_FORMAT, "config.json: quantization_config is not an object");
    json_decref(root);
    return rc;
}

static const perq_tensor *find_part(const perq_checkpoint *c, const char *prefix, const char *part)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s", prefix, part);
    return perq_ckpt_find(c, name);
}

bool perq_linear_is_packed(const perq_checkpoint *c, const char *prefix)
{
    return find_part(c, prefix, "weight_packed") != NULL;
}

static int group_count(const perq_quant_config *q, int in)
{
    return q->group_size > 0 ? (in + q->group_size - 1) / q->group_size : 1;
}

static int check_shape_tensor(const perq_tensor *t, const char *prefix, int out, int in, perq_err *err)
{
    int64_t dims[2];
    if (t->ndim != 1 || t->shape[0] != 2 || (t->dtype != PERQ_DT_I32 && t->dtype != PERQ_DT_I64))
        return perq_fail(err, PERQ_E_FORMAT, "%s.weight_shape: expected 2 integers (I32 or I64)", prefix);
    for (int i = 0; i < 2; i++) {
        if (t->dtype == PERQ_DT_I32) {
            int32_t v;
            memcpy(&v, (const char *)t->data + 4 * i, 4);
            dims[i] = v;
        } else {
            memcpy(&dims[i], (const char *)t->data + 8 * i, 8);
        }
    }
    if (dims[0] != out || dims[1] != in)
        return perq_fail(err, PERQ_E_FORMAT, "%s.weight_shape is [%lld, %lld], expected [%d, %d]", prefix,
                         (long long)dims[0], (long long)dims[1], out, in);
    return 0;
}

int perq_packed_check(const perq_checkpoint *c, const perq_quant_config *q, const char *prefix, int out, int in,
                      perq_err *err)
{
    if (!q->present)
        return perq_fail(err, PERQ_E_FORMAT, "%s is pack-quantized but config.json has no quantization_config",
                         prefix);
    const perq_tensor *packed = find_part(c, prefix, "weight_packed");
    const perq_tensor *scale = find_part(c, prefix, "weight_scale");
    const perq_tensor *shape = find_part(c, prefix, "weight_shape");
    if (!packed || !scale)
        return perq_fail(err, PERQ_E_FORMAT, "%s: weight_packed needs weight_scale", prefix);
    if (find_part(c, prefix, "weight_zero_point"))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "%s: zero points (asymmetric weights)", prefix);
    int64_t words = (int64_t)perq_int4_packed_cols(in);
    if (packed->dtype != PERQ_DT_I32 || packed->ndim != 2 || packed->shape[0] != out || packed->shape[1] != words)
        return perq_fail(err, PERQ_E_FORMAT, "%s.weight_packed: expected I32 [%d, %lld]", prefix, out,
                         (long long)words);
    int groups = group_count(q, in);
    if (!perq_dtype_is_float(scale->dtype) || scale->ndim != 2 || scale->shape[0] != out ||
        scale->shape[1] != groups)
        return perq_fail(err, PERQ_E_FORMAT, "%s.weight_scale: expected a float [%d, %d] (group size %d)", prefix,
                         out, groups, q->group_size);
    return shape ? check_shape_tensor(shape, prefix, out, in, err) : 0;
}

int perq_packed_load(const perq_checkpoint *c, const perq_quant_config *q, const char *prefix, int out, int in,
                     float *w, perq_err *err)
{
    if (perq_packed_check(c, q, prefix, out, in, err) != 0)
        return -1;
    const perq_tensor *packed = find_part(c, prefix, "weight_packed");
    const perq_tensor *scale = find_part(c, prefix, "weight_scale");
    int groups = group_count(q, in);
    int group = q->group_size > 0 ? q->group_size : in;
    size_t words = perq_int4_packed_cols(in);
    size_t scale_size = perq_dtype_size(scale->dtype);
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        int8_t *qrow = malloc((size_t)in);
        float *srow = malloc((size_t)groups * sizeof *srow);
        failed = !qrow || !srow;
#pragma omp for schedule(static)
        for (int r = 0; r < out; r++) {
            if (failed)
                continue;
            perq_int4_unpack((const int32_t *)packed->data + (size_t)r * words, 1, in, qrow);
            perq_to_f32(scale->dtype, (const char *)scale->data + (size_t)r * groups * scale_size, srow,
                        (size_t)groups);
            float *wr = w + (size_t)r * in;
            for (int i = 0; i < in; i++)
                wr[i] = (float)qrow[i] * srow[i / group];
        }
        free(qrow);
        free(srow);
    }
    return failed ? perq_fail(err, PERQ_E_NOMEM, "out of memory dequantizing %s", prefix) : 0;
}
