/* The job spec of ../shared/API.md, parsed strictly (unknown fields, wrong
 * types and impossible combinations are errors) and normalised with defaults. */
#ifndef PERQ_JOBSPEC_H
#define PERQ_JOBSPEC_H

#include <stdbool.h>
#include <jansson.h>

#include "perq/error.h"

typedef enum { PERQ_METHOD_PERQ, PERQ_METHOD_RTN } perq_method;
typedef enum { PERQ_WALGO_GPTQ, PERQ_WALGO_RTN } perq_walgo;
typedef enum { PERQ_ROT_FULL, PERQ_ROT_BLOCK, PERQ_ROT_NONE } perq_rotation_mode;
typedef enum { PERQ_PERM_MASSDIFF, PERQ_PERM_IDENTITY, PERQ_PERM_ZIGZAG, PERQ_PERM_RANDOM } perq_permutation;

enum { PERQ_OUT_COMPRESSED_TENSORS = 1 << 0, PERQ_OUT_GGUF = 1 << 1 };

typedef struct perq_jobspec {
    char model[128];          /* model id; may be empty for `perq quantize` */
    perq_method method;
    struct {
        int bits;             /* 4 */
        int group_size;       /* 32, 64, 128; 0 = per output channel */
        perq_walgo algorithm;
    } weights;
    struct {
        int bits;             /* 4 (W4A4) or 16 (weight only) */
    } activations;
    struct {
        perq_rotation_mode mode;
        int block_size;       /* 0 = full width */
        perq_permutation permutation;
        bool randomized;      /* random sign flips (seeded by calibration.seed) before every Hadamard */
        bool online;          /* R3 (and P3) at the down_proj input; false: R1 and R2 only */
        bool fold_norms;      /* RMSNorm weights folded into the next linears (always when rotating) */
    } rotation;
    struct {
        bool present;
        char dataset[256];    /* dataset name (daemon) or file path (perq quantize) */
        int samples, seq_len;
        long long seed;
    } calibration;
    unsigned outputs;         /* PERQ_OUT_* bits */
    struct {
        bool present;
        char dataset[256];
        int ctx, chunks;      /* chunks 0 = whole text */
    } eval;
} perq_jobspec;

/* require_model: the daemon needs "model"; `perq quantize` does not. */
int perq_jobspec_parse(const json_t *doc, bool require_model, perq_jobspec *out, perq_err *err);
/* The normalised spec, every default filled in (new reference). */
json_t *perq_jobspec_to_json(const perq_jobspec *spec);

const char *perq_method_name(perq_method m);
const char *perq_walgo_name(perq_walgo a);
const char *perq_rotation_mode_name(perq_rotation_mode m);
const char *perq_permutation_name(perq_permutation p);

#endif
