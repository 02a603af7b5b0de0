#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "perq/fsutil.h"
#include "perq/model_check.h"
#include "perq/safetensors.h"
#include "testutil.h"

static const char *const model_files[] = {"config.json", "model.safetensors", "tokenizer.json",
                                          "tokenizer_config.json"};

/* A temporary copy of stories260K for each test to damage. */
static int copy_stories(void **state)
{
    char *tmpl = test_tmpdir("check");
    char *src_dir = shared_path("models/stories260K");
    perq_err err;
    for (size_t i = 0; i < sizeof model_files / sizeof *model_files; i++) {
        char *src = in_dir(src_dir, model_files[i]), *dst = in_dir(tmpl, model_files[i]);
        assert_int_equal(perq_copy_file(src, dst, &err), 0);
        free(src);
        free(dst);
    }
    free(src_dir);
    *state = tmpl;
    return 0;
}

static void replace_bytes(const char *dir, const char *name, const void *data, size_t len)
{
    char *path = in_dir(dir, name);
    perq_err err;
    assert_int_equal(perq_write_file_atomic(path, data, len, &err), 0);
    free(path);
}

static void replace_file(const char *dir, const char *name, const char *text)
{
    replace_bytes(dir, name, text, strlen(text));
}

static void print_problems(const perq_problems *p)
{
    for (size_t i = 0; i < p->n; i++)
        print_message("  problem: %s\n", p->items[i]);
}

static void assert_has_problem(const perq_problems *p, const char *want)
{
    for (size_t i = 0; i < p->n; i++) {
        if (strstr(p->items[i], want))
            return;
    }
    print_problems(p);
    fail_msg("no problem mentions: %s", want);
}

static void test_shared_models_are_valid(void **state)
{
    (void)state;
    char *f32_dir = shared_path("models/stories260K"), *bf16_dir;
    assert_true(asprintf(&bf16_dir, "%s-bf16", f32_dir) > 0);
    const char *dirs[] = {f32_dir, bf16_dir};
    for (int i = 0; i < 2; i++) {
        perq_problems p = {0};
        size_t n = perq_model_check(dirs[i], &p);
        if (n != 0)
            print_problems(&p);
        assert_int_equal(n, 0);
        assert_int_equal(p.n, 0);
        perq_problems_free(&p);
    }
    free(f32_dir);
    free(bf16_dir);
}

/* Rewrites model.safetensors from the original with: one tensor dropped, one
 * with a transposed shape, one integer-typed, and one foreign tensor added. */
static void damage_weights(const char *dir)
{
    char *src_dir = shared_path("models/stories260K");
    char *src = in_dir(src_dir, "model.safetensors");
    char *dst = in_dir(dir, "model.safetensors");
    perq_st_file f;
    perq_err err;
    assert_int_equal(perq_st_open(src, &f, &err), 0);
    perq_st_writer *w = perq_st_writer_new();
    for (size_t i = 0; i < f.n_tensors; i++) {
        const perq_tensor *t = &f.tensors[i];
        int64_t shape[PERQ_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        perq_dtype dt = t->dtype;
        if (strcmp(t->name, "model.layers.3.mlp.up_proj.weight") == 0)
            continue;
        if (strcmp(t->name, "model.layers.1.self_attn.k_proj.weight") == 0) {
            shape[0] = t->shape[1];
            shape[1] = t->shape[0];
        }
        if (strcmp(t->name, "model.norm.weight") == 0)
            dt = PERQ_DT_I32;
        assert_int_equal(perq_st_writer_add(w, t->name, dt, t->ndim, shape, t->data, &err), 0);
    }
    float bias[64] = {0};
    int64_t bias_shape[1] = {64};
    assert_int_equal(perq_st_writer_add(w, "model.layers.0.self_attn.q_proj.bias", PERQ_DT_F32, 1, bias_shape, bias,
                                        &err), 0);
    assert_int_equal(perq_st_write(w, dst, &err), 0);
    perq_st_writer_free(w);
    perq_st_close(&f);
    free(src);
    free(dst);
    free(src_dir);
}

static void test_each_problem_reported(void **state)
{
    const char *dir = *state;
    damage_weights(dir);
    replace_file(dir, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}");
    perq_problems p = {0};
    size_t n = perq_model_check(dir, &p);
    print_problems(&p);
    assert_has_problem(&p, "missing tensor model.layers.3.mlp.up_proj.weight (expected shape [172, 64])");
    assert_has_problem(&p, "tensor model.layers.1.self_attn.k_proj.weight has shape [64, 32], expected [32, 64]");
    assert_has_problem(&p, "tensor model.norm.weight has dtype I32, expected F32, F16 or BF16");
    assert_has_problem(&p, "unexpected tensor model.layers.0.self_attn.q_proj.bias");
    assert_has_problem(&p, "tokenizer.json is not valid JSON");
    assert_int_equal(n, 5);
    assert_int_equal(p.n, 5);
    perq_problems_free(&p);
}

static void test_tokenizer_structure(void **state)
{
    const char *dir = *state;
    perq_problems p = {0};
    replace_file(dir, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}");
    assert_int_equal(perq_model_check(dir, &p), 1);
    assert_has_problem(&p, "tokenizer.json: model has no \"merges\" array");
    perq_problems_free(&p);

    replace_file(dir, "tokenizer.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
    assert_int_equal(perq_model_check(dir, &p), 1);
    assert_has_problem(&p, "model type \"Unigram\" is not supported");
    perq_problems_free(&p);

    /* The right outline, but not a tokenizer the engine can load. */
    replace_file(dir, "tokenizer.json",
                 "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}");
    assert_int_equal(perq_model_check(dir, &p), 1);
    assert_has_problem(&p, "token 'b' is not in the vocabulary");
    perq_problems_free(&p);

    replace_file(dir, "tokenizer.json", "[]");
    assert_int_equal(perq_model_check(dir, &p), 1);
    assert_has_problem(&p, "tokenizer.json is not a JSON object");
    perq_problems_free(&p);

    char *path = in_dir(dir, "tokenizer.json");
    assert_int_equal(perq_remove_tree(path, NULL), 0);
    free(path);
    assert_int_equal(perq_model_check(dir, &p), 1);
    assert_has_problem(&p, "opening tokenizer.json: No such file");
    perq_problems_free(&p);
}

/* dir/config.json becomes stories260K's config.json with `from` replaced by
 * `to` (of the same length). */
static void patch_config(const char *dir, const char *from, const char *to)
{
    char *src = shared_path("models/stories260K/config.json");
    char *text;
    size_t len;
    perq_err err;
    assert_int_equal(perq_read_file(src, 0, &text, &len, &err), 0);
    char *at = strstr(text, from);
    assert_non_null(at);
    assert_int_equal(strlen(from), strlen(to));
    memcpy(at, to, strlen(to));
    replace_file(dir, "config.json", text);
    free(text);
    free(src);
}

static void test_unsupported_architecture(void **state)
{
    const char *dir = *state;
    patch_config(dir, "LlamaForCausalLM", "GemmaForCausalLM");

    perq_problems p = {0};
    assert_int_equal(perq_model_check(dir, &p), 1);
    assert_has_problem(&p, "config.json: architecture \"GemmaForCausalLM\" is not supported");
    perq_problems_free(&p);
}

/* A tokenizer that can produce ids beyond the embedding rows. */
static void test_tokenizer_larger_than_vocab(void **state)
{
    const char *dir = *state;
    patch_config(dir, "\"vocab_size\": 512", "\"vocab_size\": 500");

    perq_problems p = {0};
    size_t n = perq_model_check(dir, &p);
    print_problems(&p);
    assert_has_problem(&p, "tensor model.embed_tokens.weight has shape [512, 64], expected [500, 64]");
    assert_has_problem(&p, "tokenizer.json has 512 tokens but config.json vocab_size is 500");
    assert_int_equal(n, 2);
    perq_problems_free(&p);
}

static void test_broken_header_and_extra_shard(void **state)
{
    const char *dir = *state;
    /* A header length pointing past the end, and a header that is not an object. */
    replace_bytes(dir, "model.safetensors", "\xff\x00\x00\x00\x00\x00\x00\x00{}", 10);
    replace_bytes(dir, "extra.safetensors", "\x02\x00\x00\x00\x00\x00\x00\x00[]", 10);
    perq_problems p = {0};
    size_t n = perq_model_check(dir, &p);
    print_problems(&p);
    assert_has_problem(&p, "model.safetensors: header length 255 runs past the end of the file");
    assert_has_problem(&p, "extra.safetensors: header is not a JSON object");
    assert_int_equal(n, 2); /* the checkpoint reader's view of model.safetensors is the same problem */
    for (size_t i = 0; i < p.n; i++)
        assert_null(strstr(p.items[i], dir)); /* files named as the user knows them */
    perq_problems_free(&p);
}

static void test_empty_folder(void **state)
{
    char tmpl[] = "/tmp/perq-check-empty-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    (void)state;
    perq_problems p = {0};
    size_t n = perq_model_check(tmpl, &p);
    print_problems(&p);
    assert_int_equal(n, 3);
    assert_has_problem(&p, "opening config.json");
    assert_has_problem(&p, "no model.safetensors or model.safetensors.index.json in the model folder");
    for (size_t i = 0; i < p.n; i++)
        assert_null(strstr(p.items[i], tmpl));
    assert_has_problem(&p, "opening tokenizer.json");
    perq_problems_free(&p);
    assert_int_equal(perq_remove_tree(tmpl, NULL), 0);
}

static void test_problems_list(void **state)
{
    (void)state;
    perq_problems p = {0};
    for (int i = 0; i < 100; i++)
        perq_problems_add(&p, "problem %d", i);
    perq_problems_add(&p, "problem %d", 7); /* the same line twice is one problem */
    assert_int_equal(p.n, 100);
    assert_string_equal(p.items[99], "problem 99");
    perq_problems_free(&p);
    assert_int_equal(p.n, 0);
    assert_null(p.items);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_problems_list),
        cmocka_unit_test(test_shared_models_are_valid),
        cmocka_unit_test_setup_teardown(test_each_problem_reported, copy_stories, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_tokenizer_structure, copy_stories, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_unsupported_architecture, copy_stories, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_tokenizer_larger_than_vocab, copy_stories, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_broken_header_and_extra_shard, copy_stories, test_remove_tmpdir),
        cmocka_unit_test(test_empty_folder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
