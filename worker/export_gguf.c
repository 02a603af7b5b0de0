/* GGUF v3 export (export_gguf.h): tensors gathered and transcoded, then one
 * file written front to back: header, key-values, tensor infos, data. */
#include "export_gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_gguf_internal.h"
#include "perq/dtype.h"
#include "perq/fsutil.h"

/* ---- key-values ------------------------------------------------------------ */

void gguf_kv_free(gguf_kv *kv)
{
    free(kv->data);
    memset(kv, 0, sizeof *kv);
}

void gguf_put(gguf_kv *kv, const void *bytes, size_t n)
{
    if (kv->failed)
        return;
    if (kv->len + n > kv->cap) {
        size_t cap = kv->cap ? kv->cap : 4096;
        while (cap < kv->len + n)
            cap *= 2;
        uint8_t *d = realloc(kv->data, cap);
        if (!d) {
            kv->failed = true;
            return;
        }
        kv->data = d;
        kv->cap = cap;
    }
    memcpy(kv->data + kv->len, bytes, n);
    kv->len += n;
}

/* GGUF is little-endian, as is every machine perq builds for (x86-64,
 * aarch64): values are stored as they are in memory. */
void gguf_put_u32(gguf_kv *kv, uint32_t v) { gguf_put(kv, &v, sizeof v); }
void gguf_put_u64(gguf_kv *kv, uint64_t v) { gguf_put(kv, &v, sizeof v); }

void gguf_put_str(gguf_kv *kv, const char *s, size_t len)
{
    gguf_put_u64(kv, len);
    gguf_put(kv, s, len);
}

static void kv_key(gguf_kv *kv, const char *key, perq_gguf_value_type type)
{
    gguf_put_str(kv, key, strlen(key));
    gguf_put_u32(kv, (uint32_t)type);
    kv->count++;
}

void gguf_kv_u32(gguf_kv *kv, const char *key, uint32_t v)
{
    kv_key(kv, key, PERQ_GGUF_UINT32);
    gguf_put_u32(kv, v);
}

void gguf_kv_f32(gguf_kv *kv, const char *key, float v)
{
    kv_key(kv, key, PERQ_GGUF_FLOAT32);
    gguf_put(kv, &v, sizeof v);
}

void gguf_kv_bool(gguf_kv *kv, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    kv_key(kv, key, PERQ_GGUF_BOOL);
    gguf_put(kv, &b, 1);
}

void gguf_kv_str(gguf_kv *kv, const char *key, const char *v)
{
    kv_key(kv, key, PERQ_GGUF_STRING);
    gguf_put_str(kv, v, strlen(v));
}

void gguf_kv_array(gguf_kv *kv, const char *key, perq_gguf_value_type type, uint64_t n)
{
    kv_key(kv, key, PERQ_GGUF_ARRAY);
    gguf_put_u32(kv, (uint32_t)type);
    gguf_put_u64(kv, n);
}

/* ---- the tensors ------------------------------------------------------------ */

typedef struct gguf_tensor {
    char name[96];
    int order;                /* position in the file: embedding, layers, final norm, head */
    perq_ggml_type type;
    int ndim;
    uint64_t ne[2];           /* ne[0]: the contiguous dimension (columns) */
    const perq_tensor *src;   /* borrowed, converted while written; or */
    perq_row_source rows;     /* rows made while written (rows_ctx borrowed); or */
    void *rows_ctx;
    uint8_t *data;            /* owned bytes already in type */
    size_t nbytes;
    uint64_t offset;          /* from the start of the data section */
} gguf_tensor;

typedef struct not_q4_0 {
    char tensor[96];
    perq_ggml_type type;
    char reason[96];
} not_q4_0;

struct perq_gguf_export {
    perq_llama_config cfg;
    perq_gguf_options opt;
    char *name;
    gguf_tensor *tensors;
    size_t n, cap;
    not_q4_0 *fallbacks;
    size_t n_fallbacks;
    /* fp16 rounding of the Q4_0 scales */
    unsigned long long scales, scales_changed;
    double max_rel_change, sq_change, sq_weight;
    uint64_t file_bytes;
};

static size_t type_bytes(perq_ggml_type type, uint64_t n)
{
    switch (type) {
    case PERQ_GGML_F32: return (size_t)n * 4;
    case PERQ_GGML_F16: return (size_t)n * 2;
    case PERQ_GGML_Q4_0: return (size_t)(n / PERQ_GGUF_Q4_0_BLOCK) * PERQ_GGUF_Q4_0_BYTES;
    case PERQ_GGML_Q8_0: return (size_t)(n / 32) * PERQ_GGUF_Q8_0_BYTES;
    }
    return 0;
}

static const char *type_name(perq_ggml_type type)
{
    switch (type) {
    case PERQ_GGML_F32: return "F32";
    case PERQ_GGML_F16: return "F16";
    case PERQ_GGML_Q4_0: return "Q4_0";
    case PERQ_GGML_Q8_0: return "Q8_0";
    }
    return "?";
}

/* Hugging Face name -> GGUF name and the tensor's place in the file. */
typedef enum { KIND_EMBED, KIND_HEAD, KIND_NORM, KIND_LINEAR, KIND_ROPE_QK, KIND_SKIP } tensor_kind;

static const struct {
    const char *hf, *gguf;
    tensor_kind kind;
} layer_tensors[] = {
    {"input_layernorm.weight", "attn_norm.weight", KIND_NORM},
    {"self_attn.q_proj.weight", "attn_q.weight", KIND_ROPE_QK},
    {"self_attn.k_proj.weight", "attn_k.weight", KIND_ROPE_QK},
    {"self_attn.v_proj.weight", "attn_v.weight", KIND_LINEAR},
    {"self_attn.o_proj.weight", "attn_output.weight", KIND_LINEAR},
    {"post_attention_layernorm.weight", "ffn_norm.weight", KIND_NORM},
    {"mlp.gate_proj.weight", "ffn_gate.weight", KIND_LINEAR},
    {"mlp.up_proj.weight", "ffn_up.weight", KIND_LINEAR},
    {"mlp.down_proj.weight", "ffn_down.weight", KIND_LINEAR},
};
#define N_LAYER_TENSORS ((int)(sizeof layer_tensors / sizeof layer_tensors[0]))

static int map_name(const perq_gguf_export *x, const char *hf, char *out, size_t size, tensor_kind *kind,
                    int *order, perq_err *err)
{
    int n_layers = x->cfg.num_hidden_layers;
    if (!strcmp(hf, "model.embed_tokens.weight")) {
        snprintf(out, size, "token_embd.weight");
        *kind = KIND_EMBED;
        *order = 1;
        return 0;
    }
    if (!strcmp(hf, "model.norm.weight")) {
        snprintf(out, size, "output_norm.weight");
        *kind = KIND_NORM;
        *order = 2 + n_layers * N_LAYER_TENSORS;
        return 0;
    }
    if (!strcmp(hf, "lm_head.weight")) {
        snprintf(out, size, "output.weight");
        *kind = x->cfg.tie_word_embeddings ? KIND_SKIP : KIND_HEAD;
        *order = 3 + n_layers * N_LAYER_TENSORS;
        return 0;
    }
    int layer, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &layer, &used) == 1 && used > 0 && layer >= 0 && layer < n_layers) {
        const char *part = hf + used;
        if (strstr(part, "rotary_emb.inv_freq")) {
            *kind = KIND_SKIP;
            return 0;
        }
        for (int k = 0; k < N_LAYER_TENSORS; k++)
            if (!strcmp(part, layer_tensors[k].hf)) {
                snprintf(out, size, "blk.%d.%s", layer, layer_tensors[k].gguf);
                *kind = layer_tensors[k].kind;
                *order = 2 + layer * N_LAYER_TENSORS + k;
                return 0;
            }
    }
    if (strstr(hf, "rotary_emb.inv_freq")) {
        *kind = KIND_SKIP;
        return 0;
    }
    return perq_fail(err, PERQ_E_UNSUPPORTED, "%s: no GGUF name for this tensor", hf);
}

static int push_tensor(perq_gguf_export *x, const gguf_tensor *t, perq_err *err)
{
    for (size_t i = 0; i < x->n; i++)
        if (!strcmp(x->tensors[i].name, t->name))
            return perq_fail(err, PERQ_E_INVALID, "%s: added twice", t->name);
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 64;
        gguf_tensor *v = realloc(x->tensors, cap * sizeof *v);
        if (!v)
            return perq_fail(err, PERQ_E_NOMEM, "out of memory");
        x->tensors = v;
        x->cap = cap;
    }
    x->tensors[x->n++] = *t;
    return 0;
}

static int note_fallback(perq_gguf_export *x, const char *tensor, perq_ggml_type type, const char *reason,
                         perq_err *err)
{
    not_q4_0 *v = realloc(x->fallbacks, (x->n_fallbacks + 1) * sizeof *v);
    if (!v)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    x->fallbacks = v;
    not_q4_0 *f = &v[x->n_fallbacks++];
    snprintf(f->tensor, sizeof f->tensor, "%s", tensor);
    snprintf(f->reason, sizeof f->reason, "%s", reason);
    f->type = type;
    return 0;
}

/* ---- transcoding --------------------------------------------------------------- */

int perq_gguf_rope_source_row(int row, int head_dim)
{
    int head = row / head_dim, within = row % head_dim;
    return head * head_dim + (within % 2) * (head_dim / 2) + within / 2;
}

void perq_gguf_q4_0_row(const int8_t *q, const float *scales, int cols, int group, uint8_t *blocks)
{
    for (int b = 0; b < cols / PERQ_GGUF_Q4_0_BLOCK; b++) {
        const int8_t *v = q + b * PERQ_GGUF_Q4_0_BLOCK;
        uint8_t *out = blocks + (size_t)b * PERQ_GGUF_Q4_0_BYTES;
        uint16_t d = perq_f32_to_f16(scales[b * PERQ_GGUF_Q4_0_BLOCK / group]);
        memcpy(out, &d, 2);
        for (int j = 0; j < 16; j++)
            out[2 + j] = (uint8_t)((v[j] + 8) | ((v[j + 16] + 8) << 4));
    }
}

void perq_gguf_q8_0_row(const float *x, int cols, uint8_t *blocks)
{
    for (int b = 0; b < cols / 32; b++) {
        const float *v = x + b * 32;
        uint8_t *out = blocks + (size_t)b * PERQ_GGUF_Q8_0_BYTES;
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        uint16_t h = perq_f32_to_f16(d);
        memcpy(out, &h, 2);
        for (int j = 0; j < 32; j++)
            out[2 + j] = (uint8_t)(int8_t)roundf(v[j] * id);
    }
}

/* Rows of floats in a GGUF float type (F32, F16, Q8_0). */
static void encode_rows(perq_ggml_type type, const float *x, size_t rows, int cols, uint8_t *out)
{
    size_t row_bytes = type_bytes(type, (uint64_t)cols);
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * (size_t)cols;
        uint8_t *dst = out + r * row_bytes;
        if (type == PERQ_GGML_Q8_0)
            perq_gguf_q8_0_row(row, cols, dst);
        else
            perq_from_f32(type == PERQ_GGML_F16 ? PERQ_DT_F16 : PERQ_DT_F32, row, dst, (size_t)cols);
    }
}

static perq_ggml_type float_type(const perq_gguf_export *x, tensor_kind kind, int64_t cols)
{
    if (kind != KIND_EMBED && kind != KIND_HEAD)
        return PERQ_GGML_F32;
    if (x->opt.embed == PERQ_GGUF_EMBED_F32)
        return PERQ_GGML_F32;
    if (x->opt.embed == PERQ_GGUF_EMBED_Q8_0 && cols % 32 == 0)
        return PERQ_GGML_Q8_0;
    return PERQ_GGML_F16;
}

/* The fp16 rounding of the scales of one Q4_0 linear, into the summary. */
static int measure_scales(perq_gguf_export *x, const char *name, const perq_int4_matrix *m, perq_err *err)
{
    for (int r = 0; r < m->rows; r++)
        for (int g = 0; g < m->n_groups; g++) {
            float s = m->scales[(size_t)r * m->n_groups + g];
            float d = perq_f16_to_f32(perq_f32_to_f16(s));
            if (!isfinite(d))
                return perq_fail(err, PERQ_E_UNSUPPORTED, "%s: scale %g does not fit in fp16 (Q4_0's d)", name, s);
            const int8_t *q = m->q + (size_t)r * m->cols + (size_t)g * m->group;
            int len = g == m->n_groups - 1 ? m->cols - g * m->group : m->group;
            double sumq2 = 0;
            for (int c = 0; c < len; c++)
                sumq2 += (double)q[c] * q[c];
            double diff = (double)d - (double)s;
            x->scales++;
            x->scales_changed += d != s;
            if (s != 0 && fabs(diff / s) > x->max_rel_change)
                x->max_rel_change = fabs(diff / s);
            x->sq_change += sumq2 * diff * diff;
            x->sq_weight += sumq2 * (double)s * s;
        }
    return 0;
}

static int transcode_q4_0(perq_gguf_export *x, gguf_tensor *t, const perq_int4_matrix *m, bool rope, perq_err *err)
{
    if (measure_scales(x, t->name, m, err) != 0)
        return -1;
    size_t row_bytes = type_bytes(PERQ_GGML_Q4_0, (uint64_t)m->cols);
    t->type = PERQ_GGML_Q4_0;
    t->nbytes = row_bytes * (size_t)m->rows;
    t->data = malloc(t->nbytes);
    if (!t->data)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory transcoding %s", t->name);
    for (int r = 0; r < m->rows; r++) {
        int src = rope ? perq_gguf_rope_source_row(r, x->cfg.head_dim) : r;
        perq_gguf_q4_0_row(m->q + (size_t)src * m->cols, m->scales + (size_t)src * m->n_groups, m->cols, m->group,
                           t->data + (size_t)r * row_bytes);
    }
    return 0;
}

/* q * scale, in F16: for widths no Q4_0 block fits. */
static int transcode_f16(gguf_tensor *t, const perq_int4_matrix *m, bool rope, int head_dim, perq_err *err)
{
    float *row = malloc((size_t)m->cols * sizeof *row);
    t->type = PERQ_GGML_F16;
    t->nbytes = type_bytes(PERQ_GGML_F16, (uint64_t)m->rows * (uint64_t)m->cols);
    t->data = malloc(t->nbytes);
    if (!row || !t->data) {
        free(row);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory transcoding %s", t->name);
    }
    for (int r = 0; r < m->rows; r++) {
        int src = rope ? perq_gguf_rope_source_row(r, head_dim) : r;
        const int8_t *q = m->q + (size_t)src * m->cols;
        const float *s = m->scales + (size_t)src * m->n_groups;
        for (int c = 0; c < m->cols; c++)
            row[c] = (float)q[c] * s[c / m->group];
        perq_from_f32(PERQ_DT_F16, row, t->data + (size_t)r * m->cols * 2, (size_t)m->cols);
    }
    free(row);
    return 0;
}

/* ---- adding ---------------------------------------------------------------------- */

int perq_gguf_new(const perq_llama_config *cfg, const perq_gguf_options *opt, perq_gguf_export **out,
                  perq_err *err)
{
    *out = NULL;
    if (cfg->head_dim <= 0 || cfg->head_dim % 2 != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "GGUF export: head_dim %d is not even", cfg->head_dim);
    perq_gguf_export *x = calloc(1, sizeof *x);
    if (!x)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    x->cfg = *cfg;
    if (opt)
        x->opt = *opt;
    x->opt.name = NULL;
    if (opt && opt->name && !(x->name = strdup(opt->name))) {
        free(x);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    *out = x;
    return 0;
}

void perq_gguf_free(perq_gguf_export *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->n; i++)
        free(x->tensors[i].data);
    free(x->tensors);
    free(x->fallbacks);
    free(x->name);
    free(x);
}

/* The GGUF name, kind and shape of a float tensor being added; KIND_SKIP when
 * the file has no place for it. */
static int float_tensor(const perq_gguf_export *x, const char *hf, int ndim, const int64_t *shape, gguf_tensor *t,
                        tensor_kind *kind, perq_err *err)
{
    memset(t, 0, sizeof *t);
    if (map_name(x, hf, t->name, sizeof t->name, kind, &t->order, err) != 0)
        return -1;
    if (*kind == KIND_SKIP)
        return 0;
    if (*kind == KIND_LINEAR || *kind == KIND_ROPE_QK)
        return perq_fail(err, PERQ_E_INVALID, "%s: a linear layer goes in quantized (perq_gguf_add_linear)", hf);
    int want = *kind == KIND_NORM ? 1 : 2;
    if (ndim != want)
        return perq_fail(err, PERQ_E_FORMAT, "%s: %d dimensions, %d expected", hf, ndim, want);
    for (int d = 0; d < ndim; d++)
        if (shape[d] <= 0 || shape[d] > (int64_t)1 << 31)
            return perq_fail(err, PERQ_E_FORMAT, "%s: dimension %lld", hf, (long long)shape[d]);
    t->ndim = ndim;
    t->ne[0] = (uint64_t)shape[ndim - 1];
    t->ne[1] = ndim == 2 ? (uint64_t)shape[0] : 1;
    t->type = float_type(x, *kind, (int64_t)t->ne[0]);
    t->nbytes = type_bytes(t->type, t->ne[0] * t->ne[1]);
    return 0;
}

int perq_gguf_add_tensor(perq_gguf_export *x, const perq_tensor *src, perq_err *err)
{
    gguf_tensor t;
    tensor_kind kind;
    if (float_tensor(x, src->name, src->ndim, src->shape, &t, &kind, err) != 0)
        return -1;
    if (kind == KIND_SKIP)
        return 0;
    if (!perq_dtype_is_float(src->dtype))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "%s: dtype %s", src->name, perq_dtype_name(src->dtype));
    t.src = src;
    return push_tensor(x, &t, err);
}

int perq_gguf_add_f32(perq_gguf_export *x, const char *hf_name, int ndim, const int64_t *shape, const float *w,
                      perq_err *err)
{
    gguf_tensor t;
    tensor_kind kind;
    if (float_tensor(x, hf_name, ndim, shape, &t, &kind, err) != 0)
        return -1;
    if (kind == KIND_SKIP)
        return 0;
    if (!(t.data = malloc(t.nbytes)))
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    encode_rows(t.type, w, t.ne[1], (int)t.ne[0], t.data);
    if (push_tensor(x, &t, err) != 0) {
        free(t.data);
        return -1;
    }
    return 0;
}

int perq_gguf_add_rows(perq_gguf_export *x, const char *hf_name, int64_t rows, int64_t cols, perq_row_source src,
                       void *ctx, perq_err *err)
{
    gguf_tensor t;
    tensor_kind kind;
    const int64_t shape[2] = {rows, cols};
    if (float_tensor(x, hf_name, 2, shape, &t, &kind, err) != 0)
        return -1;
    if (kind == KIND_SKIP)
        return 0;
    t.rows = src;
    t.rows_ctx = ctx;
    return push_tensor(x, &t, err);
}

int perq_gguf_add_linear(perq_gguf_export *x, const char *prefix, const perq_int4_matrix *m, perq_err *err)
{
    char hf[256];
    gguf_tensor t = {0};
    tensor_kind kind;
    snprintf(hf, sizeof hf, "%s.weight", prefix);
    if (map_name(x, hf, t.name, sizeof t.name, &kind, &t.order, err) != 0)
        return -1;
    if (kind != KIND_LINEAR && kind != KIND_ROPE_QK)
        return perq_fail(err, PERQ_E_INVALID, "%s: not a linear layer of a decoder block", prefix);
    bool rope = kind == KIND_ROPE_QK;
    if (rope && m->rows % x->cfg.head_dim != 0)
        return perq_fail(err, PERQ_E_FORMAT, "%s: %d rows are not whole heads of %d", prefix, m->rows,
                         x->cfg.head_dim);
    t.ndim = 2;
    t.ne[0] = (uint64_t)m->cols;
    t.ne[1] = (uint64_t)m->rows;
    int rc;
    if (m->cols % PERQ_GGUF_Q4_0_BLOCK == 0 && m->group % PERQ_GGUF_Q4_0_BLOCK == 0) {
        rc = transcode_q4_0(x, &t, m, rope, err);
    } else {
        char reason[96];
        if (m->cols % PERQ_GGUF_Q4_0_BLOCK != 0)
            snprintf(reason, sizeof reason, "%d columns: not a multiple of the 32 of a Q4_0 block", m->cols);
        else
            snprintf(reason, sizeof reason, "group size %d: not a multiple of the 32 of a Q4_0 block", m->group);
        rc = note_fallback(x, t.name, PERQ_GGML_F16, reason, err);
        if (rc == 0)
            rc = transcode_f16(&t, m, rope, x->cfg.head_dim, err);
    }
    if (rc == 0)
        rc = push_tensor(x, &t, err);
    if (rc != 0)
        free(t.data);
    return rc;
}

/* ---- metadata ---------------------------------------------------------------------- */

/* llama3 RoPE as llama.cpp applies it: per frequency, a factor that divides
 * it (1 for high frequencies, `factor` for low ones, smooth in between). */
static int add_rope_freqs(perq_gguf_export *x, perq_err *err)
{
    const perq_llama_config *c = &x->cfg;
    int half = c->head_dim / 2;
    gguf_tensor t = {.order = 0, .type = PERQ_GGML_F32, .ndim = 1, .ne = {(uint64_t)half, 1}};
    snprintf(t.name, sizeof t.name, "rope_freqs.weight");
    t.nbytes = (size_t)half * 4;
    float *f = malloc(t.nbytes);
    if (!f)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    double old_ctx = c->rope_scaling.original_max_position_embeddings;
    double low_wavelen = old_ctx / c->rope_scaling.low_freq_factor;
    double high_wavelen = old_ctx / c->rope_scaling.high_freq_factor;
    for (int i = 0; i < half; i++) {
        double freq = 1.0 / pow(c->rope_theta, (2.0 * i) / c->head_dim);
        double wavelen = 2 * M_PI / freq;
        if (wavelen < high_wavelen) {
            f[i] = 1.0f;
        } else if (wavelen > low_wavelen) {
            f[i] = c->rope_scaling.factor;
        } else {
            double smooth = (old_ctx / wavelen - c->rope_scaling.low_freq_factor) /
                            (c->rope_scaling.high_freq_factor - c->rope_scaling.low_freq_factor);
            f[i] = (float)(1.0 / ((1 - smooth) / c->rope_scaling.factor + smooth));
        }
    }
    t.data = (uint8_t *)f;
    if (push_tensor(x, &t, err) != 0) {
        free(f);
        return -1;
    }
    return 0;
}

static void model_kv(const perq_gguf_export *x, gguf_kv *kv)
{
    const perq_llama_config *c = &x->cfg;
    gguf_kv_str(kv, "general.architecture", "llama");
    gguf_kv_str(kv, "general.type", "model");
    gguf_kv_str(kv, "general.name", x->name);
    gguf_kv_u32(kv, "general.alignment", PERQ_GGUF_ALIGNMENT);
    gguf_kv_u32(kv, "general.file_type", 2); /* LLAMA_FTYPE_MOSTLY_Q4_0 */
    gguf_kv_u32(kv, "general.quantization_version", 2);
    gguf_kv_u32(kv, "llama.vocab_size", (uint32_t)c->vocab_size);
    gguf_kv_u32(kv, "llama.context_length", (uint32_t)c->max_position_embeddings);
    gguf_kv_u32(kv, "llama.embedding_length", (uint32_t)c->hidden_size);
    gguf_kv_u32(kv, "llama.block_count", (uint32_t)c->num_hidden_layers);
    gguf_kv_u32(kv, "llama.feed_forward_length", (uint32_t)c->intermediate_size);
    gguf_kv_u32(kv, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    gguf_kv_u32(kv, "llama.attention.head_count", (uint32_t)c->num_attention_heads);
    gguf_kv_u32(kv, "llama.attention.head_count_kv", (uint32_t)c->num_key_value_heads);
    gguf_kv_u32(kv, "llama.attention.key_length", (uint32_t)c->head_dim);
    gguf_kv_u32(kv, "llama.attention.value_length", (uint32_t)c->head_dim);
    gguf_kv_f32(kv, "llama.attention.layer_norm_rms_epsilon", c->rms_norm_eps);
    gguf_kv_f32(kv, "llama.rope.freq_base", c->rope_theta);
    if (c->rope_scaling.type == PERQ_ROPE_LINEAR) {
        gguf_kv_str(kv, "llama.rope.scaling.type", "linear");
        gguf_kv_f32(kv, "llama.rope.scaling.factor", c->rope_scaling.factor);
    }
}

/* Every tensor config.json implies must be there, with its shape. */
static int check_complete(const perq_gguf_export *x, perq_err *err)
{
    perq_expected_tensor *want;
    size_t n;
    if (perq_llama_expected_tensors(&x->cfg, &want, &n, err) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char name[96];
        tensor_kind kind;
        int order;
        if (map_name(x, want[i].name, name, sizeof name, &kind, &order, err) != 0) {
            rc = -1;
            break;
        }
        if (kind == KIND_SKIP)
            continue;
        const gguf_tensor *t = NULL;
        for (size_t k = 0; k < x->n && !t; k++)
            if (!strcmp(x->tensors[k].name, name))
                t = &x->tensors[k];
        uint64_t cols = (uint64_t)want[i].shape[want[i].ndim - 1];
        uint64_t rows = want[i].ndim == 2 ? (uint64_t)want[i].shape[0] : 1;
        if (!t)
            rc = perq_fail(err, PERQ_E_INVALID, "%s (%s) was never added", name, want[i].name);
        else if (t->ne[0] != cols || t->ne[1] != rows)
            rc = perq_fail(err, PERQ_E_FORMAT, "%s: [%llu, %llu] where config.json implies [%llu, %llu]", name,
                           (unsigned long long)t->ne[1], (unsigned long long)t->ne[0], (unsigned long long)rows,
                           (unsigned long long)cols);
    }
    free(want);
    return rc;
}

static int by_order(const void *a, const void *b)
{
    const gguf_tensor *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

static uint64_t align_up(uint64_t v)
{
    return (v + PERQ_GGUF_ALIGNMENT - 1) / PERQ_GGUF_ALIGNMENT * PERQ_GGUF_ALIGNMENT;
}

/* Header, key-values and tensor infos, up to the data section (padded). */
static int build_head(perq_gguf_export *x, const char *model_dir, gguf_kv *head, perq_err *err)
{
    gguf_kv kv = {0};
    model_kv(x, &kv);
    if (gguf_vocab_kv(&kv, model_dir, x->cfg.vocab_size, x->cfg.bos_token_id, x->cfg.eos_token_id, err) != 0) {
        gguf_kv_free(&kv);
        return -1;
    }
    gguf_put(head, "GGUF", 4);
    gguf_put_u32(head, PERQ_GGUF_VERSION);
    gguf_put_u64(head, x->n);
    gguf_put_u64(head, kv.count);
    gguf_put(head, kv.data, kv.len);
    bool failed = kv.failed;
    gguf_kv_free(&kv);
    uint64_t offset = 0;
    for (size_t i = 0; i < x->n; i++) {
        gguf_tensor *t = &x->tensors[i];
        t->offset = offset;
        offset = align_up(offset + t->nbytes);
        gguf_put_str(head, t->name, strlen(t->name));
        gguf_put_u32(head, (uint32_t)t->ndim);
        for (int d = 0; d < t->ndim; d++)
            gguf_put_u64(head, t->ne[d]);
        gguf_put_u32(head, (uint32_t)t->type);
        gguf_put_u64(head, t->offset);
    }
    static const uint8_t zeros[PERQ_GGUF_ALIGNMENT];
    gguf_put(head, zeros, align_up(head->len) - head->len);
    if (failed || head->failed)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    x->file_bytes = head->len + offset;
    return 0;
}

/* ---- writing -------------------------------------------------------------------------- */

/* Output through a staging buffer, so that small pieces make large writes. */
typedef struct gguf_out {
    perq_atomic_file f;
    uint8_t *buf;
    size_t len, cap;
    uint64_t written;
} gguf_out;

static int out_flush(gguf_out *o, perq_err *err)
{
    if (o->len && perq_atomic_write(&o->f, o->buf, o->len, err) != 0)
        return -1;
    o->written += o->len;
    o->len = 0;
    return 0;
}

static int out_put(gguf_out *o, const void *bytes, size_t n, perq_err *err)
{
    const uint8_t *p = bytes;
    while (n) {
        if (o->len == o->cap && out_flush(o, err) != 0)
            return -1;
        size_t k = o->cap - o->len < n ? o->cap - o->len : n;
        memcpy(o->buf + o->len, p, k);
        o->len += k;
        p += k;
        n -= k;
    }
    return 0;
}

/* A borrowed checkpoint tensor, row by row in its GGUF type. */
static int write_converted(gguf_out *o, const gguf_tensor *t, perq_err *err)
{
    int cols = (int)t->ne[0];
    size_t row_bytes = type_bytes(t->type, t->ne[0]), src_row = (size_t)cols * perq_dtype_size(t->src->dtype);
    float *f = malloc((size_t)cols * sizeof *f);
    uint8_t *enc = malloc(row_bytes);
    int rc = f && enc ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory");
    for (uint64_t r = 0; rc == 0 && r < t->ne[1]; r++) {
        perq_to_f32(t->src->dtype, (const uint8_t *)t->src->data + r * src_row, f, (size_t)cols);
        encode_rows(t->type, f, 1, cols, enc);
        rc = out_put(o, enc, row_bytes, err);
    }
    free(f);
    free(enc);
    return rc;
}

/* A tensor made by rows, block by block in its GGUF type. */
static int write_rows(gguf_out *o, const gguf_tensor *t, perq_err *err)
{
    int cols = (int)t->ne[0];
    int64_t rows = (int64_t)t->ne[1], block = perq_export_block_rows(cols);
    size_t row_bytes = type_bytes(t->type, t->ne[0]);
    float *f = malloc((size_t)block * (size_t)cols * sizeof *f);
    uint8_t *enc = malloc((size_t)block * row_bytes);
    int rc = f && enc ? 0 : perq_fail(err, PERQ_E_NOMEM, "out of memory for %s", t->name);
    for (int64_t r0 = 0; rc == 0 && r0 < rows; r0 += block) {
        int64_t n = rows - r0 < block ? rows - r0 : block;
        if (t->rows(t->rows_ctx, r0, n, f, err) != 0) {
            rc = perq_err_context(err, "%s rows %lld..%lld", t->name, (long long)r0, (long long)(r0 + n - 1));
            break;
        }
        encode_rows(t->type, f, (size_t)n, cols, enc);
        rc = out_put(o, enc, (size_t)n * row_bytes, err);
    }
    free(f);
    free(enc);
    return rc;
}

static int write_file(perq_gguf_export *x, const gguf_kv *head, const char *path, const perq_reporter *rep,
                      perq_err *err)
{
    gguf_out o = {.cap = (size_t)4 << 20};
    if (!(o.buf = malloc(o.cap)))
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (perq_atomic_open(&o.f, path, err) != 0) {
        free(o.buf);
        return -1;
    }
    static const uint8_t zeros[PERQ_GGUF_ALIGNMENT];
    int rc = out_put(&o, head->data, head->len, err);
    perq_report_progress(rep, 0, (long long)x->n);
    for (size_t i = 0; rc == 0 && i < x->n; i++) {
        const gguf_tensor *t = &x->tensors[i];
        rc = t->src    ? write_converted(&o, t, err)
             : t->rows ? write_rows(&o, t, err)
                       : out_put(&o, t->data, t->nbytes, err);
        if (rc == 0)
            rc = out_put(&o, zeros, align_up(t->nbytes) - t->nbytes, err);
        if (rc == 0 && perq_report_cancelled(rep))
            rc = perq_fail(err, PERQ_E_CANCELLED, "cancelled");
        perq_report_progress(rep, (long long)i + 1, (long long)x->n);
    }
    if (rc == 0)
        rc = out_flush(&o, err);
    if (rc == 0 && o.written != x->file_bytes)
        rc = perq_fail(err, PERQ_E_INTERNAL, "wrote %llu bytes, planned %llu", (unsigned long long)o.written,
                       (unsigned long long)x->file_bytes);
    if (rc == 0)
        rc = perq_atomic_commit(&o.f, err);
    else
        perq_atomic_abort(&o.f);
    free(o.buf);
    return rc;
}

static int write_with_progress(perq_gguf_export *x, const char *model_dir, const char *path,
                               const perq_reporter *rep, perq_err *err)
{
    if (check_complete(x, err) != 0)
        return perq_err_context(err, "GGUF export");
    if (x->cfg.rope_scaling.type == PERQ_ROPE_LLAMA3) {
        bool have = false;
        for (size_t i = 0; i < x->n; i++)
            have = have || !strcmp(x->tensors[i].name, "rope_freqs.weight");
        if (!have && add_rope_freqs(x, err) != 0)
            return -1;
    }
    if (!x->name) {
        const char *slash = strrchr(model_dir, '/');
        const char *base = slash && slash[1] ? slash + 1 : model_dir;
        if (!(x->name = strdup(*base ? base : "model")))
            return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    qsort(x->tensors, x->n, sizeof *x->tensors, by_order);
    gguf_kv head = {0};
    int rc = build_head(x, model_dir, &head, err);
    if (rc == 0)
        rc = write_file(x, &head, path, rep, err);
    gguf_kv_free(&head);
    return rc == 0 ? 0 : perq_err_context(err, "writing %s", path);
}

int perq_gguf_write(perq_gguf_export *x, const char *model_dir, const char *path, perq_err *err)
{
    return write_with_progress(x, model_dir, path, NULL, err);
}

int perq_gguf_write_artifact(perq_gguf_export *x, const char *model_dir, const char *out_dir,
                             perq_artifact_list *files, const perq_reporter *rep, perq_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, PERQ_GGUF_FILE);
    if (write_with_progress(x, model_dir, path, rep, err) != 0)
        return -1;
    return perq_artifacts_add(files, PERQ_GGUF_FILE, PERQ_GGUF_FORMAT, err);
}

/* ---- summary ------------------------------------------------------------------------------ */

json_t *perq_gguf_summary(const perq_gguf_export *x)
{
    json_t *types = json_object(), *fallbacks = json_array();
    for (size_t i = 0; i < x->n; i++) {
        const char *name = type_name(x->tensors[i].type);
        json_object_set_new(types, name, json_integer(json_integer_value(json_object_get(types, name)) + 1));
    }
    for (size_t i = 0; i < x->n_fallbacks; i++)
        json_array_append_new(fallbacks, json_pack("{ss ss ss}", "tensor", x->fallbacks[i].tensor, "type",
                                                   type_name(x->fallbacks[i].type), "reason",
                                                   x->fallbacks[i].reason));
    return json_pack("{ss sI sI so so s{sI sI sf sf}}", "file", PERQ_GGUF_FILE, "bytes", (json_int_t)x->file_bytes,
                     "tensors", (json_int_t)x->n, "types", types, "not_q4_0", fallbacks, "scale_fp16", "scales",
                     (json_int_t)x->scales, "changed", (json_int_t)x->scales_changed, "max_rel_change",
                     x->max_rel_change, "rel_weight_change",
                     x->sq_weight > 0 ? sqrt(x->sq_change / x->sq_weight) : 0.0);
}
