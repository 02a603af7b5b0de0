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
#include "perq/safetensors.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------ */

static int make_tmpdir(void **state)
{
    *state = test_tmpdir("st");
    return 0;
}

static void write_text(const char *path, const char *text)
{
    perq_err err;
    assert_int_equal(perq_write_file_atomic(path, text, strlen(text), &err), 0);
}

/* A safetensors image of exactly 8 + strlen(header) + data_len bytes: the
 * sanitizers see any read past its end. */
static uint8_t *image(uint64_t header_len_field, const char *header, size_t data_len, size_t *len)
{
    size_t hlen = strlen(header);
    *len = 8 + hlen + data_len;
    uint8_t *buf = calloc(1, *len);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(header_len_field >> (8 * i));
    memcpy(buf + 8, header, hlen);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hlen + i] = (uint8_t)i;
    return buf;
}

static void expect_raw_error(uint64_t header_len_field, const char *header, size_t data_len,
                             const char *want)
{
    size_t len;
    uint8_t *buf = image(header_len_field, header, data_len, &len);
    perq_st_file f;
    perq_err err = {0};
    int rc = perq_st_parse(buf, len, &f, &err);
    if (rc == 0 || !strstr(err.msg, want))
        print_error("header %s\n  wanted an error containing: %s\n  got rc %d: %s\n", header, want, rc,
                    err.msg);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, PERQ_E_FORMAT);
    assert_non_null(strstr(err.msg, want));
    assert_null(f.tensors);
    free(buf);
}

static void expect_error(const char *header, size_t data_len, const char *want)
{
    expect_raw_error(strlen(header), header, data_len, want);
}

/* Returns the image, which must outlive f. */
static uint8_t *expect_ok(const char *header, size_t data_len, perq_st_file *f)
{
    size_t len;
    uint8_t *buf = image(strlen(header), header, data_len, &len);
    perq_err err = {0};
    int rc = perq_st_parse(buf, len, f, &err);
    if (rc != 0)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    return buf;
}

/* ---- writer and reader -------------------------------------------------- */

static void test_write_read_round_trip(void **state)
{
    const char *dir = *state;
    char *path = in_dir(dir, "rt.safetensors");
    float f32[6] = {1.0f, -2.0f, 3.5f, 0.0f, -0.0f, 1e-40f};
    uint16_t bf16[4] = {0x3f80, 0x7fc0, 0xff80, 0x0001};
    uint16_t f16[3] = {0x3c00, 0x7e01, 0x8001};
    int32_t scalar = -123456;
    int64_t i64[2] = {INT64_MIN, 42};
    uint8_t nothing = 0;
    int64_t s_f32[2] = {2, 3}, s_bf16[1] = {4}, s_f16[2] = {3, 1}, s_i64[1] = {2};
    int64_t s_empty[3] = {2, 0, 5};

    perq_err err;
    perq_st_writer *w = perq_st_writer_new();
    assert_non_null(w);
    assert_int_equal(perq_st_writer_meta(w, "format", "pt", &err), 0);
    assert_int_equal(perq_st_writer_meta(w, "note", "quote \" and ünïcode", &err), 0);
    assert_int_equal(perq_st_writer_add(w, "w.f32", PERQ_DT_F32, 2, s_f32, f32, &err), 0);
    assert_int_equal(perq_st_writer_add(w, "w.bf16", PERQ_DT_BF16, 1, s_bf16, bf16, &err), 0);
    assert_int_equal(perq_st_writer_add(w, "empty", PERQ_DT_U8, 3, s_empty, &nothing, &err), 0);
    assert_int_equal(perq_st_writer_add(w, "w.f16", PERQ_DT_F16, 2, s_f16, f16, &err), 0);
    assert_int_equal(perq_st_writer_add(w, "scalar", PERQ_DT_I32, 0, NULL, &scalar, &err), 0);
    assert_int_equal(perq_st_writer_add(w, "w.i64", PERQ_DT_I64, 1, s_i64, i64, &err), 0);
    assert_int_equal(perq_st_write(w, path, &err), 0);
    perq_st_writer_free(w);

    perq_st_file f;
    assert_int_equal(perq_st_open(path, &f, &err), 0);
    assert_int_equal(f.n_tensors, 6);
    /* Data is laid out in the order added. */
    const char *order[] = {"w.f32", "w.bf16", "empty", "w.f16", "scalar", "w.i64"};
    for (int i = 0; i < 6; i++)
        assert_string_equal(f.tensors[i].name, order[i]);

    const perq_tensor *t = perq_st_find(&f, "w.f32");
    assert_int_equal(t->dtype, PERQ_DT_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(perq_tensor_numel(t), 6);
    assert_memory_equal(t->data, f32, sizeof f32);
    t = perq_st_find(&f, "w.bf16");
    assert_int_equal(t->dtype, PERQ_DT_BF16);
    assert_memory_equal(t->data, bf16, sizeof bf16);
    t = perq_st_find(&f, "w.f16");
    assert_int_equal(t->shape[1], 1);
    assert_memory_equal(t->data, f16, sizeof f16);
    t = perq_st_find(&f, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(perq_tensor_numel(t), 1);
    assert_int_equal(t->nbytes, 4);
    assert_memory_equal(t->data, &scalar, 4);
    t = perq_st_find(&f, "empty");
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[2], 5);
    assert_int_equal(t->nbytes, 0);
    assert_int_equal(perq_tensor_numel(t), 0);
    t = perq_st_find(&f, "w.i64");
    assert_memory_equal(t->data, i64, sizeof i64);
    assert_null(perq_st_find(&f, "missing"));

    assert_int_equal(f.n_meta, 2);
    assert_string_equal(f.meta[0].key, "format");
    assert_string_equal(f.meta[0].value, "pt");
    assert_string_equal(f.meta[1].value, "quote \" and ünïcode");

    /* Header length a multiple of 8, __metadata__ first, file ends with the data. */
    const uint8_t *raw = f.map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | raw[i];
    assert_int_equal(hlen % 8, 0);
    assert_memory_equal(raw + 8, "{\"__metadata__\":", 16);
    assert_int_equal(f.map_len, 8 + hlen + sizeof f32 + sizeof bf16 + sizeof f16 + 4 + sizeof i64);
    assert_ptr_equal(f.tensors[0].data, raw + 8 + hlen);
    perq_st_close(&f);
    free(path);
}

static void test_writer_without_metadata_or_tensors(void **state)
{
    char *path = in_dir(*state, "empty.safetensors");
    perq_err err;
    perq_st_writer *w = perq_st_writer_new();
    assert_int_equal(perq_st_write(w, path, &err), 0);
    perq_st_writer_free(w);
    perq_st_file f;
    assert_int_equal(perq_st_open(path, &f, &err), 0);
    assert_int_equal(f.n_tensors, 0);
    assert_int_equal(f.n_meta, 0);
    assert_int_equal(f.map_len, 16); /* "{}" padded to 8 */
    perq_st_close(&f);
    free(path);
}

static void test_writer_rejects_bad_tensors(void **state)
{
    (void)state;
    perq_err err;
    float x[2] = {0};
    int64_t shape[1] = {2}, negative[1] = {-1};
    perq_st_writer *w = perq_st_writer_new();
    assert_int_equal(perq_st_writer_add(w, "a", PERQ_DT_F32, 1, shape, x, &err), 0);
    assert_int_equal(perq_st_writer_add(w, "a", PERQ_DT_F32, 1, shape, x, &err), -1);
    assert_non_null(strstr(err.msg, "added twice"));
    assert_int_equal(perq_st_writer_add(w, "__metadata__", PERQ_DT_F32, 1, shape, x, &err), -1);
    assert_non_null(strstr(err.msg, "reserved"));
    assert_int_equal(perq_st_writer_add(w, "b", PERQ_DT_F32, 1, negative, x, &err), -1);
    assert_non_null(strstr(err.msg, "negative"));
    assert_int_equal(perq_st_writer_add(w, "c", PERQ_DT_F32, PERQ_MAX_DIMS + 1, shape, x, &err), -1);
    assert_int_equal(perq_st_writer_add(w, "d", PERQ_DT_COUNT, 1, shape, x, &err), -1);
    assert_int_equal(perq_st_writer_add(w, "e", PERQ_DT_F32, 1, shape, NULL, &err), -1);
    assert_int_equal(perq_st_writer_meta(w, "k", "v", &err), 0);
    assert_int_equal(perq_st_writer_meta(w, "k", "w", &err), -1);
    perq_st_writer_free(w);
}

/* A failed write leaves neither the file nor a temporary behind. */
/* The stream form writes the same bytes as perq_st_write, whatever the chunks. */
static void test_stream_matches_whole_write(void **state)
{
    char *whole = in_dir(*state, "whole.safetensors"), *streamed = in_dir(*state, "streamed.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {0x3f80, 0x4000, 0x4040};
    int64_t s_a[2] = {2, 3}, s_b[1] = {3};
    perq_err err;

    perq_st_writer *w = perq_st_writer_new();
    assert_int_equal(perq_st_writer_meta(w, "format", "pt", &err), 0);
    assert_int_equal(perq_st_writer_add(w, "a", PERQ_DT_F32, 2, s_a, a, &err), 0);
    assert_int_equal(perq_st_writer_add(w, "b", PERQ_DT_BF16, 1, s_b, b, &err), 0);
    assert_int_equal(perq_st_write(w, whole, &err), 0);
    perq_st_writer_free(w);

    w = perq_st_writer_new();
    assert_int_equal(perq_st_writer_meta(w, "format", "pt", &err), 0);
    assert_int_equal(perq_st_writer_declare(w, "a", PERQ_DT_F32, 2, s_a, &err), 0);
    assert_int_equal(perq_st_writer_declare(w, "b", PERQ_DT_BF16, 1, s_b, &err), 0);
    assert_int_equal(perq_st_write(w, streamed, &err), -1); /* declared tensors have no data */
    assert_non_null(strstr(err.msg, "declared"));
    assert_int_equal(perq_st_stream_write(w, a, 4, &err), -1); /* before the header */
    assert_int_equal(perq_st_stream_begin(w, streamed, &err), 0);
    assert_int_equal(perq_st_writer_declare(w, "c", PERQ_DT_F32, 1, s_b, &err), -1); /* header is out */
    assert_int_equal(perq_st_stream_write(w, a, 10, &err), 0); /* chunks need not follow tensors */
    assert_int_equal(perq_st_stream_write(w, (const char *)a + 10, 14, &err), 0);
    assert_int_equal(perq_st_stream_write(w, b, sizeof b, &err), 0);
    assert_int_equal(perq_st_stream_finish(w, &err), 0);
    perq_st_writer_free(w);

    char *x, *y;
    size_t nx, ny;
    assert_int_equal(perq_read_file(whole, 0, &x, &nx, &err), 0);
    assert_int_equal(perq_read_file(streamed, 0, &y, &ny, &err), 0);
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    free(x);
    free(y);
    free(whole);
    free(streamed);
}

/* A stream given too many or too few bytes, or never finished, leaves no file. */
static void test_stream_checks_sizes(void **state)
{
    char *path = in_dir(*state, "s.safetensors");
    float a[4] = {1, 2, 3, 4};
    int64_t s_a[1] = {3};
    perq_err err;
    perq_st_writer *w = perq_st_writer_new();
    assert_int_equal(perq_st_writer_declare(w, "a", PERQ_DT_F32, 1, s_a, &err), 0);

    assert_int_equal(perq_st_stream_begin(w, path, &err), 0);
    assert_int_equal(perq_st_stream_write(w, a, sizeof a, &err), -1);
    assert_non_null(strstr(err.msg, "4 bytes more than the 12"));
    assert_int_equal(perq_st_stream_finish(w, &err), -1); /* the failed write closed it */
    assert_int_equal(access(path, F_OK), -1);

    assert_int_equal(perq_st_stream_begin(w, path, &err), 0);
    assert_int_equal(perq_st_stream_write(w, a, 8, &err), 0);
    assert_int_equal(perq_st_stream_finish(w, &err), -1);
    assert_non_null(strstr(err.msg, "8 of the 12 bytes"));
    assert_int_equal(access(path, F_OK), -1);

    assert_int_equal(perq_st_stream_begin(w, path, &err), 0);
    assert_int_equal(perq_st_stream_write(w, a, 12, &err), 0);
    perq_st_writer_free(w); /* not finished: no file */
    assert_int_equal(access(path, F_OK), -1);
    free(path);
}

static void test_writer_failure_leaves_nothing(void **state)
{
    char *path = in_dir(*state, "bad.safetensors");
    perq_err err;
    perq_st_writer *w = perq_st_writer_new();
    float x = 1.0f;
    int64_t one[1] = {1};
    assert_int_equal(perq_st_writer_add(w, "name\xff", PERQ_DT_F32, 1, one, &x, &err), 0);
    assert_int_equal(perq_st_write(w, path, &err), -1);
    assert_non_null(strstr(err.msg, "UTF-8"));
    perq_st_writer_free(w);
    assert_int_equal(access(path, F_OK), -1);
    free(path);
}

static void test_read_shared_stories260k(void **state)
{
    (void)state;
    char *path = shared_path("models/stories260K/model.safetensors");
    perq_st_file f;
    perq_err err;
    int rc = perq_st_open(path, &f, &err);
    if (rc != 0)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(f.n_tensors, 2 + 5 * 9);
    const perq_tensor *t = perq_st_find(&f, "model.embed_tokens.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, PERQ_DT_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 512);
    assert_int_equal(t->shape[1], 64);
    assert_ptr_equal(t->data, f.tensors[0].data); /* first in the data */
    t = perq_st_find(&f, "model.layers.4.self_attn.k_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 64);
    t = perq_st_find(&f, "model.layers.2.mlp.down_proj.weight");
    assert_int_equal(t->shape[0], 64);
    assert_int_equal(t->shape[1], 172);
    assert_int_equal(t->nbytes, 64 * 172 * 4);
    t = perq_st_find(&f, "model.norm.weight");
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 64);
    assert_int_equal(f.n_meta, 1);
    assert_string_equal(f.meta[0].key, "format");
    /* Norm weights of a trained model are finite and mostly near 1. */
    float v;
    memcpy(&v, t->data, 4);
    assert_true(v > 0.0f && v < 10.0f);
    perq_st_close(&f);
    free(path);
}

static void test_open_errors(void **state)
{
    perq_err err;
    perq_st_file f;
    assert_int_equal(perq_st_open("/nonexistent/x.safetensors", &f, &err), -1);
    assert_int_equal(err.code, PERQ_E_IO);
    assert_int_equal(perq_st_open(*state, &f, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    char *empty = in_dir(*state, "zero.safetensors");
    write_text(empty, "");
    assert_int_equal(perq_st_open(empty, &f, &err), -1);
    assert_int_equal(err.code, PERQ_E_FORMAT);
    assert_non_null(strstr(err.msg, empty)); /* the path prefixes the reason */
    assert_non_null(strstr(err.msg, "shorter than the 8-byte header length"));
    free(empty);
}

/* ---- sharded checkpoints ------------------------------------------------ */

static void write_shard(const char *path, const char *const *names, size_t n, const float *data)
{
    perq_err err;
    int64_t shape[2] = {2, 2};
    perq_st_writer *w = perq_st_writer_new();
    perq_st_writer_meta(w, "format", "pt", &err);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(perq_st_writer_add(w, names[i], PERQ_DT_F32, 2, shape, data + 4 * i, &err), 0);
    assert_int_equal(perq_st_write(w, path, &err), 0);
    perq_st_writer_free(w);
}

static const char *const shard1_names[] = {"model.embed_tokens.weight", "model.layers.0.a.weight"};
static const char *const shard2_names[] = {"model.layers.0.b.weight", "model.norm.weight"};
static const float shard_data[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static void write_sharded(const char *dir, const char *index)
{
    char *s1 = in_dir(dir, "model-00001-of-00002.safetensors");
    char *s2 = in_dir(dir, "model-00002-of-00002.safetensors");
    char *ix = in_dir(dir, "model.safetensors.index.json");
    write_shard(s1, shard1_names, 2, shard_data);
    write_shard(s2, shard2_names, 2, shard_data + 8);
    write_text(ix, index);
    free(s1);
    free(s2);
    free(ix);
}

static const char good_index[] =
    "{\"metadata\": {\"total_size\": 64}, \"weight_map\": {"
    "\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\","
    "\"model.layers.0.a.weight\": \"model-00001-of-00002.safetensors\","
    "\"model.layers.0.b.weight\": \"model-00002-of-00002.safetensors\","
    "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}";

static void test_sharded_checkpoint(void **state)
{
    const char *dir = *state;
    write_sharded(dir, good_index);
    perq_checkpoint c;
    perq_err err;
    int rc = perq_ckpt_open(dir, &c, &err);
    if (rc != 0)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(c.n_files, 2);
    for (int i = 0; i < 2; i++) {
        const perq_tensor *a = perq_ckpt_find(&c, shard1_names[i]);
        const perq_tensor *b = perq_ckpt_find(&c, shard2_names[i]);
        assert_non_null(a);
        assert_non_null(b);
        assert_memory_equal(a->data, shard_data + 4 * i, 16);
        assert_memory_equal(b->data, shard_data + 8 + 4 * i, 16);
    }
    assert_null(perq_ckpt_find(&c, "lm_head.weight"));
    perq_ckpt_close(&c);
    assert_null(c.files);
}

static void test_single_file_checkpoint(void **state)
{
    (void)state;
    char *dir = shared_path("models/stories260K");
    perq_checkpoint c;
    perq_err err;
    assert_int_equal(perq_ckpt_open(dir, &c, &err), 0);
    assert_int_equal(c.n_files, 1);
    assert_non_null(perq_ckpt_find(&c, "model.layers.0.self_attn.q_proj.weight"));
    perq_ckpt_close(&c);
    free(dir);
}

static void expect_ckpt_error(const char *dir, const char *want)
{
    perq_checkpoint c;
    perq_err err = {0};
    int rc = perq_ckpt_open(dir, &c, &err);
    if (rc == 0 || !strstr(err.msg, want))
        print_error("wanted an error containing: %s\n  got rc %d: %s\n", want, rc, err.msg);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, want));
    assert_null(c.files);
}

static void test_ckpt_empty_folder(void **state)
{
    expect_ckpt_error(*state, "no model.safetensors or model.safetensors.index.json");
}

static void test_ckpt_tensor_not_in_its_shard(void **state)
{
    write_sharded(*state, "{\"weight_map\": {"
                          "\"model.embed_tokens.weight\": \"model-00002-of-00002.safetensors\"}}");
    expect_ckpt_error(*state, "lists tensor \"model.embed_tokens.weight\" in "
                              "model-00002-of-00002.safetensors, which does not hold it");
}

static void test_ckpt_duplicate_across_shards(void **state)
{
    const char *dir = *state;
    write_sharded(dir, good_index);
    /* Rewrite shard 2 so that it also holds a tensor of shard 1. */
    char *s2 = in_dir(dir, "model-00002-of-00002.safetensors");
    const char *const names[] = {"model.layers.0.b.weight", "model.norm.weight", "model.layers.0.a.weight"};
    write_shard(s2, names, 3, shard_data);
    free(s2);
    expect_ckpt_error(dir, "tensor \"model.layers.0.a.weight\" is in both");
}

static void test_ckpt_shard_outside_folder(void **state)
{
    write_sharded(*state, "{\"weight_map\": {\"model.norm.weight\": \"../model.safetensors\"}}");
    expect_ckpt_error(*state, "not a file of the folder");
}

static void test_ckpt_missing_shard(void **state)
{
    write_sharded(*state, "{\"weight_map\": {\"model.norm.weight\": \"model-00003-of-00003.safetensors\"}}");
    expect_ckpt_error(*state, "model-00003-of-00003.safetensors");
}

static void test_ckpt_bad_index(void **state)
{
    write_sharded(*state, "{\"weight_map\": [1, 2]}");
    expect_ckpt_error(*state, "has no weight_map object");
    write_sharded(*state, "{\"weight_map\": {\"model.norm.weight\": 3}}");
    expect_ckpt_error(*state, "weight_map entry of \"model.norm.weight\" is not a string");
    write_sharded(*state, "{\"weight_map\": {}}");
    expect_ckpt_error(*state, "weight_map is empty");
    write_sharded(*state, "{\"weight_map\": ");
    expect_ckpt_error(*state, "model.safetensors.index.json is not valid JSON");
}

/* ---- header violations, one per test ------------------------------------ */

#define T_OK "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static void test_bad_file_too_short(void **state)
{
    (void)state;
    perq_st_file f;
    perq_err err;
    const uint8_t five[5] = {1, 0, 0, 0, 0};
    assert_int_equal(perq_st_parse(five, sizeof five, &f, &err), -1);
    assert_int_equal(err.code, PERQ_E_FORMAT);
    assert_non_null(strstr(err.msg, "file is 5 bytes, shorter than the 8-byte header length"));
}

static void test_bad_header_length_zero(void **state)
{
    (void)state;
    expect_raw_error(0, "{}", 0, "header length is 0");
}

static void test_bad_header_length_over_limit(void **state)
{
    (void)state;
    expect_raw_error(PERQ_ST_MAX_HEADER + 1, "{}", 0, "exceeds the limit");
    expect_raw_error(UINT64_MAX, "{}", 0, "exceeds the limit");
}

static void test_bad_header_length_past_end(void **state)
{
    (void)state;
    expect_raw_error(4096, "{}", 0, "header length 4096 runs past the end of the file (10 bytes)");
}

static void test_bad_json(void **state)
{
    (void)state;
    expect_error("{\"a\": ", 0, "header is not valid JSON");
}

static void test_bad_duplicate_key(void **state)
{
    (void)state;
    expect_error("{\"a\":" T_OK ",\"a\":" T_OK "}", 8, "duplicate");
}

static void test_bad_not_an_object(void **state)
{
    (void)state;
    expect_error("[1, 2]", 0, "header is not a JSON object");
}

static void test_bad_entry_not_object(void **state)
{
    (void)state;
    expect_error("{\"w\": 5}", 0, "tensor \"w\": entry is not an object");
}

static void test_bad_missing_dtype(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor \"w\": missing dtype");
}

static void test_bad_dtype_not_string(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype is not a string");
}

static void test_bad_unknown_dtype(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
                 "tensor \"w\": unknown dtype \"F8_E5M2\"");
}

static void test_bad_missing_shape(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "tensor \"w\": missing shape");
}

static void test_bad_shape_not_array(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "shape is not an array");
}

static void test_bad_shape_negative(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", 8,
                 "tensor \"w\": shape[1] is not a non-negative integer");
}

static void test_bad_shape_not_integer(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
                 "tensor \"w\": shape[0] is not a non-negative integer");
}

static void test_bad_too_many_dims(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
                 "shape has 9 dimensions, more than 8");
}

static void test_bad_missing_offsets(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "tensor \"w\": missing data_offsets");
}

static void test_bad_offsets_not_two_ints(void **state)
{
    (void)state;
    const char *want = "data_offsets is not an array of two non-negative integers";
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8, want);
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",8]}}", 8, want);
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, want);
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{}}}", 8, want);
}

static void test_bad_offsets_begin_after_end(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
                 "tensor \"w\": data_offsets begin 8 is after end 0");
}

static void test_bad_size_overflow(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
                 "tensor \"w\": shape times dtype size overflows 64 bits");
}

static void test_bad_size_mismatch(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"BF16\",\"shape\":[3,4],\"data_offsets\":[0,20]}}", 20,
                 "tensor \"w\": shape and dtype BF16 need 24 bytes but data_offsets span 20");
}

static void test_bad_not_starting_at_zero(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                 "tensor \"w\": data begins at offset 4, but the data must start at 0");
}

static void test_bad_overlap(void **state)
{
    (void)state;
    expect_error("{\"a\":" T_OK ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                 "tensor \"b\" overlaps tensor \"a\"");
}

static void test_bad_same_offsets(void **state)
{
    (void)state;
    expect_error("{\"a\":" T_OK ",\"b\":" T_OK "}", 8, "tensor \"b\" overlaps tensor \"a\"");
}

static void test_bad_hole(void **state)
{
    (void)state;
    expect_error("{\"a\":" T_OK ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20,
                 "hole of 4 unused bytes between tensor \"a\" and \"b\"");
}

static void test_bad_data_past_end(void **state)
{
    (void)state;
    expect_error("{\"w\":" T_OK "}", 6, "tensor \"w\": data_offsets end 8 is past the end of the file (6 data bytes)");
}

static void test_bad_bytes_after_data(void **state)
{
    (void)state;
    expect_error("{\"w\":" T_OK "}", 9, "1 bytes after the end of the last tensor's data");
    expect_error("{}", 3, "3 bytes after the end of the last tensor's data");
}

static void test_bad_metadata_not_object(void **state)
{
    (void)state;
    expect_error("{\"__metadata__\": [\"format\", \"pt\"]}", 0, "__metadata__ is not an object");
}

static void test_bad_metadata_value_not_string(void **state)
{
    (void)state;
    expect_error("{\"__metadata__\": {\"format\": \"pt\", \"step\": 1000}}", 0,
                 "__metadata__ value of \"step\" is not a string");
}

static void test_bad_unknown_key(void **state)
{
    (void)state;
    expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"stride\":[1]}}", 8,
                 "tensor \"w\": unknown key \"stride\"");
}

/* Legal corner cases stay legal. */
static void test_zero_size_tensors_are_legal(void **state)
{
    (void)state;
    perq_st_file f;
    uint8_t *buf = expect_ok("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},\"a\":" T_OK
              ",\"y\":{\"dtype\":\"I64\",\"shape\":[4,0],\"data_offsets\":[8,8]}}   ",
              8, &f);
    assert_int_equal(f.n_tensors, 3);
    assert_string_equal(f.tensors[0].name, "z");
    assert_string_equal(f.tensors[1].name, "a");
    assert_string_equal(f.tensors[2].name, "y");
    assert_int_equal(perq_st_find(&f, "y")->nbytes, 0);
    perq_st_close(&f);
    free(buf);

    /* A huge dimension next to a zero one holds no bytes and does not overflow. */
    buf = expect_ok("{\"z\":{\"dtype\":\"F64\",\"shape\":[0,9223372036854775807],\"data_offsets\":[0,0]}}", 0, &f);
    assert_int_equal(perq_tensor_numel(&f.tensors[0]), 0);
    perq_st_close(&f);
    free(buf);

    buf = expect_ok("{\"__metadata__\":{}}", 0, &f);
    assert_int_equal(f.n_tensors, 0);
    perq_st_close(&f);
    free(buf);
}

/* Tensors listed out of data order come back sorted by offset. */
static void test_sorted_by_offset(void **state)
{
    (void)state;
    perq_st_file f;
    uint8_t *buf = expect_ok("{\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[2,5]},"
              "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}",
              5, &f);
    assert_string_equal(f.tensors[0].name, "a");
    assert_string_equal(f.tensors[1].name, "b");
    assert_int_equal(((const uint8_t *)f.tensors[1].data)[0], 2); /* image() fills data with 0, 1, 2, ... */
    perq_st_close(&f);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_read_round_trip, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_writer_without_metadata_or_tensors, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test(test_writer_rejects_bad_tensors),
        cmocka_unit_test_setup_teardown(test_writer_failure_leaves_nothing, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_stream_matches_whole_write, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_stream_checks_sizes, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test(test_read_shared_stories260k),
        cmocka_unit_test_setup_teardown(test_open_errors, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_sharded_checkpoint, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test(test_single_file_checkpoint),
        cmocka_unit_test_setup_teardown(test_ckpt_empty_folder, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_ckpt_tensor_not_in_its_shard, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_ckpt_duplicate_across_shards, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_ckpt_shard_outside_folder, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_ckpt_missing_shard, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_ckpt_bad_index, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test(test_bad_file_too_short),
        cmocka_unit_test(test_bad_header_length_zero),
        cmocka_unit_test(test_bad_header_length_over_limit),
        cmocka_unit_test(test_bad_header_length_past_end),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_bad_duplicate_key),
        cmocka_unit_test(test_bad_not_an_object),
        cmocka_unit_test(test_bad_entry_not_object),
        cmocka_unit_test(test_bad_missing_dtype),
        cmocka_unit_test(test_bad_dtype_not_string),
        cmocka_unit_test(test_bad_unknown_dtype),
        cmocka_unit_test(test_bad_missing_shape),
        cmocka_unit_test(test_bad_shape_not_array),
        cmocka_unit_test(test_bad_shape_negative),
        cmocka_unit_test(test_bad_shape_not_integer),
        cmocka_unit_test(test_bad_too_many_dims),
        cmocka_unit_test(test_bad_missing_offsets),
        cmocka_unit_test(test_bad_offsets_not_two_ints),
        cmocka_unit_test(test_bad_offsets_begin_after_end),
        cmocka_unit_test(test_bad_size_overflow),
        cmocka_unit_test(test_bad_size_mismatch),
        cmocka_unit_test(test_bad_not_starting_at_zero),
        cmocka_unit_test(test_bad_overlap),
        cmocka_unit_test(test_bad_same_offsets),
        cmocka_unit_test(test_bad_hole),
        cmocka_unit_test(test_bad_data_past_end),
        cmocka_unit_test(test_bad_bytes_after_data),
        cmocka_unit_test(test_bad_metadata_not_object),
        cmocka_unit_test(test_bad_metadata_value_not_string),
        cmocka_unit_test(test_bad_unknown_key),
        cmocka_unit_test(test_zero_size_tensors_are_legal),
        cmocka_unit_test(test_sorted_by_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
