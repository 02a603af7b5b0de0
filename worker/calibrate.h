/* The PeRQ pipeline inside the worker: calibration sequences, the W4A4 hook,
 * and the layer-by-layer calibrate-permute-rotate-quantize loop.
 *
 * perq_pipeline_run, on an open model (checkpoint or perq_model_alloc):
 *   1. rotation mode block: a float pass over the calibration sequences
 *      gathers the residual stream's per-channel mean |x| (the inputs of q and
 *      gate, norms folded); P1 is chosen from it (the spec's permutation).
 *   2. The calibration sequences embedded (rows looked up in the checkpoint)
 *      and the residual transform P1 R1 applied to that stream, as the folded
 *      embedding would give it.
 *   3. Layer by layer (perq_layerwise_calibrate), on inputs that went through
 *      the layers before it already quantized:
 *        fold the norms (unless mode none without fold_norms: nothing needs
 *          them folded, and a folded norm weight widens the per-channel
 *          weight ranges), P1 R1 and R2 into the layer;
 *        observe (one pass): per-channel mean |x| (and absmax) at the
 *          down_proj input, plus a sample of those rows for the report; for
 *          GPTQ also the Hessians of the q/k/v, o and gate/up inputs as the
 *          quantized model sees them (INT4 per-token activations for W4A4:
 *          P3 and R3 do not change these inputs), and with R3 every
 *          down_proj input row kept ([tokens][intermediate] fp32; the
 *          sample is their beginning);
 *        choose P3 at block size b from them; fold P3, D3 (randomized) and R3;
 *        GPTQ: the down_proj input's Hessian from the kept rows put through
 *          this layer's P3, signs and R3 and the W4A4 hook's activation
 *          quantization, as the quantized model sees them (without R3 there
 *          is no P3 and the observing pass gathered it); the kept rows are
 *          freed here, before quantizing, where memory peaks (when the kept
 *          rows would not fit, see hessian_pass, a pass of its own gathers
 *          every Hessian instead);
 *        quantize all seven linears (GPTQ sharing one factorisation between
 *          q/k/v and between gate/up, or RTN) and leave q * scale in the model;
 *        propagate with the quantized weights through the W4A4 hook.
 * Rotations: mode none: none; full: R1 (hidden) and R2 (head_dim) full width,
 * R3 of block_size (0: the full intermediate width); block: R1, R2 and R3 all
 * blockwise of block_size (capped at hidden and head_dim), with P1. R3 and P3
 * only for W4A4 (and not with online false): a weight-only artifact must load
 * in stock runtimes, so every rotation in it is folded. randomized: R1 and R2
 * become D H (perq_rotation_randomize), and each layer draws signs D3 at the
 * down_proj input, folded into up/down with P3, so the online R3 stays plain. */
#ifndef PERQ_WORKER_CALIBRATE_H
#define PERQ_WORKER_CALIBRATE_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "perq/dtype.h"
#include "perq/forward.h"
#include "perq/hadamard.h"
#include "perq/int4.h"
#include "perq/job.h"
#include "perq/jobspec.h"
#include "perq/model.h"

/* ---- the W4A4 hook -------------------------------------------------------- */

/* At the down_proj input x <- x R3 (r3 may be NULL); with act_bits 4, INT4
 * per-token fake quantization at the input of every linear but lm_head. */
typedef struct perq_w4a4 {
    const perq_rotation *r3;
    int act_bits;
} perq_w4a4;

int perq_w4a4_before(void *ctx, const perq_linear_site *site, perq_err *err);
/* A hook for h (borrowed), or {NULL, NULL} when it would do nothing. */
perq_linear_hook perq_w4a4_hook(perq_w4a4 *h);

/* ---- calibration sequences ------------------------------------------------ */

/* n_seqs sequences of seq_len tokens out of ids[0..n_ids) (text tokenized
 * without BOS): each is BOS then seq_len - 1 consecutive tokens from an offset
 * drawn from seed. The text needs at least seq_len - 1 tokens. *out is
 * n_seqs * seq_len ids (malloc'd). */
int perq_calib_sequences(const int32_t *ids, size_t n_ids, int bos, int n_seqs, int seq_len, uint64_t seed,
                         int32_t **out, perq_err *err);

/* ---- the pipeline ---------------------------------------------------------- */

/* Where each layer's quantized linears go as soon as they exist (optional):
 * take gets that layer's PERQ_PIPELINE_LINEARS matrices (in p->linears) and
 * may free them (perq_int4_free) once it has packed them into an export, so
 * a run never holds every layer's INT4 values at once. */
typedef struct perq_pipeline_sink {
    void *ctx;
    int (*take)(void *ctx, int layer, perq_int4_matrix *linears, perq_err *err);
} perq_pipeline_sink;

typedef struct perq_pipeline_opts {
    perq_rotation_mode mode;
    int block_size;             /* 0: R3 full width (mode full) */
    perq_permutation permutation;
    int act_bits;               /* 4 or 16 */
    perq_walgo algorithm;
    int group_size;             /* 0: per output channel */
    perq_dtype scale_dtype;     /* the dtype the scales will be stored in */
    uint64_t seed;              /* random permutations, random orthogonal factors, random signs */
    bool randomized;            /* random sign flips before R1, R2 and (folded into up/down) R3 */
    bool online;                /* R3 and P3 for W4A4; false: R1 and R2 only */
    bool fold_norms;            /* with mode none: fold the RMSNorm weights anyway (rotations always do) */
    /* GPTQ's Hessians from a pass of their own after P3 and R3 are folded,
     * through the W4A4 hook, instead of from the observing pass and the kept
     * down_proj rows: the same Hessians up to float summation order, one more
     * layer pass, no kept rows. The run does this by itself when the kept
     * rows would take more than 1 GiB and more than one fp32 layer plus the
     * residual stream; true forces it (tests compare both ways). */
    bool hessian_pass;
    perq_pipeline_sink sink;
} perq_pipeline_opts;

#define PERQ_PIPELINE_LINEARS 7 /* q, k, v, o, gate, up, down: perq_linear_kind order */

/* The stages a run goes through, layer by layer, as it reports them (API.md):
 * per layer "rotating" (R1, R2 folded), "calibrating" (statistics of the
 * down_proj input and, for GPTQ, the other Hessians), "permuting" (P3 chosen
 * and folded), "rotating" (R3), "calibrating" (GPTQ: the down_proj Hessian),
 * "quantizing", "calibrating" (the quantized layer's outputs, the next
 * layer's inputs); each with progress = layers finished. */
typedef enum {
    PERQ_STAGE_CALIBRATING, PERQ_STAGE_PERMUTING, PERQ_STAGE_ROTATING, PERQ_STAGE_QUANTIZING,
    PERQ_PIPELINE_STAGES
} perq_pipeline_stage;

const char *perq_pipeline_stage_name(perq_pipeline_stage s);

/* Where the time went, and the arithmetic done, for reports and benchmarks. */
typedef struct perq_pipeline_costs {
    double stage_seconds[PERQ_PIPELINE_STAGES];
    double calib_flops;         /* forward passes (linears, attention) and Hessian accumulation */
    double gptq_update_flops;   /* GPTQ's lazy-batch sgemm updates (perq_gptq_stats) */
    double gptq_update_seconds;
    double gptq_factor_seconds;
    double gptq_seconds;        /* whole GPTQ calls, factorisations included */
    bool hessian_pass;          /* GPTQ's Hessians had a pass of their own (the kept
                                   down_proj rows would not fit, or opts.hessian_pass) */
} perq_pipeline_costs;

typedef struct perq_pipeline {
    perq_pipeline_opts opts;
    perq_rotation r1, r2, r3;
    bool has_r1, has_r2, has_r3;
    int r3_block;               /* R3's width (block size), 0 without R3 */
    int *p1;                    /* residual permutation, NULL when none */
    bool norms_folded;          /* only where a rotation needs it (not mode none) */
    float *layer_norms;         /* [layers][2][hidden] input/post_attention norms
                                   as exported when not folded, else NULL */
    perq_int4_matrix *linears;  /* [layers][PERQ_PIPELINE_LINEARS] */
    int n_layers;
    json_t *layers;             /* the report's per-layer entries */
    json_t *rotations;          /* the report's description of R1, R2, R3, P1 */
    perq_pipeline_costs costs;
} perq_pipeline;

/* The costs as the report's "compute" object. */
json_t *perq_pipeline_costs_json(const perq_pipeline_costs *c);

/* Checks the options against the model's shapes before any work. */
int perq_pipeline_check(const perq_llama_config *cfg, const perq_pipeline_opts *opts, perq_err *err);

/* Runs it (see above) over ids [n_seqs][seq_len]. On return p->linears holds
 * the quantized weights and the model, for layers still loaded, the
 * dequantized ones; its embedding, lm_head and final norm are as they were
 * (never loaded by the run, so a job does not hold them in fp32: the export
 * folds them block of rows by block of rows as it writes them,
 * perq_job_run_perq). rep may be NULL. */
int perq_pipeline_run(perq_model *m, const int32_t *ids, int n_seqs, int seq_len, const perq_pipeline_opts *opts,
                      const perq_reporter *rep, perq_pipeline *p, perq_err *err);
/* The ends of the folded model in memory, for a forward pass on m after a
 * run: lm_head loaded as its own matrix (a tied head is untied), the final
 * norm folded into its columns (the norm becomes ones), the embedding loaded,
 * and P1 R1 folded into both. Exactly what the export writes for them. Once
 * only, after perq_pipeline_run: the export reads m's ends as not folded. */
int perq_pipeline_fold_ends(const perq_pipeline *p, perq_model *m, perq_err *err);
/* Rows [row0, row0 + n) of the folded embedding (head false) or lm_head (head
 * true) into out[n][hidden], from m's ends as they are (the checkpoint's
 * mapping, or the matrices when loaded; not folded yet): the final norm
 * folded into a head row's columns, then P1 R1. The values
 * perq_pipeline_fold_ends gives those rows; the export writes these, block by
 * block, so that a job never holds either matrix. */
int perq_pipeline_end_rows(const perq_pipeline *p, const perq_model *m, bool head, int64_t row0, int64_t n,
                           float *out, perq_err *err);
void perq_pipeline_free(perq_pipeline *p);

/* The W4A4 evaluation hook of a finished pipeline (R3 online, activations). */
perq_w4a4 perq_pipeline_w4a4(const perq_pipeline *p);

#endif

/* ---- the job: `method: perq` (worker/perq_pipeline.c) ------------------------ */

/* perq_job_run for method perq: loading (model, tokenizer, calibration
 * sequences) -> calibrating/quantizing (perq_pipeline_run) -> exporting (the
 * folded, quantized model as compressed-tensors; for W4A4 with an online R3
 * a transform_config) -> evaluating (float model; the exported one through
 * the W4A4 hook) -> report.json -> manifest.json. out_dir exists and is empty. */
int perq_job_run_perq(const perq_jobspec *spec, const perq_job_paths *paths, const perq_reporter *rep,
                      json_t **metrics, perq_err *err);
