/* perq tokenize --model DIR [--text FILE] [--json | --lines | --decode] [--stats]
 * Prints the token ids of a text (without BOS) as the model's tokenizer.json
 * gives them, or with --decode the text of ids. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "commands.h"
#include "perq/fsutil.h"
#include "perq/tokenizer.h"

#define MAX_TEXT ((size_t)1 << 32)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: perq tokenize --model DIR [--text FILE] [--json | --lines | --decode] [--stats]\n"
            "\n"
            "Prints the token ids of the text of FILE (standard input without --text),\n"
            "without BOS, separated by spaces; --json prints them as one JSON array.\n"
            "--lines reads one JSON string per line and prints one JSON array of ids per\n"
            "line. --decode reads ids (separated by spaces or commas, brackets allowed)\n"
            "and prints their text. --stats reports sizes and times on standard error.\n");
}

typedef struct options {
    const char *model, *text;
    bool json, lines, decode, stats;
} options;

static int parse_args(int argc, char **argv, options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--model") && i + 1 < argc) {
            o->model = argv[++i];
        } else if (!strcmp(a, "--text") && i + 1 < argc) {
            o->text = argv[++i];
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--lines")) {
            o->lines = true;
        } else if (!strcmp(a, "--decode")) {
            o->decode = true;
        } else if (!strcmp(a, "--stats")) {
            o->stats = true;
        } else {
            fprintf(stderr, "perq tokenize: unexpected argument '%s'\n", a);
            return -1;
        }
    }
    if (!o->model) {
        fprintf(stderr, "perq tokenize: --model is required\n");
        return -1;
    }
    if (o->json + o->lines + o->decode > 1) {
        fprintf(stderr, "perq tokenize: --json, --lines and --decode do not go together\n");
        return -1;
    }
    return 0;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void print_ids(const int32_t *ids, size_t n, bool json)
{
    if (json)
        putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(i ? (json ? ",%d" : " %d") : "%d", ids[i]);
    puts(json ? "]" : "");
}

/* --lines: each line is a JSON string to encode on its own. */
static int encode_lines(const perq_tokenizer *t, char *text, perq_err *err)
{
    size_t line_no = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        line_no++;
        json_error_t jerr;
        json_t *s = json_loads(line, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        if (!json_is_string(s)) {
            json_decref(s);
            return perq_fail(err, PERQ_E_INVALID, "line %zu is not a JSON string", line_no);
        }
        int32_t *ids;
        size_t n;
        int rc = perq_tokenizer_encode(t, json_string_value(s), json_string_length(s), false, &ids, &n, err);
        json_decref(s);
        if (rc)
            return perq_err_context(err, "line %zu", line_no);
        print_ids(ids, n, true);
        free(ids);
    }
    return 0;
}

/* --decode: ids in, text out. */
static int decode_ids(const perq_tokenizer *t, const char *text, size_t *n_ids, perq_err *err)
{
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (const char *p = text; *p && !rc;) {
        if (isspace((unsigned char)*p) || *p == ',' || *p == '[' || *p == ']') {
            p++;
            continue;
        }
        char *end;
        errno = 0;
        long id = strtol(p, &end, 10);
        if (end == p || errno || id < 0 || id > INT32_MAX) {
            int shown = (int)strcspn(p, " \t\r\n,[]");
            rc = perq_fail(err, PERQ_E_INVALID, "'%.*s' is not a token id", shown > 20 ? 20 : shown, p);
            break;
        }
        if (n == cap) {
            int32_t *grown = realloc(ids, (cap = cap ? 2 * cap : 1024) * sizeof *ids);
            if (!grown) {
                rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
                break;
            }
            ids = grown;
        }
        ids[n++] = (int32_t)id;
        p = end;
    }
    char *decoded = NULL;
    if (!rc)
        rc = perq_tokenizer_decode(t, ids, n, &decoded, err);
    if (!rc)
        fputs(decoded, stdout);
    free(decoded);
    free(ids);
    *n_ids = n;
    return rc;
}

static int run(const options *o, perq_err *err)
{
    char *text;
    size_t len;
    double t0 = seconds();
    perq_tokenizer *t;
    if (perq_tokenizer_load(o->model, &t, err))
        return -1;
    double t1 = seconds();
    if (perq_read_file(o->text ? o->text : "/dev/stdin", MAX_TEXT, &text, &len, err)) {
        perq_tokenizer_free(t);
        return -1;
    }
    double t2 = seconds();
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = o->lines    ? encode_lines(t, text, err)
             : o->decode ? decode_ids(t, text, &n, err)
                         : perq_tokenizer_encode(t, text, len, false, &ids, &n, err);
    double t3 = seconds();
    if (!rc && !o->lines && !o->decode)
        print_ids(ids, n, o->json);
    if (!rc && o->stats)
        fprintf(stderr, "perq tokenize: %zu bytes, %zu tokens; load %.3f s, %s %.3f s (%.2f MB/s)\n", len, n,
                t1 - t0, o->decode ? "decode" : "encode", t3 - t2, t3 > t2 ? (double)len / (t3 - t2) / 1e6 : 0.0);
    free(ids);
    free(text);
    perq_tokenizer_free(t);
    return rc;
}

int perq_cmd_tokenize(int argc, char **argv)
{
    options o = {0};
    if (parse_args(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    perq_err err = {0};
    if (run(&o, &err)) {
        fprintf(stderr, "perq tokenize: %s\n", err.msg);
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
