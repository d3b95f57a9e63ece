/* test_net_eval: the evaluation-only plan (fine_net_plan_eval_on) computes the same logits as
 * the training plan, bit for bit on the CPU, in less memory; training-mode forwards on the
 * training plan are unaffected (heads computed stage by stage); every recompute level of the
 * training plan gives the same gradients in less memory. "tiny-deep" adds the memory paths of
 * depths above 2 and two memory tokens per window (banks, vt_attn, their pooled buffers). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/fine_model.h"
#include "nn/fine_net.h"
#include "nn/ops.h"
#include "nn/train.h"
#include "rng.h"
#include "tap.h"

/* a preset, or "tiny-deep": tiny with depths 3,4,3,3 / 3,2,3 and 2 memory tokens per window */
static void config_of(fine_config *c, const char *name)
{
    int deep = strcmp(name, "tiny-deep") == 0;
    fine_config_preset(c, deep ? "tiny" : name);
    if (!deep)
        return;
    int d[FINE_STAGES] = {3, 4, 3, 3}, dd[FINE_STAGES - 1] = {3, 2, 3};
    memcpy(c->depths, d, sizeof d);
    memcpy(c->dec_depths, dd, sizeof dd);
    c->gt_num = 2;
}

static void compare(tap *t, const char *preset, int B)
{
    fine_config c;
    fine_model m;
    fine_err e = {0};
    config_of(&c, preset);
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

/* Every recompute level gives the gradients of level none, bit for bit (a training forward
 * with drop path, a backward from the same logit gradients), in fewer bytes level by level. */
static void levels(tap *t, const char *preset, int B)
{
    fine_config c;
    fine_model m;
    fine_err e = {0};
    config_of(&c, preset);
    c.drop_path = 0.1; /* the backward must see the forward's drop-path scales too */
    if (!tap_ok(t, fine_model_build(&m, &c, &e) == 0, "%s: build (%s)", preset, e.msg))
        return;
    fine_model_init(&m, 9);
    const fine_backend *be = fine_backend_cpu();
    int64_t L = (int64_t)c.crop[0] * c.crop[1] * c.crop[2];
    float *x = calloc((size_t)(B * c.in_chans * L), sizeof(float));
    int64_t *pos = calloc((size_t)B * 3, sizeof(int64_t));
    float *ref = calloc(m.nfloats, sizeof(float)), *grad = calloc(m.nfloats, sizeof(float));
    float *dl[2] = {NULL, NULL};
    fine_rng rng;
    fine_rng_seed(&rng, 4);
    fine_rng_add_normal_f32(&rng, x, B * c.in_chans * L, 0.0, 1.0);
    size_t last = 0;
    for (int level = FINE_RECOMPUTE_NONE; level <= FINE_RECOMPUTE_ALL; level++) {
        fine_net *n = fine_net_plan_train_on(be, &m, B, level, &e);
        if (!tap_ok(t, n != NULL, "%s: plan at recompute %s (%s)", preset, fine_recompute_name(level), e.msg))
            break;
        size_t bytes = fine_net_bytes(n);
        fine_net_forward(n, &m, x, pos, 1, 77);
        for (int h = 0; h < 2; h++) {
            int64_t k = fine_net_logits_numel(n, h);
            if (!dl[h]) {
                dl[h] = calloc((size_t)k, sizeof(float));
                fine_rng_add_normal_f32(&rng, dl[h], k, 0.0, 1e-3);
            }
        }
        memset(grad, 0, m.nfloats * sizeof(float));
        fine_net_backward(n, &m, grad, dl[0], dl[1], NULL);
        if (level == FINE_RECOMPUTE_NONE) {
            memcpy(ref, grad, m.nfloats * sizeof(float));
            double s = 0;
            for (size_t i = 0; i < m.nfloats; i++)
                s += (double)grad[i] * grad[i];
            tap_ok(t, s > 0 && isfinite(s), "%s: recompute none: %.1f MB, gradient norm %.3g", preset, bytes / 1e6,
                   sqrt(s));
        } else {
            tap_ok(t, memcmp(ref, grad, m.nfloats * sizeof(float)) == 0 && bytes < last,
                   "%s: recompute %s: %.1f MB (< %.1f), the gradients of recompute none bit for bit", preset,
                   fine_recompute_name(level), bytes / 1e6, last / 1e6);
        }
        last = bytes;
        fine_net_free(n);
    }
    tap_ok(t, fine_recompute_parse("mlp") == FINE_RECOMPUTE_MLP && fine_recompute_parse("some") == -1 &&
                  fine_net_plan_train_on(be, &m, B, 4, &e) == NULL,
           "recompute names parse; level 4 is refused (%s)", e.msg);
    free(x);
    free(pos);
    free(ref);
    free(grad);
    free(dl[0]);
    free(dl[1]);
    fine_model_free(&m);
}

/* A CPU backend whose alloc refuses more than alloc_limit bytes: a small GPU. */
static size_t alloc_limit;
static void *limited_alloc(void *ctx, size_t bytes)
{
    return bytes > alloc_limit ? NULL : fine_backend_cpu()->alloc(ctx, bytes);
}

/* fine_trainer_init_ex at recompute auto (-1) takes the first level whose memory fits. */
static void auto_level(tap *t)
{
    fine_config c;
    fine_model m;
    fine_err e = {0};
    fine_config_preset(&c, "tiny");
    if (!tap_ok(t, fine_model_build(&m, &c, &e) == 0, "tiny: build (%s)", e.msg))
        return;
    fine_backend small = *fine_backend_cpu();
    small.alloc = limited_alloc;
    /* one thread: with more, the trainer splits the batch into smaller nets (shards.h), which
     * would fit where the test means the whole batch not to */
    fine_nn_set_threads(1);
    size_t none = fine_net_plan_train_bytes_on(&small, &m, 2, FINE_RECOMPUTE_NONE);
    size_t mlp = fine_net_plan_train_bytes_on(&small, &m, 2, FINE_RECOMPUTE_MLP);
    size_t gelu = fine_net_plan_train_bytes_on(&small, &m, 2, FINE_RECOMPUTE_GELU);
    fine_trainer tr;
    alloc_limit = (size_t)-1;
    int ok = fine_trainer_init_ex(&tr, &small, &m, 2, -1, &e) == 0 && fine_net_recompute(tr.net) == FINE_RECOMPUTE_NONE;
    fine_trainer_free(&tr);
    tap_ok(t, ok, "recompute auto with memory for everything: none (%s)", e.msg);
    alloc_limit = (mlp + gelu) / 2; /* room for mlp's activations, not gelu's */
    e.msg[0] = 0;
    ok = fine_trainer_init_ex(&tr, &small, &m, 2, -1, &e) == 0 && fine_net_recompute(tr.net) == FINE_RECOMPUTE_MLP;
    fine_trainer_free(&tr);
    tap_ok(t, ok, "recompute auto with %.1f MB at most per allocation: mlp (%.1f MB; none needs %.1f; the last "
           "refusal: %s)", alloc_limit / 1e6, mlp / 1e6, none / 1e6, e.msg);
    alloc_limit = 1000;
    e.msg[0] = 0;
    ok = fine_trainer_init_ex(&tr, &small, &m, 2, -1, &e) < 0 && e.msg[0];
    tap_ok(t, ok, "recompute auto with no memory fails with a message (%s)", e.msg);
    fine_model_free(&m);
}

int main(void)
{
    tap t = {0};
    compare(&t, "tiny", 2);
    compare(&t, "small", 1);
    levels(&t, "tiny", 2);
    compare(&t, "tiny-deep", 2);
    levels(&t, "tiny-deep", 2);
    auto_level(&t);
    /* the bcv plan's sizes only (no allocation) */
    fine_config c;
    fine_model m;
    fine_err e = {0};
    fine_config_preset(&c, "bcv");
    if (fine_model_build(&m, &c, &e) == 0) {
        for (int level = FINE_RECOMPUTE_NONE; level <= FINE_RECOMPUTE_ALL; level++)
            printf("# bcv batch 2, recompute %s: training plan %.2f GB\n", fine_recompute_name(level),
                   fine_net_plan_train_bytes_on(fine_backend_cpu(), &m, 2, level) / 1e9);
        size_t btr = fine_net_plan_train_bytes_on(fine_backend_cpu(), &m, 2, FINE_RECOMPUTE_ALL);
        size_t bev = fine_net_plan_bytes_on(fine_backend_cpu(), &m, 2, 1);
        /* measured: evaluation 2.39 GB, training 3.62 GB (8.12 GB before the training plan let
         * the backward recompute the block buffers of pool 3) */
        tap_ok(&t, bev < btr && btr < 4.0e9, "bcv batch 2: evaluation plan %.2f GB, training plan at recompute all %.2f GB (< 4.0)",
               bev / 1e9, btr / 1e9);
        fine_model_free(&m);
    }
    return tap_done(&t);
}
