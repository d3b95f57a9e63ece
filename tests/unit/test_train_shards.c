/* test_train_shards: data parallelism on the CPU (shards.h). With 2 threads a batch of 2 runs
 * as two nets of one sample on threads of their own. The training step must be the one-net
 * step up to the order of the batch sums: the same logits, loss, gradient and drop-path masks
 * (drop path on, so a shard drawing the wrong masks would change the loss), the visitation
 * counter counted once per batch, the same evaluation counts. The predictor (infer.h) must give
 * the one-net probabilities, with and without TTA, for full and short batches. The tiny
 * preset, SGD. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fine_model.h"
#include "nn/fine_net.h"
#include "infer.h"
#include "nn/train.h"
#include "rng.h"
#include "tap.h"

static double max_abs(const float *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static double max_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabs(a[i] - b[i]) > m ? fabs(a[i] - b[i]) : m;
    return m;
}

/* One configuration: a training step on 1 thread against 2 shards, then the predictor. */
static void check(tap *t, const char *label, fine_config c)
{
    fine_model ma, mb;
    fine_err e = {0};
    c.drop_path = 0.3;
    printf("# %s\n", label);
    if (!tap_ok(t, fine_model_build(&ma, &c, &e) == 0 && fine_model_build(&mb, &c, &e) == 0, "build (%s)", e.msg))
        return;
    fine_model_init(&ma, 11);
    fine_model_init(&mb, 11);
    const int B = 2;
    int64_t L = (int64_t)c.crop[0] * c.crop[1] * c.crop[2];
    float *x = calloc((size_t)(B * L), sizeof(float)); /* zeros: the generator adds to them */
    uint8_t *y = malloc((size_t)(B * L));
    fine_rng rng;
    fine_rng_seed(&rng, 5);
    fine_rng_add_normal_f32(&rng, x, B * L, 0.0, 1.0);
    for (int64_t i = 0; i < B * L; i++)
        y[i] = (uint8_t)((i / 97 + i / 4096) % c.num_classes);
    /* two crops far apart: different volume tokens per sample */
    int64_t pos[6] = {-40, -60, -60, 40, 60, 60};

    fine_trainer ta, tb;
    omp_set_num_threads(1);
    int ok = fine_trainer_init(&ta, &ma, B, &e) == 0;
    omp_set_num_threads(2);
    ok = ok && fine_trainer_init(&tb, &mb, B, &e) == 0;
    if (!tap_ok(t, ok && ta.shards == 1 && tb.shards == 2, "1 thread: one net; 2 threads: 2 shards of 1 sample (%s)",
                e.msg))
        return;

    fine_train_opts o;
    fine_train_opts_init(&o);
    o.seed = 99;
    double na = 0, nb = 0;
    double la = fine_train_step(&ta, &ma, &o, x, y, pos, 0.01, &na);
    double lb = fine_train_step(&tb, &mb, &o, x, y, pos, 0.01, &nb);
    int64_t n0 = fine_net_logits_numel(ta.net, 0);
    /* the forward of each sample is the same arithmetic; only sgemm's blocking may differ */
    double dl = max_diff(fine_net_logits(ta.net, 0), tb.logits0, n0), sl = max_abs(fine_net_logits(ta.net, 0), n0);
    tap_ok(t, dl <= 1e-5 * sl, "head-0 logits of the batch: max difference %.3g (max |logit| %.3g, tolerance 1e-5 relative)",
           dl, sl);
    tap_ok(t, fabs(la - lb) <= 1e-6 * fabs(la), "loss %.9g vs %.9g (drop path 0.3; tolerance 1e-6 relative)", la, lb);
    tap_ok(t, fabs(na - nb) <= 1e-5 * na, "gradient norm %.9g vs %.9g (tolerance 1e-5 relative)", na, nb);
    int64_t P = (int64_t)ma.nfloats;
    double dg = max_diff(ta.grad, tb.grad, P), sg = max_abs(ta.grad, P);
    tap_ok(t, dg <= 1e-4 * sg, "parameter gradient: max difference %.3g of max %.3g (tolerance 1e-4 relative)", dg, sg);
    double dw = max_diff(ma.w, mb.w, P);
    tap_ok(t, dw <= 1e-6, "parameters after the step: max difference %.3g (tolerance 1e-6)", dw);
    tap_ok(t, memcmp(ma.vt_check, mb.vt_check, (size_t)ma.nV * sizeof(float)) == 0,
           "the visitation counter: counted once per batch, as one net counts it");
    int64_t pos_same[6] = {0, 0, 0, 0, 0, 0};
    float *vt0 = malloc((size_t)mb.nV * sizeof(float));
    memcpy(vt0, mb.vt_check, (size_t)mb.nV * sizeof(float));
    fine_train_step(&tb, &mb, &o, x, y, pos_same, 0.01, &nb);
    double added = 0;
    for (int v = 0; v < mb.nV; v++)
        added += mb.vt_check[v] - vt0[v];
    tap_ok(t, added == 4, "two samples at the same position add 1 to each of their 4 volume tokens (added %g)", added);
    fine_train_step(&ta, &ma, &o, x, y, pos_same, 0.01, &na);

    /* a second step: the optimizer's state agrees too */
    la = fine_train_step(&ta, &ma, &o, x, y, pos, 0.01, &na);
    lb = fine_train_step(&tb, &mb, &o, x, y, pos, 0.01, &nb);
    tap_ok(t, fabs(la - lb) <= 1e-5 * fabs(la) && max_diff(ma.w, mb.w, P) <= 1e-5,
           "after 3 steps: loss %.9g vs %.9g, parameters within %.3g (tolerances 1e-5)", la, lb, max_diff(ma.w, mb.w, P));

    /* evaluation: the same Dice counts of the first sample only */
    fine_dice_counts ca, cb;
    memset(&ca, 0, sizeof ca);
    memset(&cb, 0, sizeof cb);
    fine_trainer_eval(&ta, &ma, x, y, pos, 1, &ca);
    fine_trainer_eval(&tb, &mb, x, y, pos, 1, &cb);
    double seen_a = 0, seen_b = 0, mism = 0;
    for (int k = 0; k < c.num_classes; k++) {
        seen_a += ca.tp[k] + ca.fn[k];
        seen_b += cb.tp[k] + cb.fn[k];
        mism += fabs(ca.tp[k] - cb.tp[k]) + fabs(ca.fp[k] - cb.fp[k]);
    }
    tap_ok(t, seen_a == (double)L && seen_b == (double)L && mism <= 1e-4 * (double)L,
           "evaluation of 1 sample of 2: %g and %g voxels counted (%lld), %g counts differ (ties; at most 1e-4)", seen_a,
           seen_b, (long long)L, mism);

    fine_trainer_free(&ta);
    fine_trainer_free(&tb);

    /* the predictor: 1 thread (one net) against 2 (two shards) */
    for (int tta = 0; tta < 2; tta++) {
        fine_infer *pa, *pb;
        omp_set_num_threads(1);
        pa = fine_infer_new(&ma, B, tta, &e);
        omp_set_num_threads(2);
        pb = fine_infer_new(&ma, B, tta, &e);
        if (!tap_ok(t, pa && pb, "tta %d: predictors (%s)", tta, e.msg))
            break;
        for (int n = B; n >= 1; n--) {
            for (int b = 0; b < n; b++) {
                memcpy(fine_infer_input(pa, b), x + b * L, (size_t)L * sizeof(float));
                memcpy(fine_infer_input(pb, b), x + b * L, (size_t)L * sizeof(float));
                memcpy(fine_infer_pos(pa, b), pos + 3 * b, 3 * sizeof(int64_t));
                memcpy(fine_infer_pos(pb, b), pos + 3 * b, 3 * sizeof(int64_t));
            }
            memcpy(vt0, ma.vt_check, (size_t)ma.nV * sizeof(float));
            int ra = fine_infer_run(pa, n, &e);
            float *vt1 = malloc((size_t)ma.nV * sizeof(float));
            memcpy(vt1, ma.vt_check, (size_t)ma.nV * sizeof(float));
            int rb = fine_infer_run(pb, n, &e);
            int vt_same = 1;
            for (int v = 0; v < ma.nV; v++)
                vt_same &= ma.vt_check[v] - vt1[v] == vt1[v] - vt0[v];
            free(vt1);
            double d = 0;
            for (int b = 0; b < n; b++) {
                double db = max_diff(fine_infer_prob(pa, b), fine_infer_prob(pb, b), fine_infer_prob_numel(pa));
                d = db > d ? db : d;
            }
            tap_ok(t, ra == 0 && rb == 0 && d <= 1e-6 && vt_same,
                   "tta %d, %d patch(es) of %d: probabilities of 2 shards within %.3g of one net's (tolerance 1e-6), "
                   "the same visitation counts",
                   tta, n, B, d);
        }
        fine_infer_free(pa);
        fine_infer_free(pb);
    }
    fine_model_free(&ma);
    fine_model_free(&mb);
    free(x);
    free(y);
    free(vt0);
}

int main(void)
{
    tap t = {0};
    fine_config c;
    fine_config_preset(&c, "tiny");
    check(&t, "tiny", c);
    /* the memory paths of depths above 2 (per-sample banks, vt_attn with the key mask from the
     * counter the caller advances once per batch) and 2 memory tokens per window */
    int d[FINE_STAGES] = {3, 2, 3, 2};
    memcpy(c.depths, d, sizeof d);
    c.dec_depths[1] = 3;
    c.gt_num = 2;
    check(&t, "tiny, depths 3,2,3,2 / 2,3,2, gt_num 2", c);
    return tap_done(&t);
}
