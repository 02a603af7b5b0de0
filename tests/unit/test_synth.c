/* perq synth: the checkpoint has the real model's layout and is deterministic,
 * its config and tokenizer load with perq's own readers, the planted channels
 * are measurably heavy (and the down_proj plant leaves the MLP's function
 * unchanged), and sharding splits and indexes the tensors as Hugging Face does. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "perq/fsutil.h"
#include "perq/llama_config.h"
#include "perq/model_check.h"
#include "perq/safetensors.h"
#include "perq/tokenizer.h"
#include "synth.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------ */

static int make_tmpdir(void **state)
{
    *state = test_tmpdir("synth");
    return 0;
}

/* Runs perq synth on the tiny preset into dir/sub with the given changes. */
static char *synth_tiny(const char *dir, const char *sub, perq_dtype dtype, uint64_t seed,
                        unsigned plant, uint64_t shard_bytes)
{
    char *out = in_dir(dir, sub);
    perq_synth_options o;
    perq_synth_defaults(&o);
    o.preset = "tiny";
    o.out_dir = out;
    o.dtype = dtype;
    o.seed = seed;
    o.plant = plant;
    o.shard_bytes = shard_bytes;
    perq_err err = {0};
    if (perq_synth(&o, &err) != 0)
        fail_msg("perq synth: %s", err.msg);
    return out;
}

static void file_sha(const char *dir, const char *name, char hex[65])
{
    char *path = in_dir(dir, name);
    uint64_t bytes;
    perq_err err = {0};
    if (perq_sha256_file(path, hex, &bytes, &err) != 0)
        fail_msg("%s", err.msg);
    free(path);
}

static json_t *load_json(const char *dir, const char *name)
{
    char *path = in_dir(dir, name);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j)
        fail_msg("%s: %s", path, jerr.text);
    free(path);
    return j;
}

static void open_ckpt(const char *dir, perq_checkpoint *c)
{
    perq_err err = {0};
    if (perq_ckpt_open(dir, c, &err) != 0)
        fail_msg("%s", err.msg);
}

/* A tensor of the checkpoint widened to fp32 (caller frees). */
static float *tensor_f32(const perq_checkpoint *c, const char *name, size_t *n)
{
    const perq_tensor *t = perq_ckpt_find(c, name);
    if (!t)
        fail_msg("tensor %s missing", name);
    *n = perq_tensor_numel(t);
    float *v = malloc(*n * sizeof *v);
    assert_non_null(v);
    perq_to_f32(t->dtype, t->data, v, *n);
    return v;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float median(const float *v, size_t n)
{
    float *s = malloc(n * sizeof *s);
    assert_non_null(s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_float);
    float m = s[n / 2];
    free(s);
    return m;
}

/* ---- presets and config.json ---------------------------------------------- */

/* Every preset's config.json reads back, through perq's parser, as the real model. */
static void test_presets_config_parses(void **state)
{
    const char *dir = *state;
    for (size_t i = 0; i < synth_preset_count(); i++) {
        const synth_preset *p = synth_preset_at(i);
        perq_err err = {0};
        assert_int_equal(synth_write_config(p, 3, PERQ_DT_BF16, dir, &err), 0);
        char *path = in_dir(dir, "config.json");
        perq_llama_config cfg;
        if (perq_llama_config_load(path, &cfg, &err) != 0)
            fail_msg("%s: %s", p->name, err.msg);
        free(path);
        assert_string_equal(cfg.architecture, p->architecture);
        assert_int_equal(cfg.hidden_size, p->hidden_size);
        assert_int_equal(cfg.intermediate_size, p->intermediate_size);
        assert_int_equal(cfg.num_hidden_layers, 3);
        assert_int_equal(cfg.num_attention_heads, p->num_attention_heads);
        assert_int_equal(cfg.num_key_value_heads, p->num_key_value_heads);
        assert_int_equal(cfg.head_dim, p->head_dim);
        assert_int_equal(cfg.vocab_size, p->vocab_size);
        assert_int_equal(cfg.max_position_embeddings, p->max_position_embeddings);
        assert_int_equal(cfg.tie_word_embeddings, p->tie_word_embeddings);
        assert_int_equal(cfg.bos_token_id, p->bos_token_id);
        assert_int_equal(cfg.eos_token_id, p->eos_token_id);
        assert_int_equal(cfg.torch_dtype, PERQ_DT_BF16);
        assert_float_equal(cfg.rope_theta, p->rope_theta, 1e-3);
        assert_float_equal(cfg.rms_norm_eps, p->rms_norm_eps, 1e-9);
        assert_int_equal(cfg.rope_scaling.type, p->llama3_rope ? PERQ_ROPE_LLAMA3 : PERQ_ROPE_DEFAULT);
        if (p->llama3_rope) {
            assert_float_equal(cfg.rope_scaling.factor, p->rope_factor, 1e-6);
            assert_int_equal(cfg.rope_scaling.original_max_position_embeddings, 8192);
        }
    }
}

/* The shapes the brief fixes, checked against numbers, not against the table. */
static void test_preset_shapes(void **state)
{
    (void)state;
    const synth_preset *p = synth_preset_find("llama-3.2-1b");
    assert_non_null(p);
    assert_int_equal(p->hidden_size, 2048);
    assert_int_equal(p->num_hidden_layers, 16);
    assert_int_equal(p->intermediate_size, 8192);
    assert_true(p->tie_word_embeddings);
    p = synth_preset_find("llama-3.1-8b");
    assert_non_null(p);
    assert_int_equal(p->intermediate_size, 14336);
    assert_false(p->tie_word_embeddings);
    p = synth_preset_find("tinyllama-1.1b");
    assert_non_null(p);
    assert_int_equal(p->intermediate_size, 5632);
    assert_int_equal(p->num_key_value_heads, 4);
    assert_int_equal(p->vocab_size, 32000);
    assert_non_null(synth_preset_find("mistral-7b"));
    p = synth_preset_find("tiny");
    assert_non_null(p);
    assert_int_not_equal(p->intermediate_size & (p->intermediate_size - 1), 0);
    assert_null(synth_preset_find("llama-9"));
}

/* ---- the checkpoint ----------------------------------------------------------- */

/* Every tensor perq expects for the config is there with its shape, and nothing else. */
static void test_tiny_matches_expected_tensors(void **state)
{
    char *dir = synth_tiny(*state, "shapes", PERQ_DT_BF16, 1, PERQ_SYNTH_PLANT_ALL, 0);
    char *config = in_dir(dir, "config.json");
    perq_llama_config cfg;
    perq_err err = {0};
    assert_int_equal(perq_llama_config_load(config, &cfg, &err), 0);
    perq_expected_tensor *expected;
    size_t n_expected;
    assert_int_equal(perq_llama_expected_tensors(&cfg, &expected, &n_expected, &err), 0);
    perq_checkpoint c;
    open_ckpt(dir, &c);
    size_t n_present = 0;
    for (size_t f = 0; f < c.n_files; f++)
        n_present += c.files[f].n_tensors;
    assert_int_equal(n_present, n_expected);
    for (size_t i = 0; i < n_expected; i++) {
        const perq_tensor *t = perq_ckpt_find(&c, expected[i].name);
        if (!t)
            fail_msg("missing %s", expected[i].name);
        assert_int_equal(t->dtype, PERQ_DT_BF16);
        assert_int_equal(t->ndim, expected[i].ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], expected[i].shape[d]);
    }
    perq_ckpt_close(&c);
    free(expected);
    free(config);

    /* and the validation a model upload goes through accepts the folder */
    perq_problems problems = {0};
    size_t n_problems = perq_model_check(dir, &problems);
    for (size_t i = 0; i < problems.n; i++)
        print_error("problem: %s\n", problems.items[i]);
    assert_int_equal(n_problems, 0);
    perq_problems_free(&problems);
    free(dir);
}

static const char *const files[] = {
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "synth.json",
};

/* Same arguments, same bytes, file by file; another seed, other weights. */
static void test_deterministic(void **state)
{
    char *a = synth_tiny(*state, "a", PERQ_DT_BF16, 7, PERQ_SYNTH_PLANT_ALL, 0);
    char *b = synth_tiny(*state, "b", PERQ_DT_BF16, 7, PERQ_SYNTH_PLANT_ALL, 0);
    char *other = synth_tiny(*state, "other", PERQ_DT_BF16, 8, PERQ_SYNTH_PLANT_ALL, 0);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char ha[65], hb[65], ho[65];
        file_sha(a, files[i], ha);
        file_sha(b, files[i], hb);
        file_sha(other, files[i], ho);
        assert_string_equal(ha, hb);
        if (strcmp(files[i], "model.safetensors") == 0 || strcmp(files[i], "synth.json") == 0)
            assert_string_not_equal(ha, ho);
    }
    free(a);
    free(b);
    free(other);
}

/* The three dtypes hold the same values, each rounded to its precision. */
static void test_dtypes_agree(void **state)
{
    char *d32 = synth_tiny(*state, "f32", PERQ_DT_F32, 3, PERQ_SYNTH_PLANT_ALL, 0);
    char *d16 = synth_tiny(*state, "f16", PERQ_DT_F16, 3, PERQ_SYNTH_PLANT_ALL, 0);
    char *dbf = synth_tiny(*state, "bf16", PERQ_DT_BF16, 3, PERQ_SYNTH_PLANT_ALL, 0);
    perq_checkpoint c32, c16, cbf;
    open_ckpt(d32, &c32);
    open_ckpt(d16, &c16);
    open_ckpt(dbf, &cbf);
    assert_int_equal(c16.files[0].tensors[0].dtype, PERQ_DT_F16);
    const char *names[] = {"model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight",
                           "model.layers.0.input_layernorm.weight", "model.norm.weight"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        size_t n, n16, nbf;
        float *v = tensor_f32(&c32, names[k], &n);
        float *v16 = tensor_f32(&c16, names[k], &n16);
        float *vbf = tensor_f32(&cbf, names[k], &nbf);
        assert_int_equal(n, n16);
        assert_int_equal(n, nbf);
        for (size_t i = 0; i < n; i++) {
            float a = fabsf(v[i]);
            assert_true(fabsf(vbf[i] - v[i]) <= a * 0x1p-8f);
            /* f16 subnormals (below 2^-14) have an absolute step of 2^-24 */
            assert_true(fabsf(v16[i] - v[i]) <= fmaxf(a * 0x1p-11f, 0x1p-25f));
        }
        free(v);
        free(v16);
        free(vbf);
    }
    perq_ckpt_close(&c32);
    perq_ckpt_close(&c16);
    perq_ckpt_close(&cbf);
    free(d32);
    free(d16);
    free(dbf);
}

/* Linear weights are about N(0, 0.02), norms about 1, and heavy tails raise
 * the kurtosis well above a Gaussian's 3 only when planted. */
static double kurtosis(const float *v, size_t n, double *std)
{
    double m2 = 0, m4 = 0;
    for (size_t i = 0; i < n; i++) {
        double x = v[i];
        m2 += x * x;
        m4 += x * x * x * x;
    }
    m2 /= (double)n;
    m4 /= (double)n;
    *std = sqrt(m2);
    return m4 / (m2 * m2);
}

static void test_weight_statistics(void **state)
{
    char *tails = synth_tiny(*state, "tails", PERQ_DT_F32, 5, PERQ_SYNTH_PLANT_ALL, 0);
    char *plain = synth_tiny(*state, "plain", PERQ_DT_F32, 5, 0, 0);
    perq_checkpoint ct, cp;
    open_ckpt(tails, &ct);
    open_ckpt(plain, &cp);
    size_t n;
    double std_t, std_p;
    float *wt = tensor_f32(&ct, "model.layers.0.self_attn.q_proj.weight", &n);
    float *wp = tensor_f32(&cp, "model.layers.0.self_attn.q_proj.weight", &n);
    double kt = kurtosis(wt, n, &std_t), kp = kurtosis(wp, n, &std_p);
    assert_true(std_p > 0.012 && std_p < 0.03);
    assert_true(kp > 2.8 && kp < 3.6);  /* near-Gaussian: a row-scale mixture of N(0, 1) */
    assert_true(kt > kp + 1.0);
    free(wt);
    free(wp);
    float *norm = tensor_f32(&cp, "model.layers.1.post_attention_layernorm.weight", &n);
    double mean = 0;
    for (size_t i = 0; i < n; i++)
        mean += norm[i] / (double)n;
    assert_true(mean > 0.9 && mean < 1.1);
    free(norm);
    perq_ckpt_close(&ct);
    perq_ckpt_close(&cp);
    free(tails);
    free(plain);
}

/* ---- planted outliers ------------------------------------------------------------ */

typedef struct tiny_mlp {
    size_t hidden, inter;
    float *gate, *up, *down, *norm;
} tiny_mlp;

static void load_mlp(const perq_checkpoint *c, int layer, tiny_mlp *m)
{
    char name[96];
    size_t n;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", layer);
    m->norm = tensor_f32(c, name, &m->hidden);
    snprintf(name, sizeof name, "model.layers.%d.mlp.gate_proj.weight", layer);
    m->gate = tensor_f32(c, name, &n);
    m->inter = n / m->hidden;
    snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", layer);
    m->up = tensor_f32(c, name, &n);
    snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", layer);
    m->down = tensor_f32(c, name, &n);
}

static void free_mlp(tiny_mlp *m)
{
    free(m->gate);
    free(m->up);
    free(m->down);
    free(m->norm);
}

/* act = silu(x Wg^T) * (x Wu^T) for x = rmsnorm(h) * norm; out = act Wd^T. */
static void run_mlp(const tiny_mlp *m, const float *h, float *act, float *out)
{
    double ss = 0;
    for (size_t i = 0; i < m->hidden; i++)
        ss += (double)h[i] * h[i];
    float inv = (float)(1.0 / sqrt(ss / (double)m->hidden + 1e-5));
    float *x = malloc(m->hidden * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < m->hidden; i++)
        x[i] = h[i] * inv * m->norm[i];
    for (size_t j = 0; j < m->inter; j++) {
        double g = 0, u = 0;
        for (size_t i = 0; i < m->hidden; i++) {
            g += (double)m->gate[j * m->hidden + i] * x[i];
            u += (double)m->up[j * m->hidden + i] * x[i];
        }
        act[j] = (float)(g / (1.0 + exp(-g)) * u);
    }
    for (size_t r = 0; r < m->hidden; r++) {
        double s = 0;
        for (size_t j = 0; j < m->inter; j++)
            s += (double)m->down[r * m->inter + j] * act[j];
        out[r] = (float)s;
    }
    free(x);
}

static int json_int_at(const json_t *arr, size_t i)
{
    return (int)json_integer_value(json_array_get(arr, i));
}

/* The residual channels of synth.json dominate the embeddings (the first
 * layer's input) and what each MLP writes back into the residual stream; the
 * down_proj channels dominate its input, side by side in one block of 16; and
 * without the down_proj plant the MLP computes the same function. */
static void test_planted_channels_are_heavy(void **state)
{
    char *dir = synth_tiny(*state, "planted", PERQ_DT_F32, 11, PERQ_SYNTH_PLANT_ALL, 0);
    char *ref = synth_tiny(*state, "unplanted", PERQ_DT_F32, 11,
                           PERQ_SYNTH_PLANT_ALL & ~PERQ_SYNTH_PLANT_DOWN_PROJ, 0);
    json_t *info = load_json(dir, "synth.json");
    json_t *resid = json_object_get(json_object_get(info, "residual_outliers"), "channels");
    json_t *layers = json_object_get(json_object_get(info, "down_proj_outliers"), "layers");
    assert_int_equal(json_array_size(resid), SYNTH_RESIDUAL_CHANNELS);
    assert_int_equal(json_array_size(layers), 2);

    perq_checkpoint c, cr;
    open_ckpt(dir, &c);
    open_ckpt(ref, &cr);
    size_t n;
    float *emb = tensor_f32(&c, "model.embed_tokens.weight", &n);
    const size_t hidden = 256, tokens = n / hidden;

    /* mean |x| per channel over every token's embedding */
    float *mass = calloc(hidden, sizeof *mass);
    assert_non_null(mass);
    for (size_t t = 0; t < tokens; t++)
        for (size_t i = 0; i < hidden; i++)
            mass[i] += fabsf(emb[t * hidden + i]) / (float)tokens;
    float typical = median(mass, hidden);
    for (size_t k = 0; k < json_array_size(resid); k++)
        assert_true(mass[json_int_at(resid, k)] > 15.0f * typical);

    /* the final norm damps them before the head */
    float *final = tensor_f32(&c, "model.norm.weight", &n);
    float final_typical = median(final, n);
    for (size_t k = 0; k < json_array_size(resid); k++)
        assert_true(final[json_int_at(resid, k)] < 0.1f * final_typical);
    free(final);

    for (int layer = 0; layer < 2; layer++) {
        json_t *entry = json_array_get(layers, (size_t)layer);
        json_t *heavy = json_object_get(entry, "channels");
        int first = json_int_at(heavy, 0);
        assert_int_equal(first % 16, 0);
        for (size_t k = 0; k < json_array_size(heavy); k++)
            assert_int_equal(json_int_at(heavy, k), first + (int)k);

        tiny_mlp m, mr;
        load_mlp(&c, layer, &m);
        load_mlp(&cr, layer, &mr);
        float *act = malloc(m.inter * sizeof *act), *act_r = malloc(m.inter * sizeof *act_r);
        float *out = malloc(hidden * sizeof *out), *out_r = malloc(hidden * sizeof *out_r);
        float *act_mass = calloc(m.inter, sizeof *act_mass);
        float *act_mass_r = calloc(m.inter, sizeof *act_mass_r);
        float *out_mass = calloc(hidden, sizeof *out_mass);
        assert_true(act && act_r && out && out_r && act_mass && act_mass_r && out_mass);
        const size_t samples = 24;
        double diff = 0, norm = 0;
        for (size_t s = 0; s < samples; s++) {
            const float *h = &emb[(s * 17 + 3) % tokens * hidden];
            run_mlp(&m, h, act, out);
            run_mlp(&mr, h, act_r, out_r);
            for (size_t j = 0; j < m.inter; j++) {
                act_mass[j] += fabsf(act[j]) / (float)samples;
                act_mass_r[j] += fabsf(act_r[j]) / (float)samples;
            }
            for (size_t r = 0; r < hidden; r++) {
                out_mass[r] += fabsf(out[r]) / (float)samples;
                diff += (double)(out[r] - out_r[r]) * (out[r] - out_r[r]);
                norm += (double)out_r[r] * out_r[r];
            }
        }
        assert_true(sqrt(diff / norm) < 1e-5);
        /* Each planted channel carries its scale times its unplanted mass, and
         * their block of 16 several times the mass of a typical block. */
        json_t *scales = json_object_get(entry, "scales");
        for (size_t k = 0; k < json_array_size(heavy); k++) {
            int j = json_int_at(heavy, k);
            double scale = json_real_value(json_array_get(scales, k));
            assert_true(scale >= 20.0 && scale <= 40.0);
            assert_float_equal(act_mass[j], scale * act_mass_r[j], 1e-3 * act_mass[j]);
        }
        size_t n_blocks = m.inter / 16;
        float *block_mass = calloc(n_blocks, sizeof *block_mass);
        assert_non_null(block_mass);
        for (size_t j = 0; j < n_blocks * 16; j++)
            block_mass[j / 16] += act_mass[j];
        assert_true(block_mass[first / 16] > 5.0f * median(block_mass, n_blocks));
        free(block_mass);
        float out_typical = median(out_mass, hidden);
        for (size_t k = 0; k < json_array_size(resid); k++)
            assert_true(out_mass[json_int_at(resid, k)] > 10.0f * out_typical);
        free(act);
        free(act_r);
        free(out);
        free(out_r);
        free(act_mass);
        free(act_mass_r);
        free(out_mass);
        free_mlp(&m);
        free_mlp(&mr);
    }
    free(mass);
    free(emb);
    perq_ckpt_close(&c);
    perq_ckpt_close(&cr);
    json_decref(info);
    free(dir);
    free(ref);
}

/* ---- sharding -------------------------------------------------------------------- */

static size_t count_shards(const char *dir, int n)
{
    size_t found = 0;
    for (int i = 1; i <= n; i++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", i, n);
        char *path = in_dir(dir, name);
        found += access(path, F_OK) == 0;
        free(path);
    }
    return found;
}

/* Above the shard size the tensors go to model-0000i-of-0000N.safetensors, the
 * index names each one's file and the total size, and every tensor holds the
 * same bytes as in the single file; writing the single file again into the
 * same folder removes the shards. */
static void test_sharded(void **state)
{
    char *single = synth_tiny(*state, "single", PERQ_DT_F32, 4, PERQ_SYNTH_PLANT_ALL, 0);
    char *sharded = synth_tiny(*state, "sharded", PERQ_DT_F32, 4, PERQ_SYNTH_PLANT_ALL, 1 << 20);
    char *path = in_dir(sharded, "model.safetensors");
    assert_int_not_equal(access(path, F_OK), 0);
    free(path);

    json_t *index = load_json(sharded, "model.safetensors.index.json");
    json_t *map = json_object_get(index, "weight_map");
    json_int_t total = json_integer_value(json_object_get(json_object_get(index, "metadata"),
                                                          "total_size"));
    perq_checkpoint cs, c1;
    open_ckpt(sharded, &cs);
    open_ckpt(single, &c1);
    int n_shards = (int)cs.n_files;
    assert_true(n_shards >= 3);
    assert_int_equal(count_shards(sharded, n_shards), n_shards);
    assert_int_equal(json_object_size(map), c1.files[0].n_tensors);
    json_int_t sum = 0;
    for (size_t i = 0; i < c1.files[0].n_tensors; i++) {
        const perq_tensor *t1 = &c1.files[0].tensors[i];
        const perq_tensor *ts = perq_ckpt_find(&cs, t1->name);
        assert_non_null(ts);
        assert_non_null(json_object_get(map, t1->name));
        assert_int_equal(ts->nbytes, t1->nbytes);
        assert_memory_equal(ts->data, t1->data, t1->nbytes);
        sum += (json_int_t)t1->nbytes;
    }
    assert_int_equal(total, sum);
    for (size_t f = 0; f < cs.n_files; f++) {
        size_t bytes = 0;
        for (size_t i = 0; i < cs.files[f].n_tensors; i++)
            bytes += cs.files[f].tensors[i].nbytes;
        assert_true(bytes <= (1 << 20) || cs.files[f].n_tensors == 1);
    }
    perq_ckpt_close(&cs);
    perq_ckpt_close(&c1);
    json_decref(index);

    free(synth_tiny(*state, "sharded", PERQ_DT_F32, 4, PERQ_SYNTH_PLANT_ALL, 0));
    assert_int_equal(count_shards(sharded, n_shards), 0);
    path = in_dir(sharded, "model.safetensors.index.json");
    assert_int_not_equal(access(path, F_OK), 0);
    free(path);
    free(single);
    free(sharded);
}

/* ---- tokenizer ----------------------------------------------------------------------- */

/* Ids dense from 0, the preset's vocabulary size with the added tokens, and
 * every merge joins two tokens into a token. */
static void check_tokenizer_json(const char *dir, const synth_preset *p)
{
    json_t *tok = load_json(dir, "tokenizer.json");
    json_t *model = json_object_get(tok, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(tok, "added_tokens");
    size_t n = json_object_size(vocab);
    char *seen = calloc(n, 1);
    assert_non_null(seen);
    const char *key;
    json_t *value;
    json_object_foreach(vocab, key, value) {
        json_int_t id = json_integer_value(value);
        assert_true(id >= 0 && (size_t)id < n && !seen[id]);
        seen[id] = 1;
    }
    free(seen);
    size_t total = n;
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        if ((size_t)id >= n)
            total++;
    }
    assert_int_equal(total, (size_t)p->vocab_size);
    assert_true(json_array_size(merges) > 100);
    json_t *m;
    json_array_foreach(merges, i, m) {
        const char *s = json_string_value(m);
        const char *space = strchr(s, ' ');
        assert_non_null(space);
        char *left = strndup(s, (size_t)(space - s));
        char *joined;
        assert_true(asprintf(&joined, "%s%s", left, space + 1) > 0);
        assert_non_null(json_object_get(vocab, left));
        assert_non_null(json_object_get(vocab, space + 1));
        assert_non_null(json_object_get(vocab, joined));
        free(left);
        free(joined);
    }
    json_decref(tok);
}

static const char sample_text[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside!\n"
    "Numbers 12345, symbols #$%, and \xc3\xbcn\xc3\xaf" "c\xc3\xb6" "de \xe2\x9c\x93 too.";

/* perq's tokenizer loads the file, encodes a text (common words become single
 * tokens) and decodes it back to the same text. */
static void check_tokenizer_round_trip(const char *dir, const synth_preset *p)
{
    perq_tokenizer *t;
    perq_err err = {0};
    if (perq_tokenizer_load(dir, &t, &err) != 0)
        fail_msg("%s: %s", p->name, err.msg);
    assert_int_equal(perq_tokenizer_vocab_size(t), (size_t)p->vocab_size);
    assert_int_equal(perq_tokenizer_bos_id(t), p->bos_token_id);
    assert_int_equal(perq_tokenizer_eos_id(t), p->eos_token_id);
    int32_t *ids;
    size_t n_ids;
    if (perq_tokenizer_encode(t, sample_text, strlen(sample_text), true, &ids, &n_ids, &err) != 0)
        fail_msg("%s: %s", p->name, err.msg);
    assert_int_equal(ids[0], p->bos_token_id);
    assert_true(n_ids < strlen(sample_text)); /* merges apply */
    for (size_t i = 0; i < n_ids; i++)
        assert_true(ids[i] >= 0 && ids[i] < p->vocab_size);
    char *text;
    if (perq_tokenizer_decode(t, ids + 1, n_ids - 1, &text, &err) != 0)
        fail_msg("%s: %s", p->name, err.msg);
    assert_string_equal(text, sample_text);
    free(text);
    free(ids);
    perq_tokenizer_free(t);
}

static void test_tokenizers(void **state)
{
    const char *names[] = {"tiny", "tinyllama-1.1b", "llama-3.2-1b", "tiny-llama3"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const synth_preset *p = synth_preset_find(names[k]);
        char *dir = in_dir(*state, names[k]);
        perq_err err = {0};
        assert_int_equal(perq_mkdirs(dir, &err), 0);
        if (synth_write_config(p, 1, PERQ_DT_BF16, dir, &err) != 0 ||
            synth_write_tokenizer(p, dir, &err) != 0)
            fail_msg("%s: %s", names[k], err.msg);
        check_tokenizer_json(dir, p);
        check_tokenizer_round_trip(dir, p);
        free(dir);
    }
}

/* ---- bad options ------------------------------------------------------------------ */

static void test_bad_options(void **state)
{
    char *out = in_dir(*state, "never");
    perq_synth_options o;
    perq_err err = {0};
    perq_synth_defaults(&o);
    o.out_dir = out;
    o.preset = "llama-9";
    assert_int_equal(perq_synth(&o, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_non_null(strstr(err.msg, "unknown preset \"llama-9\""));
    assert_non_null(strstr(err.msg, "llama-3.2-1b"));
    o.preset = "tiny";
    o.dtype = PERQ_DT_I8;
    assert_int_equal(perq_synth(&o, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    o.dtype = PERQ_DT_BF16;
    o.layers = -2;
    assert_int_equal(perq_synth(&o, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_int_not_equal(access(out, F_OK), 0); /* nothing written */
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_presets_config_parses, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test(test_preset_shapes),
        cmocka_unit_test_setup_teardown(test_tiny_matches_expected_tensors, make_tmpdir,
                                        test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_deterministic, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_dtypes_agree, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_weight_statistics, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_planted_channels_are_heavy, make_tmpdir,
                                        test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_sharded, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_tokenizers, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_bad_options, make_tmpdir, test_remove_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
