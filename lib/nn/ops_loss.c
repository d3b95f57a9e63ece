/* ops_loss.c: the training loss of fine-reference B 5.2 (nnU-Net's DC_and_CE_loss with batch
 * dice, smooth 1e-5, no background) and the label downsampling of its deep-supervision targets.
 *
 * Sums are taken in double over fixed partitions of the voxels (64 slices for the
 * cross-entropy, one task per class for the Dice sums), each slice in voxel order, so the
 * loss does not depend on the thread count. */
#include "nn/ops.h"

#include <math.h>
#include <string.h>

#include "nn/ops_vec.h"

/* Voxels per inner block (the per-voxel scratch lives on the stack). */
#define VB 512
/* Fixed number of slices of the cross-entropy sum. */
#define SLICES 64



/* log(x) in float for normal x > 0, about 1 ulp, branch-free: x = 2^e m with m in
 * [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1)/(m + 1), |s| < 0.172, by its series to
 * s^11 (truncation 1e-11). */
FINE_INLINE float vlogf(float x)
{
    int32_t i;
    memcpy(&i, &x, sizeof i);
    int32_t e = ((i >> 23) & 0xff) - 127;
    int32_t mi = (i & 0x7fffff) | 0x3f800000;
    float m;
    memcpy(&m, &mi, sizeof m);
    int big = m > 1.41421356f;
    m = select_f(big, 0.5f * m, m);
    e += big;
    float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
    float p = 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    float ef = (float)e;
    return ef * 0.693145751953125f + (ef * 1.428606765330187045e-06f + 2.0f * s * p);
}

/* Softmax of the voxels [l0, l0 + n) of sample b (n <= VB) into probs; returns the sum of
 * -log p[target] over them, or NaN when a target is >= K. Adds g * (p - onehot) to dlogits
 * when it is not NULL. */
FINE_INLINE double ce_block(float *probs, float *dlogits, const float *logits,
                            const uint8_t *target, int64_t b, int64_t K, int64_t L, int64_t l0,
                            int64_t n, float g)
{
    float mx[VB], sum[VB];
    const float *x = logits + b * K * L + l0;
    float *p = probs + b * K * L + l0;
    const uint8_t *t = target + b * L + l0;
    memcpy(mx, x, (size_t)n * sizeof(float));
    for (int64_t k = 1; k < K; k++) {
        const float *xk = x + k * L;
#pragma omp simd
        for (int64_t l = 0; l < n; l++)
            mx[l] = select_f(xk[l] > mx[l], xk[l], mx[l]);
    }
    memset(sum, 0, (size_t)n * sizeof(float));
    for (int64_t k = 0; k < K; k++) {
        const float *xk = x + k * L;
        float *pk = p + k * L;
#pragma omp simd
        for (int64_t l = 0; l < n; l++) {
            float e = vexpf(xk[l] - mx[l]);
            pk[l] = e;
            sum[l] += e;
        }
    }
    float lg[VB];
#pragma omp simd
    for (int64_t l = 0; l < n; l++) {
        lg[l] = vlogf(sum[l]);
        sum[l] = 1.0f / sum[l];
    }
    double loss = 0.0;
    for (int64_t l = 0; l < n; l++) {
        if (t[l] >= K)
            return NAN;
        /* -log softmax = log(sum) + max - x[target] */
        loss += (double)lg[l] + (double)mx[l] - (double)x[t[l] * L + l];
    }
    for (int64_t k = 0; k < K; k++) {
        float *pk = p + k * L;
#pragma omp simd
        for (int64_t l = 0; l < n; l++)
            pk[l] *= sum[l];
    }
    if (dlogits) {
        float *d = dlogits + b * K * L + l0;
        for (int64_t k = 0; k < K; k++) {
            const float *pk = p + k * L;
            float *dk = d + k * L;
            int kc = (int)k;
#pragma omp simd
            for (int64_t l = 0; l < n; l++)
                dk[l] += g * (pk[l] - select_f(t[l] == kc, 1.0f, 0.0f));
        }
    }
    return loss;
}

static double ce_block_base(float *probs, float *dlogits, const float *logits,
                            const uint8_t *target, int64_t b, int64_t K, int64_t L, int64_t l0,
                            int64_t n, float g)
{
    return ce_block(probs, dlogits, logits, target, b, K, L, l0, n, g);
}
#ifdef FINE_HAVE_AVX2
FINE_AVX2 static double ce_block_avx2(float *probs, float *dlogits, const float *logits,
                                      const uint8_t *target, int64_t b, int64_t K, int64_t L,
                                      int64_t l0, int64_t n, float g)
{
    return ce_block(probs, dlogits, logits, target, b, K, L, l0, n, g);
}
#endif

double fine_softmax_ce(float *probs, float *dlogits, const float *logits, const uint8_t *target,
                       int64_t B, int64_t K, int64_t L, float scale)
{
    double (*block)(float *, float *, const float *, const uint8_t *, int64_t, int64_t, int64_t,
                    int64_t, int64_t, float) = ce_block_base;
#ifdef FINE_HAVE_AVX2
    if (have_avx2())
        block = ce_block_avx2;
#endif
    int64_t per = (L + VB - 1) / VB, blocks = B * per;
    float g = (float)((double)scale / ((double)B * (double)L));
    double part[SLICES];
#pragma omp parallel for schedule(dynamic, 1) if (B * K * L > 32768)
    for (int s = 0; s < SLICES; s++) {
        double acc = 0.0;
        for (int64_t i = blocks * s / SLICES; i < blocks * (s + 1) / SLICES; i++) {
            int64_t b = i / per, l0 = (i % per) * VB;
            acc += block(probs, dlogits, logits, target, b, K, L, l0, L - l0 < VB ? L - l0 : VB, g);
        }
        part[s] = acc;
    }
    double loss = 0.0;
    for (int s = 0; s < SLICES; s++)
        loss += part[s];
    return loss / ((double)B * (double)L);
}

double fine_soft_dice(float *dlogits, const float *probs, const uint8_t *target, int64_t B,
                      int64_t K, int64_t L, float scale)
{
    const double smooth = 1e-5;
    if (K < 2 || K > 256) /* targets are u8: at most 256 classes */
        return NAN;
    /* per class c >= 1: sp = sum p_c, tp = sum p_c [t = c], n = count(t = c), over the batch */
    double sp[256], tp[256], cnt[256], num[256], den[256];
    int bad = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : bad) if (B * K * L > 32768)
    for (int64_t c = 0; c < K; c++) {
        double a = 0.0, t = 0.0, n = 0.0;
        for (int64_t b = 0; b < B; b++) {
            const float *pc = probs + (b * K + c) * L;
            const uint8_t *tb = target + b * L;
            if (c == 0) { /* the background sums are not used: check the targets instead */
                for (int64_t l = 0; l < L; l++)
                    bad |= tb[l] >= K;
                continue;
            }
            int cc = (int)c;
            for (int64_t l0 = 0; l0 < L; l0 += VB) { /* float within a block, double across */
                int64_t l1 = L - l0 < VB ? L : l0 + VB;
                float ab = 0.0f, tbk = 0.0f, nb = 0.0f;
#pragma omp simd reduction(+ : ab, tbk, nb)
                for (int64_t l = l0; l < l1; l++) {
                    float hit = select_f(tb[l] == cc, 1.0f, 0.0f);
                    ab += pc[l];
                    tbk += pc[l] * hit;
                    nb += hit;
                }
                a += ab, t += tbk, n += nb;
            }
        }
        sp[c] = a, tp[c] = t, cnt[c] = n;
    }
    if (bad)
        return NAN;
    double loss = 0.0;
    for (int64_t c = 1; c < K; c++) {
        num[c] = 2.0 * tp[c] + smooth;
        /* 2tp + fp + fn = sp + n */
        den[c] = sp[c] + cnt[c] + smooth + 1e-8;
        loss -= num[c] / den[c];
    }
    loss /= (double)(K - 1);
    if (!dlogits)
        return loss;
    /* dL/dp_c = a_c + b_c [t = c] with a_c = num/den^2/(K-1), b_c = -2/den/(K-1) (c >= 1);
     * through the softmax: dz_k = p_k (dL/dp_k - sum_c p_c dL/dp_c). */
    float av[256], bv[256];
    av[0] = bv[0] = 0.0f;
    for (int64_t c = 1; c < K; c++) {
        av[c] = (float)(num[c] / (den[c] * den[c]) / (double)(K - 1));
        bv[c] = (float)(-2.0 / den[c] / (double)(K - 1));
    }
    int64_t per = (L + VB - 1) / VB, blocks = B * per;
#pragma omp parallel for schedule(static) if (B * K * L > 32768)
    for (int64_t i = 0; i < blocks; i++) {
        int64_t b = i / per, l0 = (i % per) * VB, n = L - l0 < VB ? L - l0 : VB;
        const float *p = probs + b * K * L + l0;
        const uint8_t *t = target + b * L + l0;
        float *d = dlogits + b * K * L + l0;
        float sg[VB];
        for (int64_t l = 0; l < n; l++)
            sg[l] = p[t[l] * L + l] * bv[t[l]];
        for (int64_t k = 1; k < K; k++) {
            const float *pk = p + k * L;
            float a = av[k];
#pragma omp simd
            for (int64_t l = 0; l < n; l++)
                sg[l] += pk[l] * a;
        }
        for (int64_t k = 0; k < K; k++) {
            const float *pk = p + k * L;
            float *dk = d + k * L;
            float a = av[k], bk = bv[k];
            int kc = (int)k;
#pragma omp simd
            for (int64_t l = 0; l < n; l++)
                dk[l] += scale * (pk[l] * (a + select_f(t[l] == kc, bk, 0.0f) - sg[l]));
        }
    }
    return loss;
}

void fine_downsample_labels(uint8_t *out, const uint8_t *in, int64_t B, int64_t D, int64_t H,
                            int64_t W, const int f[3])
{
    int64_t Do = D / f[0], Ho = H / f[1], Wo = W / f[2];
    int64_t c0 = f[0] / 2, c1 = f[1] / 2, c2 = f[2] / 2;
#pragma omp parallel for schedule(static) if (B * Do * Ho * Wo > 262144)
    for (int64_t bz = 0; bz < B * Do; bz++) {
        int64_t b = bz / Do, z = bz % Do;
        for (int64_t y = 0; y < Ho; y++) {
            const uint8_t *src = in + ((b * D + z * f[0] + c0) * H + y * f[1] + c1) * W + c2;
            uint8_t *dst = out + ((b * Do + z) * Ho + y) * Wo;
            for (int64_t x = 0; x < Wo; x++)
                dst[x] = src[x * f[2]];
        }
    }
}

/* Voxels per block: the K rows of a block stay in L1 while max, exp and sum pass over them,
 * and each inner loop runs along contiguous voxels. */
#define SOFTMAX_BLOCK 256

void fine_softmax_channels(float *prob, const float *logits, int64_t K, int64_t n)
{
    float mx[SOFTMAX_BLOCK], sum[SOFTMAX_BLOCK];
    for (int64_t i0 = 0; i0 < n; i0 += SOFTMAX_BLOCK) {
        int64_t m = n - i0 < SOFTMAX_BLOCK ? n - i0 : SOFTMAX_BLOCK;
        for (int64_t i = 0; i < m; i++)
            mx[i] = logits[i0 + i];
        for (int64_t k = 1; k < K; k++) {
            const float *l = logits + k * n + i0;
            for (int64_t i = 0; i < m; i++)
                mx[i] = l[i] > mx[i] ? l[i] : mx[i];
        }
        memset(sum, 0, sizeof sum);
        for (int64_t k = 0; k < K; k++) {
            const float *l = logits + k * n + i0;
            float *p = prob + k * n + i0;
            for (int64_t i = 0; i < m; i++) {
                p[i] = expf(l[i] - mx[i]);
                sum[i] += p[i];
            }
        }
        for (int64_t i = 0; i < m; i++)
            sum[i] = 1.0f / sum[i];
        for (int64_t k = 0; k < K; k++) {
            float *p = prob + k * n + i0;
            for (int64_t i = 0; i < m; i++)
                p[i] *= sum[i];
        }
    }
}
