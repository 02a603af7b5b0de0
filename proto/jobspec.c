/* The job spec: strict parsing, defaults, and the normalised form.
 *
 * Defaults (also in proto/openapi.yaml):
 *   method "perq";
 *   weights {bits 4, group_size null (per output channel),
 *            algorithm "gptq" for perq, "rtn" for rtn};
 *   activations {bits 4 for perq, 16 for rtn};
 *   rotation {mode "full", block_size null, permutation "massdiff",
 *             randomized false, online true, fold_norms true} for perq
 *            (randomized and online only describe a rotation: not with none;
 *            fold_norms defaults to false with mode none, must be true else);
 *            {mode "none", block_size null, permutation "identity"} for rtn;
 *   calibration: required for perq, forbidden for rtn;
 *                {samples 128, seq_len 2048, seed 42};
 *   outputs ["compressed-tensors"]; "gguf" only for weight-only jobs
 *           (activations.bits 16: GGUF has no way to say that activations
 *           are quantized online, nor to describe an online rotation);
 *   eval: absent; when given {ctx 256, chunks null (the whole text)}.
 * `null` for calibration or eval means absent. Every error names the field
 * path ("weights.group_size: ..."). */
#include "perq/jobspec.h"

#include <stdio.h>
#include <string.h>

static const char *const method_names[] = {"perq", "rtn"};
static const char *const walgo_names[] = {"gptq", "rtn"};
static const char *const rotation_names[] = {"full", "block", "none"};
static const char *const permutation_names[] = {"massdiff", "identity", "zigzag", "random"};
static const char *const output_names[] = {"compressed-tensors", "gguf"};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define MAX_BLOCK_SIZE 65536

const char *perq_method_name(perq_method m)
{
    return (int)m >= 0 && (int)m < COUNT(method_names) ? method_names[m] : "?";
}
const char *perq_walgo_name(perq_walgo a)
{
    return (int)a >= 0 && (int)a < COUNT(walgo_names) ? walgo_names[a] : "?";
}
const char *perq_rotation_mode_name(perq_rotation_mode m)
{
    return (int)m >= 0 && (int)m < COUNT(rotation_names) ? rotation_names[m] : "?";
}
const char *perq_permutation_name(perq_permutation p)
{
    return (int)p >= 0 && (int)p < COUNT(permutation_names) ? permutation_names[p] : "?";
}

/* ---- field readers: absent fields leave *out alone ---------------------- */

/* "weights" + "bits" -> "weights.bits"; "" + "method" -> "method" */
static const char *field_path(char *buf, size_t cap, const char *path, const char *key)
{
    snprintf(buf, cap, "%s%s%s", path, *path ? "." : "", key);
    return buf;
}

static int reject_unknown(const json_t *obj, const char *path, const char *const allowed[], int n,
                          perq_err *err)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value) {
        int known = 0;
        for (int i = 0; i < n && !known; i++)
            known = !strcmp(key, allowed[i]);
        if (!known) {
            char p[160];
            return perq_fail(err, PERQ_E_INVALID, "%s: unknown field", field_path(p, sizeof p, path, key));
        }
    }
    return 0;
}

/* An optional sub-object: *out is NULL when absent (or null, where allowed). */
static int read_object(const json_t *parent, const char *key, int null_is_absent, const json_t **out,
                       perq_err *err)
{
    const json_t *v = json_object_get(parent, key);
    *out = NULL;
    if (!v || (null_is_absent && json_is_null(v)))
        return 0;
    if (!json_is_object(v))
        return perq_fail(err, PERQ_E_INVALID, "%s: must be an object%s", key,
                         null_is_absent ? " or null" : "");
    *out = v;
    return 0;
}

static int read_int(const json_t *obj, const char *path, const char *key, long long lo, long long hi,
                    int *out, perq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    char p[160];
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return perq_fail(err, PERQ_E_INVALID, "%s: must be an integer from %lld to %lld",
                         field_path(p, sizeof p, path, key), lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static void describe_choices(char *buf, size_t cap, const char *const names[], int n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used < cap; i++) {
        const char *sep = i == 0 ? "" : i == n - 1 ? " or " : ", ";
        int w = snprintf(buf + used, cap - used, "%s\"%s\"", sep, names[i]);
        used += w > 0 ? (size_t)w : 0;
    }
}

/* Index of the string v among names, or -1. */
static int choice_index(const json_t *v, const char *const names[], int n)
{
    for (int i = 0; json_is_string(v) && i < n; i++)
        if (!strcmp(json_string_value(v), names[i]))
            return i;
    return -1;
}

static int fail_choice(perq_err *err, const char *where, const char *const names[], int n)
{
    char choices[160];
    describe_choices(choices, sizeof choices, names, n);
    return perq_fail(err, PERQ_E_INVALID, "%s: must be %s", where, choices);
}

static int read_choice(const json_t *obj, const char *path, const char *key, const char *const names[],
                       int n, int *out, perq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    int i = choice_index(v, names, n);
    char p[160];
    if (i < 0)
        return fail_choice(err, field_path(p, sizeof p, path, key), names, n);
    *out = i;
    return 0;
}

static int read_bool(const json_t *obj, const char *path, const char *key, bool *out, perq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    char p[160];
    if (!json_is_boolean(v))
        return perq_fail(err, PERQ_E_INVALID, "%s: must be true or false", field_path(p, sizeof p, path, key));
    *out = json_is_true(v);
    return 0;
}

/* A non-empty string without NUL bytes that fits in out[cap]. */
static int read_string(const json_t *obj, const char *path, const char *key, int required, char *out,
                       size_t cap, perq_err *err)
{
    const json_t *v = json_object_get(obj, key);
    char p[160];
    field_path(p, sizeof p, path, key);
    if (!v)
        return required ? perq_fail(err, PERQ_E_INVALID, "%s: required", p) : 0;
    size_t len = json_is_string(v) ? json_string_length(v) : 0;
    if (!json_is_string(v) || len == 0 || len >= cap || strlen(json_string_value(v)) != len)
        return perq_fail(err, PERQ_E_INVALID, "%s: must be a non-empty string of at most %zu bytes", p,
                         cap - 1);
    memcpy(out, json_string_value(v), len + 1);
    return 0;
}

/* ---- sections ------------------------------------------------------------ */

static int parse_weights(const json_t *root, perq_jobspec *s, perq_err *err)
{
    static const char *const fields[] = {"bits", "group_size", "algorithm"};
    const json_t *w;
    if (read_object(root, "weights", 0, &w, err) != 0)
        return -1;
    s->weights.bits = 4;
    s->weights.group_size = 0;
    s->weights.algorithm = s->method == PERQ_METHOD_RTN ? PERQ_WALGO_RTN : PERQ_WALGO_GPTQ;
    if (!w)
        return 0;
    if (reject_unknown(w, "weights", fields, COUNT(fields), err) != 0)
        return -1;
    const json_t *bits = json_object_get(w, "bits");
    if (bits && !(json_is_integer(bits) && json_integer_value(bits) == 4))
        return perq_fail(err, PERQ_E_INVALID, "weights.bits: must be 4");
    const json_t *g = json_object_get(w, "group_size");
    if (g && !json_is_null(g)) {
        json_int_t v = json_is_integer(g) ? json_integer_value(g) : 0;
        if (v != 32 && v != 64 && v != 128)
            return perq_fail(err, PERQ_E_INVALID, "weights.group_size: must be 32, 64, 128 or null");
        s->weights.group_size = (int)v;
    }
    int algo = (int)s->weights.algorithm;
    if (read_choice(w, "weights", "algorithm", walgo_names, COUNT(walgo_names), &algo, err) != 0)
        return -1;
    s->weights.algorithm = (perq_walgo)algo;
    if (s->method == PERQ_METHOD_RTN && s->weights.algorithm == PERQ_WALGO_GPTQ)
        return perq_fail(err, PERQ_E_INVALID,
                         "weights.algorithm: method rtn rounds to nearest (\"rtn\"); \"gptq\" needs method perq");
    return 0;
}

static int parse_activations(const json_t *root, perq_jobspec *s, perq_err *err)
{
    static const char *const fields[] = {"bits"};
    const json_t *a;
    if (read_object(root, "activations", 0, &a, err) != 0)
        return -1;
    s->activations.bits = s->method == PERQ_METHOD_RTN ? 16 : 4;
    if (!a)
        return 0;
    if (reject_unknown(a, "activations", fields, COUNT(fields), err) != 0)
        return -1;
    const json_t *bits = json_object_get(a, "bits");
    if (bits) {
        json_int_t v = json_is_integer(bits) ? json_integer_value(bits) : 0;
        if (v != 4 && v != 16)
            return perq_fail(err, PERQ_E_INVALID, "activations.bits: must be 4 or 16");
        s->activations.bits = (int)v;
    }
    if (s->method == PERQ_METHOD_RTN && s->activations.bits == 4)
        return perq_fail(err, PERQ_E_INVALID,
                         "activations.bits: method rtn is weight-only (16); 4-bit activations need method perq");
    return 0;
}

static int is_power_of_two(json_int_t v)
{
    return v >= 2 && (v & (v - 1)) == 0;
}

static int check_rotation_combination(const json_t *r, const perq_jobspec *s, perq_err *err)
{
    const json_t *bs = json_object_get(r, "block_size");
    int has_block_size = bs && !json_is_null(bs);
    if (s->method == PERQ_METHOD_RTN) {
        if (s->rotation.mode != PERQ_ROT_NONE || has_block_size)
            return perq_fail(err, PERQ_E_INVALID, "rotation: method rtn does not rotate");
        if (s->rotation.permutation != PERQ_PERM_IDENTITY)
            return perq_fail(err, PERQ_E_INVALID, "rotation.permutation: method rtn does not permute");
        if (json_object_get(r, "randomized") || json_object_get(r, "online") || json_object_get(r, "fold_norms"))
            return perq_fail(err, PERQ_E_INVALID, "rotation: method rtn does not rotate");
        return 0;
    }
    if (s->rotation.mode == PERQ_ROT_NONE && has_block_size)
        return perq_fail(err, PERQ_E_INVALID, "rotation.block_size: mode none has no blocks");
    if (s->rotation.mode == PERQ_ROT_NONE && (json_object_get(r, "randomized") || json_object_get(r, "online")))
        return perq_fail(err, PERQ_E_INVALID, "rotation: mode none has no rotation to randomize or put online");
    if (s->rotation.mode != PERQ_ROT_NONE && !s->rotation.fold_norms)
        return perq_fail(err, PERQ_E_INVALID,
                         "rotation.fold_norms: a rotation needs the norms folded (false only with mode none)");
    if (s->rotation.mode == PERQ_ROT_FULL && !s->rotation.online && has_block_size)
        return perq_fail(err, PERQ_E_INVALID,
                         "rotation.block_size: with online false, mode full has no block rotation to size");
    if (s->rotation.mode == PERQ_ROT_BLOCK && !has_block_size)
        return perq_fail(err, PERQ_E_INVALID, "rotation.block_size: mode block needs a block size");
    return 0;
}

static int parse_rotation(const json_t *root, perq_jobspec *s, perq_err *err)
{
    static const char *const fields[] = {"mode", "block_size", "permutation", "randomized", "online", "fold_norms"};
    const json_t *r;
    if (read_object(root, "rotation", 0, &r, err) != 0)
        return -1;
    int rtn = s->method == PERQ_METHOD_RTN;
    s->rotation.mode = rtn ? PERQ_ROT_NONE : PERQ_ROT_FULL;
    s->rotation.block_size = 0;
    s->rotation.permutation = rtn ? PERQ_PERM_IDENTITY : PERQ_PERM_MASSDIFF;
    s->rotation.randomized = false;
    s->rotation.online = !rtn;
    s->rotation.fold_norms = !rtn;
    if (!r)
        return 0;
    if (reject_unknown(r, "rotation", fields, COUNT(fields), err) != 0 ||
        read_bool(r, "rotation", "randomized", &s->rotation.randomized, err) != 0 ||
        read_bool(r, "rotation", "online", &s->rotation.online, err) != 0)
        return -1;
    int mode = (int)s->rotation.mode, perm = (int)s->rotation.permutation;
    if (read_choice(r, "rotation", "mode", rotation_names, COUNT(rotation_names), &mode, err) != 0 ||
        read_choice(r, "rotation", "permutation", permutation_names, COUNT(permutation_names), &perm, err) != 0)
        return -1;
    s->rotation.mode = (perq_rotation_mode)mode;
    s->rotation.permutation = (perq_permutation)perm;
    s->rotation.fold_norms = s->rotation.mode != PERQ_ROT_NONE;
    if (read_bool(r, "rotation", "fold_norms", &s->rotation.fold_norms, err) != 0)
        return -1;
    const json_t *bs = json_object_get(r, "block_size");
    if (bs && !json_is_null(bs)) {
        json_int_t v = json_is_integer(bs) ? json_integer_value(bs) : 0;
        if (!is_power_of_two(v) || v > MAX_BLOCK_SIZE)
            return perq_fail(err, PERQ_E_INVALID,
                             "rotation.block_size: must be a power of two from 2 to %d, or null", MAX_BLOCK_SIZE);
        s->rotation.block_size = (int)v;
    }
    return check_rotation_combination(r, s, err);
}

static int parse_calibration(const json_t *root, perq_jobspec *s, perq_err *err)
{
    static const char *const fields[] = {"dataset", "samples", "seq_len", "seed"};
    const json_t *c;
    if (read_object(root, "calibration", 1, &c, err) != 0)
        return -1;
    s->calibration.present = c != NULL;
    s->calibration.samples = 128;
    s->calibration.seq_len = 2048;
    s->calibration.seed = 42;
    if (s->method == PERQ_METHOD_RTN && c)
        return perq_fail(err, PERQ_E_INVALID, "calibration: method rtn does not calibrate");
    if (s->method == PERQ_METHOD_PERQ && !c)
        return perq_fail(err, PERQ_E_INVALID, "calibration: required for method perq");
    if (!c)
        return 0;
    if (reject_unknown(c, "calibration", fields, COUNT(fields), err) != 0 ||
        read_string(c, "calibration", "dataset", 1, s->calibration.dataset, sizeof s->calibration.dataset,
                    err) != 0 ||
        read_int(c, "calibration", "samples", 1, 65536, &s->calibration.samples, err) != 0 ||
        read_int(c, "calibration", "seq_len", 8, 131072, &s->calibration.seq_len, err) != 0)
        return -1;
    const json_t *seed = json_object_get(c, "seed");
    if (seed) {
        if (!json_is_integer(seed) || json_integer_value(seed) < 0)
            return perq_fail(err, PERQ_E_INVALID, "calibration.seed: must be a non-negative integer");
        s->calibration.seed = json_integer_value(seed);
    }
    return 0;
}

static int parse_outputs(const json_t *root, perq_jobspec *s, perq_err *err)
{
    const json_t *o = json_object_get(root, "outputs");
    s->outputs = PERQ_OUT_COMPRESSED_TENSORS;
    if (!o)
        return 0;
    if (!json_is_array(o) || json_array_size(o) == 0)
        return perq_fail(err, PERQ_E_INVALID, "outputs: must be a non-empty array of formats");
    s->outputs = 0;
    size_t i;
    const json_t *v;
    json_array_foreach(o, i, v) {
        char p[32];
        snprintf(p, sizeof p, "outputs[%zu]", i);
        int which = choice_index(v, output_names, COUNT(output_names));
        if (which < 0)
            return fail_choice(err, p, output_names, COUNT(output_names));
        if (s->outputs & (1u << which))
            return perq_fail(err, PERQ_E_INVALID, "%s: \"%s\" given twice", p, output_names[which]);
        s->outputs |= 1u << which;
    }
    if ((s->outputs & PERQ_OUT_GGUF) && s->activations.bits != 16)
        return perq_fail(err, PERQ_E_INVALID,
                         "outputs: gguf is for weight-only jobs (activations.bits 16): W4A4 needs online activation "
                         "quantization and the R3 rotation, which GGUF cannot describe");
    return 0;
}

static int parse_eval(const json_t *root, perq_jobspec *s, perq_err *err)
{
    static const char *const fields[] = {"dataset", "ctx", "chunks"};
    const json_t *e;
    if (read_object(root, "eval", 1, &e, err) != 0)
        return -1;
    s->eval.present = e != NULL;
    s->eval.ctx = 256;
    s->eval.chunks = 0;
    if (!e)
        return 0;
    if (reject_unknown(e, "eval", fields, COUNT(fields), err) != 0 ||
        read_string(e, "eval", "dataset", 1, s->eval.dataset, sizeof s->eval.dataset, err) != 0 ||
        read_int(e, "eval", "ctx", 8, 131072, &s->eval.ctx, err) != 0)
        return -1;
    const json_t *chunks = json_object_get(e, "chunks");
    if (chunks && !json_is_null(chunks)) {
        if (!json_is_integer(chunks) || json_integer_value(chunks) < 1 || json_integer_value(chunks) > 1000000000)
            return perq_fail(err, PERQ_E_INVALID, "eval.chunks: must be an integer from 1 to 1000000000, or null");
        s->eval.chunks = (int)json_integer_value(chunks);
    }
    return 0;
}

int perq_jobspec_parse(const json_t *doc, bool require_model, perq_jobspec *out, perq_err *err)
{
    static const char *const fields[] = {"model", "method", "weights", "activations", "rotation",
                                         "calibration", "outputs", "eval"};
    perq_jobspec s;
    memset(&s, 0, sizeof s);
    if (!json_is_object(doc))
        return perq_fail(err, PERQ_E_INVALID, "job spec: must be a JSON object");
    if (reject_unknown(doc, "", fields, COUNT(fields), err) != 0 ||
        read_string(doc, "", "model", require_model, s.model, sizeof s.model, err) != 0)
        return -1;
    int method = PERQ_METHOD_PERQ;
    if (read_choice(doc, "", "method", method_names, COUNT(method_names), &method, err) != 0)
        return -1;
    s.method = (perq_method)method;
    if (parse_weights(doc, &s, err) != 0 || parse_activations(doc, &s, err) != 0 ||
        parse_rotation(doc, &s, err) != 0 || parse_calibration(doc, &s, err) != 0 ||
        parse_outputs(doc, &s, err) != 0 || parse_eval(doc, &s, err) != 0)
        return -1;
    memcpy(out, &s, sizeof s); /* padding too, so that specs compare with memcmp */
    return 0;
}

/* ---- the normalised form ------------------------------------------------- */

static json_t *int_or_null(int v)
{
    return v ? json_integer(v) : json_null();
}

static json_t *outputs_to_json(unsigned outputs)
{
    json_t *a = json_array();
    for (int i = 0; i < COUNT(output_names); i++)
        if (outputs & (1u << i))
            json_array_append_new(a, json_string(output_names[i]));
    return a;
}

json_t *perq_jobspec_to_json(const perq_jobspec *s)
{
    json_t *o = json_object();
    if (s->model[0])
        json_object_set_new(o, "model", json_string(s->model));
    json_object_set_new(o, "method", json_string(perq_method_name(s->method)));
    json_object_set_new(o, "weights", json_pack("{si so ss}", "bits", s->weights.bits, "group_size",
                                                int_or_null(s->weights.group_size), "algorithm",
                                                perq_walgo_name(s->weights.algorithm)));
    json_object_set_new(o, "activations", json_pack("{si}", "bits", s->activations.bits));
    json_t *rot = json_pack("{ss so ss}", "mode", perq_rotation_mode_name(s->rotation.mode), "block_size",
                            int_or_null(s->rotation.block_size), "permutation",
                            perq_permutation_name(s->rotation.permutation));
    if (s->rotation.mode != PERQ_ROT_NONE) {
        json_object_set_new(rot, "randomized", json_boolean(s->rotation.randomized));
        json_object_set_new(rot, "online", json_boolean(s->rotation.online));
    }
    if (s->method == PERQ_METHOD_PERQ)
        json_object_set_new(rot, "fold_norms", json_boolean(s->rotation.fold_norms));
    json_object_set_new(o, "rotation", rot);
    json_object_set_new(o, "calibration",
                        s->calibration.present
                            ? json_pack("{ss si si sI}", "dataset", s->calibration.dataset, "samples",
                                        s->calibration.samples, "seq_len", s->calibration.seq_len, "seed",
                                        (json_int_t)s->calibration.seed)
                            : json_null());
    json_object_set_new(o, "outputs", outputs_to_json(s->outputs));
    json_object_set_new(o, "eval", s->eval.present ? json_pack("{ss si so}", "dataset", s->eval.dataset, "ctx",
                                                               s->eval.ctx, "chunks", int_or_null(s->eval.chunks))
                                                   : json_null());
    return o;
}
