/* perq's side of the llama.cpp comparison (tests/integration/gguf_llamacpp.sh).
 *
 *   perq_gguf_ref MODEL_DIR OUT.gguf TEXT_FILE GROUP N_TOKENS
 *
 * Quantizes every linear layer of MODEL_DIR with RTN INT4 (GROUP 0: per
 * channel), writes the GGUF export to OUT.gguf, and evaluates with perq's own
 * fp32 forward pass the first N_TOKENS tokens of TEXT_FILE (BOS first):
 *   - with the float weights of MODEL_DIR;
 *   - with exactly the values the GGUF holds: q * fp16(scale) for Q4_0
 *     linears, fp16(q * scale) for F16 ones, the embedding (and tied head)
 *     rounded to fp16, norms as they are.
 *   - the same, with each linear layer's input rounded as llama.cpp's CPU
 *     matmul rounds it (Q8_0 blocks against Q4_0 weights, fp16 against F16).
 * Prints one JSON object: {"tokens": [...], "logprob_float": [...],
 * "logprob_gguf": [...], "logprob_gguf_act8": [...], "summary": {...}},
 * logprob_X[i] = log p(tokens[i+1] | tokens[0..i]). Built by the test script
 * against build/libperq.a. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export_gguf.h"
#include "perq/dtype.h"
#include "perq/forward.h"
#include "perq/fsutil.h"
#include "perq/int4.h"
#include "perq/model.h"
#include "perq/tokenizer.h"

static const char *const parts[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

static int die(const char *what, const perq_err *err)
{
    fprintf(stderr, "perq_gguf_ref: %s: %s\n", what, err->msg);
    return 1;
}

static float **linear_slot(perq_layer_weights *w, int part)
{
    float **slots[] = {&w->q, &w->k, &w->v, &w->o, &w->gate, &w->up, &w->down};
    return slots[part];
}

static void round_f16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = perq_f16_to_f32(perq_f32_to_f16(x[i]));
}

/* The GGUF's values of one linear: Q4_0 keeps q and rounds the scale, F16
 * rounds the product (widths that are not a multiple of 32). */
static void gguf_values(const perq_int4_matrix *m, float *w)
{
    bool q4_0 = m->cols % 32 == 0 && m->group % 32 == 0;
    for (int r = 0; r < m->rows; r++)
        for (int c = 0; c < m->cols; c++) {
            float s = m->scales[(size_t)r * m->n_groups + c / m->group];
            float q = (float)m->q[(size_t)r * m->cols + c];
            w[(size_t)r * m->cols + c] = q4_0 ? q * perq_f16_to_f32(perq_f32_to_f16(s))
                                              : perq_f16_to_f32(perq_f32_to_f16(q * s));
        }
}

/* What llama.cpp's CPU matmul does to a linear layer's input: rows quantized
 * to Q8_0 (blocks of 32, d = amax / 127 in fp16) against a Q4_0 weight, or
 * rounded to fp16 against an F16 weight (down_proj of width 172, the tied
 * head). */
static int llamacpp_activations(void *ctx, const perq_linear_site *site, perq_err *err)
{
    (void)ctx;
    (void)err;
    bool q4_0 = site->kind != PERQ_LIN_HEAD && site->in % 32 == 0;
    uint8_t block[PERQ_GGUF_Q8_0_BYTES];
    for (int r = 0; r < site->rows; r++) {
        float *x = site->x + (size_t)r * site->in;
        if (!q4_0) {
            round_f16(x, (size_t)site->in);
            continue;
        }
        for (int b = 0; b < site->in / 32; b++) {
            perq_gguf_q8_0_row(x + b * 32, 32, block);
            uint16_t h;
            memcpy(&h, block, 2);
            for (int j = 0; j < 32; j++)
                x[b * 32 + j] = perq_f16_to_f32(h) * (float)(int8_t)block[2 + j];
        }
    }
    return 0;
}

static json_t *logprobs(perq_model *m, const int32_t *ids, int n, const perq_linear_hook *hook, perq_err *err)
{
    perq_forward *f;
    int vocab = m->cfg.vocab_size;
    if (perq_forward_new(&m->cfg, 1, n, &f, err) != 0)
        return NULL;
    float *logits = malloc((size_t)n * vocab * sizeof *logits);
    json_t *out = NULL;
    if (logits && perq_forward_logits(f, m, ids, 1, logits, hook, err) == 0) {
        out = json_array();
        for (int t = 0; t + 1 < n; t++) {
            const float *l = logits + (size_t)t * vocab;
            double mx = l[0], sum = 0;
            for (int v = 1; v < vocab; v++)
                mx = l[v] > mx ? l[v] : mx;
            for (int v = 0; v < vocab; v++)
                sum += exp((double)l[v] - mx);
            json_array_append_new(out, json_real((double)l[ids[t + 1]] - mx - log(sum)));
        }
    }
    free(logits);
    perq_forward_free(f);
    return out;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: perq_gguf_ref MODEL_DIR OUT.gguf TEXT_FILE GROUP N_TOKENS\n");
        return 2;
    }
    const char *dir = argv[1], *gguf = argv[2], *text_path = argv[3];
    int group = atoi(argv[4]), n_tokens = atoi(argv[5]);
    perq_err err = {0};
    perq_model *m;
    if (perq_model_open(dir, &m, &err) != 0 || perq_model_load_all(m, &err) != 0)
        return die(dir, &err);

    /* tokens: BOS + the text, cut to n_tokens */
    perq_tokenizer *tok;
    char *text;
    size_t len, n_ids;
    int32_t *ids;
    if (perq_tokenizer_load(dir, &tok, &err) != 0 || perq_read_file(text_path, 0, &text, &len, &err) != 0 ||
        perq_tokenizer_encode(tok, text, len, true, &ids, &n_ids, &err) != 0)
        return die("tokenizing", &err);
    int n = (int)n_ids < n_tokens ? (int)n_ids : n_tokens;
    json_t *lp_float = logprobs(m, ids, n, NULL, &err);
    if (!lp_float)
        return die("float forward", &err);

    /* quantize, export, and put the GGUF's values into the model */
    perq_gguf_options opt = {NULL, PERQ_GGUF_EMBED_F16};
    perq_gguf_export *x;
    if (perq_gguf_new(&m->cfg, &opt, &x, &err) != 0)
        return die("export", &err);
    for (size_t f = 0; f < m->ckpt.n_files; f++)
        for (size_t i = 0; i < m->ckpt.files[f].n_tensors; i++) {
            const perq_tensor *t = &m->ckpt.files[f].tensors[i];
            int linear = 0;
            for (int l = 0; l < m->cfg.num_hidden_layers && !linear; l++)
                for (int p = 0; p < 7 && !linear; p++) {
                    char prefix[160], name[168];
                    snprintf(prefix, sizeof prefix, "model.layers.%d.%s", l, parts[p]);
                    snprintf(name, sizeof name, "%s.weight", prefix);
                    if (strcmp(name, t->name) != 0)
                        continue;
                    linear = 1;
                    float **w = linear_slot(&m->layers[l], p);
                    perq_int4_matrix q;
                    if (perq_int4_rtn_as(*w, (int)t->shape[0], (int)t->shape[1], group, t->dtype, &q, &err) != 0 ||
                        perq_gguf_add_linear(x, prefix, &q, &err) != 0)
                        return die(name, &err);
                    gguf_values(&q, *w);
                    perq_int4_free(&q);
                }
            if (!linear && perq_gguf_add_tensor(x, t, &err) != 0)
                return die(t->name, &err);
        }
    if (perq_gguf_write(x, dir, gguf, &err) != 0)
        return die(gguf, &err);
    json_t *summary = perq_gguf_summary(x);
    perq_gguf_free(x);
    if (perq_model_load_embed(m, &err) != 0)
        return die("embedding", &err);
    size_t table = (size_t)m->cfg.vocab_size * m->cfg.hidden_size;
    round_f16(m->embed, table);
    round_f16(m->head, table); /* the head: tied to the embedding, or output.weight in F16 */
    perq_linear_hook act = {NULL, llamacpp_activations};
    json_t *lp_gguf = logprobs(m, ids, n, NULL, &err);
    json_t *lp_act = lp_gguf ? logprobs(m, ids, n, &act, &err) : NULL;
    if (!lp_act)
        return die("forward with the GGUF's values", &err);

    json_t *tokens = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(tokens, json_integer(ids[i]));
    json_t *out = json_pack("{so so so so so}", "tokens", tokens, "logprob_float", lp_float, "logprob_gguf",
                            lp_gguf, "logprob_gguf_act8", lp_act, "summary", summary);
    json_dumpf(out, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9));
    putchar('\n');
    json_decref(out);
    free(ids);
    free(text);
    perq_tokenizer_free(tok);
    perq_model_close(m);
    return 0;
}
