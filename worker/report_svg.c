/* Bar charts as inline SVG (see report_svg.h). Sizes are in the viewBox's
 * units; the page scales each chart to its column. */
#include "report_svg.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

enum {
    BARS_W = 560, BARS_H = 300,
    BARS_LEFT = 58, BARS_RIGHT = 12, BARS_TOP = 36, BARS_BOTTOM = 48,
    MAX_TICK_LABELS = 16,
    MAX_VALUE_LABELS = 16,
    HBARS_W = 560, HBARS_ROW = 34, HBARS_TOP = 12, HBARS_BOTTOM = 44,
    HBARS_LEFT = 132, HBARS_RIGHT = 128,
};

void perq_html_escape(FILE *out, const char *text)
{
    for (const char *p = text ? text : ""; *p; p++) {
        switch (*p) {
        case '&': fputs("&amp;", out); break;
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '"': fputs("&quot;", out); break;
        case '\'': fputs("&#39;", out); break;
        default: fputc(*p, out);
        }
    }
}

/* An axis from 0 to top in steps of step, both "nice" (1, 2, 2.5, 5 x 10^k),
 * with top >= max. */
typedef struct axis {
    double top, step;
} axis;

static axis nice_axis(double max)
{
    axis a = {1.0, 0.2};
    if (!(max > 0) || !isfinite(max))
        return a;
    double raw = max / 5.0;
    double mag = pow(10.0, floor(log10(raw)));
    double norm = raw / mag;
    double unit = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
    a.step = unit * mag;
    a.top = ceil(max / a.step - 1e-9) * a.step;
    return a;
}

static double max_finite(double m, double v)
{
    return isfinite(v) && v > m ? v : m;
}

static void svg_open(FILE *out, const char *id, const char *title, int w, int h, int bars)
{
    fprintf(out, "<svg class=\"chart\" data-chart=\"");
    perq_html_escape(out, id);
    fprintf(out, "\" data-bars=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">"
                 "<title>", bars, w, h);
    perq_html_escape(out, title);
    fputs("</title>\n", out);
}

static void text_at(FILE *out, const char *cls, double x, double y, const char *anchor, const char *text)
{
    fprintf(out, "<text class=\"%s\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">", cls, x, y, anchor);
    perq_html_escape(out, text);
    fputs("</text>", out);
}

static void bar_rect(FILE *out, double x, double y, double w, double h, const char *color, const char *series,
                     const char *category, double value, const char *tip)
{
    fprintf(out, "<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\" data-series=\"",
            x, y, w, h, color);
    perq_html_escape(out, series);
    fputs("\" data-category=\"", out);
    perq_html_escape(out, category);
    fprintf(out, "\" data-value=\"%.9g\"><title>", value);
    perq_html_escape(out, tip);
    fputs("</title></rect>\n", out);
}

/* Horizontal gridlines and their labels over a plot of height h from y0 down. */
static void y_grid(FILE *out, const axis *a, double left, double right, double top, double h)
{
    int n = (int)lround(a->top / a->step);
    for (int i = 0; i <= n; i++) {
        double v = i * a->step, y = top + h - h * v / a->top;
        char label[32];
        snprintf(label, sizeof label, "%g", v);
        fprintf(out, "<line class=\"%s\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>", i ? "grid" : "axis",
                left, right, y, y);
        text_at(out, "tick", left - 6, y + 4, "end", label);
    }
    fputc('\n', out);
}

static void legend(FILE *out, const perq_svg_bars *c, double right)
{
    double x = right;
    for (int s = c->n_series - 1; s >= 0; s--) {
        x -= 14 + 7.0 * (double)strlen(c->series[s].name) + 18;
        fprintf(out, "<rect x=\"%.1f\" y=\"10\" width=\"12\" height=\"12\" rx=\"2\" fill=\"%s\"/>", x,
                c->series[s].color);
        text_at(out, "legend", x + 17, 20.5, "start", c->series[s].name);
    }
    if (isfinite(c->reference) && c->reference_label) {
        x -= 24 + 7.0 * (double)strlen(c->reference_label) + 18;
        fprintf(out, "<line class=\"reference\" x1=\"%.1f\" x2=\"%.1f\" y1=\"16\" y2=\"16\"/>", x, x + 20);
        text_at(out, "legend", x + 25, 20.5, "start", c->reference_label);
    }
    fputc('\n', out);
}

int perq_svg_grouped_bars(FILE *out, const perq_svg_bars *c)
{
    double max = isfinite(c->reference) ? c->reference : 0;
    int drawn = 0;
    for (int s = 0; s < c->n_series; s++)
        for (int k = 0; k < c->n_categories; k++) {
            max = max_finite(max, c->series[s].values[k]);
            drawn += isfinite(c->series[s].values[k]);
        }
    axis a = nice_axis(max);
    double left = BARS_LEFT, right = BARS_W - BARS_RIGHT, top = BARS_TOP, h = BARS_H - BARS_TOP - BARS_BOTTOM;
    double group = (right - left) / (c->n_categories > 0 ? c->n_categories : 1);
    double bar = group * 0.8 / (c->n_series > 0 ? c->n_series : 1);
    bool values_shown = drawn <= MAX_VALUE_LABELS;
    int tick_every = (c->n_categories + MAX_TICK_LABELS - 1) / MAX_TICK_LABELS;

    svg_open(out, c->id, c->title, BARS_W, BARS_H, drawn);
    y_grid(out, &a, left, right, top, h);
    for (int k = 0; k < c->n_categories; k++) {
        double x0 = left + group * k + group * 0.1;
        for (int s = 0; s < c->n_series; s++) {
            double v = c->series[s].values[k];
            if (!isfinite(v))
                continue;
            double bh = h * (v < 0 ? 0 : v) / a.top, x = x0 + bar * s;
            char tip[256], value[32];
            snprintf(value, sizeof value, "%.3g", v);
            snprintf(tip, sizeof tip, "%s %s, %s: %s", c->x_label, c->categories[k], c->series[s].name, value);
            bar_rect(out, x, top + h - bh, bar * 0.94, bh, c->series[s].color, c->series[s].name, c->categories[k],
                     v, tip);
            if (values_shown)
                text_at(out, "value", x + bar * 0.47, top + h - bh - 4, "middle", value);
        }
        if (k % tick_every == 0)
            text_at(out, "tick", left + group * (k + 0.5), top + h + 16, "middle", c->categories[k]);
    }
    if (isfinite(c->reference)) {
        double y = top + h - h * c->reference / a.top;
        fprintf(out, "<line class=\"reference\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>\n", left, right, y,
                y);
    }
    text_at(out, "label", (left + right) / 2, BARS_H - 8, "middle", c->x_label);
    fprintf(out, "<text class=\"label\" transform=\"translate(14 %.1f) rotate(-90)\" text-anchor=\"middle\">",
            top + h / 2);
    perq_html_escape(out, c->y_label);
    fputs("</text>\n", out);
    legend(out, c, right);
    fputs("</svg>\n", out);
    return drawn;
}

int perq_svg_hbars(FILE *out, const char *id, const char *title, const char *x_label, const perq_svg_hbar *rows,
                   int n_rows, const char *value_format)
{
    double max = 0;
    int drawn = 0;
    for (int i = 0; i < n_rows; i++) {
        max = max_finite(max, rows[i].value);
        drawn += isfinite(rows[i].value);
    }
    axis a = nice_axis(max);
    int height = HBARS_TOP + HBARS_ROW * n_rows + HBARS_BOTTOM;
    double left = HBARS_LEFT, right = HBARS_W - HBARS_RIGHT, w = right - left;
    double bottom = HBARS_TOP + HBARS_ROW * n_rows;

    svg_open(out, id, title, HBARS_W, height, drawn);
    int n = (int)lround(a.top / a.step);
    for (int i = 0; i <= n; i++) {
        double v = i * a.step, x = left + w * v / a.top;
        char label[32];
        snprintf(label, sizeof label, "%g", v);
        fprintf(out, "<line class=\"%s\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%.1f\"/>", i ? "grid" : "axis", x, x,
                HBARS_TOP - 4, bottom);
        text_at(out, "tick", x, bottom + 16, "middle", label);
    }
    fputc('\n', out);
    for (int i = 0; i < n_rows; i++) {
        double y = HBARS_TOP + HBARS_ROW * i, v = rows[i].value;
        char value[64], shown[128];
        if (isfinite(v))
            snprintf(value, sizeof value, value_format, v);
        else
            snprintf(value, sizeof value, "n/a");
        snprintf(shown, sizeof shown, "%s%s%s", value, rows[i].note ? "  " : "", rows[i].note ? rows[i].note : "");
        text_at(out, "tick", left - 8, y + HBARS_ROW / 2.0 + 4, "end", rows[i].label);
        double bw = isfinite(v) ? w * (v < 0 ? 0 : v) / a.top : 0;
        if (isfinite(v)) {
            char tip[256];
            snprintf(tip, sizeof tip, "%s: %s", rows[i].label, value);
            bar_rect(out, left, y + 6, bw, HBARS_ROW - 12, rows[i].color, rows[i].label, rows[i].label, v, tip);
        }
        text_at(out, "value", left + bw + 6, y + HBARS_ROW / 2.0 + 4, "start", shown);
    }
    text_at(out, "label", (left + right) / 2, height - 6, "middle", x_label);
    fputs("\n</svg>\n", out);
    return drawn;
}
