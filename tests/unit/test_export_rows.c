/* Tensors made by rows while an export writes them (export_rows.h):
 * compressed-tensors and GGUF files written from a row source are
 * byte-identical to those written from the same values in memory
 * (perq_ct_add_f32, perq_gguf_add_f32), in every output type and over several
 * blocks; the source is asked for consecutive blocks of at most
 * perq_export_block_rows rows; a source that fails fails the write with the
 * tensor and rows as context and leaves no file; a tied head is skipped. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export_ct.h"
#include "export_gguf.h"
#include "perq/fsutil.h"
#include "perq/int4.h"
#include "perq/llama_config.h"
#include "perq/safetensors.h"
#include "testutil.h"

static char *model_dir; /* stories260K: config.json and the tokenizer */

/* ---- a row source ------------------------------------------------------------- */

typedef struct source {
    int64_t rows, cols;
    float scale;        /* tells tensors apart */
    int64_t next;       /* the row the next call must start at */
    int calls;
    int64_t fail_from;  /* a call starting at or after this row fails; -1: never */
} source;

static source source_of(int64_t rows, int64_t cols, float scale)
{
    source s = {rows, cols, scale, 0, 0, -1};
    return s;
}

static float value(const source *s, int64_t r, int64_t c)
{
    return s->scale * sinf(0.37f * (float)r + 0.11f * (float)c) * (float)(1 + r % 7);
}

static int source_rows(void *ctx, int64_t row0, int64_t nrows, float *out, perq_err *err)
{
    source *s = ctx;
    assert_int_equal(row0, s->next);
    assert_true(nrows >= 1 && nrows <= perq_export_block_rows(s->cols) && row0 + nrows <= s->rows);
    s->calls++;
    if (s->fail_from >= 0 && row0 >= s->fail_from)
        return perq_fail(err, PERQ_E_IO, "the source broke");
    for (int64_t r = 0; r < nrows; r++)
        for (int64_t c = 0; c < s->cols; c++)
            out[r * s->cols + c] = value(s, row0 + r, c);
    s->next += nrows;
    return 0;
}

/* The whole matrix, for the in-memory path; the caller frees it. */
static float *source_values(const source *s)
{
    float *v = malloc((size_t)(s->rows * s->cols) * sizeof *v);
    assert_non_null(v);
    for (int64_t r = 0; r < s->rows; r++)
        for (int64_t c = 0; c < s->cols; c++)
            v[r * s->cols + c] = value(s, r, c);
    return v;
}

static int64_t blocks_of(const source *s)
{
    int64_t b = perq_export_block_rows(s->cols);
    return (s->rows + b - 1) / b;
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void assert_same_file(const char *a, const char *b)
{
    char *x, *y;
    size_t nx, ny;
    perq_err err = {0};
    assert_int_equal(perq_read_file(a, 0, &x, &nx, &err), 0);
    assert_int_equal(perq_read_file(b, 0, &y, &ny, &err), 0);
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    free(x);
    free(y);
}

/* ---- compressed-tensors ---------------------------------------------------------- */

enum { CT_ROWS = 600, CT_COLS = 4096 }; /* 3 blocks of rows: 256, 256, 88 */

/* An embedding (BF16) and a head (F16) around a norm (F32): from memory, or
 * from the sources. Returns perq_ct_write's result. */
static int write_ct(bool by_rows, source *embed, source *head, const char *out, perq_err *err)
{
    perq_ct_options opt = {0, 16, 0};
    perq_ct_export *x = perq_ct_new(&opt);
    assert_non_null(x);
    const int64_t table[2] = {CT_ROWS, CT_COLS}, vec[1] = {CT_COLS};
    float *e = source_values(embed), *h = source_values(head), *norm = source_values(&(source){1, CT_COLS, 2, 0, 0, -1});
    if (by_rows) {
        assert_int_equal(perq_ct_add_rows(x, "model.embed_tokens.weight", PERQ_DT_BF16, CT_ROWS, CT_COLS, source_rows,
                                          embed, err), 0);
        assert_int_equal(perq_ct_add_f32(x, "model.norm.weight", PERQ_DT_F32, 1, vec, norm, err), 0);
        assert_int_equal(perq_ct_add_rows(x, "lm_head.weight", PERQ_DT_F16, CT_ROWS, CT_COLS, source_rows, head, err),
                         0);
    } else {
        assert_int_equal(perq_ct_add_f32(x, "model.embed_tokens.weight", PERQ_DT_BF16, 2, table, e, err), 0);
        assert_int_equal(perq_ct_add_f32(x, "model.norm.weight", PERQ_DT_F32, 1, vec, norm, err), 0);
        assert_int_equal(perq_ct_add_f32(x, "lm_head.weight", PERQ_DT_F16, 2, table, h, err), 0);
    }
    free(e);
    free(h);
    free(norm);
    perq_artifact_list files = {0};
    int rc = perq_ct_write(x, model_dir, out, &files, NULL, err);
    perq_artifacts_free(&files);
    perq_ct_free(x);
    return rc;
}

static void test_ct_rows_equal_f32(void **state)
{
    char *dir = *state, *a = in_dir(dir, "a"), *b = in_dir(dir, "b");
    perq_err err = {0};
    assert_int_equal(perq_mkdirs(a, &err), 0);
    assert_int_equal(perq_mkdirs(b, &err), 0);
    source embed = source_of(CT_ROWS, CT_COLS, 1.0f), head = source_of(CT_ROWS, CT_COLS, -0.5f);
    if (write_ct(false, &embed, &head, a, &err) != 0 || write_ct(true, &embed, &head, b, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(embed.calls, blocks_of(&embed));
    assert_int_equal(head.calls, 3);
    assert_int_equal(head.next, CT_ROWS);
    char *fa = in_dir(a, "model.safetensors"), *fb = in_dir(b, "model.safetensors");
    assert_same_file(fa, fb);
    free(fa);
    free(fb);
    free(a);
    free(b);
}

static void test_ct_failing_source(void **state)
{
    char *dir = *state, *out = in_dir(dir, "broken");
    perq_err err = {0};
    assert_int_equal(perq_mkdirs(out, &err), 0);
    source embed = source_of(CT_ROWS, CT_COLS, 1.0f), head = source_of(CT_ROWS, CT_COLS, -0.5f);
    head.fail_from = 256;
    assert_int_not_equal(write_ct(true, &embed, &head, out, &err), 0);
    assert_int_equal(err.code, PERQ_E_IO);
    assert_non_null(strstr(err.msg, "lm_head.weight rows 256..511"));
    assert_non_null(strstr(err.msg, "the source broke"));
    assert_non_null(strstr(err.msg, "model.safetensors"));
    assert_int_equal(head.calls, 2);
    assert_int_equal(dir_entries(out), 0); /* neither the shard nor its temporary file */
    free(out);
}

/* ---- GGUF ------------------------------------------------------------------------ */

enum { GGUF_VOCAB = 20000 }; /* 2 blocks of 64-wide rows: 16384, 3616 */

/* stories260K's shapes with a larger vocabulary and an untied head (unless
 * tied): norms from its checkpoint, linears of zeros, embedding and head from
 * memory or from the sources. Returns perq_gguf_write's result. */
static int write_gguf(bool by_rows, bool tied, perq_gguf_embed type, source *embed, source *head, const char *path,
                      perq_err *err)
{
    perq_llama_config cfg;
    char *config = in_dir(model_dir, "config.json");
    assert_int_equal(perq_llama_config_load(config, &cfg, err), 0);
    free(config);
    cfg.vocab_size = GGUF_VOCAB;
    cfg.tie_word_embeddings = tied;
    perq_gguf_options opt = {"rows test", type};
    perq_gguf_export *x;
    assert_int_equal(perq_gguf_new(&cfg, &opt, &x, err), 0);
    perq_checkpoint ck;
    assert_int_equal(perq_ckpt_open(model_dir, &ck, err), 0);
    for (size_t f = 0; f < ck.n_files; f++)
        for (size_t i = 0; i < ck.files[f].n_tensors; i++) {
            const perq_tensor *t = &ck.files[f].tensors[i];
            size_t len = strlen(t->name);
            if (!strcmp(t->name, "model.embed_tokens.weight"))
                continue;
            if (len < 12 || strcmp(t->name + len - 12, "_proj.weight") != 0) {
                assert_int_equal(perq_gguf_add_tensor(x, t, err), 0);
                continue;
            }
            int rows = (int)t->shape[0], cols = (int)t->shape[1];
            float *zeros = calloc((size_t)rows * cols, sizeof *zeros);
            perq_int4_matrix m;
            assert_int_equal(perq_int4_rtn(zeros, rows, cols, 0, &m, err), 0);
            char prefix[128];
            snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 7), t->name);
            assert_int_equal(perq_gguf_add_linear(x, prefix, &m, err), 0);
            perq_int4_free(&m);
            free(zeros);
        }
    const int64_t table[2] = {GGUF_VOCAB, cfg.hidden_size};
    if (by_rows) {
        assert_int_equal(perq_gguf_add_rows(x, "model.embed_tokens.weight", GGUF_VOCAB, cfg.hidden_size, source_rows,
                                            embed, err), 0);
        assert_int_equal(
            perq_gguf_add_rows(x, "lm_head.weight", GGUF_VOCAB, cfg.hidden_size, source_rows, head, err), 0);
    } else {
        float *e = source_values(embed), *h = source_values(head);
        assert_int_equal(perq_gguf_add_f32(x, "model.embed_tokens.weight", 2, table, e, err), 0);
        assert_int_equal(perq_gguf_add_f32(x, "lm_head.weight", 2, table, h, err), 0);
        free(e);
        free(h);
    }
    int rc = perq_gguf_write(x, model_dir, path, err);
    perq_gguf_free(x);
    perq_ckpt_close(&ck);
    return rc;
}

static void test_gguf_rows_equal_f32(void **state)
{
    char *dir = *state, *a = in_dir(dir, "a.gguf"), *b = in_dir(dir, "b.gguf");
    const perq_gguf_embed types[] = {PERQ_GGUF_EMBED_F16, PERQ_GGUF_EMBED_Q8_0, PERQ_GGUF_EMBED_F32};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        perq_err err = {0};
        source embed = source_of(GGUF_VOCAB, 64, 0.25f), head = source_of(GGUF_VOCAB, 64, -2.0f);
        if (write_gguf(false, false, types[i], &embed, &head, a, &err) != 0 ||
            write_gguf(true, false, types[i], &embed, &head, b, &err) != 0)
            fail_msg("%s", err.msg);
        assert_int_equal(embed.calls, 2);
        assert_int_equal(head.calls, 2);
        assert_int_equal(head.next, GGUF_VOCAB);
        assert_same_file(a, b);
    }
    free(a);
    free(b);
}

static void test_gguf_tied_head_skipped(void **state)
{
    char *dir = *state, *a = in_dir(dir, "tied-a.gguf"), *b = in_dir(dir, "tied-b.gguf");
    perq_err err = {0};
    source embed = source_of(GGUF_VOCAB, 64, 0.25f), head = source_of(GGUF_VOCAB, 64, -2.0f);
    if (write_gguf(false, true, PERQ_GGUF_EMBED_F16, &embed, &head, a, &err) != 0 ||
        write_gguf(true, true, PERQ_GGUF_EMBED_F16, &embed, &head, b, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(head.calls, 0);
    assert_same_file(a, b);
    free(a);
    free(b);
}

static void test_gguf_failing_source(void **state)
{
    char *dir = test_tmpdir("export-rows-gguf"), *path = in_dir(dir, "model.gguf");
    (void)state;
    perq_err err = {0};
    source embed = source_of(GGUF_VOCAB, 64, 0.25f), head = source_of(GGUF_VOCAB, 64, -2.0f);
    embed.fail_from = 16384;
    assert_int_not_equal(write_gguf(true, false, PERQ_GGUF_EMBED_F16, &embed, &head, path, &err), 0);
    assert_int_equal(err.code, PERQ_E_IO);
    assert_non_null(strstr(err.msg, "token_embd.weight rows 16384..19999"));
    assert_non_null(strstr(err.msg, "the source broke"));
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(head.calls, 0); /* the head comes after the embedding in the file */
    assert_int_equal(dir_entries(dir), 0);
    free(path);
    assert_int_equal(perq_remove_tree(dir, &err), 0);
    free(dir);
}

static int setup(void **state)
{
    *state = test_tmpdir("export-rows");
    return 0;
}

int main(void)
{
    model_dir = shared_path("models/stories260K");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ct_rows_equal_f32, setup, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_ct_failing_source, setup, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_gguf_rows_equal_f32, setup, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_gguf_tied_head_skipped, setup, test_remove_tmpdir),
        cmocka_unit_test(test_gguf_failing_source),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(model_dir);
    return rc;
}
