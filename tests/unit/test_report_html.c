/* report.html from hand-made reports: one chart per figure with one bar per
 * value (the values in data-value), text escaped, nothing external, timings
 * taken from a manifest, a job's metrics or a bare object, sections without
 * data replaced by a note, and the file written atomically. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "report_html.h"
#include "report_svg.h"

/* A perq W4A4 report of three layers, with a model name that needs escaping. */
static json_t *perq_report(void)
{
    json_t *layers = json_array();
    for (int l = 0; l < 3; l++)
        json_array_append_new(layers, json_pack("{si s{si ss sf sf sf sf sf sf}}", "index", l, "down_proj_input",
                                                "block_size", 16, "permutation", "massdiff", "mass_ratio_before",
                                                2.0 + l, "mass_ratio_after", 1.25 + 0.01 * l,
                                                "max_abs_rotated_before", 10.0 * (l + 1), "max_abs_rotated_after",
                                                5.0 * (l + 1), "act_error_before", 0.03, "act_error_after", 0.02));
    json_t *spec = json_pack("{ss ss s{si sn ss} s{si} s{ss si ss} s{si si}}", "model", "<Llama & \"friends\">",
                             "method", "perq", "weights", "bits", 4, "group_size", "algorithm", "gptq", "activations",
                             "bits", 4, "rotation", "mode", "full", "block_size", 16, "permutation", "massdiff",
                             "calibration", "samples", 16, "seq_len", 512);
    json_t *r = json_pack("{si ss so s{s{si ss ss sb}} so s{ss si si si sf sf}}", "format_version", 1, "method",
                          "perq", "spec", spec, "rotations", "r3", "width", 16, "kind", "sylvester", "how",
                          "sylvester(16)", "online", 1, "layers", layers, "eval", "protocol", "llama.cpp", "ctx", 256,
                          "chunks", 8, "tokens_scored", 1016, "ppl_float", 5.5, "ppl_quantized", 6.25);
    assert_non_null(r);
    return r;
}

static char *render(const json_t *report, const json_t *timings_from, const char *dir)
{
    char *path = in_dir(dir, "report.html");
    perq_err err = {0};
    if (perq_report_html_write(report, timings_from, path, &err) != 0)
        fail_msg("%s", err.msg);
    char *page;
    size_t len;
    assert_int_equal(perq_read_file(path, 0, &page, &len, &err), 0);
    assert_int_equal(strlen(page), len);
    free(path);
    return page;
}

static int count(const char *haystack, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(haystack, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* data-bars of the chart named id, -1 when there is no such chart. */
static int bars_of(const char *page, const char *id)
{
    char key[128];
    snprintf(key, sizeof key, "data-chart=\"%s\" data-bars=\"", id);
    const char *p = strstr(page, key);
    return p ? atoi(p + strlen(key)) : -1;
}

static void test_perq_report(void **state)
{
    json_t *r = perq_report();
    json_t *manifest = json_pack("{s{sf sf sf}}", "timings", "loading", 0.5, "calibrating", 3.0, "total", 4.0);
    char *page = render(r, manifest, *state);
    assert_int_equal(strncmp(page, "<!DOCTYPE html>", 15), 0);
    assert_int_equal(bars_of(page, "mass_ratio"), 6);
    assert_int_equal(bars_of(page, "max_abs"), 6);
    assert_int_equal(bars_of(page, "act_error"), 6);
    assert_int_equal(bars_of(page, "perplexity"), 2);
    assert_int_equal(bars_of(page, "timings"), 2); /* total is the caption, not a bar */
    assert_int_equal(count(page, "<rect class=\"bar\""), 6 * 3 + 2 + 2);
    assert_non_null(strstr(page, "data-series=\"before\" data-category=\"2\" data-value=\"4\""));
    assert_non_null(strstr(page, "data-series=\"after\" data-category=\"1\" data-value=\"1.26\""));
    assert_non_null(strstr(page, "data-value=\"6.25\""));
    assert_non_null(strstr(page, "+13.6% vs float"));
    assert_non_null(strstr(page, "4.00 s in all"));
    assert_non_null(strstr(page, "sylvester(16)"));
    assert_non_null(strstr(page, "W4A4"));
    assert_non_null(strstr(page, "perq \u00b7 W4A4 \u00b7 GPTQ weights, one scale per channel \u00b7 rotation full, blocks "
                                 "of 16, massdiff permutation \u00b7 calibration 16 \u00d7 512 tokens"));
    /* escaped everywhere, and self-contained */
    assert_null(strstr(page, "<Llama"));
    assert_non_null(strstr(page, "&lt;Llama &amp; &quot;friends&quot;&gt;"));
    assert_null(strstr(page, "<script"));
    assert_null(strstr(page, "src="));
    assert_null(strstr(page, "href="));
    assert_null(strstr(page, "url("));
    free(page);
    json_decref(manifest);
    json_decref(r);
}

/* The three shapes timings come in give the same chart. */
static void test_timings_sources(void **state)
{
    json_t *r = perq_report();
    json_t *bare = json_pack("{sf sf sf sf}", "loading", 1.0, "exporting", 2.0, "evaluating", 3.0, "total", 6.5);
    json_t *metrics = json_pack("{sO sf}", "seconds", bare, "ppl_float", 5.5);
    json_t *manifest = json_pack("{sO}", "timings", bare);
    const json_t *sources[3] = {bare, metrics, manifest};
    for (int i = 0; i < 3; i++) {
        char *page = render(r, sources[i], *state);
        assert_int_equal(bars_of(page, "timings"), 3);
        assert_non_null(strstr(page, "data-category=\"exporting\" data-value=\"2\""));
        assert_non_null(strstr(page, "6.50 s"));
        free(page);
    }
    char *page = render(r, NULL, *state);
    assert_int_equal(bars_of(page, "timings"), -1);
    assert_non_null(strstr(page, "timings not given"));
    free(page);
    json_decref(manifest);
    json_decref(metrics);
    json_decref(bare);
    json_decref(r);
}

/* An rtn job: no per-layer figures, a note instead of empty charts; a failed
 * evaluation's null perplexity draws no bar. */
static void test_rtn_report(void **state)
{
    json_t *r = json_pack("{si ss s{si sn ss} s[{si sn sn}] s{ss si si si sf sn}}", "format_version", 1, "method",
                          "rtn", "weights", "bits", 4, "group_size", "algorithm", "rtn", "layers", "index", 0,
                          "permutation", "rotation", "eval", "protocol", "llama.cpp", "ctx", 128, "chunks", 2,
                          "tokens_scored", 126, "ppl_float", 4.0, "ppl_quantized");
    assert_non_null(r);
    char *page = render(r, NULL, *state);
    assert_int_equal(bars_of(page, "mass_ratio"), -1);
    assert_int_equal(bars_of(page, "perplexity"), 1);
    assert_non_null(strstr(page, "neither permuted nor rotated"));
    assert_non_null(strstr(page, "rtn \u00b7 W4A16 \u00b7 RTN weights"));
    assert_non_null(strstr(page, "n/a"));
    free(page);
    json_decref(r);
}

/* Only report.html in the folder afterwards: no temporary file left. */
static void test_atomic_and_errors(void **state)
{
    json_t *r = perq_report();
    free(render(r, NULL, *state));
    free(render(r, NULL, *state));
    DIR *d = opendir(*state);
    assert_non_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') {
            assert_string_equal(e->d_name, "report.html");
            files++;
        }
    closedir(d);
    assert_int_equal(files, 1);
    perq_err err = {0};
    char *missing = in_dir(*state, "no/such/dir/report.html");
    assert_int_equal(perq_report_html_write(r, NULL, missing, &err), -1);
    assert_int_equal(err.code, PERQ_E_IO);
    json_t *not_object = json_array();
    assert_int_equal(perq_report_html_write(not_object, NULL, missing, &err), -1);
    assert_int_equal(err.code, PERQ_E_INVALID);
    free(missing);
    json_decref(not_object);
    json_decref(r);
}

/* Many layers: every bar drawn, tick labels thinned, values not printed. */
static void test_many_layers(void **state)
{
    (void)state;
    enum { N = 80 };
    double before[N], after[N];
    char names[N][8];
    const char *labels[N];
    for (int i = 0; i < N; i++) {
        before[i] = 1 + i;
        after[i] = i % 7 ? 0.5 * i : NAN;
        snprintf(names[i], sizeof names[i], "%d", i);
        labels[i] = names[i];
    }
    const perq_svg_series series[2] = {{"before", "#999", before}, {"after", "#00f", after}};
    perq_svg_bars chart = {"big", "t", "layer", "y", labels, N, series, 2, NAN, NULL};
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    int drawn = perq_svg_grouped_bars(out, &chart);
    fclose(out);
    assert_int_equal(drawn, N + N - (N + 6) / 7);
    assert_int_equal(count(buf, "<rect class=\"bar\""), drawn);
    assert_int_equal(count(buf, "class=\"value\""), 0);
    assert_true(count(buf, "class=\"tick\"") < N / 2 + 10);
    free(buf);
}

static int make_dir(void **state)
{
    *state = test_tmpdir("report-html");
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_perq_report, make_dir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_timings_sources, make_dir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_rtn_report, make_dir, test_remove_tmpdir),
        cmocka_unit_test_setup_teardown(test_atomic_and_errors, make_dir, test_remove_tmpdir),
        cmocka_unit_test(test_many_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
