#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "perq/fsutil.h"
#include "testutil.h"

static int make_tmpdir(void **state)
{
    *state = test_tmpdir("fsutil");
    return 0;
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_sha256_known_digests(void **state)
{
    (void)state;
    char hex[65];
    perq_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    perq_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    /* Streaming in pieces gives the same digest as one call. */
    const char *msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    perq_sha256 *s = perq_sha256_new();
    assert_non_null(s);
    for (size_t i = 0; i < strlen(msg); i += 5)
        perq_sha256_update(s, msg + i, strlen(msg) - i < 5 ? strlen(msg) - i : 5);
    perq_sha256_final_hex(s, hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_sha256_file_matches_sha256sum(void **state)
{
    (void)state;
    char *path = shared_path("models/stories260K/model.safetensors");
    char hex[65];
    uint64_t bytes = 0;
    perq_err err;
    assert_int_equal(perq_sha256_file(path, hex, &bytes, &err), 0);
    assert_string_equal(hex, "407a7c581bdd66972383ce9ad24857713fb98786d06ea564a2fe9b34ebe77dfd");
    assert_int_equal(bytes, 1044992);
    free(path);

    assert_int_equal(perq_sha256_file("/nonexistent/perq", hex, &bytes, &err), -1);
    assert_int_equal(err.code, PERQ_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/perq"));
}

static void test_atomic_write_leaves_no_temp(void **state)
{
    char *path = in_dir(*state, "out.json");
    perq_err err;
    assert_int_equal(perq_write_file_atomic(path, "first", 5, &err), 0);
    assert_int_equal(perq_write_file_atomic(path, "second!", 7, &err), 0);
    assert_int_equal(count_entries(*state), 1);

    char *data;
    size_t len;
    assert_int_equal(perq_read_file(path, 0, &data, &len, &err), 0);
    assert_int_equal(len, 7);
    assert_string_equal(data, "second!");
    free(data);

    /* A write that cannot happen leaves the old file and no temporary. */
    char *missing = in_dir(*state, "no/such/dir/file");
    assert_int_equal(perq_write_file_atomic(missing, "x", 1, &err), -1);
    assert_int_equal(count_entries(*state), 1);
    free(missing);
    free(path);
}

static void test_atomic_file_abort_removes_temp(void **state)
{
    char *path = in_dir(*state, "big.bin");
    perq_err err;
    perq_atomic_file f;
    assert_int_equal(perq_atomic_open(&f, path, &err), 0);
    assert_int_equal(perq_atomic_write(&f, "abc", 3, &err), 0);
    assert_int_equal(count_entries(*state), 1);  /* only the temporary */
    assert_int_equal(access(path, F_OK), -1);     /* not visible under its name */
    perq_atomic_abort(&f);
    assert_int_equal(count_entries(*state), 0);

    assert_int_equal(perq_atomic_open(&f, path, &err), 0);
    assert_int_equal(perq_atomic_write(&f, "abc", 3, &err), 0);
    assert_int_equal(perq_atomic_commit(&f, &err), 0);
    perq_atomic_abort(&f); /* harmless after commit */
    assert_int_equal(count_entries(*state), 1);
    assert_int_equal(access(path, F_OK), 0);
    free(path);
}

static void test_read_file_limit(void **state)
{
    char *path = in_dir(*state, "ten");
    perq_err err;
    assert_int_equal(perq_write_file_atomic(path, "0123456789", 10, &err), 0);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(perq_read_file(path, 10, &data, &len, &err), 0);
    assert_int_equal(len, 10);
    assert_int_equal(data[10], '\0');
    free(data);
    assert_int_equal(perq_read_file(path, 9, &data, &len, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_null(data);
    free(path);
}

static void test_copy_and_mkdirs(void **state)
{
    char *deep = in_dir(*state, "a/b/c");
    char *dst = in_dir(*state, "a/b/c/copy.safetensors");
    char *src = shared_path("models/stories260K/model.safetensors");
    perq_err err;
    assert_int_equal(perq_mkdirs(deep, &err), 0);
    assert_int_equal(perq_mkdirs(deep, &err), 0); /* already there: fine */
    assert_int_equal(perq_copy_file(src, dst, &err), 0);
    char a[65], b[65];
    assert_int_equal(perq_sha256_file(src, a, NULL, &err), 0);
    assert_int_equal(perq_sha256_file(dst, b, NULL, &err), 0);
    assert_string_equal(a, b);
    assert_int_equal(count_entries(deep), 1);

    /* mkdirs over a file is an error. */
    assert_int_equal(perq_mkdirs(dst, &err), -1);
    free(deep);
    free(dst);
    free(src);
}

static void test_remove_tree_keeps_symlink_targets(void **state)
{
    char *keep = in_dir(*state, "keep");
    char *keep_file = in_dir(*state, "keep/precious");
    char *doomed = in_dir(*state, "doomed/x/y");
    char *link = in_dir(*state, "doomed/x/link");
    char *top = in_dir(*state, "doomed");
    perq_err err;
    assert_int_equal(perq_mkdirs(keep, &err), 0);
    assert_int_equal(perq_write_file_atomic(keep_file, "p", 1, &err), 0);
    assert_int_equal(perq_mkdirs(doomed, &err), 0);
    assert_int_equal(symlink(keep, link), 0);

    assert_int_equal(perq_remove_tree(top, &err), 0);
    assert_int_equal(access(top, F_OK), -1);
    assert_int_equal(access(keep_file, F_OK), 0);
    assert_int_equal(perq_remove_tree(top, &err), 0); /* already gone: fine */
    free(keep);
    free(keep_file);
    free(doomed);
    free(link);
    free(top);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known_digests),
        cmocka_unit_test(test_sha256_file_matches_sha256sum),
        cmocka_unit_test_setup_teardown(test_atomic_write_leaves_no_temp, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_atomic_file_abort_removes_temp, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_read_file_limit, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_copy_and_mkdirs, make_tmpdir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_remove_tree_keeps_symlink_targets, make_tmpdir, test_remove_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
