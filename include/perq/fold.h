/* Transformations of an fp32 perq_model that leave its function unchanged
 * (PERQ-NOTES.md section 3): folding the RMSNorm weights into the linear
 * layers that read the normalised activations, and folding orthogonal
 * transforms (permutations, Hadamard rotations, full or block-diagonal) into
 * the weights.
 *
 * The residual stream. With every norm weight 1, an orthogonal Q of width
 * hidden commutes with RMSNorm, so h -> h Q everywhere is invisible:
 *   embedding rows            E <- E Q
 *   o_proj, down_proj rows    W <- Q^T W      (they write the residual)
 *   q/k/v/gate/up/lm_head     W <- W Q        (they read it)
 * Here Q = P1 R1: the permutation P1 ((x P1)[k] = x[perm[k]], perq/permute.h;
 * NULL for none) then the rotation R1 (NULL for none; blockwise when r1->n is
 * smaller than hidden).
 *
 * R2, per attention head: v's output rows of every kv head W_v <- R2^T W_v,
 * o's input columns of every query head W_o <- W_o R2. Each query head reads
 * the values of one kv head, rotated by R2, and attention mixes tokens, not
 * features, so its output is rotated by the same R2, which o undoes.
 *
 * P3, at the down_proj input: gate and up output rows permuted, down_proj's
 * input columns alike (SiLU and the gating product act elementwise).
 * R3, at the down_proj input: W_down <- W_down R3 folded here; the activation
 * must be rotated online, x <- x R3 (perq_fold_rotate_down_input), since SwiGLU
 * does not commute with a rotation.
 *
 * Every function needs the weights it touches loaded (layers, embed, head). */
#ifndef PERQ_FOLD_H
#define PERQ_FOLD_H

#include "perq/error.h"
#include "perq/hadamard.h"
#include "perq/model.h"

/* input_layernorm into the input columns of q/k/v, post_attention_layernorm
 * into those of gate/up; both norms become 1. */
void perq_fold_layer_norms(perq_model *m, int layer);
/* The final norm into lm_head's input columns (the head must be loaded: for a
 * tied model perq_model_load_head makes it a separate matrix); the final norm
 * becomes 1. */
int perq_fold_head_norm(perq_model *m, perq_err *err);
/* The same on rows of lm_head x [rows][hidden] held elsewhere (read with
 * perq_model_head_rows): their columns times the final norm, which stays. */
void perq_fold_head_norm_rows(const perq_model *m, float *x, size_t rows);

/* The residual transform Q = P1 R1 (either may be NULL) on one layer's
 * weights, on the embedding (loaded), on lm_head (loaded), and on rows of
 * activations x [rows][hidden] (e.g. a calibration residual stream). */
int perq_fold_residual_layer(perq_model *m, int layer, const int *p1, const perq_rotation *r1, perq_err *err);
int perq_fold_residual_embed(perq_model *m, const int *p1, const perq_rotation *r1, perq_err *err);
int perq_fold_residual_head(perq_model *m, const int *p1, const perq_rotation *r1, perq_err *err);
int perq_fold_residual_rows(const perq_model *m, float *x, size_t rows, const int *p1, const perq_rotation *r1,
                            perq_err *err);

/* R2 on v's output rows and o's input columns; r2->n must divide head_dim. */
int perq_fold_r2(perq_model *m, int layer, const perq_rotation *r2, perq_err *err);
/* P3 on gate/up output rows and down_proj input columns. */
int perq_fold_p3(perq_model *m, int layer, const int *perm, perq_err *err);
/* D3 = diag(signs) (+-1, intermediate_size of them) at the down_proj input:
 * up_proj's output rows and down_proj's input columns flipped alike (the
 * gating product is linear in up's output). With it, an online R3 that stays
 * a plain Hadamard transform acts as the randomized D3 R3. The layer must be
 * loaded. */
void perq_fold_down_input_signs(perq_model *m, int layer, const float *signs);
/* W_down <- W_down R3 (r3->n divides intermediate_size). */
int perq_fold_r3(perq_model *m, int layer, const perq_rotation *r3, perq_err *err);
/* The online half of R3: x [rows][intermediate] <- x R3. */
int perq_fold_rotate_down_input(const perq_rotation *r3, float *x, size_t rows, int intermediate, perq_err *err);

#endif
