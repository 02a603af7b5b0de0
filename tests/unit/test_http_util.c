/* perqd's HTTP helpers: names a client may choose, percent decoding, route
 * patterns, Range and If-None-Match, and size parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "http_util.h"

static void test_names(void **state)
{
    (void)state;
    const char *good[] = {"config.json", "model-00001-of-00002.safetensors", "a", "A_b.c-d", "x..y", "9"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_true(http_name_valid(good[i]));
    const char *bad[] = {"", ".", "..", ".hidden", "a/b", "../x", "a b", "a\\b", "caf\xc3\xa9", "a%2Fb",
                         "a:b", "a\nb", "*"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(http_name_valid(bad[i]));
    char longest[PERQ_NAME_MAX + 2];
    memset(longest, 'a', PERQ_NAME_MAX);
    longest[PERQ_NAME_MAX] = '\0';
    assert_true(http_name_valid(longest));
    longest[PERQ_NAME_MAX] = 'a';
    longest[PERQ_NAME_MAX + 1] = '\0';
    assert_false(http_name_valid(longest));
}

static long decode(const char *s, char *out, bool plus)
{
    return http_percent_decode(s, strlen(s), out, plus);
}

static void test_percent_decode(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(decode("a%2Fb", out, false), 3);
    assert_string_equal(out, "a/b");
    assert_int_equal(decode("%2e%2E", out, false), 2);
    assert_string_equal(out, "..");
    assert_int_equal(decode("a+b%20c", out, true), 5);
    assert_string_equal(out, "a b c");
    assert_int_equal(decode("a+b", out, false), 3);
    assert_string_equal(out, "a+b");
    assert_int_equal(decode("", out, false), 0);
    assert_int_equal(decode("caf%C3%A9", out, false), 5);
    /* malformed escapes and NUL bytes are refused */
    assert_int_equal(decode("%", out, false), -1);
    assert_int_equal(decode("%4", out, false), -1);
    assert_int_equal(decode("a%zzb", out, false), -1);
    assert_int_equal(decode("a%00b", out, false), -1);
    assert_int_equal(decode("%4g", out, false), -1);
}

static void test_path_match(void **state)
{
    (void)state;
    char *p[4];
    assert_int_equal(http_path_match("/v1/models", "/v1/models", p, 4), 0);
    assert_int_equal(http_path_match("/v1/models", "/v1/models/", p, 4), -1);
    assert_int_equal(http_path_match("/v1/models", "/v1/model", p, 4), -1);
    assert_int_equal(http_path_match("/v1/models", "/v1/modelsx", p, 4), -1);
    assert_int_equal(http_path_match("/v1/models/:id", "/v1/models", p, 4), -1);
    assert_int_equal(http_path_match("/v1/models/:id", "/v1/models/", p, 4), -1); /* empty param */

    assert_int_equal(http_path_match("/v1/models/:id/files/:name", "/v1/models/m_1/files/config.json", p, 4), 2);
    assert_string_equal(p[0], "m_1");
    assert_string_equal(p[1], "config.json");
    free(p[0]);
    free(p[1]);

    /* params are decoded after splitting: %2F is part of a name, not a separator */
    assert_int_equal(http_path_match("/v1/models/:id/files/:name", "/v1/models/m_1/files/a%2Fb", p, 4), 2);
    assert_string_equal(p[1], "a/b");
    assert_false(http_name_valid(p[1]));
    free(p[0]);
    free(p[1]);
    assert_int_equal(http_path_match("/v1/models/:id/files/:name", "/v1/models/m_1/files/a/b", p, 4), -1);

    /* an undecodable param becomes "%", which no name rule accepts */
    assert_int_equal(http_path_match("/v1/datasets/:name", "/v1/datasets/a%00b", p, 4), 1);
    assert_string_equal(p[0], "%");
    assert_false(http_name_valid(p[0]));
    free(p[0]);

    /* more params than room: no match, nothing leaked */
    assert_int_equal(http_path_match("/:a/:b", "/x/y", p, 1), -1);
    assert_int_equal(http_path_match("/livez", "livez", p, 4), -1);
    assert_int_equal(http_path_match("/", "/", p, 4), 0);
}

static http_range_result range(const char *h, uint64_t size, uint64_t *first, uint64_t *len)
{
    *first = *len = 12345;
    return http_parse_range(h, size, first, len);
}

static void test_range_partial(void **state)
{
    (void)state;
    uint64_t a, n;
    assert_int_equal(range("bytes=0-99", 1000, &a, &n), HTTP_RANGE_PARTIAL);
    assert_int_equal(a, 0);
    assert_int_equal(n, 100);
    assert_int_equal(range("bytes=10-10", 1000, &a, &n), HTTP_RANGE_PARTIAL); /* one byte */
    assert_int_equal(a, 10);
    assert_int_equal(n, 1);
    assert_int_equal(range("bytes=990-", 1000, &a, &n), HTTP_RANGE_PARTIAL); /* open end */
    assert_int_equal(a, 990);
    assert_int_equal(n, 10);
    assert_int_equal(range("bytes=990-5000", 1000, &a, &n), HTTP_RANGE_PARTIAL); /* end clamped */
    assert_int_equal(n, 10);
    assert_int_equal(range("bytes=999-999", 1000, &a, &n), HTTP_RANGE_PARTIAL); /* the last byte */
    assert_int_equal(a, 999);
    assert_int_equal(n, 1);
    assert_int_equal(range("bytes=-100", 1000, &a, &n), HTTP_RANGE_PARTIAL); /* suffix */
    assert_int_equal(a, 900);
    assert_int_equal(n, 100);
    assert_int_equal(range("bytes=-5000", 1000, &a, &n), HTTP_RANGE_PARTIAL); /* suffix longer: all */
    assert_int_equal(a, 0);
    assert_int_equal(n, 1000);
    assert_int_equal(range("Bytes=0-0", 1000, &a, &n), HTTP_RANGE_PARTIAL); /* unit is case-insensitive */
    assert_int_equal(range(" bytes=1-2 ", 1000, &a, &n), HTTP_RANGE_PARTIAL);
    assert_int_equal(range("bytes=, 5-6 ,", 1000, &a, &n), HTTP_RANGE_PARTIAL); /* empty list elements */
    assert_int_equal(a, 5);
    assert_int_equal(n, 2);
    assert_int_equal(range("bytes=0-99999999999999999999999", 1000, &a, &n), HTTP_RANGE_PARTIAL); /* saturates */
    assert_int_equal(n, 1000);
}

static void test_range_unsatisfiable(void **state)
{
    (void)state;
    uint64_t a, n;
    assert_int_equal(range("bytes=1000-", 1000, &a, &n), HTTP_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=1000-2000", 1000, &a, &n), HTTP_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=-0", 1000, &a, &n), HTTP_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=0-", 0, &a, &n), HTTP_RANGE_UNSATISFIABLE); /* an empty file */
    assert_int_equal(range("bytes=-5", 0, &a, &n), HTTP_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=99999999999999999999999-", 1000, &a, &n), HTTP_RANGE_UNSATISFIABLE);
    assert_int_equal(a, 12345); /* untouched */
}

static void test_range_ignored(void **state)
{
    (void)state;
    uint64_t a, n;
    const char *ignored[] = {
        NULL, "", "bytes=", "bytes", "items=0-5", "bytes=5-3", "bytes=a-b", "bytes=0-1x", "bytes=1",
        "bytes=--1", "bytes=0-1,5-6", /* several ranges: the whole file */
        "bytes=0 -1", "bytes=-", "bytes=-1-2", "bytes 0-1",
    };
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++) {
        assert_int_equal(range(ignored[i], 1000, &a, &n), HTTP_RANGE_NONE);
        assert_int_equal(a, 12345);
    }
}

static void test_etag(void **state)
{
    (void)state;
    const char *tag = "\"abc\"";
    assert_true(http_etag_matches("\"abc\"", tag));
    assert_true(http_etag_matches("*", tag));
    assert_true(http_etag_matches("\"x\", \"abc\"", tag));
    assert_true(http_etag_matches("W/\"abc\"", tag)); /* weak comparison */
    assert_true(http_etag_matches("\"x\",\"abc\"", tag));
    assert_false(http_etag_matches(NULL, tag));
    assert_false(http_etag_matches("", tag));
    assert_false(http_etag_matches("\"abcd\"", tag));
    assert_false(http_etag_matches("\"ab\"", tag));
    assert_false(http_etag_matches("abc", tag)); /* not quoted */
    assert_false(http_etag_matches("\"abc", tag));
    assert_false(http_etag_matches("\"x\", abc", tag));
}

static void test_sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_true(http_parse_u64("0", &v) && v == 0);
    assert_true(http_parse_u64("18446744073709551615", &v) && v == UINT64_MAX);
    assert_false(http_parse_u64("18446744073709551616", &v));
    assert_false(http_parse_u64("", &v));
    assert_false(http_parse_u64("-1", &v));
    assert_false(http_parse_u64("12a", &v));
    assert_false(http_parse_u64(NULL, &v));

    assert_int_equal(perqd_parse_size("2000000", &v), 0);
    assert_int_equal(v, 2000000);
    assert_int_equal(perqd_parse_size("64G", &v), 0);
    assert_int_equal(v, (uint64_t)64 << 30);
    assert_int_equal(perqd_parse_size("512MiB", &v), 0);
    assert_int_equal(v, (uint64_t)512 << 20);
    assert_int_equal(perqd_parse_size("1k", &v), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(perqd_parse_size("1kb", &v), 0);
    assert_int_equal(perqd_parse_size("x", &v), -1);
    assert_int_equal(perqd_parse_size("1x", &v), -1);
    assert_int_equal(perqd_parse_size("-1", &v), -1);
    assert_int_equal(perqd_parse_size("99999999999T", &v), -1); /* overflow */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_percent_decode),
        cmocka_unit_test(test_path_match),
        cmocka_unit_test(test_range_partial),
        cmocka_unit_test(test_range_unsatisfiable),
        cmocka_unit_test(test_range_ignored),
        cmocka_unit_test(test_etag),
        cmocka_unit_test(test_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
