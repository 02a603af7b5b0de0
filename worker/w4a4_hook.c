/* The hook of perq's quantized evaluation and calibration (see calibrate.h). */
#include "calibrate.h"

#include "perq/actquant.h"
#include "perq/fold.h"

int perq_w4a4_before(void *ctx, const perq_linear_site *site, perq_err *err)
{
    const perq_w4a4 *h = ctx;
    if (site->kind == PERQ_LIN_HEAD)
        return 0;
    if (site->kind == PERQ_LIN_DOWN && h->r3 &&
        perq_fold_rotate_down_input(h->r3, site->x, (size_t)site->rows, site->in, err) != 0)
        return -1;
    if (h->act_bits == 4)
        perq_actquant_rows(site->x, site->rows, site->in, PERQ_ACTQUANT_CLIP);
    return 0;
}

perq_linear_hook perq_w4a4_hook(perq_w4a4 *h)
{
    perq_linear_hook hook = {NULL, NULL};
    if (h->r3 || h->act_bits == 4) {
        hook.ctx = h;
        hook.before = perq_w4a4_before;
    }
    return hook;
}
