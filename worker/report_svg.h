/* The charts of report.html, drawn as inline SVG into a stream: grouped
 * vertical bars (one group per layer, one bar per series) and labelled
 * horizontal bars. Text is escaped; missing values (NaN) draw no bar. Every
 * chart is an <svg class="chart" data-chart="ID" data-bars="N"> whose bars
 * are <rect class="bar" data-series=".." data-category=".." data-value="..">,
 * so a test can find the data in the DOM. */
#ifndef PERQ_REPORT_SVG_H
#define PERQ_REPORT_SVG_H

#include <stdio.h>

/* &, <, >, " and ' as entities. */
void perq_html_escape(FILE *out, const char *text);

typedef struct perq_svg_series {
    const char *name;       /* legend text */
    const char *color;      /* CSS colour */
    const double *values;   /* [n_categories]; NaN: no bar */
} perq_svg_series;

typedef struct perq_svg_bars {
    const char *id;                 /* data-chart */
    const char *title;              /* accessible title */
    const char *x_label, *y_label;
    const char *const *categories;  /* tick labels */
    int n_categories;
    const perq_svg_series *series;
    int n_series;
    double reference;               /* a dashed horizontal line there; NaN: none */
    const char *reference_label;
} perq_svg_bars;

/* Grouped vertical bars, y from 0. Returns the number of bars drawn. */
int perq_svg_grouped_bars(FILE *out, const perq_svg_bars *chart);

typedef struct perq_svg_hbar {
    const char *label;
    double value;           /* NaN: "n/a" and no bar */
    const char *color;
    const char *note;       /* printed after the value ("+35.6%"), may be NULL */
} perq_svg_hbar;

/* One horizontal bar per row, x from 0; value_format formats each value
 * ("%.4f", "%.3f s"). Returns the number of bars drawn. */
int perq_svg_hbars(FILE *out, const char *id, const char *title, const char *x_label, const perq_svg_hbar *rows,
                   int n_rows, const char *value_format);

#endif
