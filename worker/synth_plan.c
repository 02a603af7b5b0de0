/* The tensors of a synthetic checkpoint, and the outliers planted in it.
 *
 * Trained Llama models carry two kinds of outliers that decide how well a
 * quantization method does, and both are planted here, chosen from the seed:
 *
 * 1. Massive residual-stream channels: a few channels of the hidden state are
 *    20-40 times larger than the others at the first layer (more further on). Planted by giving the
 *    embedding columns of those channels a constant offset of that size and by
 *    scaling the same rows of every o_proj and down_proj (the layers that
 *    write into the residual stream). After each RMSNorm the input of
 *    q/k/v/gate/up still has these channels 20-100 times larger than the rest.
 *    As in trained models, the final norm damps them (weight divided by the
 *    channel's scale) so that they do not decide every prediction.
 *
 * 2. Heavy channels at the down_proj input: per layer, a run of adjacent
 *    intermediate channels (in one 16-aligned block of 16) whose activations
 *    are 20-40 times the others'. Planted by scaling those rows of up_proj by s
 *    and the same columns of down_proj by 1/s, which leaves the float model's
 *    function unchanged (the SwiGLU product is linear in up_proj's output) but
 *    puts the mass of the down_proj input into one block: exactly the case
 *    where a permutation before a block rotation pays.
 *
 * The weights also get rare heavy-tailed entries (synth_weights.c), so that
 * per-channel scales and clipping matter. synth.json records all of it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth.h"

static void add_tensor(synth_plan *plan, synth_role role, int layer, const char *name,
                       int ndim, int64_t rows, int64_t cols)
{
    synth_tensor *t = &plan->tensors[plan->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->role = role;
    t->layer = layer;
    t->ndim = ndim;
    t->rows = rows;
    t->cols = cols;
}

static void add_layer_tensor(synth_plan *plan, synth_role role, int layer, const char *suffix,
                             int ndim, int64_t rows, int64_t cols)
{
    char name[96];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, suffix);
    add_tensor(plan, role, layer, name, ndim, rows, cols);
}

/* In the order of Hugging Face's state dict (module registration order). */
static void list_tensors(synth_plan *plan)
{
    const synth_preset *p = plan->preset;
    int64_t h = p->hidden_size, inter = p->intermediate_size;
    int64_t q = (int64_t)p->num_attention_heads * p->head_dim;
    int64_t kv = (int64_t)p->num_key_value_heads * p->head_dim;

    add_tensor(plan, SYNTH_EMBED, -1, "model.embed_tokens.weight", 2, p->vocab_size, h);
    for (int l = 0; l < plan->layers; l++) {
        add_layer_tensor(plan, SYNTH_Q, l, "self_attn.q_proj.weight", 2, q, h);
        add_layer_tensor(plan, SYNTH_K, l, "self_attn.k_proj.weight", 2, kv, h);
        add_layer_tensor(plan, SYNTH_V, l, "self_attn.v_proj.weight", 2, kv, h);
        add_layer_tensor(plan, SYNTH_O, l, "self_attn.o_proj.weight", 2, h, q);
        add_layer_tensor(plan, SYNTH_GATE, l, "mlp.gate_proj.weight", 2, inter, h);
        add_layer_tensor(plan, SYNTH_UP, l, "mlp.up_proj.weight", 2, inter, h);
        add_layer_tensor(plan, SYNTH_DOWN, l, "mlp.down_proj.weight", 2, h, inter);
        add_layer_tensor(plan, SYNTH_NORM, l, "input_layernorm.weight", 1, 1, h);
        add_layer_tensor(plan, SYNTH_NORM, l, "post_attention_layernorm.weight", 1, 1, h);
    }
    add_tensor(plan, SYNTH_FINAL_NORM, -1, "model.norm.weight", 1, 1, h);
    if (!p->tie_word_embeddings)
        add_tensor(plan, SYNTH_LM_HEAD, -1, "lm_head.weight", 2, p->vocab_size, h);
}

static bool already_chosen(const int *channels, int n, int c)
{
    for (int i = 0; i < n; i++)
        if (channels[i] == c)
            return true;
    return false;
}

static void plant_residual(synth_plan *plan)
{
    int hidden = plan->preset->hidden_size;
    uint64_t rng = synth_key(plan->seed, "plant/residual");
    plan->n_resid = hidden >= 2 * SYNTH_RESIDUAL_CHANNELS ? SYNTH_RESIDUAL_CHANNELS : 0;
    for (int i = 0; i < plan->n_resid; i++) {
        int c;
        do
            c = (int)(synth_uniform(&rng) * hidden);
        while (already_chosen(plan->resid_channel, i, c));
        plan->resid_channel[i] = c;
        plan->resid_scale[i] = (float)(20.0 + 20.0 * synth_uniform(&rng));
        plan->resid_sign[i] = synth_uniform(&rng) < 0.5 ? -1.0f : 1.0f;
    }
}

static void plant_down_proj(synth_plan *plan)
{
    int inter = plan->preset->intermediate_size;
    int align = inter >= 32 ? 16 : 1;
    plan->n_heavy = inter >= 2 * SYNTH_HEAVY_CHANNELS ? SYNTH_HEAVY_CHANNELS : 0;
    int n_starts = plan->n_heavy ? (inter - plan->n_heavy) / align + 1 : 0;
    for (int l = 0; l < plan->layers && plan->n_heavy; l++) {
        char label[64];
        snprintf(label, sizeof label, "plant/down_proj/%d", l);
        uint64_t rng = synth_key(plan->seed, label);
        plan->heavy_start[l] = align * (int)(synth_uniform(&rng) * n_starts);
        for (int i = 0; i < plan->n_heavy; i++)
            plan->heavy_scale[l * plan->n_heavy + i] = (float)(20.0 + 20.0 * synth_uniform(&rng));
    }
}

/* Logits with the spread of a trained model's (standard deviation about 2).
 * After the final RMSNorm the massive channels hold most of the energy and the
 * other hidden - n channels share the fraction `bulk` of it; the final norm
 * damps the massive ones (synth_weights.c) and scales the rest so that
 * lm_head rows of norm 0.02 * sqrt(hidden) give logits of that spread. */
static float final_norm_scale(const synth_plan *plan)
{
    double hidden = plan->preset->hidden_size, others = hidden - plan->n_resid;
    double massive = 0;
    for (int i = 0; i < plan->n_resid; i++)
        massive += (double)plan->resid_scale[i] * plan->resid_scale[i];
    double bulk = others / (others + massive);
    return (float)(2.0 / (0.02 * sqrt(hidden * bulk)));
}

int synth_plan_init(synth_plan *plan, const synth_preset *p, int layers, uint64_t seed,
                    unsigned plant, perq_err *err)
{
    memset(plan, 0, sizeof *plan);
    if (layers < 1 || layers > 1024)
        return perq_fail(err, PERQ_E_INVALID, "layers must be between 1 and 1024, not %d", layers);
    plan->preset = p;
    plan->layers = layers;
    plan->seed = seed;
    plan->plant = plant;
    size_t n_max = 3 + 9 * (size_t)layers;
    plan->tensors = calloc(n_max, sizeof *plan->tensors);
    plan->heavy_start = calloc((size_t)layers, sizeof *plan->heavy_start);
    plan->heavy_scale = calloc((size_t)layers * SYNTH_HEAVY_CHANNELS, sizeof *plan->heavy_scale);
    if (!plan->tensors || !plan->heavy_start || !plan->heavy_scale) {
        synth_plan_free(plan);
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    }
    list_tensors(plan);
    if (plant & PERQ_SYNTH_PLANT_RESIDUAL)
        plant_residual(plan);
    if (plant & PERQ_SYNTH_PLANT_DOWN_PROJ)
        plant_down_proj(plan);
    plan->final_norm_scale = final_norm_scale(plan);
    return 0;
}

void synth_plan_free(synth_plan *plan)
{
    free(plan->tensors);
    free(plan->heavy_start);
    free(plan->heavy_scale);
    memset(plan, 0, sizeof *plan);
}
