/* test_loss_scale: dynamic loss scaling of the trainer (train.h, fp16 training) on the CPU.
 * Scaling by a power of two is exact in fp32, so a scaled run must take bit for bit the steps
 * of an unscaled one; a scale that overflows the gradient must skip the step (no parameter or
 * momentum changes), halve the scale and report a NaN norm; FINE_SCALE_GROWTH finite steps in
 * a row must double it. The tiny preset at batch 1, SGD and AdamW. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fine_model.h"
#include "nn/train.h"
#include "rng.h"
#include "tap.h"

static void labels_fill(uint8_t *y, int D, int H, int W, int K)
{
    for (int z = 0; z < D; z++)
        for (int r = 0; r < H; r++)
            for (int c = 0; c < W; c++)
                *y++ = (uint8_t)((z / 8 + 2 * (r / 16) + 5 * (c / 16)) % K);
}

static void run(tap *t, int optimizer)
{
    const char *name = fine_optimizer_name(optimizer);
    fine_config c;
    fine_model ma, mb;
    fine_err e = {0};
    fine_config_preset(&c, "tiny");
    if (!tap_ok(t, fine_model_build(&ma, &c, &e) == 0 && fine_model_build(&mb, &c, &e) == 0, "%s: build (%s)", name,
                e.msg))
        return;
    fine_model_init(&ma, 7);
    fine_model_init(&mb, 7);
    int64_t L = (int64_t)c.crop[0] * c.crop[1] * c.crop[2];
    float *x = calloc((size_t)L, sizeof(float));
    uint8_t *y = malloc((size_t)L);
    int64_t pos[3] = {0, 0, 0};
    fine_rng rng;
    fine_rng_seed(&rng, 3);
    fine_rng_add_normal_f32(&rng, x, L, 0.0, 1.0);
    labels_fill(y, c.crop[0], c.crop[1], c.crop[2], c.num_classes);
    fine_trainer ta, tb;
    fine_train_opts o;
    fine_train_opts_init(&o);
    o.optimizer = optimizer;
    o.lr = optimizer == FINE_OPT_ADAMW ? 1e-3 : 0.01;
    if (!tap_ok(t, fine_trainer_init(&ta, &ma, 1, &e) == 0 && fine_trainer_init(&tb, &mb, 1, &e) == 0 &&
                       fine_trainer_set_optimizer(&ta, &ma, optimizer, &e) == 0 &&
                       fine_trainer_set_optimizer(&tb, &mb, optimizer, &e) == 0,
                "%s: trainers (%s)", name, e.msg))
        return;
    fine_trainer_set_loss_scaling(&tb, 1);

    /* 1. three steps, unscaled and scaled by 2^16: the same parameters, bit for bit */
    double na = 0, nb = 0, la = 0, lb = 0;
    for (int i = 0; i < 3; i++) {
        la = fine_train_step(&ta, &ma, &o, x, y, pos, o.lr, &na);
        lb = fine_train_step(&tb, &mb, &o, x, y, pos, o.lr, &nb);
    }
    tap_ok(t, memcmp(ma.w, mb.w, ma.nfloats * sizeof(float)) == 0 && memcmp(ta.momentum, tb.momentum,
                                                                             ma.nfloats * sizeof(float)) == 0,
           "%s: 3 steps with the loss scaled by 2^16 leave the parameters and momentum of the unscaled run, bit for bit",
           name);
    tap_ok(t, la == lb && na == nb && isfinite(na) && na > 0,
           "%s: the same loss (%.9g, %.9g) and unscaled gradient norm (%.9g, %.9g)", name, la, lb, na, nb);
    tap_ok(t, tb.loss_scale == FINE_SCALE_INIT && tb.scale_good == 3 && tb.skipped == 0 && ta.loss_scale == 0,
           "%s: scale %g after 3 finite steps (3 good, 0 skipped)", name, tb.loss_scale);

    /* 2. a scale that overflows fp32 (2^130: the loss's gradient factor is inf, the gradients
     * inf and NaN, as an fp16 overflow makes them on a GPU): the step is skipped */
    float *w0 = malloc(mb.nfloats * sizeof(float)), *m0 = malloc(mb.nfloats * sizeof(float));
    memcpy(w0, mb.w, mb.nfloats * sizeof(float));
    memcpy(m0, tb.momentum, mb.nfloats * sizeof(float));
    tb.loss_scale = ldexp(1.0, 130);
    int64_t it = tb.iteration;
    double loss = fine_train_step(&tb, &mb, &o, x, y, pos, o.lr, &nb);
    tap_ok(t, memcmp(w0, mb.w, mb.nfloats * sizeof(float)) == 0 && memcmp(m0, tb.momentum, mb.nfloats * sizeof(float)) == 0,
           "%s: an overflowing scale (2^130) changes no parameter and no momentum", name);
    tap_ok(t, isnan(nb) && isfinite(loss) && tb.loss_scale == ldexp(1.0, 129) && tb.skipped == 1 &&
                  tb.scale_good == 0 && tb.iteration == it + 1,
           "%s: ... reports a NaN norm and the loss %.4f, halves the scale (2^%g), counts 1 skipped step, "
           "advances the iteration",
           name, loss, log2(tb.loss_scale));

    /* 3. growth: the FINE_SCALE_GROWTH-th finite step in a row doubles the scale */
    tb.loss_scale = 1024;
    tb.scale_good = FINE_SCALE_GROWTH - 2;
    fine_train_step(&tb, &mb, &o, x, y, pos, o.lr, &nb);
    int before = tb.loss_scale == 1024 && tb.scale_good == FINE_SCALE_GROWTH - 1;
    fine_train_step(&tb, &mb, &o, x, y, pos, o.lr, &nb);
    tap_ok(t, before && tb.loss_scale == 2048 && tb.scale_good == 0,
           "%s: the %d-th finite step in a row doubles the scale (1024 -> %g)", name, FINE_SCALE_GROWTH, tb.loss_scale);
    free(w0);
    free(m0);
    free(x);
    free(y);
    fine_trainer_free(&ta);
    fine_trainer_free(&tb);
    fine_model_free(&ma);
    fine_model_free(&mb);
}

int main(void)
{
    tap t = {0};
    run(&t, FINE_OPT_SGD);
    run(&t, FINE_OPT_ADAMW);
    return tap_done(&t);
}
