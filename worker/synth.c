/* perq synth: a whole synthetic checkpoint folder, laid out as Hugging Face
 * lays out the real model: config files, the weights in one model.safetensors
 * or, above the shard size, in model-0000i-of-0000N.safetensors shards named by
 * model.safetensors.index.json, the tokenizer, and synth.json recording what
 * was planted (config.json stays a clean Hugging Face config). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perq/fsutil.h"
#include "synth.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

char *synth_path(const char *dir, const char *name)
{
    char *path;
    return asprintf(&path, "%s/%s", dir, name) < 0 ? NULL : path;
}

int synth_write_json(const char *dir, const char *name, const json_t *root, perq_err *err)
{
    char *path = synth_path(dir, name);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(7));
    int rc;
    if (!path || !text) {
        rc = perq_fail(err, PERQ_E_NOMEM, "writing %s: out of memory", name);
    } else {
        size_t len = strlen(text);
        text[len] = '\n'; /* replaces the NUL: files end with a newline */
        rc = perq_write_file_atomic(path, text, len + 1, err);
    }
    free(path);
    free(text);
    return rc;
}

void perq_synth_defaults(perq_synth_options *o)
{
    memset(o, 0, sizeof *o);
    o->dtype = PERQ_DT_BF16;
    o->plant = PERQ_SYNTH_PLANT_ALL;
}

/* ---- shards ---------------------------------------------------------------- */

static uint64_t tensor_bytes(const synth_tensor *t, perq_dtype dtype)
{
    return (uint64_t)t->rows * (uint64_t)t->cols * perq_dtype_size(dtype);
}

/* Hugging Face's rule: tensors in order, a new shard whenever the next tensor
 * would take the current one over the limit. shard[i] is tensor i's shard. */
static int assign_shards(const synth_plan *plan, perq_dtype dtype, uint64_t limit, int *shard)
{
    int current = 0;
    uint64_t size = 0;
    for (size_t i = 0; i < plan->n_tensors; i++) {
        uint64_t bytes = tensor_bytes(&plan->tensors[i], dtype);
        if (size > 0 && size + bytes > limit) {
            current++;
            size = 0;
        }
        size += bytes;
        shard[i] = current;
    }
    return current + 1;
}

static void shard_name(char *buf, size_t len, int i, int n)
{
    snprintf(buf, len, "model-%05d-of-%05d.safetensors", i + 1, n);
}

static int write_shard(const synth_plan *plan, const int *shard, int which, int n_shards,
                       perq_dtype dtype, const char *dir, perq_err *err)
{
    const synth_tensor **members = calloc(plan->n_tensors, sizeof *members);
    char name[64];
    if (n_shards == 1)
        snprintf(name, sizeof name, "%s", SINGLE_NAME);
    else
        shard_name(name, sizeof name, which, n_shards);
    char *path = synth_path(dir, name);
    int rc;
    if (!members || !path) {
        rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
    } else {
        size_t n = 0;
        for (size_t i = 0; i < plan->n_tensors; i++)
            if (shard[i] == which)
                members[n++] = &plan->tensors[i];
        rc = synth_write_safetensors(plan, members, n, dtype, path, err);
    }
    free(members);
    free(path);
    return rc;
}

static int write_index(const synth_plan *plan, const int *shard, int n_shards, perq_dtype dtype,
                       const char *dir, perq_err *err)
{
    uint64_t total = 0;
    json_t *map = json_object();
    for (size_t i = 0; map && i < plan->n_tensors; i++) {
        char name[64];
        shard_name(name, sizeof name, shard[i], n_shards);
        if (json_object_set_new(map, plan->tensors[i].name, json_string(name)) != 0) {
            json_decref(map);
            map = NULL;
        }
        total += tensor_bytes(&plan->tensors[i], dtype);
    }
    json_t *index = map ? json_pack("{s:{s:I}, s:o}", "metadata", "total_size",
                                    (json_int_t)total, "weight_map", map)
                        : NULL;
    if (!index)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int rc = synth_write_json(dir, INDEX_NAME, index, err);
    json_decref(index);
    return rc;
}

/* True for a name exactly like model-00002-of-00004.safetensors; *of is its N. */
static bool is_shard_name(const char *name, int *of)
{
    int i, n, end = 0;
    if (sscanf(name, "model-%5d-of-%5d.safetensors%n", &i, &n, &end) != 2 || end == 0 ||
        name[end] != '\0')
        return false;
    char canonical[64];
    shard_name(canonical, sizeof canonical, i - 1, n);
    *of = n;
    return strcmp(canonical, name) == 0;
}

/* Weight files of an earlier run in the same folder that this run did not
 * write: left behind, they would make the folder ambiguous. */
static bool is_stale_weight_file(const char *name, int n_shards)
{
    int of;
    if (is_shard_name(name, &of))
        return n_shards == 1 || of != n_shards;
    if (strcmp(name, SINGLE_NAME) == 0)
        return n_shards > 1;
    if (strcmp(name, INDEX_NAME) == 0)
        return n_shards == 1;
    return false;
}

static int remove_stale_weights(const char *dir, int n_shards, perq_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return perq_fail_errno(err, "reading folder %s", dir);
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!is_stale_weight_file(e->d_name, n_shards))
            continue;
        char *path = synth_path(dir, e->d_name);
        if (!path)
            rc = perq_fail(err, PERQ_E_NOMEM, "out of memory");
        else if (unlink(path) != 0 && errno != ENOENT)
            rc = perq_fail_errno(err, "removing %s", path);
        free(path);
    }
    closedir(d);
    return rc;
}

static int write_weights(const synth_plan *plan, perq_dtype dtype, uint64_t limit,
                         const char *dir, perq_err *err)
{
    int *shard = calloc(plan->n_tensors, sizeof *shard);
    if (!shard)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int n_shards = assign_shards(plan, dtype, limit, shard);
    int rc = 0;
    for (int s = 0; rc == 0 && s < n_shards; s++)
        rc = write_shard(plan, shard, s, n_shards, dtype, dir, err);
    if (rc == 0 && n_shards > 1)
        rc = write_index(plan, shard, n_shards, dtype, dir, err);
    if (rc == 0)
        rc = remove_stale_weights(dir, n_shards, err);
    free(shard);
    return rc;
}

/* ---- synth.json -------------------------------------------------------------- */

static json_t *float_array(const float *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_real(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *int_range(int first, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer(first + i)) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *residual_json(const synth_plan *plan)
{
    json_t *channels = json_array();
    for (int i = 0; channels && i < plan->n_resid; i++)
        if (json_array_append_new(channels, json_integer(plan->resid_channel[i])) != 0) {
            json_decref(channels);
            channels = NULL;
        }
    return json_pack(
        "{s:b, s:s, s:o, s:o, s:o}", "planted", plan->n_resid > 0, "how",
        "embedding columns of these channels offset by sign * scale * 0.02 * 0.798 (scale "
        "times the mean |entry| of the other columns); rows of these channels in every o_proj "
        "and down_proj scaled by scale: the residual stream's mean |x| on these channels is "
        "about scale times the others' at every layer; model.norm.weight divided by scale on "
        "these channels",
        "channels", channels, "scales", float_array(plan->resid_scale, plan->n_resid), "signs",
        float_array(plan->resid_sign, plan->n_resid));
}

static json_t *down_proj_json(const synth_plan *plan)
{
    json_t *layers = json_array();
    for (int l = 0; layers && plan->n_heavy > 0 && l < plan->layers; l++) {
        json_t *entry = json_pack("{s:i, s:o, s:o}", "layer", l, "channels",
                                  int_range(plan->heavy_start[l], plan->n_heavy), "scales",
                                  float_array(&plan->heavy_scale[l * plan->n_heavy], plan->n_heavy));
        if (!entry || json_array_append_new(layers, entry) != 0) {
            json_decref(layers);
            layers = NULL;
        }
    }
    return json_pack(
        "{s:b, s:s, s:o}", "planted", plan->n_heavy > 0, "how",
        "per layer, adjacent intermediate channels inside one 16-aligned block of 16: rows of "
        "up_proj times scale, the same columns of down_proj divided by scale; the float model's "
        "function is unchanged, the down_proj input is scale times larger on these channels",
        "layers", layers);
}

static int write_synth_json(const synth_plan *plan, perq_dtype dtype, const char *dir,
                            perq_err *err)
{
    bool tails = plan->plant & PERQ_SYNTH_PLANT_HEAVY_TAILS;
    json_t *root = json_pack(
        "{s:s, s:s, s:I, s:s, s:i, s:{s:s, s:f, s:f}, s:{s:b, s:f, s:[f,f]}, s:o, s:o}",
        "generator", "perq synth", "preset", plan->preset->name, "seed", (json_int_t)plan->seed,
        "dtype", perq_dtype_name(dtype), "num_hidden_layers", plan->layers, "weights",
        "distribution",
        "linear and embedding entries N(0, 0.02) (sum of four uniforms), times 0.75-1.25 per "
        "matrix and exp(0.2 z) per output row, one entry in 512 (when heavy_tails.planted) "
        "times 2.5-6; norm weights exp(0.1 z); model.norm.weight times final_norm_scale "
        "(logits of standard deviation about 2), divided by the scale on residual outlier "
        "channels",
        "std", 0.02, "final_norm_scale", (double)plan->final_norm_scale, "heavy_tails",
        "planted", tails, "fraction", tails ? 1.0 / 512 : 0.0, "factor", 2.5, 6.0,
        "residual_outliers", residual_json(plan), "down_proj_outliers", down_proj_json(plan));
    if (!root)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    int rc = synth_write_json(dir, "synth.json", root, err);
    json_decref(root);
    return rc;
}

/* ---- the folder -------------------------------------------------------------- */

static int check_options(const perq_synth_options *o, const synth_preset **preset,
                         perq_err *err)
{
    if (!o->preset || !(*preset = synth_preset_find(o->preset))) {
        char names[256] = "";
        for (size_t i = 0; i < synth_preset_count(); i++) {
            strncat(names, i ? ", " : "", sizeof names - strlen(names) - 1);
            strncat(names, synth_preset_at(i)->name, sizeof names - strlen(names) - 1);
        }
        return perq_fail(err, PERQ_E_INVALID, "unknown preset \"%s\" (known: %s)",
                         o->preset ? o->preset : "", names);
    }
    if (!perq_dtype_is_float(o->dtype) || o->dtype == PERQ_DT_F64)
        return perq_fail(err, PERQ_E_INVALID, "dtype must be BF16, F16 or F32");
    if (!o->out_dir || !o->out_dir[0])
        return perq_fail(err, PERQ_E_INVALID, "no output folder");
    if (o->layers < 0)
        return perq_fail(err, PERQ_E_INVALID, "layers must be positive, not %d", o->layers);
    if (o->seed > INT64_MAX)
        return perq_fail(err, PERQ_E_INVALID, "seed must be below 2^63");
    return 0;
}

int perq_synth(const perq_synth_options *o, perq_err *err)
{
    const synth_preset *preset = NULL;
    if (check_options(o, &preset, err) != 0)
        return -1;
    int layers = o->layers ? o->layers : preset->num_hidden_layers;
    uint64_t limit = o->shard_bytes ? o->shard_bytes : PERQ_SYNTH_SHARD_BYTES;
    synth_plan plan;
    if (synth_plan_init(&plan, preset, layers, o->seed, o->plant, err) != 0)
        return -1;
    int rc = perq_mkdirs(o->out_dir, err);
    if (rc == 0)
        rc = synth_write_config(preset, layers, o->dtype, o->out_dir, err);
    if (rc == 0)
        rc = synth_write_tokenizer(preset, o->out_dir, err);
    if (rc == 0)
        rc = write_weights(&plan, o->dtype, limit, o->out_dir, err);
    if (rc == 0)
        rc = write_synth_json(&plan, o->dtype, o->out_dir, err);
    synth_plan_free(&plan);
    return rc ? perq_err_context(err, "perq synth %s into %s", preset->name, o->out_dir) : 0;
}
