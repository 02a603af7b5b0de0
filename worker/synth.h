/* perq synth: synthetic Hugging Face checkpoints with the exact shapes of real
 * Llama-family models, random weights of a realistic scale, and outliers
 * planted the way trained models carry them, for tests and benchmarks.
 *
 *   synth_presets.c    the model shapes, config.json, generation_config.json
 *   synth_tokenizer.c  tokenizer.json and tokenizer_config.json
 *   synth_plan.c       the tensors of a checkpoint and every planted outlier
 *   synth_weights.c    the values of one row of one tensor (counter-based RNG)
 *   synth_write.c      safetensors files streamed a block of rows at a time
 *   synth_pipe.c       blocks handed to a writer thread while the next is made
 *   synth.c            the whole checkpoint folder, sharding, synth.json */
#ifndef PERQ_SYNTH_H
#define PERQ_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perq/dtype.h"
#include "perq/error.h"

/* ---- helpers (synth.c) ----------------------------------------------------- */

struct json_t;
/* dir/name, newly allocated; NULL when out of memory. */
char *synth_path(const char *dir, const char *name);
/* Writes root as indented JSON to dir/name, atomically. Does not take root. */
int synth_write_json(const char *dir, const char *name, const struct json_t *root, perq_err *err);

/* ---- presets (synth_presets.c) -------------------------------------------- */

typedef enum {
    SYNTH_TOK_SENTENCEPIECE, /* Llama 2 / TinyLlama / Mistral: BPE with byte fallback */
    SYNTH_TOK_LLAMA3         /* byte-level BPE, special tokens from id 128000 */
} synth_tokenizer_kind;

typedef struct synth_preset {
    const char *name;
    const char *architecture; /* "LlamaForCausalLM" or "MistralForCausalLM" */
    const char *model_type;   /* "llama" or "mistral" */
    int hidden_size, intermediate_size, num_hidden_layers;
    int num_attention_heads, num_key_value_heads, head_dim;
    int vocab_size, max_position_embeddings;
    double rms_norm_eps, rope_theta;
    bool llama3_rope; /* rope_scaling {rope_type: llama3, ...}; null otherwise */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position_embeddings;
    bool tie_word_embeddings;
    int bos_token_id, eos_token_id;
    int sliding_window; /* Mistral; 0 when the model has none */
    synth_tokenizer_kind tokenizer;
} synth_preset;

const synth_preset *synth_preset_find(const char *name); /* NULL when unknown */
size_t synth_preset_count(void);
const synth_preset *synth_preset_at(size_t i);

/* config.json (a clean Hugging Face config with num_hidden_layers = layers)
 * and generation_config.json in dir. */
int synth_write_config(const synth_preset *p, int layers, perq_dtype dtype, const char *dir,
                       perq_err *err);

/* ---- tokenizer (synth_tokenizer.c) ---------------------------------------- */

/* tokenizer.json and tokenizer_config.json of the preset's family and
 * vocabulary size, with merges learnt from a built-in English word list. */
int synth_write_tokenizer(const synth_preset *p, const char *dir, perq_err *err);

/* ---- the checkpoint and what is planted in it (synth_plan.c) -------------- */

/* What a row of a tensor is, for the weight generator. */
typedef enum {
    SYNTH_EMBED, SYNTH_NORM, SYNTH_FINAL_NORM,
    SYNTH_Q, SYNTH_K, SYNTH_V, SYNTH_O, SYNTH_GATE, SYNTH_UP, SYNTH_DOWN, SYNTH_LM_HEAD
} synth_role;

typedef struct synth_tensor {
    char name[96];
    synth_role role;
    int layer;          /* -1 outside the decoder layers */
    int ndim;           /* 1 (norm weights) or 2 */
    int64_t rows, cols; /* a 1-D tensor is one row of cols values */
} synth_tensor;

/* Outliers to plant (bits of perq_synth_options.plant). */
enum {
    PERQ_SYNTH_PLANT_RESIDUAL = 1u,    /* massive residual-stream channels */
    PERQ_SYNTH_PLANT_DOWN_PROJ = 2u,   /* heavy channels at the down_proj input */
    PERQ_SYNTH_PLANT_HEAVY_TAILS = 4u, /* rare large weight entries */
    PERQ_SYNTH_PLANT_ALL = 7u
};

#define SYNTH_RESIDUAL_CHANNELS 4
#define SYNTH_HEAVY_CHANNELS 8

typedef struct synth_plan {
    const synth_preset *preset;
    int layers;
    uint64_t seed;
    unsigned plant;
    float final_norm_scale; /* mean of model.norm.weight, sets the logits' spread */
    /* Residual stream: channels whose activations are resid_scale times the others'. */
    int n_resid;
    int resid_channel[SYNTH_RESIDUAL_CHANNELS];
    float resid_scale[SYNTH_RESIDUAL_CHANNELS];
    float resid_sign[SYNTH_RESIDUAL_CHANNELS];
    /* down_proj input, per layer: n_heavy adjacent channels from heavy_start[l],
     * up_proj rows times heavy_scale, down_proj columns divided by it. */
    int n_heavy;
    int *heavy_start;   /* [layers] */
    float *heavy_scale; /* [layers][n_heavy] */
    synth_tensor *tensors; /* in Hugging Face's module order */
    size_t n_tensors;
} synth_plan;

int synth_plan_init(synth_plan *plan, const synth_preset *p, int layers, uint64_t seed,
                    unsigned plant, perq_err *err);
void synth_plan_free(synth_plan *plan);

/* ---- random numbers and weight values (synth_weights.c) ------------------- */

/* The key of a named random stream: a hash of the seed and the label. */
uint64_t synth_key(uint64_t seed, const char *label);
/* splitmix64: a counter-based generator; the state is the counter. */
uint64_t synth_next(uint64_t *state);
double synth_uniform(uint64_t *state); /* [0, 1) */

/* The cols values of row `row` of tensor t, in fp32. A pure function of the
 * plan's seed, the tensor's name and the row: rows can be made in any order
 * and on any thread. */
void synth_tensor_row(const synth_plan *plan, const synth_tensor *t, int64_t row, float *out);

/* ---- two blocks between the generator and a writer thread (synth_pipe.c) -- */

struct perq_st_writer;
typedef struct synth_pipe synth_pipe;

/* Starts a thread that writes the blocks sent to it, in order, to a
 * safetensors stream (perq_st_stream_write). */
int synth_pipe_open(synth_pipe **p, struct perq_st_writer *stream, size_t block_bytes,
                    perq_err *err);
/* A block of block_bytes to fill (waits until the writer has freed one). */
unsigned char *synth_pipe_block(synth_pipe *p);
/* Hands the block last returned, holding len bytes, to the writer; -1 with
 * err once an earlier write has failed. */
int synth_pipe_send(synth_pipe *p, size_t len, perq_err *err);
/* Waits for every write, stops the thread, frees p; -1 with err if any failed. */
int synth_pipe_close(synth_pipe *p, perq_err *err);

/* ---- safetensors streaming (synth_write.c) -------------------------------- */

/* Writes the tensors t[0..n) in dtype to path (through a temporary file),
 * generating them a block of rows at a time; never holds a whole tensor. */
int synth_write_safetensors(const synth_plan *plan, const synth_tensor *const *t, size_t n,
                            perq_dtype dtype, const char *path, perq_err *err);

/* ---- the whole checkpoint (synth.c) --------------------------------------- */

/* Hugging Face's default max_shard_size, "5GB". */
#define PERQ_SYNTH_SHARD_BYTES 5000000000ull

typedef struct perq_synth_options {
    const char *preset;
    const char *out_dir;
    perq_dtype dtype;     /* F32, F16 or BF16 */
    int layers;           /* 0: the preset's num_hidden_layers */
    uint64_t seed;
    uint64_t shard_bytes; /* a model above this is sharded; 0: PERQ_SYNTH_SHARD_BYTES */
    unsigned plant;       /* PERQ_SYNTH_PLANT_* bits */
} perq_synth_options;

/* bf16, the preset's layers, seed 0, default sharding, everything planted. */
void perq_synth_defaults(perq_synth_options *o);

/* Writes config.json, generation_config.json, model.safetensors (or shards and
 * model.safetensors.index.json), tokenizer.json, tokenizer_config.json and
 * synth.json (what was planted) into o->out_dir, creating it. */
int perq_synth(const perq_synth_options *o, perq_err *err);

#endif
