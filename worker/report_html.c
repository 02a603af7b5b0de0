/* report.html from report.json (see report_html.h). */
#include "report_html.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"
#include "perq/fsutil.h"
#include "report_svg.h"

#define COLOR_BEFORE "#a3adba"
#define COLOR_AFTER "#2563eb"
#define COLOR_FLOAT "#64748b"
#define COLOR_QUANT "#2563eb"
#define COLOR_TIME "#0d9488"

static const char page_css[] =
    "*{box-sizing:border-box}"
    "body{margin:0;background:#f4f6f9;color:#1f2933;font:15px/1.5 system-ui,-apple-system,'Segoe UI',"
    "Roboto,'DejaVu Sans',sans-serif}"
    "main{max-width:1160px;margin:0 auto;padding:28px 24px 40px}"
    "header h1{margin:0;font-size:26px;font-weight:650;letter-spacing:-.01em}"
    "header .model{color:#2563eb}"
    "header p{margin:4px 0 0;color:#52606d}"
    ".cards{display:grid;grid-template-columns:repeat(4,1fr);gap:14px;margin:22px 0}"
    ".card{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 3px rgba(15,23,42,.08)}"
    ".card .k{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:#7b8794}"
    ".card .v{font-size:24px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}"
    ".card .s{font-size:13px;color:#52606d}"
    ".up{color:#b45309}.down{color:#047857}"
    ".grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}"
    "figure{margin:0;background:#fff;border-radius:10px;padding:14px 14px 10px;"
    "box-shadow:0 1px 3px rgba(15,23,42,.08)}"
    "figure h2,section h2{margin:0 0 4px;font-size:16px;font-weight:620}"
    "figcaption{font-size:13px;color:#52606d;margin-bottom:6px}"
    "svg.chart{display:block;width:100%;height:auto}"
    ".chart text{font-family:inherit;fill:#3e4c59}"
    ".chart .tick{font-size:11px}.chart .label{font-size:12px;font-weight:600}"
    ".chart .value{font-size:10.5px;fill:#1f2933}.chart .legend{font-size:12px}"
    ".chart .grid{stroke:#e4e7eb}.chart .axis{stroke:#9aa5b1}"
    ".chart .reference{stroke:#dc2626;stroke-width:1.5;stroke-dasharray:5 4}"
    ".note{background:#fff;border-radius:10px;padding:14px 16px;color:#52606d;"
    "box-shadow:0 1px 3px rgba(15,23,42,.08)}"
    "section{margin-top:22px}"
    "table{border-collapse:collapse;width:100%;background:#fff;border-radius:10px;overflow:hidden;"
    "box-shadow:0 1px 3px rgba(15,23,42,.08);font-size:13px;font-variant-numeric:tabular-nums}"
    "th,td{padding:7px 12px;text-align:right;border-bottom:1px solid #eef0f3}"
    "th{background:#f8fafc;font-weight:600;color:#3e4c59}"
    "td:first-child,th:first-child,.t{text-align:left}"
    "table.plain{box-shadow:none;border-radius:0}"
    "code{font-size:12.5px}"
    "footer{margin-top:28px;font-size:12px;color:#7b8794}";

/* ---- reading report.json ------------------------------------------------------------ */

static double number_at(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *string_at(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static const json_t *timings_of(const json_t *from)
{
    if (!json_is_object(from))
        return NULL;
    const json_t *t = json_object_get(from, "timings");
    if (json_is_object(t))
        return t;
    t = json_object_get(from, "seconds");
    if (json_is_object(t))
        return t;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)from, key, v)
    if (!json_is_number(v))
        return NULL;
    return from;
}

/* Appends to a fixed buffer, truncating quietly. */
typedef struct text {
    char buf[512];
    size_t len;
} text;

static void append(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(text *t, const char *fmt, ...)
{
    if (t->len >= sizeof t->buf - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len = t->len + (size_t)n < sizeof t->buf ? t->len + (size_t)n : sizeof t->buf - 1;
}

/* "perq · W4A4 · INT4 weights, GPTQ, groups of 128 · rotation full, R3 blocks of 16, massdiff ·
 * calibration 16 x 512 tokens" */
static void spec_summary(const json_t *report, text *t)
{
    const json_t *spec = json_object_get(report, "spec");
    const json_t *weights = json_object_get(spec, "weights");
    if (!weights)
        weights = json_object_get(report, "weights");
    const char *method = string_at(report, "method");
    append(t, "%s", method ? method : "job");
    double abits = number_at(json_object_get(spec, "activations"), "bits");
    append(t, " \u00b7 W%dA%d", weights && isfinite(number_at(weights, "bits")) ? (int)number_at(weights, "bits") : 4,
           isfinite(abits) ? (int)abits : 16);
    if (weights) {
        const char *algo = string_at(weights, "algorithm");
        double group = number_at(weights, "group_size");
        append(t, " \u00b7 %s weights", algo ? (strcmp(algo, "gptq") ? "RTN" : "GPTQ") : "INT4");
        if (isfinite(group))
            append(t, ", groups of %d", (int)group);
        else
            append(t, ", one scale per channel");
    }
    const json_t *rot = json_object_get(spec, "rotation");
    const char *mode = string_at(rot, "mode");
    if (mode) {
        append(t, " \u00b7 rotation %s", mode);
        double block = number_at(rot, "block_size");
        if (strcmp(mode, "none") != 0 && isfinite(block))
            append(t, ", blocks of %d", (int)block);
        else if (strcmp(mode, "none") != 0)
            append(t, ", full width");
        const char *perm = string_at(rot, "permutation");
        if (perm)
            append(t, ", %s permutation", perm);
    }
    const json_t *cal = json_object_get(spec, "calibration");
    if (isfinite(number_at(cal, "samples")))
        append(t, " \u00b7 calibration %d \u00d7 %d tokens", (int)number_at(cal, "samples"),
               (int)number_at(cal, "seq_len"));
}

/* ---- per-layer figures ---------------------------------------------------------------- */

typedef struct layer_series {
    int n;
    char (*names)[16];
    const char **labels;
    double *mass_before, *mass_after, *max_before, *max_after, *err_before, *err_after;
    int with_data;  /* layers that have a down_proj_input entry */
} layer_series;

static void layer_series_free(layer_series *s)
{
    free(s->names);
    free(s->labels);
    free(s->mass_before);
    memset(s, 0, sizeof *s);
}

static int layer_series_read(const json_t *layers, layer_series *s)
{
    memset(s, 0, sizeof *s);
    s->n = json_is_array(layers) ? (int)json_array_size(layers) : 0;
    if (s->n == 0)
        return 0;
    s->names = calloc((size_t)s->n, sizeof *s->names);
    s->labels = calloc((size_t)s->n, sizeof *s->labels);
    s->mass_before = malloc(6 * (size_t)s->n * sizeof *s->mass_before);
    if (!s->names || !s->labels || !s->mass_before) {
        layer_series_free(s);
        return -1;
    }
    double *cols[6];
    for (int c = 0; c < 6; c++)
        cols[c] = s->mass_before + (size_t)c * s->n;
    s->mass_after = cols[1], s->max_before = cols[2], s->max_after = cols[3];
    s->err_before = cols[4], s->err_after = cols[5];
    static const char *const keys[6] = {"mass_ratio_before",      "mass_ratio_after", "max_abs_rotated_before",
                                        "max_abs_rotated_after", "act_error_before", "act_error_after"};
    for (int l = 0; l < s->n; l++) {
        const json_t *layer = json_array_get(layers, (size_t)l);
        double index = number_at(layer, "index");
        snprintf(s->names[l], sizeof s->names[l], "%d", isfinite(index) ? (int)index : l);
        s->labels[l] = s->names[l];
        const json_t *d = json_object_get(layer, "down_proj_input");
        s->with_data += json_is_object(d);
        for (int c = 0; c < 6; c++)
            cols[c][l] = number_at(d, keys[c]);
    }
    return 0;
}

static void figure_open(FILE *out, const char *heading, const char *caption)
{
    fputs("<figure><h2>", out);
    perq_html_escape(out, heading);
    fputs("</h2><figcaption>", out);
    perq_html_escape(out, caption);
    fputs("</figcaption>\n", out);
}

static void before_after_chart(FILE *out, const layer_series *s, const char *id, const char *heading,
                               const char *caption, const char *y_label, const double *before, const double *after,
                               double reference, const char *reference_label)
{
    const perq_svg_series series[2] = {{"before", COLOR_BEFORE, before}, {"after", COLOR_AFTER, after}};
    perq_svg_bars chart = {id,       heading, "layer", y_label, s->labels, s->n, series, 2, reference,
                           reference_label};
    figure_open(out, heading, caption);
    perq_svg_grouped_bars(out, &chart);
    fputs("</figure>\n", out);
}

static void layer_charts(FILE *out, const layer_series *s, const char *block)
{
    char caption[256];
    snprintf(caption, sizeof caption,
             "Largest block's share of the l1 mass over the mean block's (blocks of %s channels), "
             "before and after the permutation. 1 is perfectly balanced.", block);
    before_after_chart(out, s, "mass_ratio", "Blockwise l1 mass of the down_proj input", caption,
                       "max / mean block mass", s->mass_before, s->mass_after, 1.0, "balanced");
    before_after_chart(out, s, "max_abs", "Max |x| after the block rotation",
                       "Largest magnitude of the rotated down_proj input, with the identity order (before) "
                       "and with the permutation (after). Lower is easier to quantize.",
                       "max |x R3|", s->max_before, s->max_after, NAN, NULL);
    before_after_chart(out, s, "act_error", "INT4 error of the rotated down_proj input",
                       "Mean per-token relative squared error of INT4 activation quantization after the "
                       "rotation, before and after the permutation.",
                       "||x - Q(x)||\u00b2 / ||x||\u00b2", s->err_before, s->err_after, NAN, NULL);
}

/* ---- perplexity, timings -------------------------------------------------------------- */

static void perplexity_chart(FILE *out, const json_t *eval)
{
    double f = number_at(eval, "ppl_float"), q = number_at(eval, "ppl_quantized");
    char note[64] = "";
    if (isfinite(f) && isfinite(q) && f > 0)
        snprintf(note, sizeof note, "%+.1f%% vs float", (q / f - 1) * 100);
    const perq_svg_hbar rows[2] = {{"float", f, COLOR_FLOAT, NULL}, {"quantized", q, COLOR_QUANT, note}};
    char caption[256];
    const char *protocol = string_at(eval, "protocol");
    snprintf(caption, sizeof caption, "%s protocol, ctx %d, %d chunks, %lld tokens scored. Lower is better.",
             protocol ? protocol : "?", (int)number_at(eval, "ctx"), (int)number_at(eval, "chunks"),
             (long long)number_at(eval, "tokens_scored"));
    figure_open(out, "Perplexity", caption);
    perq_svg_hbars(out, "perplexity", "Perplexity of each variant", "perplexity", rows, 2, "%.4f");
    fputs("</figure>\n", out);
}

static void timings_chart(FILE *out, const json_t *timings)
{
    enum { MAX_STAGES = 16 };
    perq_svg_hbar rows[MAX_STAGES];
    int n = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)timings, key, v)
    if (n < MAX_STAGES && strcmp(key, "total") != 0 && json_is_number(v))
        rows[n++] = (perq_svg_hbar){key, json_number_value(v), COLOR_TIME, NULL};
    char caption[128] = "Wall-clock seconds per stage.";
    double total = number_at(timings, "total");
    if (isfinite(total))
        snprintf(caption, sizeof caption, "Wall-clock seconds per stage; %.2f s in all.", total);
    figure_open(out, "Time per stage", caption);
    perq_svg_hbars(out, "timings", "Seconds per stage", "seconds", rows, n, "%.3f s");
    fputs("</figure>\n", out);
}

/* ---- tables ------------------------------------------------------------------------------ */

static void cell_number(FILE *out, double v)
{
    if (isfinite(v))
        fprintf(out, "<td>%.4g</td>", v);
    else
        fputs("<td>\u2013</td>", out);
}

static void rotations_table(FILE *out, const json_t *rotations)
{
    fputs("<figure><h2>Rotations and permutations</h2><figcaption>R1 on the residual stream, R2 per attention "
          "head, R3 at the down_proj input, P1 and P3 channel orders. Folded: merged into the exported weights; "
          "online: applied at inference.</figcaption>"
          "<table class=\"plain\"><tr><th>transform</th><th>width</th><th class=\"t\">construction</th>"
          "<th class=\"t\">applied</th></tr>\n", out);
    const char *key;
    const json_t *r;
    json_object_foreach((json_t *)rotations, key, r)
    {
        if (!json_is_object(r))
            continue;
        fputs("<tr><td>", out);
        perq_html_escape(out, key);
        fputs("</td>", out);
        double width = number_at(r, "width");
        cell_number(out, isfinite(width) ? width : number_at(r, "block_size"));
        fputs("<td class=\"t\"><code>", out);
        perq_html_escape(out, string_at(r, "how") ? string_at(r, "how") : string_at(r, "permutation"));
        fputs("</code>", out);
        double before = number_at(r, "mass_ratio_before"), after = number_at(r, "mass_ratio_after");
        if (isfinite(before) && isfinite(after))
            fprintf(out, ", block mass ratio %.3f \u2192 %.3f", before, after);
        fputs("</td><td class=\"t\">", out);
        const json_t *online = json_object_get(r, "online");
        bool folded = json_is_false(online) || (!online && string_at(r, "permutation"));
        fputs(json_is_true(online) ? "online" : folded ? "folded" : "\u2013", out);
        fputs("</td></tr>\n", out);
    }
    fputs("</table></figure>\n", out);
}

static void layers_table(FILE *out, const layer_series *s)
{
    fputs("<section><h2>Per layer</h2><table><tr><th>layer</th><th>mass ratio before</th><th>after</th>"
          "<th>max |x| before</th><th>after</th><th>INT4 error before</th><th>after</th></tr>\n", out);
    for (int l = 0; l < s->n; l++) {
        fprintf(out, "<tr><td>%s</td>", s->names[l]);
        const double v[6] = {s->mass_before[l], s->mass_after[l], s->max_before[l],
                             s->max_after[l],   s->err_before[l], s->err_after[l]};
        for (int c = 0; c < 6; c++)
            cell_number(out, v[c]);
        fputs("</tr>\n", out);
    }
    fputs("</table></section>\n", out);
}

/* ---- the page ------------------------------------------------------------------------------ */

static void card(FILE *out, const char *key, const char *value, const char *sub, const char *sub_class)
{
    fputs("<div class=\"card\"><div class=\"k\">", out);
    perq_html_escape(out, key);
    fputs("</div><div class=\"v\">", out);
    perq_html_escape(out, value);
    fprintf(out, "</div><div class=\"s%s%s\">", sub_class ? " " : "", sub_class ? sub_class : "");
    perq_html_escape(out, sub);
    fputs("</div></div>\n", out);
}

/* "%.4f" of v, or "n/a". */
static void format_or_na(char *buf, size_t size, const char *fmt, double v)
{
    if (isfinite(v))
        snprintf(buf, size, fmt, v);
    else
        snprintf(buf, size, "n/a");
}

static void cards(FILE *out, const json_t *eval, const json_t *timings, const layer_series *s)
{
    char v[64], sub[128];
    double f = number_at(eval, "ppl_float"), q = number_at(eval, "ppl_quantized");
    bool both = isfinite(f) && isfinite(q) && f > 0;
    fputs("<div class=\"cards\">\n", out);
    format_or_na(v, sizeof v, "%.4f", f);
    card(out, "perplexity, float", v, eval ? "the input model" : "not evaluated", NULL);
    format_or_na(v, sizeof v, "%.4f", q);
    format_or_na(sub, sizeof sub, "%+.1f%% vs float", both ? (q / f - 1) * 100 : NAN);
    card(out, "perplexity, quantized", v, both ? sub : "not evaluated", both ? (q > f ? "up" : "down") : NULL);
    double mb = 0, ma = 0;
    int n = 0;
    for (int l = 0; l < s->n; l++)
        if (isfinite(s->mass_before[l]) && isfinite(s->mass_after[l]))
            mb += s->mass_before[l], ma += s->mass_after[l], n++;
    if (n > 0) {
        snprintf(v, sizeof v, "%.3f \u2192 %.3f", mb / n, ma / n);
        snprintf(sub, sizeof sub, "mean over %d layers, before \u2192 after", n);
    } else {
        snprintf(v, sizeof v, "\u2013");
        snprintf(sub, sizeof sub, "no permutation in this job");
    }
    card(out, "block mass ratio", v, sub, NULL);
    format_or_na(v, sizeof v, "%.2f s", number_at(timings, "total"));
    card(out, "total time", v, timings ? "loading to report" : "timings not given", NULL);
    fputs("</div>\n", out);
}

static void write_page(FILE *out, const json_t *report, const json_t *timings, const layer_series *s)
{
    text summary = {.len = 0};
    spec_summary(report, &summary);
    const json_t *spec = json_object_get(report, "spec");
    const char *model = string_at(report, "model") ? string_at(report, "model") : string_at(spec, "model");
    const json_t *eval = json_object_get(report, "eval");
    const json_t *rotations = json_object_get(report, "rotations");

    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>perq report", out);
    if (model) {
        fputs(": ", out);
        perq_html_escape(out, model);
    }
    fputs(" (", out);
    perq_html_escape(out, summary.buf);
    fprintf(out, ")</title>\n<style>%s</style></head>\n<body><main>\n<header><h1>perq report", page_css);
    if (model) {
        fputs(" \u00b7 <span class=\"model\">", out);
        perq_html_escape(out, model);
        fputs("</span>", out);
    }
    fputs("</h1><p>", out);
    perq_html_escape(out, summary.buf);
    fputs("</p></header>\n", out);

    cards(out, eval, timings, s);
    fputs("<div class=\"grid\">\n", out);
    if (json_is_object(eval))
        perplexity_chart(out, eval);
    if (timings)
        timings_chart(out, timings);
    if (s->with_data > 0) {
        char block[32] = "b";
        const json_t *first = json_object_get(json_array_get(json_object_get(report, "layers"), 0), "down_proj_input");
        if (isfinite(number_at(first, "block_size")))
            snprintf(block, sizeof block, "%d", (int)number_at(first, "block_size"));
        layer_charts(out, s, block);
    }
    if (json_is_object(rotations))
        rotations_table(out, rotations);
    fputs("</div>\n", out);
    if (s->with_data == 0)
        fputs("<section><p class=\"note\">This job neither permuted nor rotated the down_proj input, so there are no "
              "mass or rotation figures to show.</p></section>\n", out);
    if (s->with_data > 0)
        layers_table(out, s);
    double version = number_at(report, "format_version");
    fprintf(out, "<footer>Made by perq %s from report.json (format %d).</footer>\n</main></body></html>\n",
            PERQ_VERSION, isfinite(version) ? (int)version : 0);
}

int perq_report_html_write(const json_t *report, const json_t *timings_from, const char *path, perq_err *err)
{
    if (!json_is_object(report))
        return perq_fail(err, PERQ_E_INVALID, "%s: the report is not a JSON object", path);
    layer_series s;
    if (layer_series_read(json_object_get(report, "layers"), &s) != 0)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    char *page = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&page, &len);
    if (!out) {
        layer_series_free(&s);
        return perq_fail_errno(err, "%s", path);
    }
    write_page(out, report, timings_of(timings_from), &s);
    int failed = ferror(out);
    failed |= fclose(out) != 0;
    layer_series_free(&s);
    int rc = failed || !page ? perq_fail(err, PERQ_E_NOMEM, "%s: out of memory composing the page", path)
                             : perq_write_file_atomic(path, page, len, err);
    free(page);
    return rc;
}
