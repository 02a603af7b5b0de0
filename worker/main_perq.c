/* perq: the engine without a daemon. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "perq/blas.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"eval", perq_cmd_eval, "perplexity of a model on a text"},
    {"tokenize", perq_cmd_tokenize, "token ids of a text"},
    {"quantize", perq_cmd_quantize, "run a job spec locally"},
    {"report", perq_cmd_report, "a job's report.json as one HTML page"},
    {"synth", perq_cmd_synth, "write a synthetic checkpoint of a real model's shape"},
    {"worker", perq_cmd_worker, "the worker perqd spawns (not for users)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: perq COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`perq COMMAND --help` describes a command's options.\n");
}

int main(int argc, char **argv)
{
    perq_blas_choose_kernel(argc, argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "perq: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
