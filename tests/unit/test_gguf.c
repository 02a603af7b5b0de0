/* GGUF export of stories260K (RTN INT4 in the test, groups of 32 and per
 * channel), read back by a small independent GGUF reader: header, every key
 * written, tensor infos, alignment and offsets, Q4_0 blocks dequantized
 * against the INT4 values (q exactly, d = the scale rounded to fp16), the F16
 * fallback of down_proj (172 columns), the RoPE row permutation (a round trip
 * through Hugging Face's permutation, and rotate-half RoPE = interleaved RoPE
 * on the permuted rows), a byte-level tokenizer as gpt2/llama-bpe, refusals. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export_gguf.h"
#include "perq/dtype.h"
#include "perq/fsutil.h"
#include "perq/int4.h"
#include "perq/llama_config.h"
#include "perq/safetensors.h"

static char model_dir[1024];

/* ---- a GGUF reader of its own ---------------------------------------------------- */

typedef struct kv_entry {
    char key[128];
    uint32_t type;
    size_t value; /* offset of the value in the file */
} kv_entry;

typedef struct tensor_info {
    char name[96];
    uint32_t ndim, type;
    uint64_t ne[4], offset;
} tensor_info;

typedef struct gguf_file {
    uint8_t *bytes;
    size_t len, pos;
    uint32_t version;
    uint64_t n_tensors, n_kv;
    kv_entry *kv;
    tensor_info *t;
    size_t data_start;
} gguf_file;

static void need(gguf_file *g, size_t n)
{
    assert_true(g->pos + n <= g->len);
}
static uint32_t get_u32(gguf_file *g)
{
    uint32_t v;
    need(g, 4);
    memcpy(&v, g->bytes + g->pos, 4);
    g->pos += 4;
    return v;
}
static uint64_t get_u64(gguf_file *g)
{
    uint64_t v;
    need(g, 8);
    memcpy(&v, g->bytes + g->pos, 8);
    g->pos += 8;
    return v;
}
static void get_str(gguf_file *g, char *out, size_t cap)
{
    uint64_t n = get_u64(g);
    need(g, n);
    assert_true(n < cap);
    memcpy(out, g->bytes + g->pos, n);
    out[n] = '\0';
    g->pos += n;
}

static size_t scalar_size(uint32_t type)
{
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    assert_true(type <= 12 && type != 8 && type != 9);
    return sizes[type];
}

static void skip_value(gguf_file *g, uint32_t type)
{
    if (type == PERQ_GGUF_STRING) {
        uint64_t n = get_u64(g);
        need(g, n);
        g->pos += n;
    } else if (type == PERQ_GGUF_ARRAY) {
        uint32_t et = get_u32(g);
        uint64_t n = get_u64(g);
        for (uint64_t i = 0; i < n; i++)
            skip_value(g, et);
    } else {
        need(g, scalar_size(type));
        g->pos += scalar_size(type);
    }
}

static void gguf_read(const char *path, gguf_file *g)
{
    memset(g, 0, sizeof *g);
    perq_err err = {0};
    assert_int_equal(perq_read_file(path, 0, (char **)&g->bytes, &g->len, &err), 0);
    need(g, 4);
    assert_memory_equal(g->bytes, "GGUF", 4);
    g->pos = 4;
    g->version = get_u32(g);
    g->n_tensors = get_u64(g);
    g->n_kv = get_u64(g);
    assert_true(g->n_kv < 1000 && g->n_tensors < 10000);
    g->kv = calloc(g->n_kv, sizeof *g->kv);
    g->t = calloc(g->n_tensors, sizeof *g->t);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        get_str(g, g->kv[i].key, sizeof g->kv[i].key);
        g->kv[i].type = get_u32(g);
        g->kv[i].value = g->pos;
        skip_value(g, g->kv[i].type);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        tensor_info *t = &g->t[i];
        get_str(g, t->name, sizeof t->name);
        t->ndim = get_u32(g);
        assert_true(t->ndim >= 1 && t->ndim <= 4);
        for (uint32_t d = 0; d < t->ndim; d++)
            t->ne[d] = get_u64(g);
        for (uint32_t d = t->ndim; d < 4; d++)
            t->ne[d] = 1;
        t->type = get_u32(g);
        t->offset = get_u64(g);
    }
    g->data_start = (g->pos + 31) / 32 * 32;
}

static void gguf_close(gguf_file *g)
{
    free(g->bytes);
    free(g->kv);
    free(g->t);
}

static const kv_entry *find_kv(const gguf_file *g, const char *key)
{
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (!strcmp(g->kv[i].key, key))
            return &g->kv[i];
    return NULL;
}

static const kv_entry *want_kv(const gguf_file *g, const char *key, uint32_t type)
{
    const kv_entry *e = find_kv(g, key);
    if (!e)
        fail_msg("key %s missing", key);
    if (e->type != type)
        fail_msg("key %s has type %u, %u expected", key, e->type, type);
    return e;
}

static uint32_t kv_u32(const gguf_file *g, const char *key)
{
    uint32_t v;
    memcpy(&v, g->bytes + want_kv(g, key, PERQ_GGUF_UINT32)->value, 4);
    return v;
}
static float kv_f32(const gguf_file *g, const char *key)
{
    float v;
    memcpy(&v, g->bytes + want_kv(g, key, PERQ_GGUF_FLOAT32)->value, 4);
    return v;
}
static int kv_bool(const gguf_file *g, const char *key)
{
    return g->bytes[want_kv(g, key, PERQ_GGUF_BOOL)->value];
}
static void kv_str(const gguf_file *g, const char *key, char *out, size_t cap)
{
    gguf_file c = *g;
    c.pos = want_kv(g, key, PERQ_GGUF_STRING)->value;
    get_str(&c, out, cap);
}

/* An array: its element type and count; c positioned at element 0. */
static uint64_t kv_array(const gguf_file *g, const char *key, uint32_t elem, gguf_file *c)
{
    *c = *g;
    c->pos = want_kv(g, key, PERQ_GGUF_ARRAY)->value;
    assert_int_equal(get_u32(c), elem);
    return get_u64(c);
}
static void array_str(const gguf_file *g, const char *key, uint64_t index, char *out, size_t cap)
{
    gguf_file c;
    uint64_t n = kv_array(g, key, PERQ_GGUF_STRING, &c);
    assert_true(index < n);
    for (uint64_t i = 0; i < index; i++)
        skip_value(&c, PERQ_GGUF_STRING);
    get_str(&c, out, cap);
}
/* A copy of an array of scalars (the file gives no alignment); caller frees. */
static void *array_scalars(const gguf_file *g, const char *key, uint32_t elem, uint64_t *n)
{
    gguf_file c;
    *n = kv_array(g, key, elem, &c);
    need(&c, *n * scalar_size(elem));
    void *copy = malloc(*n * scalar_size(elem) + 1);
    memcpy(copy, g->bytes + c.pos, *n * scalar_size(elem));
    return copy;
}

static const tensor_info *find_tensor(const gguf_file *g, const char *name)
{
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->t[i].name, name))
            return &g->t[i];
    fail_msg("tensor %s missing", name);
    return NULL;
}

static const uint8_t *tensor_data(const gguf_file *g, const tensor_info *t)
{
    return g->bytes + g->data_start + t->offset;
}

/* ---- exporting stories260K ---------------------------------------------------------- */

static const char *const linear_parts[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                           "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                           "mlp.down_proj"};
static const char *const gguf_parts[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
#define N_PARTS 7
#define N_LAYERS 5

typedef struct exported {
    char dir[256], path[512];
    perq_llama_config cfg;
    perq_int4_matrix m[N_LAYERS][N_PARTS];
    json_t *summary;
} exported;

static void export_stories(int group, perq_gguf_embed embed, exported *e)
{
    perq_err err = {0};
    snprintf(e->dir, sizeof e->dir, "/tmp/perq-test-gguf-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->path, sizeof e->path, "%s/model.gguf", e->dir);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    assert_int_equal(perq_llama_config_load(path, &e->cfg, &err), 0);
    assert_int_equal(e->cfg.num_hidden_layers, N_LAYERS);
    perq_checkpoint ck;
    assert_int_equal(perq_ckpt_open(model_dir, &ck, &err), 0);
    perq_gguf_options opt = {"stories260K test", embed};
    perq_gguf_export *x;
    assert_int_equal(perq_gguf_new(&e->cfg, &opt, &x, &err), 0);
    for (size_t f = 0; f < ck.n_files; f++)
        for (size_t i = 0; i < ck.files[f].n_tensors; i++) {
            const perq_tensor *t = &ck.files[f].tensors[i];
            int layer = -1, part = -1;
            for (int l = 0; l < N_LAYERS; l++)
                for (int k = 0; k < N_PARTS; k++) {
                    char name[128];
                    snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, linear_parts[k]);
                    if (!strcmp(name, t->name))
                        layer = l, part = k;
                }
            if (layer < 0) {
                assert_int_equal(perq_gguf_add_tensor(x, t, &err), 0);
                continue;
            }
            size_t n = perq_tensor_numel(t);
            float *w = malloc(n * sizeof *w);
            perq_to_f32(t->dtype, t->data, w, n);
            perq_int4_matrix *m = &e->m[layer][part];
            assert_int_equal(perq_int4_rtn_as(w, (int)t->shape[0], (int)t->shape[1], group, t->dtype, m, &err), 0);
            free(w);
            char prefix[128];
            snprintf(prefix, sizeof prefix, "model.layers.%d.%s", layer, linear_parts[part]);
            assert_int_equal(perq_gguf_add_linear(x, prefix, m, &err), 0);
        }
    if (perq_gguf_write(x, model_dir, e->path, &err) != 0)
        fail_msg("%s", err.msg);
    e->summary = perq_gguf_summary(x);
    perq_gguf_free(x);
    perq_ckpt_close(&ck);
}

static void exported_free(exported *e)
{
    for (int l = 0; l < N_LAYERS; l++)
        for (int k = 0; k < N_PARTS; k++)
            perq_int4_free(&e->m[l][k]);
    json_decref(e->summary);
    perq_err err = {0};
    assert_int_equal(perq_remove_tree(e->dir, &err), 0);
}

static size_t ggml_bytes(uint32_t type, uint64_t n)
{
    switch (type) {
    case PERQ_GGML_F32: return n * 4;
    case PERQ_GGML_F16: return n * 2;
    case PERQ_GGML_Q4_0: return n / 32 * 18;
    case PERQ_GGML_Q8_0: return n / 32 * 34;
    }
    fail_msg("unexpected ggml type %u", type);
    return 0;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void check_model_keys(const gguf_file *g)
{
    char s[256];
    kv_str(g, "general.architecture", s, sizeof s);
    assert_string_equal(s, "llama");
    kv_str(g, "general.name", s, sizeof s);
    assert_string_equal(s, "stories260K test");
    assert_int_equal(kv_u32(g, "general.alignment"), 32);
    assert_int_equal(kv_u32(g, "general.file_type"), 2);
    assert_int_equal(kv_u32(g, "general.quantization_version"), 2);
    assert_int_equal(kv_u32(g, "llama.vocab_size"), 512);
    assert_int_equal(kv_u32(g, "llama.context_length"), 512);
    assert_int_equal(kv_u32(g, "llama.embedding_length"), 64);
    assert_int_equal(kv_u32(g, "llama.block_count"), 5);
    assert_int_equal(kv_u32(g, "llama.feed_forward_length"), 172);
    assert_int_equal(kv_u32(g, "llama.rope.dimension_count"), 8);
    assert_int_equal(kv_u32(g, "llama.attention.head_count"), 8);
    assert_int_equal(kv_u32(g, "llama.attention.head_count_kv"), 4);
    assert_int_equal(kv_u32(g, "llama.attention.key_length"), 8);
    assert_int_equal(kv_u32(g, "llama.attention.value_length"), 8);
    assert_true(kv_f32(g, "llama.attention.layer_norm_rms_epsilon") == 1e-5f);
    assert_true(kv_f32(g, "llama.rope.freq_base") == 10000.0f);
    assert_null(find_kv(g, "llama.rope.scaling.type"));
}

/* tok512: <unk> <s> </s>, <0x00>..<0xFF> at 3..258, then 253 pieces whose
 * SentencePiece scores fall with the id (SOURCE.md): the scores written must
 * keep that order among the pieces merges make. */
static void check_tokenizer_keys(const gguf_file *g)
{
    char s[256];
    kv_str(g, "tokenizer.ggml.model", s, sizeof s);
    assert_string_equal(s, "llama");
    kv_str(g, "tokenizer.ggml.pre", s, sizeof s);
    assert_string_equal(s, "default");
    uint64_t n;
    int32_t *types = array_scalars(g, "tokenizer.ggml.token_type", PERQ_GGUF_INT32, &n);
    assert_int_equal(n, 512);
    float *scores = array_scalars(g, "tokenizer.ggml.scores", PERQ_GGUF_FLOAT32, &n);
    assert_int_equal(n, 512);
    array_str(g, "tokenizer.ggml.tokens", 0, s, sizeof s);
    assert_string_equal(s, "<unk>");
    array_str(g, "tokenizer.ggml.tokens", 1, s, sizeof s);
    assert_string_equal(s, "<s>");
    array_str(g, "tokenizer.ggml.tokens", 3, s, sizeof s);
    assert_string_equal(s, "<0x00>");
    array_str(g, "tokenizer.ggml.tokens", 258, s, sizeof s);
    assert_string_equal(s, "<0xFF>");
    assert_int_equal(types[0], PERQ_GGUF_TOKEN_UNKNOWN);
    assert_int_equal(types[1], PERQ_GGUF_TOKEN_CONTROL);
    assert_int_equal(types[2], PERQ_GGUF_TOKEN_CONTROL);
    for (int id = 3; id < 259; id++)
        assert_int_equal(types[id], PERQ_GGUF_TOKEN_BYTE);
    /* Every multi-character piece is made by a merge (SOURCE.md): its score is
     * negative and falls with the id; single characters score 0. */
    int merged = 0;
    float last = 0;
    for (int id = 259; id < 512; id++) {
        assert_int_equal(types[id], PERQ_GGUF_TOKEN_NORMAL);
        array_str(g, "tokenizer.ggml.tokens", (uint64_t)id, s, sizeof s);
        size_t chars = 0;
        for (const char *p = s; *p; p++)
            chars += ((unsigned char)*p & 0xC0) != 0x80;
        if (chars == 1) {
            assert_true(scores[id] == 0);
            continue;
        }
        assert_true(scores[id] < last);
        last = scores[id];
        merged++;
    }
    assert_true(merged > 100);
    free(types);
    free(scores);
    assert_null(find_kv(g, "tokenizer.ggml.merges"));
    assert_int_equal(kv_u32(g, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal(kv_u32(g, "tokenizer.ggml.eos_token_id"), 2);
    assert_int_equal(kv_u32(g, "tokenizer.ggml.unknown_token_id"), 0);
    assert_true(kv_bool(g, "tokenizer.ggml.add_bos_token"));
    assert_false(kv_bool(g, "tokenizer.ggml.add_eos_token"));
    assert_true(kv_bool(g, "tokenizer.ggml.add_space_prefix"));
}

/* Offsets: aligned, in order, not overlapping, the last one ending the file. */
static void check_layout(const gguf_file *g)
{
    assert_int_equal(g->data_start % 32, 0);
    uint64_t end = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const tensor_info *t = &g->t[i];
        assert_int_equal(t->offset % 32, 0);
        assert_true(t->offset >= end);
        end = t->offset + ggml_bytes(t->type, t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    assert_int_equal(g->data_start + (end + 31) / 32 * 32, g->len);
    for (size_t p = g->pos; p < g->data_start; p++)
        assert_int_equal(g->bytes[p], 0);
}

/* Every Q4_0 element is q of the INT4 matrix (row permuted for q/k), d the
 * scale rounded to fp16; F16 tensors hold q * scale rounded to fp16. */
static void check_linear(const gguf_file *g, const exported *e, int layer, int part)
{
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s.weight", layer, gguf_parts[part]);
    const tensor_info *t = find_tensor(g, name);
    const perq_int4_matrix *m = &e->m[layer][part];
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->ne[0], m->cols);
    assert_int_equal(t->ne[1], m->rows);
    const uint8_t *data = tensor_data(g, t);
    bool rope = part < 2;
    for (int r = 0; r < m->rows; r++) {
        int src = rope ? perq_gguf_rope_source_row(r, e->cfg.head_dim) : r;
        const int8_t *q = m->q + (size_t)src * m->cols;
        const float *s = m->scales + (size_t)src * m->n_groups;
        for (int c = 0; c < m->cols; c++) {
            float scale = s[c / m->group];
            if (t->type == PERQ_GGML_Q4_0) {
                const uint8_t *blk = data + ((size_t)r * m->cols / 32 + c / 32) * 18;
                uint16_t d16;
                memcpy(&d16, blk, 2);
                int j = c % 32;
                int nib = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
                assert_int_equal(nib - 8, q[c]);
                assert_true(perq_f16_to_f32(d16) == perq_f16_to_f32(perq_f32_to_f16(scale)));
                /* |d - s| <= half an fp16 ulp of s */
                assert_true(fabsf(perq_f16_to_f32(d16) - scale) <= fabsf(scale) * 0x1p-11f);
            } else {
                assert_int_equal(t->type, PERQ_GGML_F16);
                uint16_t h;
                memcpy(&h, data + ((size_t)r * m->cols + c) * 2, 2);
                assert_int_equal(h, perq_f32_to_f16((float)q[c] * scale));
            }
        }
    }
}

static void check_float_tensor(const gguf_file *g, const char *gguf_name, const char *hf_name, uint32_t type)
{
    perq_checkpoint ck;
    perq_err err = {0};
    assert_int_equal(perq_ckpt_open(model_dir, &ck, &err), 0);
    const perq_tensor *src = perq_ckpt_find(&ck, hf_name);
    assert_non_null(src);
    const tensor_info *t = find_tensor(g, gguf_name);
    assert_int_equal(t->type, type);
    assert_int_equal(t->ne[0], src->shape[src->ndim - 1]);
    size_t n = perq_tensor_numel(src);
    float *want = malloc(n * sizeof *want);
    perq_to_f32(src->dtype, src->data, want, n);
    const uint8_t *d = tensor_data(g, t);
    for (size_t i = 0; i < n; i++) {
        if (type == PERQ_GGML_F32) {
            float v;
            memcpy(&v, d + i * 4, 4);
            assert_true(v == want[i]);
        } else if (type == PERQ_GGML_F16) {
            uint16_t h;
            memcpy(&h, d + i * 2, 2);
            assert_int_equal(h, perq_f32_to_f16(want[i]));
        } else { /* Q8_0: within half a step of the block's scale */
            const uint8_t *blk = d + (i / 32) * 34;
            uint16_t h;
            memcpy(&h, blk, 2);
            float v = perq_f16_to_f32(h) * (float)(int8_t)blk[2 + i % 32];
            assert_true(fabsf(v - want[i]) <= perq_f16_to_f32(h) * 0.5f + fabsf(want[i]) * 1e-3f + 1e-7f);
        }
    }
    free(want);
    perq_ckpt_close(&ck);
}

static void test_group32(void **state)
{
    (void)state;
    exported e;
    memset(&e, 0, sizeof e);
    export_stories(32, PERQ_GGUF_EMBED_F16, &e);
    gguf_file g;
    gguf_read(e.path, &g);
    assert_int_equal(g.version, 3);
    assert_int_equal(g.n_tensors, 2 + 5 * 9); /* embedding, final norm, 9 per layer; the head is tied */
    check_model_keys(&g);
    check_tokenizer_keys(&g);
    check_layout(&g);
    for (uint64_t i = 0; i < g.n_tensors; i++)
        assert_string_not_equal(g.t[i].name, "output.weight");
    for (int l = 0; l < N_LAYERS; l++)
        for (int k = 0; k < N_PARTS; k++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, gguf_parts[k]);
            assert_int_equal(find_tensor(&g, name)->type, k == 6 ? PERQ_GGML_F16 : PERQ_GGML_Q4_0);
            check_linear(&g, &e, l, k);
        }
    check_float_tensor(&g, "token_embd.weight", "model.embed_tokens.weight", PERQ_GGML_F16);
    check_float_tensor(&g, "output_norm.weight", "model.norm.weight", PERQ_GGML_F32);
    check_float_tensor(&g, "blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight", PERQ_GGML_F32);
    check_float_tensor(&g, "blk.4.ffn_norm.weight", "model.layers.4.post_attention_layernorm.weight", PERQ_GGML_F32);
    assert_int_equal(find_tensor(&g, "token_embd.weight")->ne[1], 512);

    /* The summary names the five down_proj in F16 and measures d's rounding. */
    json_t *s = e.summary;
    assert_int_equal(json_integer_value(json_object_get(s, "bytes")), g.len);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "types"), "Q4_0")), 30);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "types"), "F16")), 6);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "types"), "F32")), 11);
    json_t *fb = json_object_get(s, "not_q4_0");
    assert_int_equal(json_array_size(fb), 5);
    assert_string_equal(json_string_value(json_object_get(json_array_get(fb, 0), "tensor")), "blk.0.ffn_down.weight");
    assert_string_equal(json_string_value(json_object_get(json_array_get(fb, 0), "type")), "F16");
    json_t *sf = json_object_get(s, "scale_fp16");
    long long scales = json_integer_value(json_object_get(sf, "scales"));
    /* q, k: 64 + 32 rows; v 32; o 64; gate, up 172 rows; 2 groups each; times 5 layers */
    assert_int_equal(scales, 5 * 2 * (64 + 32 + 32 + 64 + 172 + 172));
    double max_rel = json_real_value(json_object_get(sf, "max_rel_change"));
    double rel_w = json_real_value(json_object_get(sf, "rel_weight_change"));
    assert_true(max_rel > 0 && max_rel <= 0x1p-11);
    assert_true(rel_w > 0 && rel_w < max_rel);
    print_message("stories260K group 32: %zu bytes; fp16 d: %lld of %lld scales changed, max relative change "
                  "%.3g, weights %.3g (relative Frobenius)\n",
                  g.len, (long long)json_integer_value(json_object_get(sf, "changed")), scales, max_rel, rel_w);
    gguf_close(&g);
    exported_free(&e);
}

/* Per output channel: the row's one scale in every block of the row. */
static void test_per_channel_q8_embeddings(void **state)
{
    (void)state;
    exported e;
    memset(&e, 0, sizeof e);
    export_stories(0, PERQ_GGUF_EMBED_Q8_0, &e);
    gguf_file g;
    gguf_read(e.path, &g);
    check_layout(&g);
    for (int l = 0; l < N_LAYERS; l++)
        for (int k = 0; k < N_PARTS; k++) {
            assert_int_equal(e.m[l][k].n_groups, 1);
            check_linear(&g, &e, l, k);
        }
    check_float_tensor(&g, "token_embd.weight", "model.embed_tokens.weight", PERQ_GGML_Q8_0);
    gguf_close(&g);
    exported_free(&e);
}

/* Hugging Face's convert_llama_weights_to_hf: its row h*D + j*D/2 + i is the
 * original (interleaved) row h*D + 2i + j. The GGUF rows must be the
 * original ones again. */
static void test_rope_permutation(void **state)
{
    (void)state;
    for (int d = 2; d <= 128; d *= 2)
        for (int heads = 1; heads <= 3; heads++)
            for (int r = 0; r < heads * d; r++) {
                int hf = perq_gguf_rope_source_row(r, d);
                int h = hf / d, w = hf % d, j = w / (d / 2), i = w % (d / 2);
                assert_int_equal(h * d + 2 * i + j, r);
            }
    /* Rotate-half RoPE on Hugging Face rows = interleaved RoPE on the GGUF rows. */
    enum { D = 16 };
    float hf[D], gg[D], pos = 7.0f;
    for (int i = 0; i < D; i++)
        hf[i] = sinf(1.7f * (float)i + 0.3f);
    for (int r = 0; r < D; r++)
        gg[r] = hf[perq_gguf_rope_source_row(r, D)];
    float hf_out[D], gg_out[D];
    for (int i = 0; i < D / 2; i++) {
        float th = pos * powf(10000.0f, -2.0f * (float)i / D), c = cosf(th), s = sinf(th);
        hf_out[i] = hf[i] * c - hf[i + D / 2] * s;
        hf_out[i + D / 2] = hf[i + D / 2] * c + hf[i] * s;
        gg_out[2 * i] = gg[2 * i] * c - gg[2 * i + 1] * s;
        gg_out[2 * i + 1] = gg[2 * i + 1] * c + gg[2 * i] * s;
    }
    for (int r = 0; r < D; r++)
        assert_true(gg_out[r] == hf_out[perq_gguf_rope_source_row(r, D)]);
}

static void test_q4_0_block_layout(void **state)
{
    (void)state;
    int8_t q[64];
    float scales[2] = {0.5f, 0.1f}; /* 0.1 is not an fp16 value */
    for (int i = 0; i < 64; i++)
        q[i] = (int8_t)(i % 16 - 8);
    uint8_t b[36];
    perq_gguf_q4_0_row(q, scales, 64, 32, b);
    uint16_t d0, d1;
    memcpy(&d0, b, 2);
    memcpy(&d1, b + 18, 2);
    assert_true(perq_f16_to_f32(d0) == 0.5f);
    assert_int_equal(d1, perq_f32_to_f16(0.1f));
    assert_int_equal(b[2], (uint8_t)(0 | (0 << 4)));        /* elements 0 and 16: both q = -8 */
    assert_int_equal(b[3], (uint8_t)(1 | (1 << 4)));
    assert_int_equal(b[2 + 15], (uint8_t)(15 | (15 << 4))); /* elements 15 and 31: q = 7 */
}

static void test_refusals(void **state)
{
    (void)state;
    perq_err err = {0};
    perq_llama_config cfg;
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    assert_int_equal(perq_llama_config_load(path, &cfg, &err), 0);
    perq_gguf_export *x;
    assert_int_equal(perq_gguf_new(&cfg, NULL, &x, &err), 0);
    perq_int4_matrix m;
    float w[64 * 64] = {0};
    assert_int_equal(perq_int4_rtn(w, 64, 64, 32, &m, &err), 0);
    assert_int_not_equal(perq_gguf_add_linear(x, "model.layers.9.self_attn.q_proj", &m, &err), 0);
    assert_non_null(strstr(err.msg, "no GGUF name"));
    assert_int_equal(perq_gguf_add_linear(x, "model.layers.0.self_attn.q_proj", &m, &err), 0);
    assert_int_not_equal(perq_gguf_add_linear(x, "model.layers.0.self_attn.q_proj", &m, &err), 0);
    assert_non_null(strstr(err.msg, "added twice"));
    int64_t shape[1] = {64};
    assert_int_not_equal(perq_gguf_add_f32(x, "model.layers.0.mlp.up_proj.weight", 1, shape, w, &err), 0);
    assert_int_equal(perq_gguf_add_f32(x, "model.norm.weight", 1, shape, w, &err), 0);
    /* Incomplete: the file is refused and not left behind. */
    char dir[] = "/tmp/perq-test-gguf-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char out[256];
    snprintf(out, sizeof out, "%s/x.gguf", dir);
    assert_int_not_equal(perq_gguf_write(x, model_dir, out, &err), 0);
    assert_non_null(strstr(err.msg, "never added"));
    assert_int_not_equal(access(out, F_OK), 0);
    perq_int4_free(&m);
    perq_gguf_free(x);
    assert_int_equal(perq_remove_tree(dir, &err), 0);
}

int main(void)
{
    const char *shared = getenv("PERQ_SHARED");
    snprintf(model_dir, sizeof model_dir, "%s/models/stories260K", shared ? shared : "../shared");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_0_block_layout),
        cmocka_unit_test(test_rope_permutation),
        cmocka_unit_test(test_group32),
        cmocka_unit_test(test_per_channel_q8_embeddings),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
