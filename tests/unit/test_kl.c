/* perq_eval_kl (worker/kl.h): KL(reference || model) per token at the
 * positions the perplexity protocols score.
 *   - a model against itself: 0;
 *   - each side's mean NLL equals what perq_eval_perplexity says of that
 *     folder, for both protocols (same positions, same W4A4 hook: the model
 *     side is a W4A4 artifact of stories260K, made once by a perq job);
 *   - the mean KL equals a direct computation from perq_forward_logits of
 *     both models on the first chunk;
 *   - a text shorter than one chunk is refused.
 * Skipped without the shared model. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "kl.h"
#include "perq/eval.h"
#include "perq/forward.h"
#include "perq/job.h"
#include "perq/jobspec.h"
#include "perq/tokenizer.h"
#include "perq/w4a4.h"

enum { CTX = 128, CHUNKS = 3 };

static const char *const job_spec =
    "{\"method\": \"perq\", \"activations\": {\"bits\": 4}, \"weights\": {\"algorithm\": \"rtn\"},"
    " \"rotation\": {\"mode\": \"full\", \"block_size\": 4, \"permutation\": \"massdiff\"},"
    " \"calibration\": {\"dataset\": \"c\", \"samples\": 4, \"seq_len\": 128, \"seed\": 7}}";

static struct {
    char *tmp, *model, *text, *artifact;
} fx;

static int setup(void **state)
{
    (void)state;
    fx.model = shared_path("models/stories260K");
    fx.text = shared_path("data/tinystories_valid_head.txt");
    if (access(fx.model, R_OK) != 0 || access(fx.text, R_OK) != 0)
        return 0; /* each test skips */
    char tmpl[] = "/tmp/perq-kl-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    fx.tmp = strdup(tmpl);
    if (asprintf(&fx.artifact, "%s/job", fx.tmp) < 0)
        return -1;
    perq_job_paths paths = {fx.model, fx.artifact, fx.text, NULL};
    perq_err err = {0};
    int rc = test_run_spec(job_spec, &paths, NULL, &err);
    if (rc != 0)
        fprintf(stderr, "job: %s\n", err.msg);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    if (fx.tmp)
        perq_remove_tree(fx.tmp, NULL);
    free(fx.tmp);
    free(fx.model);
    free(fx.text);
    free(fx.artifact);
    return 0;
}

static void need_job(void)
{
    if (!fx.tmp)
        skip();
}

static perq_kl_result kl_of(const char *ref, const char *model, perq_ppl_protocol protocol, int chunks)
{
    perq_eval_options opt = {protocol, CTX, chunks};
    perq_kl_result r;
    perq_err err = {0};
    if (perq_eval_kl(ref, model, fx.text, &opt, NULL, &r, &err) != 0)
        fail_msg("kl %s || %s: %s", ref, model, err.msg);
    return r;
}

static double nll_of(const char *dir, perq_ppl_protocol protocol)
{
    perq_eval_options opt = {protocol, CTX, CHUNKS};
    perq_eval_result r;
    perq_err err = {0};
    if (perq_eval_perplexity(dir, fx.text, &opt, NULL, &r, &err) != 0)
        fail_msg("eval %s: %s", dir, err.msg);
    return r.nll;
}

static void test_self_is_zero(void **state)
{
    (void)state;
    need_job();
    perq_kl_result r = kl_of(fx.artifact, fx.artifact, PERQ_PPL_LLAMACPP, CHUNKS);
    assert_true(r.kl_mean < 1e-9);
    assert_true(r.kl_max < 1e-9);
    assert_true(r.nll_reference == r.nll_model);
    assert_int_equal(r.tokens_scored, CHUNKS * (CTX - 1 - CTX / 2));
    assert_int_equal(r.chunks, CHUNKS);
    assert_int_equal(r.ctx, CTX);
    assert_string_equal(r.protocol, "llama.cpp");
}

static void test_nll_as_perplexity_says(void **state)
{
    (void)state;
    need_job();
    const perq_ppl_protocol protocols[2] = {PERQ_PPL_LLAMACPP, PERQ_PPL_PAPER};
    for (int i = 0; i < 2; i++) {
        perq_kl_result r = kl_of(fx.model, fx.artifact, protocols[i], CHUNKS);
        double ref = nll_of(fx.model, protocols[i]), mod = nll_of(fx.artifact, protocols[i]);
        printf("# %s: KL %.5f (max %.4f); nll float %.6f / %.6f, W4A4 %.6f / %.6f\n", r.protocol, r.kl_mean,
               r.kl_max, r.nll_reference, ref, r.nll_model, mod);
        assert_true(fabs(r.nll_reference - ref) < 1e-5 * ref);
        assert_true(fabs(r.nll_model - mod) < 1e-5 * mod);
        assert_true(r.kl_mean > 1e-3);
        assert_true(r.kl_max >= r.kl_mean);
        assert_int_equal(r.tokens_scored, CHUNKS * (i == 0 ? CTX - 1 - CTX / 2 : CTX - CTX / 2));
    }
}

/* ---- KL from the logits directly -------------------------------------------------- */

static float *chunk_logits(const char *dir, const int32_t *ids, int *vocab)
{
    perq_err err = {0};
    perq_model *m = NULL;
    perq_w4a4_scheme scheme;
    perq_w4a4_runtime *rt = NULL;
    if (perq_model_open(dir, &m, &err) != 0 || perq_model_load_all(m, &err) != 0 ||
        perq_w4a4_scheme_read(dir, &scheme, &err) != 0 || perq_w4a4_runtime_new(&scheme, &m->cfg, &rt, &err) != 0)
        fail_msg("%s: %s", dir, err.msg);
    perq_forward *f = NULL;
    assert_int_equal(perq_forward_new(&m->cfg, 1, CTX, &f, &err), 0);
    *vocab = m->cfg.vocab_size;
    float *logits = malloc((size_t)CTX * *vocab * sizeof *logits);
    assert_non_null(logits);
    if (perq_forward_logits(f, m, ids, 1, logits, perq_w4a4_runtime_hook(rt), &err) != 0)
        fail_msg("%s: %s", dir, err.msg);
    perq_forward_free(f);
    perq_w4a4_runtime_free(rt);
    perq_model_close(m);
    return logits;
}

static void log_softmax(const float *z, int n, double *out)
{
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++)
        mx = fmax(mx, z[i]);
    for (int i = 0; i < n; i++)
        sum += exp((double)z[i] - mx);
    for (int i = 0; i < n; i++)
        out[i] = (double)z[i] - mx - log(sum);
}

static void test_kl_from_logits(void **state)
{
    (void)state;
    need_job();
    perq_err err = {0};
    perq_tokenizer *tok;
    char *text;
    size_t len, n;
    int32_t *ids;
    assert_int_equal(perq_tokenizer_load(fx.artifact, &tok, &err), 0);
    assert_int_equal(perq_read_file(fx.text, 0, &text, &len, &err), 0);
    assert_int_equal(perq_tokenizer_encode(tok, text, len - 1, true, &ids, &n, &err), 0);
    assert_true(n >= CTX);
    ids[0] = perq_tokenizer_bos_id(tok);
    int vocab;
    float *p = chunk_logits(fx.model, ids, &vocab), *q = chunk_logits(fx.artifact, ids, &vocab);
    double *lp = malloc((size_t)vocab * sizeof *lp), *lq = malloc((size_t)vocab * sizeof *lq), sum = 0;
    assert_true(lp && lq);
    for (int t = CTX / 2; t <= CTX - 2; t++) {
        log_softmax(p + (size_t)t * vocab, vocab, lp);
        log_softmax(q + (size_t)t * vocab, vocab, lq);
        for (int i = 0; i < vocab; i++)
            sum += exp(lp[i]) * (lp[i] - lq[i]);
    }
    double direct = sum / (CTX - 1 - CTX / 2);
    perq_kl_result r = kl_of(fx.model, fx.artifact, PERQ_PPL_LLAMACPP, 1);
    printf("# first chunk: KL %.8f, from the logits %.8f\n", r.kl_mean, direct);
    assert_true(direct > 1e-3);
    assert_true(fabs(r.kl_mean - direct) < 1e-4 * direct);
    free(lp);
    free(lq);
    free(p);
    free(q);
    free(ids);
    free(text);
    perq_tokenizer_free(tok);
}

static void test_short_text_refused(void **state)
{
    (void)state;
    need_job();
    char *path = in_dir(fx.tmp, "short.txt");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("Once upon a time.\n", f);
    fclose(f);
    perq_eval_options opt = {PERQ_PPL_LLAMACPP, CTX, 0};
    perq_kl_result r;
    perq_err err = {0};
    assert_int_not_equal(perq_eval_kl(fx.model, fx.artifact, path, &opt, NULL, &r, &err), 0);
    assert_int_equal(err.code, PERQ_E_INVALID);
    assert_non_null(strstr(err.msg, "fewer than one chunk"));
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_is_zero),
        cmocka_unit_test(test_nll_as_perplexity_says),
        cmocka_unit_test(test_kl_from_logits),
        cmocka_unit_test(test_short_text_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
