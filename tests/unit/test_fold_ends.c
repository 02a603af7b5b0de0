/* The folded model's embedding and lm_head as the export writes them
 * (perq_pipeline_end_rows, block of rows by block of rows, from the ends as
 * they are) equal, bit for bit, the old in-memory fold of the whole matrices
 * (perq_pipeline_fold_ends: head loaded, final norm folded, embedding loaded,
 * P1 R1 folded into both). On stories260K (tied head, BF16 and F32
 * checkpoints; block mode, so P1 and a block R1), on stories260K untied (its
 * tensors plus an F16 lm_head.weight of its own, read from the mapping) and
 * on an in-memory model
 * with an untied head and a final norm that is not ones (full R1). The run
 * itself loads neither matrix. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "calibrate.h"
#include "perq/dtype.h"
#include "perq/safetensors.h"
#include "testutil.h"

enum { N_SEQS = 4, SEQ_LEN = 32, BLOCK = 100 };

static void random_ids(const perq_llama_config *c, int32_t *ids, uint32_t seed)
{
    for (int i = 0; i < N_SEQS * SEQ_LEN; i++)
        ids[i] = (int32_t)(xorshift32(&seed) % (uint32_t)c->vocab_size);
}

/* Both ends through perq_pipeline_end_rows in blocks of BLOCK rows (the last
 * one shorter), into new [vocab][hidden] matrices. */
static void end_rows(const perq_pipeline *p, const perq_model *m, float **embed, float **head)
{
    size_t hidden = (size_t)m->cfg.hidden_size, vocab = (size_t)m->cfg.vocab_size;
    *embed = malloc(vocab * hidden * sizeof **embed);
    *head = malloc(vocab * hidden * sizeof **head);
    assert_non_null(*embed);
    assert_non_null(*head);
    perq_err err = {0};
    for (size_t r0 = 0; r0 < vocab; r0 += BLOCK) {
        size_t n = vocab - r0 < BLOCK ? vocab - r0 : BLOCK;
        if (perq_pipeline_end_rows(p, m, false, (int64_t)r0, (int64_t)n, *embed + r0 * hidden, &err) != 0 ||
            perq_pipeline_end_rows(p, m, true, (int64_t)r0, (int64_t)n, *head + r0 * hidden, &err) != 0)
            fail_msg("%s", err.msg);
    }
}

static int count_differing(const float *a, const float *b, size_t n)
{
    int d = 0;
    for (size_t i = 0; i < n; i++)
        d += a[i] != b[i];
    return d;
}

/* Runs the pipeline on m, reads the ends by rows, folds them in memory, and
 * compares. raw_embed: m's embedding before any fold, to show the fold did
 * something. */
static void check_ends(perq_model *m, const perq_pipeline_opts *opts, const float *raw_embed)
{
    const perq_llama_config *c = &m->cfg;
    size_t n = (size_t)c->vocab_size * c->hidden_size;
    int32_t ids[N_SEQS * SEQ_LEN];
    random_ids(c, ids, 0x5eed);
    perq_pipeline p;
    perq_err err = {0};
    bool loaded_before = m->embed != NULL;
    if (perq_pipeline_run(m, ids, N_SEQS, SEQ_LEN, opts, NULL, &p, &err) != 0)
        fail_msg("%s", err.msg);
    if (!loaded_before) {
        assert_null(m->embed);
        assert_null(m->head);
    }
    float *embed, *head;
    end_rows(&p, m, &embed, &head);
    assert_int_equal(perq_pipeline_fold_ends(&p, m, &err), 0);
    assert_int_equal(count_differing(embed, m->embed, n), 0);
    assert_int_equal(count_differing(head, m->head, n), 0);
    assert_true(count_differing(embed, raw_embed, n) > (int)(n / 2));
    for (int i = 0; i < c->hidden_size; i++)
        assert_true(m->final_norm[i] == 1.0f);
    free(embed);
    free(head);
    perq_pipeline_free(&p);
}

static float *checkpoint_embedding(const char *dir)
{
    perq_model *m;
    perq_err err = {0};
    assert_int_equal(perq_model_open(dir, &m, &err), 0);
    assert_int_equal(perq_model_load_embed(m, &err), 0);
    size_t n = (size_t)m->cfg.vocab_size * m->cfg.hidden_size;
    float *e = malloc(n * sizeof *e);
    assert_non_null(e);
    memcpy(e, m->embed, n * sizeof *e);
    perq_model_close(m);
    return e;
}

static void block_mode(const char *dir, bool tied)
{
    float *raw = checkpoint_embedding(dir);
    perq_model *m;
    perq_err err = {0};
    assert_int_equal(perq_model_open(dir, &m, &err), 0);
    assert_int_equal(m->cfg.tie_word_embeddings, tied);
    perq_pipeline_opts o = {.mode = PERQ_ROT_BLOCK, .block_size = 4, .permutation = PERQ_PERM_MASSDIFF,
                            .act_bits = 16, .algorithm = PERQ_WALGO_RTN, .scale_dtype = PERQ_DT_F32, .seed = 11};
    check_ends(m, &o, raw);
    perq_model_close(m);
    free(raw);
}

static void test_stories_f32(void **state)
{
    (void)state;
    char *dir = shared_path("models/stories260K");
    block_mode(dir, true);
    free(dir);
}

static void test_stories_bf16(void **state)
{
    (void)state;
    char *dir = shared_path("models/stories260K-bf16");
    block_mode(dir, true);
    free(dir);
}

/* stories260K's tensors and config with tie_word_embeddings false, plus an
 * lm_head.weight in F16 that is not the embedding, in dir. */
static void write_untied_stories(const char *dir)
{
    char *src = shared_path("models/stories260K"), *config = in_dir(src, "config.json");
    perq_err err = {0};
    json_t *c = json_load_file(config, 0, NULL);
    assert_non_null(c);
    json_object_set_new(c, "tie_word_embeddings", json_false());
    char *out_config = in_dir(dir, "config.json"), *out_model = in_dir(dir, "model.safetensors");
    assert_int_equal(json_dump_file(c, out_config, 0), 0);
    perq_checkpoint ck;
    assert_int_equal(perq_ckpt_open(src, &ck, &err), 0);
    perq_st_writer *w = perq_st_writer_new();
    const perq_tensor *embed = NULL;
    for (size_t f = 0; f < ck.n_files; f++)
        for (size_t i = 0; i < ck.files[f].n_tensors; i++) {
            const perq_tensor *t = &ck.files[f].tensors[i];
            assert_int_equal(perq_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err), 0);
            if (!strcmp(t->name, "model.embed_tokens.weight"))
                embed = t;
        }
    assert_non_null(embed);
    size_t n = perq_tensor_numel(embed);
    float *h = malloc(n * sizeof *h);
    uint16_t *h16 = malloc(n * sizeof *h16);
    uint32_t s = 99;
    for (size_t i = 0; i < n; i++)
        h[i] = 0.1f * xorshift32_float(&s);
    perq_from_f32(PERQ_DT_F16, h, h16, n);
    assert_int_equal(perq_st_writer_add(w, "lm_head.weight", PERQ_DT_F16, 2, embed->shape, h16, &err), 0);
    if (perq_st_write(w, out_model, &err) != 0)
        fail_msg("%s", err.msg);
    perq_st_writer_free(w);
    perq_ckpt_close(&ck);
    free(h);
    free(h16);
    json_decref(c);
    free(out_config);
    free(out_model);
    free(config);
    free(src);
}

static void test_stories_untied(void **state)
{
    (void)state;
    char *dir = test_tmpdir("fold-ends");
    write_untied_stories(dir);
    block_mode(dir, false);
    perq_err err = {0};
    assert_int_equal(perq_remove_tree(dir, &err), 0);
    free(dir);
}

/* Untied, loaded (perq_model_alloc): the rows come from the matrices. */
static void test_untied_in_memory(void **state)
{
    (void)state;
    perq_llama_config c = {0};
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 8;
    c.vocab_size = 250;
    c.max_position_embeddings = 128;
    c.rms_norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tie_word_embeddings = false;
    perq_model *m;
    perq_err err = {0};
    assert_int_equal(perq_model_alloc(&c, &m, &err), 0);
    uint32_t s = 77;
    size_t n = (size_t)c.vocab_size * c.hidden_size;
    for (size_t i = 0; i < n; i++) {
        m->embed[i] = 0.05f * xorshift32_float(&s);
        m->head[i] = 0.05f * xorshift32_float(&s);
    }
    for (int i = 0; i < c.hidden_size; i++)
        m->final_norm[i] = 1.0f + 0.5f * xorshift32_float(&s);
    for (int l = 0; l < c.num_hidden_layers; l++) {
        perq_layer_weights *w = &m->layers[l];
        size_t q = (size_t)c.num_attention_heads * c.head_dim, kv = (size_t)c.num_key_value_heads * c.head_dim;
        size_t h = (size_t)c.hidden_size, inter = (size_t)c.intermediate_size;
        float *mats[7] = {w->q, w->k, w->v, w->o, w->gate, w->up, w->down};
        size_t sizes[7] = {q * h, kv * h, kv * h, h * q, inter * h, inter * h, h * inter};
        for (int k = 0; k < 7; k++)
            for (size_t i = 0; i < sizes[k]; i++)
                mats[k][i] = 0.1f * xorshift32_float(&s);
        for (size_t i = 0; i < h; i++)
            w->attn_norm[i] = w->ffn_norm[i] = 1.0f;
    }
    float *raw = malloc(n * sizeof *raw);
    memcpy(raw, m->embed, n * sizeof *raw);
    perq_pipeline_opts o = {.mode = PERQ_ROT_FULL, .block_size = 0, .permutation = PERQ_PERM_IDENTITY,
                            .act_bits = 16, .algorithm = PERQ_WALGO_RTN, .scale_dtype = PERQ_DT_F32, .seed = 3};
    check_ends(m, &o, raw);
    free(raw);
    perq_model_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_f32),
        cmocka_unit_test(test_stories_bf16),
        cmocka_unit_test(test_stories_untied),
        cmocka_unit_test(test_untied_in_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
