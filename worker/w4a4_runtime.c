/* A W4A4 scheme read from an artifact, made runnable: R3 rebuilt and the
 * same hook the job's own evaluation runs (worker/w4a4_hook.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calibrate.h"
#include "perq/w4a4.h"

struct perq_w4a4_runtime {
    perq_rotation r3;
    bool has_r3;
    perq_w4a4 w4a4;             /* points into r3 */
    perq_linear_hook hook;      /* hook.before NULL when there is nothing to do */
};

static int build_r3(perq_w4a4_runtime *rt, const perq_w4a4_scheme *s, const perq_llama_config *cfg, perq_err *err)
{
    int inter = cfg->intermediate_size;
    int width = s->r3_block > 0 ? s->r3_block : inter;
    if (width > inter || inter % width != 0)
        return perq_fail(err, PERQ_E_FORMAT, "transform_config: R3 blocks of %d do not divide intermediate_size %d",
                         width, inter);
    if (perq_rotation_init(&rt->r3, width, s->r3_seed, err) != 0)
        return perq_err_context(err, "transform_config: R3 of width %d", width);
    rt->has_r3 = true;
    if (rt->r3.kind == PERQ_ROT_RANDOM_ORTHOGONAL && !s->r3_has_seed)
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "transform_config: R3 of width %d has a random orthogonal factor and no seed to rebuild it",
                         width);
    if (s->r3_construction[0] && strcmp(s->r3_construction, rt->r3.how) != 0)
        return perq_fail(err, PERQ_E_UNSUPPORTED,
                         "transform_config: R3 is \"%s\", but the rotation of width %d built here is \"%s\"",
                         s->r3_construction, width, rt->r3.how);
    return 0;
}

int perq_w4a4_runtime_new(const perq_w4a4_scheme *s, const perq_llama_config *cfg, perq_w4a4_runtime **out,
                          perq_err *err)
{
    *out = NULL;
    perq_w4a4_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return perq_fail(err, PERQ_E_NOMEM, "out of memory");
    if (s->has_r3 && build_r3(rt, s, cfg, err) != 0) {
        perq_w4a4_runtime_free(rt);
        return -1;
    }
    rt->w4a4.r3 = rt->has_r3 ? &rt->r3 : NULL;
    rt->w4a4.act_bits = s->act_bits;
    rt->hook = perq_w4a4_hook(&rt->w4a4);
    *out = rt;
    return 0;
}

void perq_w4a4_runtime_free(perq_w4a4_runtime *rt)
{
    if (!rt)
        return;
    if (rt->has_r3)
        perq_rotation_free(&rt->r3);
    free(rt);
}

const perq_linear_hook *perq_w4a4_runtime_hook(const perq_w4a4_runtime *rt)
{
    return rt && rt->hook.before ? &rt->hook : NULL;
}

void perq_w4a4_runtime_describe(const perq_w4a4_runtime *rt, char *buf, size_t size)
{
    const char *acts = rt->w4a4.act_bits == 4 ? "INT4 per-token activations" : "full-precision activations";
    if (rt->has_r3)
        snprintf(buf, size, "%s, R3 %s in blocks of %d at down_proj", acts, rt->r3.how, rt->r3.n);
    else
        snprintf(buf, size, "%s", acts);
}
