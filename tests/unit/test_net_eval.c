/* test_net_eval: the evaluation-only plan (fine_net_plan_eval_on) computes the same logits as
 * the training plan, bit for bit on the CPU, in less memory; training-mode forwards on the
 * training plan are unaffected (heads computed stage by stage). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/fine_model.h"
#include "nn/fine_net.h"
#include "rng.h"
#include "tap.h"

static void compare(tap *t, const char *preset, int B)
{
    fine_config c;
    fine_model m;
    fine_err e = {0};
    fine_config_preset(&c, preset);
    if (!tap_ok(t, fine_model_build(&m, &c, &e) == 0, "%s: build (%s)", preset, e.msg))
        return;
    fine_model_init(&m, 5);
    const fine_backend *be = fine_backend_cpu();
    fine_net *tr = fine_net_plan_on(be, &m, B, &e), *ev = fine_net_plan_eval_on(be, &m, B, &e);
    size_t btr = fine_net_plan_bytes_on(be, &m, B, 0), bev = fine_net_plan_bytes_on(be, &m, B, 1);
    tap_ok(t, tr && ev && fine_net_bytes(tr) == btr && fine_net_bytes(ev) == bev && bev < btr,
           "%s batch %d: evaluation plan %.1f MB, training plan %.1f MB", preset, B, bev / 1e6, btr / 1e6);
    if (!tr || !ev) {
        fine_net_free(tr);
        fine_net_free(ev);
        fine_model_free(&m);
        return;
    }
    int64_t L = (int64_t)c.crop[0] * c.crop[1] * c.crop[2];
    float *x = calloc((size_t)(B * c.in_chans * L), sizeof(float));
    int64_t *pos = calloc((size_t)B * 3, sizeof(int64_t));
    fine_rng rng;
    fine_rng_seed(&rng, 3);
    fine_rng_add_normal_f32(&rng, x, B * c.in_chans * L, 0.0, 1.0);
    for (int b = 0; b < B; b++)
        pos[b * 3 + 1] = 37 * b, pos[b * 3 + 2] = -20 * b;
    fine_net_forward(tr, &m, x, pos, 0, 0);
    fine_net_forward(ev, &m, x, pos, 0, 0);
    for (int h = 0; h < 2; h++) {
        int64_t n = fine_net_logits_numel(tr, h);
        const float *a = fine_net_logits(tr, h), *b = fine_net_logits(ev, h);
        tap_ok(t, n == fine_net_logits_numel(ev, h) && memcmp(a, b, (size_t)n * sizeof(float)) == 0,
               "%s: head %d logits of the evaluation plan equal the training plan's, bit for bit", preset, h);
    }
    free(x);
    free(pos);
    fine_net_free(tr);
    fine_net_free(ev);
    fine_model_free(&m);
}

int main(void)
{
    tap t = {0};
    compare(&t, "tiny", 2);
    compare(&t, "small", 1);
    /* the bcv plan's sizes only (no allocation) */
    fine_config c;
    fine_model m;
    fine_err e = {0};
    fine_config_preset(&c, "bcv");
    if (fine_model_build(&m, &c, &e) == 0) {
        size_t btr = fine_net_plan_bytes_on(fine_backend_cpu(), &m, 2, 0);
        size_t bev = fine_net_plan_bytes_on(fine_backend_cpu(), &m, 2, 1);
        /* measured: evaluation 2.39 GB, training 3.62 GB (8.12 GB before the training plan let
         * the backward recompute the block buffers of pool 3) */
        tap_ok(&t, bev < btr && btr < 4.0e9, "bcv batch 2: evaluation plan %.2f GB, training plan %.2f GB (< 4.0)",
               bev / 1e9, btr / 1e9);
        fine_model_free(&m);
    }
    return tap_done(&t);
}
