/* perq synth --preset NAME --out DIR [--dtype bf16|f16|f32] [--layers N] [--seed S] */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "commands.h"
#include "synth.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: perq synth --preset NAME --out DIR [--dtype bf16|f16|f32] [--layers N]\n"
            "                  [--seed S] [--shard-bytes N] [--no-outliers]\n\n"
            "Writes a synthetic Hugging Face checkpoint with the exact shapes of a real model:\n"
            "config.json, generation_config.json, model.safetensors (sharded as\n"
            "model-0000i-of-0000N.safetensors with model.safetensors.index.json above\n"
            "--shard-bytes, default 5000000000), tokenizer.json, tokenizer_config.json, and\n"
            "synth.json (the planted outlier channels). The same arguments give the same bytes.\n\n"
            "  --preset NAME     one of:");
    for (size_t i = 0; i < synth_preset_count(); i++)
        fprintf(out, " %s", synth_preset_at(i)->name);
    fprintf(out,
            "\n  --out DIR         output folder (created)\n"
            "  --dtype D         bf16 (default), f16 or f32\n"
            "  --layers N        number of decoder layers (default: the model's)\n"
            "  --seed S          random seed, 0 to 2^63-1 (default 0)\n"
            "  --shard-bytes N   largest shard before splitting (default 5000000000)\n"
            "  --no-outliers     plain random weights: no planted channels, no heavy tails\n");
}

static int parse_u64(const char *s, const char *what, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max) {
        fprintf(stderr, "perq synth: bad %s '%s'\n", what, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_dtype(const char *s, perq_dtype *dtype)
{
    if (strcasecmp(s, "bf16") == 0)
        *dtype = PERQ_DT_BF16;
    else if (strcasecmp(s, "f16") == 0 || strcasecmp(s, "fp16") == 0)
        *dtype = PERQ_DT_F16;
    else if (strcasecmp(s, "f32") == 0 || strcasecmp(s, "fp32") == 0)
        *dtype = PERQ_DT_F32;
    else {
        fprintf(stderr, "perq synth: unknown dtype '%s' (bf16, f16 or f32)\n", s);
        return -1;
    }
    return 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int perq_cmd_synth(int argc, char **argv)
{
    static const struct option options[] = {
        {"preset", required_argument, NULL, 'p'}, {"out", required_argument, NULL, 'o'},
        {"dtype", required_argument, NULL, 'd'},  {"layers", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},   {"shard-bytes", required_argument, NULL, 'b'},
        {"no-outliers", no_argument, NULL, 'n'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    perq_synth_options o;
    perq_synth_defaults(&o);
    uint64_t value;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'p': o.preset = optarg; break;
        case 'o': o.out_dir = optarg; break;
        case 'd':
            if (parse_dtype(optarg, &o.dtype) != 0)
                return 2;
            break;
        case 'l':
            if (parse_u64(optarg, "--layers", 1024, &value) != 0 || value == 0)
                return 2;
            o.layers = (int)value;
            break;
        case 's':
            if (parse_u64(optarg, "--seed", INT64_MAX, &o.seed) != 0)
                return 2;
            break;
        case 'b':
            if (parse_u64(optarg, "--shard-bytes", UINT64_MAX, &o.shard_bytes) != 0 ||
                o.shard_bytes == 0)
                return 2;
            break;
        case 'n': o.plant = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || !o.preset || !o.out_dir) {
        if (optind < argc)
            fprintf(stderr, "perq synth: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    double start = now_seconds();
    perq_err err = {0};
    if (perq_synth(&o, &err) != 0) {
        fprintf(stderr, "perq synth: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "perq synth: wrote %s (%s, %s) in %.1f s\n", o.out_dir, o.preset,
            perq_dtype_name(o.dtype), now_seconds() - start);
    return 0;
}
