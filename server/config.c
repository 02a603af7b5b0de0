#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void perqd_usage(FILE *to)
{
    fputs("usage: perqd --listen HOST:PORT --data-dir DIR [--workers N] [--config FILE]\n"
          "             [--max-body BYTES] [--kill-grace SECONDS] [--worker-bin PATH]\n"
          "  --listen      address to serve on (port 0: any free port); default " PERQD_DEFAULT_LISTEN "\n"
          "  --data-dir    where the job store, uploads and artifacts live (required)\n"
          "  --workers     jobs running at once (default 1)\n"
          "  --config      JSON file with the same settings: listen, data_dir, workers,\n"
          "                max_body, kill_grace, worker_bin (the command line wins)\n"
          "  --max-body    largest request body, e.g. 2000000 or 64G (default 64G)\n"
          "  --kill-grace  seconds between SIGTERM and SIGKILL when stopping a worker (default 5)\n"
          "  --worker-bin  the worker program (default: perq-worker beside perqd)\n",
          to);
}

int perqd_parse_size(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (!s || !isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    unsigned shift = 0;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': shift = 10; end++; break;
    case 'm': shift = 20; end++; break;
    case 'g': shift = 30; end++; break;
    case 't': shift = 40; end++; break;
    default: return -1;
    }
    if (shift && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static int set_string(char *dst, size_t size, const char *v, const char *what, perq_err *err)
{
    if (!v || !v[0] || strlen(v) >= size)
        return perq_fail(err, PERQ_E_INVALID, "%s: expected a non-empty value of at most %zu bytes", what,
                         size - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int set_workers(perqd_config *cfg, long long v, perq_err *err)
{
    if (v < 1 || v > PERQD_MAX_WORKERS)
        return perq_fail(err, PERQ_E_INVALID, "workers: expected 1 to %d, got %lld", PERQD_MAX_WORKERS, v);
    cfg->workers = (int)v;
    return 0;
}

static int set_grace(perqd_config *cfg, double v, perq_err *err)
{
    if (!(v >= 0 && v <= 3600))
        return perq_fail(err, PERQ_E_INVALID, "kill_grace: expected 0 to 3600 seconds");
    cfg->kill_grace = v;
    return 0;
}

static int load_file(const char *path, perqd_config *cfg, perq_err *err)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return perq_fail(err, PERQ_E_FORMAT, "config %s: %s (line %d, column %d)", path, jerr.text, jerr.line,
                         jerr.column);
    int rc = json_is_object(doc) ? 0 : perq_fail(err, PERQ_E_FORMAT, "config %s: expected a JSON object", path);
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v) {
        if (rc != 0)
            break;
        if (strcmp(key, "listen") == 0) {
            rc = set_string(cfg->listen, sizeof cfg->listen, json_string_value(v), "listen", err);
        } else if (strcmp(key, "data_dir") == 0) {
            rc = set_string(cfg->data_dir, sizeof cfg->data_dir, json_string_value(v), "data_dir", err);
        } else if (strcmp(key, "worker_bin") == 0) {
            rc = set_string(cfg->worker_bin, sizeof cfg->worker_bin, json_string_value(v), "worker_bin", err);
        } else if (strcmp(key, "workers") == 0) {
            rc = json_is_integer(v) ? set_workers(cfg, json_integer_value(v), err)
                                    : perq_fail(err, PERQ_E_INVALID, "workers: expected an integer");
        } else if (strcmp(key, "kill_grace") == 0) {
            rc = json_is_number(v) ? set_grace(cfg, json_number_value(v), err)
                                   : perq_fail(err, PERQ_E_INVALID, "kill_grace: expected a number");
        } else if (strcmp(key, "max_body") == 0) {
            if (json_is_integer(v) && json_integer_value(v) > 0)
                cfg->max_body = (uint64_t)json_integer_value(v);
            else if (!json_is_string(v) || perqd_parse_size(json_string_value(v), &cfg->max_body) != 0)
                rc = perq_fail(err, PERQ_E_INVALID, "max_body: expected bytes, as a number or \"64G\"");
        } else {
            rc = perq_fail(err, PERQ_E_INVALID, "unknown setting \"%s\"", key);
        }
    }
    json_decref(doc);
    return rc == 0 ? 0 : perq_err_context(err, "config %s", path);
}

static void default_worker_bin(perqd_config *cfg)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(cfg->worker_bin, sizeof cfg->worker_bin, "perq-worker");
        return;
    }
    self[n] = '\0';
    char *dir = dirname(self);
    if ((size_t)snprintf(cfg->worker_bin, sizeof cfg->worker_bin, "%s/perq-worker", dir) >= sizeof cfg->worker_bin)
        snprintf(cfg->worker_bin, sizeof cfg->worker_bin, "perq-worker");
}

enum { OPT_LISTEN = 1, OPT_DATA, OPT_WORKERS, OPT_CONFIG, OPT_MAX_BODY, OPT_GRACE, OPT_WORKER_BIN };

static const struct option options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"data-dir", required_argument, NULL, OPT_DATA},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"max-body", required_argument, NULL, OPT_MAX_BODY},
    {"kill-grace", required_argument, NULL, OPT_GRACE},
    {"worker-bin", required_argument, NULL, OPT_WORKER_BIN},
    {NULL, 0, NULL, 0},
};

static int apply_option(int opt, const char *arg, perqd_config *cfg, perq_err *err)
{
    char *end = NULL;
    switch (opt) {
    case OPT_LISTEN: return set_string(cfg->listen, sizeof cfg->listen, arg, "--listen", err);
    case OPT_DATA: return set_string(cfg->data_dir, sizeof cfg->data_dir, arg, "--data-dir", err);
    case OPT_WORKER_BIN: return set_string(cfg->worker_bin, sizeof cfg->worker_bin, arg, "--worker-bin", err);
    case OPT_WORKERS: {
        long long v = strtoll(arg, &end, 10);
        if (end == arg || *end)
            return perq_fail(err, PERQ_E_INVALID, "--workers: expected an integer, got \"%s\"", arg);
        return set_workers(cfg, v, err);
    }
    case OPT_GRACE: {
        double v = strtod(arg, &end);
        if (end == arg || *end)
            return perq_fail(err, PERQ_E_INVALID, "--kill-grace: expected seconds, got \"%s\"", arg);
        return set_grace(cfg, v, err);
    }
    case OPT_MAX_BODY:
        if (perqd_parse_size(arg, &cfg->max_body) != 0 || cfg->max_body == 0)
            return perq_fail(err, PERQ_E_INVALID, "--max-body: expected bytes such as 2000000 or 64G, got \"%s\"",
                             arg);
        return 0;
    case OPT_CONFIG: return 0; /* read in the first pass */
    default: return perq_fail(err, PERQ_E_INVALID, "unknown option (see --help)");
    }
}

int perqd_config_load(int argc, char **argv, perqd_config *cfg, perq_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen, sizeof cfg->listen, "%s", PERQD_DEFAULT_LISTEN);
    cfg->workers = 1;
    cfg->max_body = PERQD_DEFAULT_MAX_BODY;
    cfg->kill_grace = PERQD_DEFAULT_KILL_GRACE;
    default_worker_bin(cfg);

    /* First pass: the config file, so that the command line can override it. */
    opterr = 0;
    optind = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == OPT_CONFIG && load_file(optarg, cfg, err) != 0)
            return -1;
        if (opt == '?' || opt == ':')
            return perq_fail(err, PERQ_E_INVALID, "unknown option or missing value: %s (see --help)",
                             argv[optind - 1]);
    }
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1)
        if (apply_option(opt, optarg, cfg, err) != 0)
            return -1;
    if (optind < argc)
        return perq_fail(err, PERQ_E_INVALID, "unexpected argument \"%s\" (see --help)", argv[optind]);
    if (!cfg->data_dir[0])
        return perq_fail(err, PERQ_E_INVALID, "--data-dir is required (see --help)");
    return 0;
}
