/* Function-preserving folds into fp32 weights (see perq/fold.h). */
#include "perq/fold.h"

#include "perq/permute.h"

static void scale_columns(float *w, int rows, int cols, const float *s)
{
    for (int r = 0; r < rows; r++) {
        float *row = w + (size_t)r * cols;
        for (int c = 0; c < cols; c++)
            row[c] *= s[c];
    }
}

static void set_ones(float *x, int n)
{
    for (int i = 0; i < n; i++)
        x[i] = 1.0f;
}

static int need_layer(const perq_model *m, int layer, perq_err *err)
{
    if (layer < 0 || layer >= m->cfg.num_hidden_layers || !perq_model_layer_loaded(m, layer))
        return perq_fail(err, PERQ_E_INVALID, "fold: layer %d is not loaded", layer);
    return 0;
}

static int check_width(const perq_rotation *r, int width, const char *what, perq_err *err)
{
    if (r && (r->n <= 0 || width % r->n != 0))
        return perq_fail(err, PERQ_E_INVALID, "fold: rotation of width %d does not tile %s (%d)", r ? r->n : 0, what,
                         width);
    return 0;
}

void perq_fold_layer_norms(perq_model *m, int layer)
{
    const perq_llama_config *c = &m->cfg;
    perq_layer_weights *w = &m->layers[layer];
    int hidden = c->hidden_size, kv = c->num_key_value_heads * c->head_dim;
    scale_columns(w->q, c->num_attention_heads * c->head_dim, hidden, w->attn_norm);
    scale_columns(w->k, kv, hidden, w->attn_norm);
    scale_columns(w->v, kv, hidden, w->attn_norm);
    scale_columns(w->gate, c->intermediate_size, hidden, w->ffn_norm);
    scale_columns(w->up, c->intermediate_size, hidden, w->ffn_norm);
    set_ones(w->attn_norm, hidden);
    set_ones(w->ffn_norm, hidden);
}

int perq_fold_head_norm(perq_model *m, perq_err *err)
{
    if (!m->head)
        return perq_fail(err, PERQ_E_INVALID, "fold: lm_head is not loaded");
    perq_fold_head_norm_rows(m, m->head, (size_t)m->cfg.vocab_size);
    set_ones(m->final_norm, m->cfg.hidden_size);
    return 0;
}

void perq_fold_head_norm_rows(const perq_model *m, float *x, size_t rows)
{
    scale_columns(x, (int)rows, m->cfg.hidden_size, m->final_norm);
}

/* W [rows][hidden] <- W P1 R1: the layers that read the residual stream. */
static int fold_reader(float *w, size_t rows, int hidden, const int *p1, const perq_rotation *r1, perq_err *err)
{
    if (p1 && perq_permute_columns(w, rows, hidden, p1, err) != 0)
        return -1;
    return r1 ? perq_rotation_right(r1, w, rows, (size_t)hidden, PERQ_ROT_N, err) : 0;
}

/* W [hidden][cols] <- R1^T P1^T W: the layers that write it. */
static int fold_writer(float *w, int hidden, size_t cols, const int *p1, const perq_rotation *r1, perq_err *err)
{
    if (p1 && perq_permute_rows(w, hidden, cols, p1, err) != 0)
        return -1;
    return r1 ? perq_rotation_left(r1, w, (size_t)hidden, cols, PERQ_ROT_T, err) : 0;
}

int perq_fold_residual_layer(perq_model *m, int layer, const int *p1, const perq_rotation *r1, perq_err *err)
{
    const perq_llama_config *c = &m->cfg;
    if (need_layer(m, layer, err) != 0 || check_width(r1, c->hidden_size, "hidden_size", err) != 0)
        return -1;
    perq_layer_weights *w = &m->layers[layer];
    int hidden = c->hidden_size, q_out = c->num_attention_heads * c->head_dim;
    int kv = c->num_key_value_heads * c->head_dim, inter = c->intermediate_size;
    if (fold_reader(w->q, (size_t)q_out, hidden, p1, r1, err) != 0 ||
        fold_reader(w->k, (size_t)kv, hidden, p1, r1, err) != 0 ||
        fold_reader(w->v, (size_t)kv, hidden, p1, r1, err) != 0 ||
        fold_reader(w->gate, (size_t)inter, hidden, p1, r1, err) != 0 ||
        fold_reader(w->up, (size_t)inter, hidden, p1, r1, err) != 0 ||
        fold_writer(w->o, hidden, (size_t)q_out, p1, r1, err) != 0 ||
        fold_writer(w->down, hidden, (size_t)inter, p1, r1, err) != 0)
        return perq_err_context(err, "folding the residual transform into layer %d", layer);
    return 0;
}

int perq_fold_residual_embed(perq_model *m, const int *p1, const perq_rotation *r1, perq_err *err)
{
    if (!m->embed)
        return perq_fail(err, PERQ_E_INVALID, "fold: the embedding is not loaded");
    if (check_width(r1, m->cfg.hidden_size, "hidden_size", err) != 0)
        return -1;
    return fold_reader(m->embed, (size_t)m->cfg.vocab_size, m->cfg.hidden_size, p1, r1, err);
}

int perq_fold_residual_head(perq_model *m, const int *p1, const perq_rotation *r1, perq_err *err)
{
    if (!m->head)
        return perq_fail(err, PERQ_E_INVALID, "fold: lm_head is not loaded");
    if (check_width(r1, m->cfg.hidden_size, "hidden_size", err) != 0)
        return -1;
    return fold_reader(m->head, (size_t)m->cfg.vocab_size, m->cfg.hidden_size, p1, r1, err);
}

int perq_fold_residual_rows(const perq_model *m, float *x, size_t rows, const int *p1, const perq_rotation *r1,
                            perq_err *err)
{
    if (check_width(r1, m->cfg.hidden_size, "hidden_size", err) != 0)
        return -1;
    return fold_reader(x, rows, m->cfg.hidden_size, p1, r1, err);
}

int perq_fold_r2(perq_model *m, int layer, const perq_rotation *r2, perq_err *err)
{
    const perq_llama_config *c = &m->cfg;
    if (need_layer(m, layer, err) != 0 || check_width(r2, c->head_dim, "head_dim", err) != 0)
        return -1;
    perq_layer_weights *w = &m->layers[layer];
    size_t kv = (size_t)c->num_key_value_heads * c->head_dim, q_out = (size_t)c->num_attention_heads * c->head_dim;
    /* Blockwise over the whole width: every head (and block within it) alike. */
    if (perq_rotation_left(r2, w->v, kv, (size_t)c->hidden_size, PERQ_ROT_T, err) != 0 ||
        perq_rotation_right(r2, w->o, (size_t)c->hidden_size, q_out, PERQ_ROT_N, err) != 0)
        return perq_err_context(err, "folding R2 into layer %d", layer);
    return 0;
}

int perq_fold_p3(perq_model *m, int layer, const int *perm, perq_err *err)
{
    const perq_llama_config *c = &m->cfg;
    if (need_layer(m, layer, err) != 0)
        return -1;
    perq_layer_weights *w = &m->layers[layer];
    int inter = c->intermediate_size;
    if (perq_permute_rows(w->gate, inter, (size_t)c->hidden_size, perm, err) != 0 ||
        perq_permute_rows(w->up, inter, (size_t)c->hidden_size, perm, err) != 0 ||
        perq_permute_columns(w->down, (size_t)c->hidden_size, inter, perm, err) != 0)
        return perq_err_context(err, "folding P3 into layer %d", layer);
    return 0;
}

void perq_fold_down_input_signs(perq_model *m, int layer, const float *signs)
{
    const perq_llama_config *c = &m->cfg;
    perq_layer_weights *w = &m->layers[layer];
    size_t hidden = (size_t)c->hidden_size, inter = (size_t)c->intermediate_size;
    for (size_t i = 0; i < inter; i++) {
        if (signs[i] > 0)
            continue;
        for (size_t k = 0; k < hidden; k++)
            w->up[i * hidden + k] = -w->up[i * hidden + k];
        for (size_t o = 0; o < hidden; o++)
            w->down[o * inter + i] = -w->down[o * inter + i];
    }
}

int perq_fold_r3(perq_model *m, int layer, const perq_rotation *r3, perq_err *err)
{
    const perq_llama_config *c = &m->cfg;
    if (need_layer(m, layer, err) != 0 || check_width(r3, c->intermediate_size, "intermediate_size", err) != 0)
        return -1;
    if (perq_rotation_right(r3, m->layers[layer].down, (size_t)c->hidden_size, (size_t)c->intermediate_size,
                            PERQ_ROT_N, err) != 0)
        return perq_err_context(err, "folding R3 into layer %d", layer);
    return 0;
}

int perq_fold_rotate_down_input(const perq_rotation *r3, float *x, size_t rows, int intermediate, perq_err *err)
{
    if (check_width(r3, intermediate, "intermediate_size", err) != 0)
        return -1;
    return perq_rotation_right(r3, x, rows, (size_t)intermediate, PERQ_ROT_N, err);
}
