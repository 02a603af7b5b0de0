/* Opening a checkpoint and materialising its weights in fp32 (see perq/model.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model_internal.h"
#include "perq/fsutil.h"

#define MAX_CONFIG_BYTES ((size_t)16 << 20)

typedef struct dims {
    int hidden, inter, q_dim, kv_dim, vocab;
} dims;

static dims dims_of(const perq_llama_config *cfg)
{
    dims d = {cfg->hidden_size, cfg->intermediate_size, cfg->num_attention_heads * cfg->head_dim,
              cfg->num_key_value_heads * cfg->head_dim, cfg->vocab_size};
    return d;
}

void perq_layer_tensor_name(char *buf, size_t size, int layer, const char *what)
{
    snprintf(buf, size, "model.layers.%d.%s", layer, what);
}

size_t perq_model_layer_bytes(const perq_llama_config *cfg)
{
    dims d = dims_of(cfg);
    size_t floats = 2 * (size_t)d.hidden + 2 * (size_t)d.q_dim * d.hidden + 2 * (size_t)d.kv_dim * d.hidden +
                    3 * (size_t)d.inter * d.hidden;
    return floats * sizeof(float);
}

size_t perq_model_head_bytes(const perq_llama_config *cfg)
{
    return (size_t)cfg->vocab_size * cfg->hidden_size * sizeof(float);
}

/* The linear layers of a decoder layer: name suffix, where its fp32 copy
 * lives, and its shape. */
typedef struct linear_desc {
    const char *what;
    size_t offset;   /* of the pointer in perq_layer_weights */
    int out, in;
} linear_desc;

static int layer_linears(const perq_llama_config *cfg, linear_desc out[7])
{
    dims d = dims_of(cfg);
    linear_desc all[7] = {
        {"self_attn.q_proj", offsetof(perq_layer_weights, q), d.q_dim, d.hidden},
        {"self_attn.k_proj", offsetof(perq_layer_weights, k), d.kv_dim, d.hidden},
        {"self_attn.v_proj", offsetof(perq_layer_weights, v), d.kv_dim, d.hidden},
        {"self_attn.o_proj", offsetof(perq_layer_weights, o), d.hidden, d.q_dim},
        {"mlp.gate_proj", offsetof(perq_layer_weights, gate), d.inter, d.hidden},
        {"mlp.up_proj", offsetof(perq_layer_weights, up), d.inter, d.hidden},
        {"mlp.down_proj", offsetof(perq_layer_weights, down), d.hidden, d.inter},
    };
    memcpy(out, all, sizeof all);
    return 7;
}

/* ---- checks ------------------------------------------------------------ */

static int check_config(const perq_llama_config *c, perq_err *err)
{
    if (c->hidden_size < 1 || c->intermediate_size < 1 || c->num_hidden_layers < 1 ||
        c->num_attention_heads < 1 || c->num_key_value_heads < 1 || c->head_dim < 2 || c->head_dim % 2 ||
        c->vocab_size < 1 || c->num_attention_heads % c->num_key_value_heads)
        return perq_fail(err, PERQ_E_FORMAT, "config.json: inconsistent sizes (hidden %d, intermediate %d, "
                         "layers %d, heads %d, kv heads %d, head_dim %d, vocab %d)",
                         c->hidden_size, c->intermediate_size, c->num_hidden_layers, c->num_attention_heads,
                         c->num_key_value_heads, c->head_dim, c->vocab_size);
    return 0;
}

static int check_float(const perq_tensor *t, const char *name, int ndim, long long d0, long long d1,
                       perq_err *err)
{
    if (!t)
        return perq_fail(err, PERQ_E_FORMAT, "tensor %s is missing", name);
    if (!perq_dtype_is_float(t->dtype))
        return perq_fail(err, PERQ_E_UNSUPPORTED, "tensor %s has dtype %s (F32, F16 or BF16 needed)", name,
                         perq_dtype_name(t->dtype));
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        if (ndim == 1)
            return perq_fail(err, PERQ_E_FORMAT, "tensor %s: expected shape [%lld]", name, d0);
        return perq_fail(err, PERQ_E_FORMAT, "tensor %s: expected shape [%lld, %lld]", name, d0, d1);
    }
    return 0;
}

static int check_linear(const perq_model *m, const char *prefix, int out, int in, perq_err *err)
{
    if (perq_linear_is_packed(&m->ckpt, prefix))
        return perq_packed_check(&m->ckpt, &m->quant, prefix, out, in, err);
    char name[256];
    snprintf(name, sizeof name, "%s.weight", prefix);
    return check_float(perq_ckpt_find(&m->ckpt, name), name, 2, out, in, err);
}

static int check_vector(const perq_model *m, const char *name, int n, perq_err *err)
{
    return check_float(perq_ckpt_find(&m->ckpt, name), name, 1, n, 0, err);
}

static int check_layer(const perq_model *m, int layer, perq_err *err)
{
    char name[256];
    linear_desc lin[7];
    int n = layer_linears(&m->cfg, lin);
    for (int i = 0; i < n; i++) {
        perq_layer_tensor_name(name, sizeof name, layer, lin[i].what);
        if (check_linear(m, name, lin[i].out, lin[i].in, err) != 0)
            return -1;
    }
    perq_layer_tensor_name(name, sizeof name, layer, "input_layernorm.weight");
    if (check_vector(m, name, m->cfg.hidden_size, err) != 0)
        return -1;
    perq_layer_tensor_name(name, sizeof name, layer, "post_attention_layernorm.weight");
    return check_vector(m, name, m->cfg.hidden_size, err);
}

static int check_tensors(perq_model *m, perq_err *err)
{
    const perq_llama_config *c = &m->cfg;
    m->embed_src = perq_ckpt_find(&m->ckpt, "model.embed_tokens.weight");
    if (check_float(m->embed_src, "model.embed_tokens.weight", 2, c->vocab_size, c->hidden_size, err) != 0)
        return -1;
    if (check_vector(m, "model.norm.weight", c->hidden_size, err) != 0)
        return -1;
    if (!c->tie_word_embeddings && check_linear(m, "lm_head", c->vocab_size, c->hidden_size, err) != 0)
        return -1;
    if (!c->tie_word_embeddings && !perq_linear_is_packed(&m->ckpt, "lm_head"))
        m->head_src = perq_ckpt_find(&m->ckpt, "lm_head.weight");
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (check_layer(m, l, err) != 0)
            return -1;
    return 0;
}

/* ---- widening -------------------------------------------------------------- */

/* Drops the mapped pages of a tensor already widened: they stay in the page
 * cache but no longer count in this process's resident set. */
static void release_pages(const perq_model *m, const perq_tensor *t)
{
    const char *p = t->data;
    for (size_t i = 0; i < m->ckpt.n_files; i++) {
        const perq_st_file *f = &m->ckpt.files[i];
        if (!f->map || p < (const char *)f->map || p >= (const char *)f->map + f->map_len)
            continue;
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t begin = ((uintptr_t)p + page - 1) / page * page;
        uintptr_t end = ((uintptr_t)p + t->nbytes) / page * page;
        if (end > begin)
            madvise((void *)begin, end - begin, MADV_DONTNEED);
        return;
    }
}

void perq_model_drop_mapped(const perq_model *m)
{
    if (!m->has_ckpt)
        return;
    for (size_t i = 0; i < m->ckpt.n_files; i++)
        if (m->ckpt.files[i].map)
            madvise(m->ckpt.files[i].map, m->ckpt.files[i].map_len, MADV_DONTNEED);
}

static void widen(const perq_model *m, const perq_tensor *t, float *dst)
{
    size_t n = perq_tensor_numel(t);
    size_t size = perq_dtype_size(t->dtype);
    /* In slices, so that widening runs on every core. */
    size_t slice = 1 << 16;
#pragma omp parallel for schedule(static) if (n > 4 * slice)
    for (size_t at = 0; at < n; at += slice)
        perq_to_f32(t->dtype, (const char *)t->data + at * size, dst + at, n - at < slice ? n - at : slice);
    release_pages(m, t);
}

static int load_linear(const perq_model *m, const char *prefix, int out, int in, float *dst, perq_err *err)
{
    if (check_linear(m, prefix, out, in, err) != 0)
        return -1;
    if (perq_linear_is_packed(&m->ckpt, prefix))
        return perq_packed_load(&m->ckpt, &m->quant, prefix, out, in, dst, err);
    char name[256];
    snprintf(name, sizeof name, "%s.weight", prefix);
    widen(m, perq_ckpt_find(&m->ckpt, name), dst);
    return 0;
}

static int load_vector(const perq_model *m, const char *name, int n, float *dst, perq_err *err)
{
    if (check_vector(m, name, n, err) != 0)
        return -1;
    widen(m, perq_ckpt_find(&m->ckpt, name), dst);
    return 0;
}

/* ---- layers ---------------------------------------------------------------- */

/* Points every field of w into one block of perq_model_layer_bytes. */
static void layout_layer(const perq_llama_config *cfg, float *block, perq_layer_weights *w)
{
    dims d = dims_of(cfg);
    w->attn_norm = block;
    w->ffn_norm = w->attn_norm + d.hidden;
    w->q = w->ffn_norm + d.hidden;
    w->k = w->q + (size_t)d.q_dim * d.hidden;
    w->v = w->k + (size_t)d.kv_dim * d.hidden;
    w->o = w->v + (size_t)d.kv_dim * d.hidden;
    w->gate = w->o + (size_t)d.hidden * d.q_dim;
    w->up = w->gate + (size_t)d.inter * d.hidden;
    w->down = w->up + (size_t)d.inter * d.hidden;
}

bool perq_model_layer_loaded(const perq_model *m, int layer)
{
    return layer >= 0 && layer < m->cfg.num_hidden_layers && m->layers[layer].attn_norm != NULL;
}

static int fill_layer(perq_model *m, int layer, perq_layer_weights *w, perq_err *err)
{
    char name[256];
    linear_desc lin[7];
    int n = layer_linears(&m->cfg, lin);
    for (int i = 0; i < n; i++) {
        perq_layer_tensor_name(name, sizeof name, layer, lin[i].what);
        float *dst = *(float **)((char *)w + lin[i].offset);
        if (load_linear(m, name, lin[i].out, lin[i].in, dst, err) != 0)
            return -1;
    }
    perq_layer_tensor_name(name, sizeof name, layer, "input_layernorm.weight");
    if (load_vector(m, name, m->cfg.hidden_size, w->attn_norm, err) != 0)
        return -1;
    perq_layer_tensor_name(name, sizeof name, layer, "post_attention_layernorm.weight");
    return load_vector(m, name, m->cfg.hidden_size, w->ffn_norm, err);
}

int perq_model_load_layer(perq_model *m, int layer, perq_err *err)
{
    if (layer < 0 || layer >= m->cfg.num_hidden_layers)
        return perq_fail(err, PERQ_E_INVALID, "layer %d does not exist (the model has %d)", layer,
                         m->cfg.num_hidden_layers);
    if (perq_model_layer_loaded(m, layer))
        return 0;
    float *block = malloc(perq_model_layer_bytes(&m->cfg));
    if (!block)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for layer %d (%zu bytes)", layer,
                         perq_model_layer_bytes(&m->cfg));
    perq_layer_weights w;
    layout_layer(&m->cfg, block, &w);
    if (fill_layer(m, layer, &w, err) != 0) {
        free(block);
        return perq_err_context(err, "loading layer %d", layer);
    }
    m->layers[layer] = w;
    return 0;
}

void perq_model_free_layer(perq_model *m, int layer)
{
    if (!m->has_ckpt || !perq_model_layer_loaded(m, layer))
        return;
    free(m->layers[layer].attn_norm);
    memset(&m->layers[layer], 0, sizeof m->layers[layer]);
}

/* ---- embedding and head ------------------------------------------------------ */

int perq_model_load_embed(perq_model *m, perq_err *err)
{
    if (m->embed)
        return 0;
    m->embed = malloc(perq_model_head_bytes(&m->cfg));
    if (!m->embed)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for the embedding (%zu bytes)",
                         perq_model_head_bytes(&m->cfg));
    widen(m, m->embed_src, m->embed);
    return 0;
}

int perq_model_load_head(perq_model *m, perq_err *err)
{
    if (m->head)
        return 0;
    float *head = malloc(perq_model_head_bytes(&m->cfg));
    if (!head)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for lm_head (%zu bytes)", perq_model_head_bytes(&m->cfg));
    if (m->cfg.tie_word_embeddings) {
        if (m->embed)
            memcpy(head, m->embed, perq_model_head_bytes(&m->cfg));
        else
            widen(m, m->embed_src, head);
    } else if (load_linear(m, "lm_head", m->cfg.vocab_size, m->cfg.hidden_size, head, err) != 0) {
        free(head);
        return -1;
    }
    m->head = head;
    return 0;
}

void perq_model_free_head(perq_model *m)
{
    if (!m->has_ckpt)
        return;
    free(m->head);
    m->head = NULL;
}

int perq_model_load_all(perq_model *m, perq_err *err)
{
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (perq_model_load_layer(m, l, err) != 0)
            return -1;
    return perq_model_load_head(m, err);
}

/* Row r of a [rows][hidden] matrix: from fp32 values when loaded, else
 * widened from the mapped tensor. */
static void matrix_row(const float *loaded, const perq_tensor *src, int64_t r, int hidden, float *out)
{
    if (loaded) {
        memcpy(out, loaded + (size_t)r * hidden, (size_t)hidden * sizeof *out);
    } else {
        size_t size = perq_dtype_size(src->dtype);
        perq_to_f32(src->dtype, (const char *)src->data + (size_t)r * hidden * size, out, (size_t)hidden);
    }
}

int perq_model_embed(const perq_model *m, const int32_t *ids, size_t n, float *out, perq_err *err)
{
    int hidden = m->cfg.hidden_size;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            return perq_fail(err, PERQ_E_INVALID, "token id %d at position %zu is outside the vocabulary (%d)",
                             (int)ids[i], i, m->cfg.vocab_size);
        matrix_row(m->embed, m->embed_src, ids[i], hidden, out + i * hidden);
    }
    return 0;
}

int perq_model_head_rows(const perq_model *m, int64_t row0, int64_t n, float *out, perq_err *err)
{
    if (row0 < 0 || n < 0 || row0 + n > m->cfg.vocab_size)
        return perq_fail(err, PERQ_E_INVALID, "lm_head rows [%lld, %lld): the head has %d", (long long)row0,
                         (long long)(row0 + n), m->cfg.vocab_size);
    bool tied = m->cfg.tie_word_embeddings;
    const float *loaded = m->head ? m->head : tied ? m->embed : NULL;
    const perq_tensor *src = tied ? m->embed_src : m->head_src;
    if (!loaded && !src)
        return perq_fail(err, PERQ_E_UNSUPPORTED, "lm_head is pack-quantized: its rows are read once it is loaded");
    int hidden = m->cfg.hidden_size;
    for (int64_t i = 0; i < n; i++)
        matrix_row(loaded, src, row0 + i, hidden, out + (size_t)i * hidden);
    return 0;
}

/* ---- open and close ---------------------------------------------------------- */

static int read_configs(perq_model *m, const char *dir, perq_err *err)
{
    char *path, *text = NULL;
    size_t len;
    if (asprintf(&path, "%s/config.json", dir) < 0)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int rc = perq_read_file(path, MAX_CONFIG_BYTES, &text, &len, err);
    if (rc == 0) {
        rc = perq_llama_config_parse(text, len, &m->cfg, err);
        if (rc == 0)
            rc = perq_quant_config_parse(text, len, &m->quant, err);
        if (rc == 0)
            rc = check_config(&m->cfg, err);
        if (rc != 0)
            perq_err_context(err, "%s", path);
    }
    free(text);
    free(path);
    return rc;
}

static perq_model *model_new(const perq_llama_config *cfg)
{
    perq_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->cfg = *cfg;
    m->layers = calloc((size_t)cfg->num_hidden_layers, sizeof *m->layers);
    m->final_norm = malloc((size_t)cfg->hidden_size * sizeof *m->final_norm);
    if (!m->layers || !m->final_norm) {
        free(m->layers);
        free(m->final_norm);
        free(m);
        return NULL;
    }
    return m;
}

int perq_model_open(const char *dir, perq_model **out, perq_err *err)
{
    *out = NULL;
    perq_model probe = {0};
    if (read_configs(&probe, dir, err) != 0)
        return -1;
    perq_model *m = model_new(&probe.cfg);
    if (!m)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    m->quant = probe.quant;
    m->dir = strdup(dir);
    if (!m->dir) {
        perq_model_close(m);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    if (perq_ckpt_open(dir, &m->ckpt, err) != 0) {
        perq_model_close(m);
        return -1;
    }
    m->has_ckpt = true;
    if (check_tensors(m, err) != 0 || load_vector(m, "model.norm.weight", m->cfg.hidden_size, m->final_norm, err)) {
        perq_model_close(m);
        return perq_err_context(err, "%s", dir);
    }
    *out = m;
    return 0;
}

int perq_model_alloc(const perq_llama_config *cfg, perq_model **out, perq_err *err)
{
    *out = NULL;
    if (check_config(cfg, err) != 0)
        return -1;
    perq_model *m = model_new(cfg);
    if (!m)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    memset(m->final_norm, 0, (size_t)cfg->hidden_size * sizeof *m->final_norm);
    m->embed = calloc(1, perq_model_head_bytes(cfg));
    m->head = calloc(1, perq_model_head_bytes(cfg));
    int ok = m->embed && m->head;
    for (int l = 0; ok && l < cfg->num_hidden_layers; l++) {
        float *block = calloc(1, perq_model_layer_bytes(cfg));
        ok = block != NULL;
        if (ok)
            layout_layer(cfg, block, &m->layers[l]);
    }
    if (!ok) {
        perq_model_close(m);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory for a model in memory");
    }
    *out = m;
    return 0;
}

void perq_model_close(perq_model *m)
{
    if (!m)
        return;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        free(m->layers[l].attn_norm);
    free(m->layers);
    free(m->final_norm);
    free(m->head);
    free(m->embed);
    if (m->has_ckpt)
        perq_ckpt_close(&m->ckpt);
    free(m->dir);
    free(m);
}
