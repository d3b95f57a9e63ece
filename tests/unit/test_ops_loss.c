/* test_ops_loss: softmax cross-entropy, soft Dice with batch dice and the label downsampling
 * of lib/nn/ops_loss.c (fine-reference B 5.2) against double-precision references written
 * here after nnU-Net's code (RobustCrossEntropyLoss; SoftDiceLoss with get_tp_fp_fn_tn:
 * tp = sum p y, fp = sum p (1 - y), fn = sum (1 - p) y over batch and voxels, dc = (2tp + s) /
 * (2tp + fp + fn + s + 1e-8), background dropped, loss = -mean).
 *   (a) loss and probabilities against the double reference: |loss - ref| <= 1e-6 |ref|,
 *       probabilities within 1e-6;
 *   (b) the double analytic gradient (softmax Jacobian written out) against central
 *       differences (eps 1e-6) of the double loss: max |fd - an| <= 1e-6 max |an|;
 *   (c) the float gradient against the double one: max |f - d| <= 1e-4 max |d|, accumulated
 *       onto random contents with the deep-supervision scale;
 *   (d) the loss is bitwise the same with 1 and 2 threads.
 * Downsampling: the values of scipy.ndimage.zoom(order=0, mode='nearest', grid_mode=True),
 * which skimage.transform.resize(order=0, anti_aliasing=False) calls, pasted as constants. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "tap.h"

static uint64_t rng_state = 0xda942042e4dd58b5ull;

static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static double max_abs(const double *d, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabs(d[i]) > m ? fabs(d[i]) : m;
    return m;
}

/* ------------------------------------------------------------------ double references */

static void softmax_d(double *p, const double *z, int64_t B, int64_t K, int64_t L)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t l = 0; l < L; l++) {
            double mx = -INFINITY, s = 0;
            for (int64_t k = 0; k < K; k++)
                mx = fmax(mx, z[(b * K + k) * L + l]);
            for (int64_t k = 0; k < K; k++)
                s += exp(z[(b * K + k) * L + l] - mx);
            for (int64_t k = 0; k < K; k++)
                p[(b * K + k) * L + l] = exp(z[(b * K + k) * L + l] - mx) / s;
        }
}

static double ce_d(const double *z, const uint8_t *t, int64_t B, int64_t K, int64_t L)
{
    double *p = malloc((size_t)(B * K * L) * 8), s = 0;
    softmax_d(p, z, B, K, L);
    for (int64_t b = 0; b < B; b++)
        for (int64_t l = 0; l < L; l++)
            s -= log(p[(b * K + t[b * L + l]) * L + l]);
    free(p);
    return s / (double)(B * L);
}

/* The Dice as nnU-Net writes it; sample >= 0 restricts the sums to one sample. */
static double dice_d(const double *z, const uint8_t *t, int64_t B, int64_t K, int64_t L,
                     int64_t sample)
{
    double *p = malloc((size_t)(B * K * L) * 8), loss = 0;
    softmax_d(p, z, B, K, L);
    for (int64_t c = 1; c < K; c++) {
        double tp = 0, fp = 0, fn = 0;
        for (int64_t b = 0; b < B; b++) {
            if (sample >= 0 && b != sample)
                continue;
            for (int64_t l = 0; l < L; l++) {
                double pv = p[(b * K + c) * L + l], y = t[b * L + l] == c;
                tp += pv * y, fp += pv * (1 - y), fn += (1 - pv) * y;
            }
        }
        loss += (2 * tp + 1e-5) / (2 * tp + fp + fn + 1e-5 + 1e-8);
    }
    free(p);
    return -loss / (double)(K - 1);
}

/* dL/dz for CE (which = 0) or Dice (which = 1): dL/dp per voxel, then the softmax Jacobian
 * dz_k = sum_c dL/dp_c p_c (delta_ck - p_k). */
static void grad_d(double *dz, const double *z, const uint8_t *t, int64_t B, int64_t K, int64_t L,
                   int which)
{
    double *p = malloc((size_t)(B * K * L) * 8), *gp = calloc((size_t)(B * K * L), 8);
    softmax_d(p, z, B, K, L);
    if (which == 0) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t l = 0; l < L; l++) {
                int64_t c = t[b * L + l];
                gp[(b * K + c) * L + l] = -1.0 / p[(b * K + c) * L + l] / (double)(B * L);
            }
    } else {
        for (int64_t c = 1; c < K; c++) {
            double tp = 0, fp = 0, fn = 0;
            for (int64_t b = 0; b < B; b++)
                for (int64_t l = 0; l < L; l++) {
                    double pv = p[(b * K + c) * L + l], y = t[b * L + l] == c;
                    tp += pv * y, fp += pv * (1 - y), fn += (1 - pv) * y;
                }
            double num = 2 * tp + 1e-5, den = 2 * tp + fp + fn + 1e-5 + 1e-8;
            /* d num/dp = 2y; d den/dp = 2y + (1 - y) - y = 1 */
            for (int64_t b = 0; b < B; b++)
                for (int64_t l = 0; l < L; l++) {
                    double y = t[b * L + l] == c;
                    gp[(b * K + c) * L + l] = -(2 * y * den - num) / (den * den) / (double)(K - 1);
                }
        }
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t l = 0; l < L; l++)
            for (int64_t k = 0; k < K; k++) {
                double s = 0;
                for (int64_t c = 0; c < K; c++)
                    s += gp[(b * K + c) * L + l] * p[(b * K + c) * L + l] *
                         ((c == k) - p[(b * K + k) * L + l]);
                dz[(b * K + k) * L + l] = s;
            }
    free(p), free(gp);
}

/* ------------------------------------------------------------------ cases */

static void check_case(tap *t, const char *name, int64_t B, int64_t K, int64_t L, int absent,
                       int fd)
{
    int64_t n = B * K * L;
    float *z = malloc((size_t)n * 4), *probs = malloc((size_t)n * 4);
    uint8_t *tg = malloc((size_t)(B * L));
    for (int64_t i = 0; i < n; i++)
        z[i] = (float)(3.0 * urand());
    for (int64_t i = 0; i < B * L; i++) { /* classes 0..K-1, class K-1 absent if asked */
        int64_t c = (int64_t)((urand() + 1.0) * 0.5 * (double)(K - absent));
        tg[i] = (uint8_t)(c >= K - absent ? K - absent - 1 : c);
    }
    double *zd = malloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++)
        zd[i] = z[i];
    double ce = fine_softmax_ce(probs, NULL, z, tg, B, K, L, 1.0f);
    double dc = fine_soft_dice(NULL, probs, tg, B, K, L, 1.0f);
    double ce_r = ce_d(zd, tg, B, K, L), dc_r = dice_d(zd, tg, B, K, L, -1);
    double *pd = malloc((size_t)n * 8), ep = 0;
    softmax_d(pd, zd, B, K, L);
    for (int64_t i = 0; i < n; i++)
        ep = fmax(ep, fabs(probs[i] - pd[i]));
    tap_ok(t, fabs(ce - ce_r) <= 1e-6 * fabs(ce_r) && fabs(dc - dc_r) <= 1e-6 * fabs(dc_r) &&
                  ep < 1e-6,
           "%s: CE %.6f (ref %.6f), Dice %.6f (ref %.6f), probs within %.1e", name, ce, ce_r, dc,
           dc_r, ep);

    double *gce = malloc((size_t)n * 8), *gdc = malloc((size_t)n * 8);
    grad_d(gce, zd, tg, B, K, L, 0);
    grad_d(gdc, zd, tg, B, K, L, 1);
    if (fd) {
        double e_ce = 0, e_dc = 0;
        for (int64_t i = 0; i < n; i++) {
            double keep = zd[i];
            zd[i] = keep + 1e-6;
            double cp = ce_d(zd, tg, B, K, L), dp = dice_d(zd, tg, B, K, L, -1);
            zd[i] = keep - 1e-6;
            double cm = ce_d(zd, tg, B, K, L), dm = dice_d(zd, tg, B, K, L, -1);
            zd[i] = keep;
            e_ce = fmax(e_ce, fabs((cp - cm) / 2e-6 - gce[i]));
            e_dc = fmax(e_dc, fabs((dp - dm) / 2e-6 - gdc[i]));
        }
        e_ce /= max_abs(gce, n), e_dc /= max_abs(gdc, n);
        tap_ok(t, e_ce < 1e-6 && e_dc < 1e-6,
               "%s: double gradients = central differences (CE %.1e, Dice %.1e)", name, e_ce, e_dc);
    }
    /* float gradients, accumulated with scale 8/15 onto random contents of the gradient's
     * magnitude (larger contents would only measure their own rounding) */
    const float scale = 8.0f / 15.0f;
    float *d = malloc((size_t)n * 4), *d0 = malloc((size_t)n * 4);
    double gm = max_abs(gdc, n) > max_abs(gce, n) ? max_abs(gce, n) : max_abs(gdc, n);
    for (int64_t i = 0; i < n; i++)
        d[i] = d0[i] = (float)(gm * urand());
    fine_softmax_ce(probs, d, z, tg, B, K, L, scale);
    double e1 = 0;
    for (int64_t i = 0; i < n; i++)
        e1 = fmax(e1, fabs((double)d[i] - d0[i] - scale * gce[i]));
    e1 /= scale * max_abs(gce, n);
    memcpy(d, d0, (size_t)n * 4);
    fine_soft_dice(d, probs, tg, B, K, L, scale);
    double e2 = 0;
    for (int64_t i = 0; i < n; i++)
        e2 = fmax(e2, fabs((double)d[i] - d0[i] - scale * gdc[i]));
    e2 /= scale * max_abs(gdc, n);
    tap_ok(t, e1 < 1e-4 && e2 < 1e-4, "%s: float gradients x 8/15 accumulate (CE %.1e, Dice %.1e)",
           name, e1, e2);

    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    double c1 = fine_softmax_ce(probs, NULL, z, tg, B, K, L, 1.0f);
    double s1 = fine_soft_dice(NULL, probs, tg, B, K, L, 1.0f);
    omp_set_num_threads(threads > 1 ? threads : 2);
    double c2 = fine_softmax_ce(probs, NULL, z, tg, B, K, L, 1.0f);
    double s2 = fine_soft_dice(NULL, probs, tg, B, K, L, 1.0f);
    omp_set_num_threads(threads);
    tap_ok(t, c1 == c2 && s1 == s2, "%s: losses bitwise equal with 1 and 2 threads", name);

    if (absent) {
        /* the absent class contributes s / (sum p + s + 1e-8) */
        double sp = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t l = 0; l < L; l++)
                sp += pd[(b * K + K - 1) * L + l];
        double others = 0;
        for (int64_t i = 0; i < B * L; i++)
            others += tg[i] == K - 1;
        double term = 1e-5 / (sp + 1e-5 + 1e-8);
        tap_ok(t, others == 0 && term < 1e-5 && isfinite(dc),
               "%s: class %lld absent from the batch: its dice term is s/(sum p + s) = %.2e", name,
               (long long)(K - 1), term);
    }
    if (B > 1) { /* batch dice pools the batch: the pooled reference matched above within
                  * 1e-6 |ref|; the mean of per-sample dice is 100 times that tolerance away */
        double mean = 0;
        for (int64_t b = 0; b < B; b++)
            mean += dice_d(zd, tg, B, K, L, b) / (double)B;
        tap_ok(t, fabs(mean - dc) > 1e-4 * fabs(dc_r) && fabs(dc - dc_r) <= 1e-6 * fabs(dc_r),
               "%s: batch dice (%.6f) pools the batch, not the mean of per-sample dice (%.6f)",
               name, dc, mean);
    }
    free(z), free(probs), free(tg), free(zd), free(pd), free(gce), free(gdc), free(d), free(d0);
}

/* nnU-Net's +1e-8 in the denominator: a class absent from the targets and (almost) from the
 * prediction (logit -60 against 0: p ~ 1e-26) scores s / (s + 1e-8) = 0.999000999, not 1. */
static void test_empty_class(tap *t)
{
    float z[2 * 2 * 8], p[2 * 2 * 8];
    uint8_t tg[16] = {0};
    for (int b = 0; b < 2; b++)
        for (int l = 0; l < 8; l++) {
            z[(b * 2 + 0) * 8 + l] = 0.0f;
            z[(b * 2 + 1) * 8 + l] = -60.0f;
        }
    fine_softmax_ce(p, NULL, z, tg, 2, 2, 8, 1.0f);
    double dc = fine_soft_dice(NULL, p, tg, 2, 2, 8, 1.0f);
    double expect = -1e-5 / (1e-5 + 1e-8);
    tap_ok(t, fabs(dc - expect) < 1e-9, "empty class: dice term s/(s + 1e-8) = %.9f (got %.9f)",
           -expect, -dc);
}

static void test_bad_target(tap *t)
{
    float z[2 * 3 * 4] = {0}, p[2 * 3 * 4];
    uint8_t tg[8] = {0, 1, 2, 1, 0, 3, 1, 2}; /* 3 >= K */
    double ce = fine_softmax_ce(p, NULL, z, tg, 2, 3, 4, 1.0f);
    double dc = fine_soft_dice(NULL, p, tg, 2, 3, 4, 1.0f);
    tap_ok(t, isnan(ce) && isnan(dc), "a target id >= K gives NaN losses");
}

static void test_downsample(tap *t)
{
    /* in = arange(2*4*6) as (D, H, W) = (2, 4, 6), factors (1, 2, 2): scipy gives */
    const uint8_t expect1[12] = {7, 9, 11, 19, 21, 23, 31, 33, 35, 43, 45, 47};
    /* in = arange(4*8*8) (values mod 256 stored; compared mod 256), factors (2, 4, 2) */
    const int expect2[16] = {81, 83, 85, 87, 113, 115, 117, 119, 209, 211, 213, 215, 241, 243,
                             245, 247};
    uint8_t in[2 * 256], out[2 * 16];
    for (int i = 0; i < 48; i++)
        in[i] = (uint8_t)i;
    int f1[3] = {1, 2, 2};
    fine_downsample_labels(out, in, 1, 2, 4, 6, f1);
    tap_ok(t, !memcmp(out, expect1, 12),
           "downsample (1,2,2) = skimage resize order 0 (scipy zoom)");
    for (int b = 0; b < 2; b++) /* batch of 2: the second sample is the first + 1 */
        for (int i = 0; i < 256; i++)
            in[b * 256 + i] = (uint8_t)(i + b);
    int f2[3] = {2, 4, 2};
    fine_downsample_labels(out, in, 2, 4, 8, 8, f2);
    int ok = 1;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 16; i++)
            ok &= out[b * 16 + i] == (uint8_t)(expect2[i] + b);
    tap_ok(t, ok, "downsample (2,4,2), batch 2: the input index f*o + f/2 on every axis");
    /* identity with factors 1 */
    int f3[3] = {1, 1, 1};
    fine_downsample_labels(out, in, 1, 2, 4, 4, f3);
    tap_ok(t, !memcmp(out, in, 32), "downsample (1,1,1) is the identity");
}

int main(void)
{
    tap t = {0};
    check_case(&t, "B2 K4 L37", 2, 4, 37, 0, 1);
    check_case(&t, "B2 K4 L29 class 3 absent", 2, 4, 29, 1, 1);
    check_case(&t, "B1 K3 L11", 1, 3, 11, 0, 1);
    check_case(&t, "B2 K14 L5000", 2, 14, 5000, 0, 0); /* blocks, tails, the parallel path */
    check_case(&t, "B2 K14 L3000 class 13 absent", 2, 14, 3000, 1, 0);
    test_empty_class(&t);
    test_bad_target(&t);
    test_downsample(&t);
    return tap_done(&t);
}
