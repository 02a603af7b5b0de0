/* Per-token negative log-likelihood under lm_head without the head in fp32.
 *
 * nll[r] = log sum_v exp(l[r][v]) - l[r][targets[r]], l = x Whead^T, computed
 * by walking the head in blocks of vocab rows: each block is read with
 * perq_model_head_rows (from the loaded head, the tied embedding or the
 * checkpoint mapping), multiplied by every row of x in one sgemm, and folded
 * into a running log-sum-exp per row (running max and rescaled sum, in double).
 * Only one block of the head and its logits exist at a time; the mapped pages
 * read are dropped as the walk goes. A loaded head (m->head) is used in place. */
#ifndef PERQ_HEAD_NLL_H
#define PERQ_HEAD_NLL_H

#include <stdint.h>

#include "perq/error.h"
#include "perq/model.h"

/* Vocab rows per block (0: a few MB of fp32 weights, as many logits at most). */
#define PERQ_HEAD_NLL_BLOCK_DEFAULT 0

/* x [rows][hidden] normalised last hidden states (after any lm_head hook);
 * targets [rows] in [0, vocab). Writes nll [rows]. A pack-quantized head must
 * be loaded first (PERQ_E_UNSUPPORTED otherwise). block_rows: vocab rows per
 * block, PERQ_HEAD_NLL_BLOCK_DEFAULT normally (tests force small ones). */
int perq_head_nll(const perq_model *m, const float *x, int rows, const int32_t *targets, int block_rows,
                  double *nll, perq_err *err);

#endif
