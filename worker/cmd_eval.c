/* perq eval --model DIR --text FILE [--reference DIR] [--ctx 256] [--chunks N]
 *           [--protocol llama.cpp|paper] [--json]
 * Perplexity of a model (a checkpoint or a perq artifact) on a text file; with
 * --reference, the mean KL(reference || model) of the next-token
 * distributions at the positions the protocol scores (kl.h). The figure
 * always names its protocol. The OpenBLAS kernel in use goes to standard
 * error. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "kl.h"
#include "perq/blas.h"
#include "perq/perplexity.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: perq eval --model DIR --text FILE [--reference DIR] [--ctx 256]\n"
            "                 [--chunks N] [--protocol llama.cpp|paper] [--json]\n"
            "\n"
            "Perplexity of the model in DIR on the text in FILE.\n"
            "  --protocol llama.cpp  (default) the text tokenized once with BOS, chunks of\n"
            "                        ctx tokens each starting with BOS, the last ctx/2-1\n"
            "                        predictions of each chunk scored (llama-perplexity)\n"
            "  --protocol paper      non-overlapping windows of ctx tokens, the second half\n"
            "                        of each window scored\n"
            "  --chunks N            the first N chunks only (default: all whole chunks)\n"
            "  --reference DIR       instead of perplexity, how far the model's next-token\n"
            "                        distributions are from those of the model in DIR at the\n"
            "                        positions the protocol scores: KL(reference || model)\n"
            "                        per token, in nats (its mean, and the largest)\n"
            "  --json                one JSON object: ppl, nll, tokens_scored, chunks,\n"
            "                        protocol, ctx; with --reference kl_mean, kl_max,\n"
            "                        nll_reference, nll_model, tokens_scored, chunks,\n"
            "                        protocol, ctx\n");
}

typedef struct eval_args {
    const char *model, *text, *reference;
    perq_eval_options opt;
    int json;
} eval_args;

static int parse_int(const char *s, int min, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > 1 << 24)
        return -1;
    *out = (int)v;
    return 0;
}

/* Returns 0, or the exit status to leave with. */
static int parse_args(int argc, char **argv, eval_args *a)
{
    memset(a, 0, sizeof *a);
    a->opt.protocol = PERQ_PPL_LLAMACPP;
    a->opt.ctx = 256;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(arg, "--json")) {
            a->json = 1;
            continue;
        } else if (!value) {
            fprintf(stderr, "perq eval: %s needs a value\n", arg);
            return 2;
        } else if (!strcmp(arg, "--model")) {
            a->model = value;
        } else if (!strcmp(arg, "--text")) {
            a->text = value;
        } else if (!strcmp(arg, "--reference")) {
            a->reference = value;
        } else if (!strcmp(arg, "--ctx")) {
            if (parse_int(value, 4, &a->opt.ctx) != 0) {
                fprintf(stderr, "perq eval: --ctx wants an integer of at least 4, not '%s'\n", value);
                return 2;
            }
        } else if (!strcmp(arg, "--chunks")) {
            if (parse_int(value, 1, &a->opt.chunks) != 0) {
                fprintf(stderr, "perq eval: --chunks wants a positive integer, not '%s'\n", value);
                return 2;
            }
        } else if (!strcmp(arg, "--protocol")) {
            if (!strcmp(value, "llama.cpp")) {
                a->opt.protocol = PERQ_PPL_LLAMACPP;
            } else if (!strcmp(value, "paper")) {
                a->opt.protocol = PERQ_PPL_PAPER;
            } else {
                fprintf(stderr, "perq eval: --protocol is llama.cpp or paper, not '%s'\n", value);
                return 2;
            }
        } else {
            fprintf(stderr, "perq eval: unknown option '%s'\n", arg);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!a->model || !a->text) {
        usage(stderr);
        return 2;
    }
    return 0;
}

/* ctx: the unit counted ("chunks", "passes"). */
static void progress_on_tty(void *ctx, long long done, long long total)
{
    fprintf(stderr, "\r  %lld/%lld %s", done, total, (const char *)ctx);
    if (done == total)
        fputc('\n', stderr);
}

static void print_event(void *ctx, perq_log_level level, const char *message, json_t *data)
{
    (void)ctx;
    (void)data;
    if (level >= PERQ_LOG_WARN)
        fprintf(stderr, "perq eval: %s\n", message);
}

/* JSON has no infinity: a perplexity that overflowed is null. */
static json_t *real_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static int print_json(const perq_eval_result *r)
{
    json_t *obj = json_pack("{so so sI si ss si}", "ppl", real_or_null(r->ppl), "nll", real_or_null(r->nll),
                            "tokens_scored", (json_int_t)r->tokens_scored, "chunks", r->chunks, "protocol",
                            r->protocol, "ctx", r->ctx);
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(obj);
    if (!text) {
        fprintf(stderr, "perq eval: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

static int print_kl(const perq_kl_result *r, int json)
{
    if (!json) {
        printf("KL(reference || model) %.6f nats per token (mean; largest %.4f), %s protocol, ctx %d, %d chunks, "
               "%lld tokens scored; nll reference %.4f, model %.4f\n",
               r->kl_mean, r->kl_max, r->protocol, r->ctx, r->chunks, r->tokens_scored, r->nll_reference,
               r->nll_model);
        return 0;
    }
    json_t *obj = json_pack("{so so so so sI si ss si}", "kl_mean", real_or_null(r->kl_mean), "kl_max",
                            real_or_null(r->kl_max), "nll_reference", real_or_null(r->nll_reference), "nll_model",
                            real_or_null(r->nll_model), "tokens_scored", (json_int_t)r->tokens_scored, "chunks",
                            r->chunks, "protocol", r->protocol, "ctx", r->ctx);
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(obj);
    if (!text) {
        fprintf(stderr, "perq eval: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

int perq_cmd_eval(int argc, char **argv)
{
    perq_blas_choose_kernel(0, NULL);
    eval_args a;
    int status = parse_args(argc, argv, &a);
    if (status)
        return status < 0 ? 0 : status;
    fprintf(stderr, "perq eval: OpenBLAS kernel %s, %d threads\n", perq_blas_core(), perq_blas_threads());
    perq_reporter rep = {a.reference ? "passes" : "chunks", NULL, isatty(STDERR_FILENO) ? progress_on_tty : NULL,
                         print_event, NULL};
    perq_err err = {0};
    if (a.reference) {
        perq_kl_result kl;
        if (perq_eval_kl(a.reference, a.model, a.text, &a.opt, &rep, &kl, &err) != 0) {
            fprintf(stderr, "perq eval: %s\n", err.msg);
            return 1;
        }
        return print_kl(&kl, a.json);
    }
    perq_eval_result r;
    if (perq_eval_perplexity(a.model, a.text, &a.opt, &rep, &r, &err) != 0) {
        fprintf(stderr, "perq eval: %s\n", err.msg);
        return 1;
    }
    if (a.json)
        return print_json(&r);
    char line[256];
    perq_eval_describe(&r, line, sizeof line);
    printf("%s\n", line);
    return 0;
}
