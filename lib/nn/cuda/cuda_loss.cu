/* cuda_loss.cu: the training loss (softmax cross-entropy, batch soft Dice), the deep-supervision
 * label downsampling, the argmax Dice counts, the gradient norm and the SGD update, mirroring
 * ops_loss.c and train.c.
 *
 * Reductions: each thread sums in double, each block reduces with warp shuffles, thread 0 adds
 * the block's partial into ctx->red with a double atomic (not deterministic in the last bits,
 * which the project allows); the host copies the result to ctx->red_host and waits. */
#include <math.h>
#include <stdint.h>

#include "nn/cuda/cuda_ctx.h"
#include "nn/cuda/cuda_ops.h"

#define THREADS 256
/* Cap on the grid of the reduction kernels: enough blocks to fill the GPU, few enough that the
 * one atomic per block and counter does not contend. */
#define RED_BLOCKS 2048

/* Classes the Dice sums and counts hold (targets are u8); ctx->red holds 3 * 256 + 1 of them. */
#define MAX_CLASSES 256

static unsigned reduction_blocks(int64_t n, unsigned cap)
{
    unsigned g = fine_cuda_blocks(n, THREADS);
    return g > cap ? cap : g;
}

__device__ static double warp_sum(double v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

/* Sum of v over the block (blockDim.x a multiple of 32), valid in thread 0. sh holds 32 doubles;
 * the leading barrier lets a kernel call this several times with the same sh. */
__device__ static double block_sum(double v, double *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    v = (int)threadIdx.x < nw ? sh[threadIdx.x] : 0.0;
    if (w == 0)
        v = warp_sum(v);
    return v;
}

/* ------------------------------------------------------------------ softmax cross-entropy */

/* One thread per voxel i = b*L + l: max over the K channels, sum of exp, then the normalised
 * probabilities and the gradient g*(p - onehot), in the CPU's order of operations (max first,
 * then exp(x - max) * (1/sum)). out[0] += sum of -log p[target], out[1] += count of targets
 * >= K (those voxels add no loss and no gradient: they are never indexed). */
__global__ static void softmax_ce_kernel(float *probs, float *dlogits, const float *logits,
                                         const uint8_t *target, int64_t B, int64_t K, int64_t L,
                                         float g, double *out)
{
    __shared__ double sh[32];
    double loss = 0.0, bad = 0.0;
    int64_t N = B * L, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += stride) {
        int64_t b = i / L, off = b * K * L + (i - b * L);
        const float *x = logits + off;
        float mx = x[0];
        for (int64_t k = 1; k < K; k++) {
            float v = x[k * L];
            mx = v > mx ? v : mx;
        }
        float sum = 0.0f;
        for (int64_t k = 0; k < K; k++)
            sum += expf(x[k * L] - mx);
        float inv = 1.0f / sum;
        int t = target[i];
        int ok = t < K;
        if (ok) /* -log softmax = log(sum) + max - x[target] */
            loss += (double)logf(sum) + (double)mx - (double)x[t * L];
        else
            bad += 1.0;
        float *p = probs + off;
        float *d = dlogits && ok ? dlogits + off : NULL;
        for (int64_t k = 0; k < K; k++) {
            float pk = expf(x[k * L] - mx) * inv;
            p[k * L] = pk;
            if (d)
                d[k * L] += g * (pk - (k == t ? 1.0f : 0.0f));
        }
    }
    loss = block_sum(loss, sh);
    bad = block_sum(bad, sh);
    if (threadIdx.x == 0) {
        atomicAdd(&out[0], loss);
        if (bad != 0.0)
            atomicAdd(&out[1], bad);
    }
}

extern "C" double fine_cu_softmax_ce(void *ctx, float *probs, float *dlogits, const float *logits,
                                     const uint8_t *target, int64_t B, int64_t K, int64_t L,
                                     float scale)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    int64_t N = B * L;
    double loss = 0.0;
    if (N <= 0) /* as the CPU: 0 / 0 */
        return loss / ((double)B * (double)L);
    if (K < 1) /* every target is >= K */
        return NAN;
    float g = (float)((double)scale / ((double)B * (double)L));
    double *red = (double *)c->red, *host = (double *)c->red_host;
    if (!fine_cuda_ok(c, cudaMemsetAsync(red, 0, 2 * sizeof(double), c->stream), "fine_cu_softmax_ce"))
        return NAN;
    softmax_ce_kernel<<<reduction_blocks(N, 8 * RED_BLOCKS), THREADS, 0, c->stream>>>(
        probs, dlogits, logits, target, B, K, L, g, red);
    if (!fine_cuda_ok(c, cudaGetLastError(), "fine_cu_softmax_ce") ||
        !fine_cuda_ok(c, cudaMemcpyAsync(host, red, 2 * sizeof(double), cudaMemcpyDeviceToHost, c->stream),
                      "fine_cu_softmax_ce") ||
        !fine_cuda_ok(c, cudaStreamSynchronize(c->stream), "fine_cu_softmax_ce"))
        return NAN;
    if (host[1] != 0.0)
        return NAN;
    loss = host[0];
    return loss / ((double)B * (double)L);
}

/* ------------------------------------------------------------------ soft Dice */

/* Per-class sums over all B*L voxels, one grid row (blockIdx.y) per class c:
 * sums[c] += sum p_c, sums[256 + c] += sum p_c [t = c], sums[512 + c] += count(t = c) for c >= 1;
 * row 0 (the background, unused by the loss) instead counts targets >= K into sums[768]. */
__global__ static void dice_sums_kernel(const float *probs, const uint8_t *target, int64_t B,
                                        int64_t K, int64_t L, double *sums)
{
    __shared__ double sh[32];
    int64_t c = blockIdx.y;
    int64_t N = B * L, stride = (int64_t)gridDim.x * blockDim.x;
    int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c == 0) { /* uniform over the block: the barriers in block_sum are safe */
        double bad = 0.0;
        for (int64_t i = i0; i < N; i += stride)
            bad += target[i] >= K ? 1.0 : 0.0;
        bad = block_sum(bad, sh);
        if (threadIdx.x == 0 && bad != 0.0)
            atomicAdd(&sums[3 * MAX_CLASSES], bad);
        return;
    }
    double a = 0.0, tp = 0.0, n = 0.0;
    for (int64_t i = i0; i < N; i += stride) {
        int64_t b = i / L;
        float p = probs[(b * K + c) * L + (i - b * L)];
        a += p;
        if (target[i] == c) {
            tp += p;
            n += 1.0;
        }
    }
    a = block_sum(a, sh);
    tp = block_sum(tp, sh);
    n = block_sum(n, sh);
    if (threadIdx.x == 0) {
        atomicAdd(&sums[c], a);
        atomicAdd(&sums[MAX_CLASSES + c], tp);
        atomicAdd(&sums[2 * MAX_CLASSES + c], n);
    }
}

/* The per-class coefficients of the Dice gradient, passed by value (2 KB of kernel parameters):
 * dL/dp_c = av[c] + bv[c] [t = c], zero for c = 0. */
typedef struct dice_coef {
    float av[MAX_CLASSES], bv[MAX_CLASSES];
} dice_coef;

/* dlogits += scale * dL/dlogits through the softmax, one thread per voxel, as the CPU:
 * sg = p_t bv[t] + sum_{k>=1} p_k av[k]; dz_k = p_k (av[k] + bv[k] [t = k] - sg).
 * Every target is < K here (the host checked). */
__global__ static void dice_grad_kernel(float *dlogits, const float *probs, const uint8_t *target,
                                        int64_t B, int64_t K, int64_t L, float scale, dice_coef co)
{
    __shared__ float av[MAX_CLASSES], bv[MAX_CLASSES];
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        av[k] = co.av[k];
        bv[k] = co.bv[k];
    }
    __syncthreads();
    int64_t N = B * L, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += stride) {
        int64_t b = i / L, off = b * K * L + (i - b * L);
        const float *p = probs + off;
        float *d = dlogits + off;
        int t = target[i];
        float sg = p[t * L] * bv[t];
        for (int64_t k = 1; k < K; k++)
            sg += p[k * L] * av[k];
        for (int64_t k = 0; k < K; k++) {
            float pk = p[k * L];
            d[k * L] += scale * (pk * (av[k] + (k == t ? bv[k] : 0.0f) - sg));
        }
    }
}

extern "C" double fine_cu_soft_dice(void *ctx, float *dlogits, const float *probs, const uint8_t *target,
                                    int64_t B, int64_t K, int64_t L, float scale)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    const double smooth = 1e-5;
    if (K < 2 || K > MAX_CLASSES) /* targets are u8: at most 256 classes */
        return NAN;
    int64_t N = B * L;
    double *red = (double *)c->red, *host = (double *)c->red_host;
    size_t bytes = (3 * MAX_CLASSES + 1) * sizeof(double);
    if (!fine_cuda_ok(c, cudaMemsetAsync(red, 0, bytes, c->stream), "fine_cu_soft_dice"))
        return NAN;
    if (N > 0) {
        unsigned cap = (unsigned)(4 * RED_BLOCKS / K); /* about 4 * RED_BLOCKS blocks in all */
        dim3 grid(reduction_blocks(N, cap), (unsigned)K);
        dice_sums_kernel<<<grid, THREADS, 0, c->stream>>>(probs, target, B, K, L, red);
        if (!fine_cuda_ok(c, cudaGetLastError(), "fine_cu_soft_dice"))
            return NAN;
    }
    if (!fine_cuda_ok(c, cudaMemcpyAsync(host, red, bytes, cudaMemcpyDeviceToHost, c->stream),
                      "fine_cu_soft_dice") ||
        !fine_cuda_ok(c, cudaStreamSynchronize(c->stream), "fine_cu_soft_dice"))
        return NAN;
    if (host[3 * MAX_CLASSES] != 0.0)
        return NAN;
    const double *sp = host, *tp = host + MAX_CLASSES, *cnt = host + 2 * MAX_CLASSES;
    double num[MAX_CLASSES], den[MAX_CLASSES], loss = 0.0;
    for (int64_t k = 1; k < K; k++) {
        num[k] = 2.0 * tp[k] + smooth;
        /* 2tp + fp + fn = sp + n */
        den[k] = sp[k] + cnt[k] + smooth + 1e-8;
        loss -= num[k] / den[k];
    }
    loss /= (double)(K - 1);
    if (!dlogits || N <= 0)
        return loss;
    dice_coef co;
    for (int k = 0; k < MAX_CLASSES; k++)
        co.av[k] = co.bv[k] = 0.0f;
    for (int64_t k = 1; k < K; k++) {
        co.av[k] = (float)(num[k] / (den[k] * den[k]) / (double)(K - 1));
        co.bv[k] = (float)(-2.0 / den[k] / (double)(K - 1));
    }
    dice_grad_kernel<<<fine_cuda_blocks(N, THREADS), THREADS, 0, c->stream>>>(dlogits, probs, target,
                                                                             B, K, L, scale, co);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_soft_dice");
    return loss;
}

/* ------------------------------------------------------------------ label downsampling */

__global__ static void downsample_labels_kernel(uint8_t *out, const uint8_t *in, int64_t B, int64_t D,
                                                int64_t H, int64_t W, int f0, int f1, int f2)
{
    int64_t Do = D / f0, Ho = H / f1, Wo = W / f2;
    int64_t N = B * Do * Ho * Wo, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += stride) {
        int64_t x = i % Wo, r = i / Wo;
        int64_t y = r % Ho;
        r /= Ho;
        int64_t z = r % Do, b = r / Do;
        out[i] = in[((b * D + z * f0 + f0 / 2) * H + y * f1 + f1 / 2) * W + x * f2 + f2 / 2];
    }
}

extern "C" void fine_cu_downsample_labels(void *ctx, uint8_t *out, const uint8_t *in, int64_t B, int64_t D,
                                          int64_t H, int64_t W, const int f[3])
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    int64_t N = B * (D / f[0]) * (H / f[1]) * (W / f[2]);
    if (N <= 0)
        return;
    downsample_labels_kernel<<<fine_cuda_blocks(N, THREADS), THREADS, 0, c->stream>>>(out, in, B, D, H, W,
                                                                                     f[0], f[1], f[2]);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_downsample_labels");
}

/* ------------------------------------------------------------------ Dice counts */

/* Argmax over K (strict >, so ties go to the lowest class) per voxel of the first nb samples;
 * counts into a shared histogram per block (tp[0..256), fp[256..512), fn[512..768)), then
 * into cnt with one global atomic per non-zero bin. */
__global__ static void dice_count_kernel(const float *logits, const uint8_t *target, int64_t nb, int64_t K,
                                         int64_t L, unsigned long long *cnt)
{
    __shared__ unsigned int h[3 * MAX_CLASSES];
    for (int j = threadIdx.x; j < 3 * MAX_CLASSES; j += blockDim.x)
        h[j] = 0;
    __syncthreads();
    int64_t N = nb * L, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += stride) {
        int64_t b = i / L;
        const float *x = logits + b * K * L + (i - b * L);
        int best = 0;
        float bv = x[0];
        for (int64_t k = 1; k < K; k++) {
            float v = x[k * L];
            if (v > bv) {
                best = (int)k;
                bv = v;
            }
        }
        int y = target[i];
        if (best == y) {
            atomicAdd(&h[y], 1u);
        } else {
            atomicAdd(&h[MAX_CLASSES + best], 1u);
            atomicAdd(&h[2 * MAX_CLASSES + y], 1u);
        }
    }
    __syncthreads();
    for (int j = threadIdx.x; j < 3 * MAX_CLASSES; j += blockDim.x)
        if (h[j])
            atomicAdd(&cnt[j], (unsigned long long)h[j]);
}

extern "C" void fine_cu_dice_count(void *ctx, fine_dice_counts *s, const float *logits, const uint8_t *target,
                                   int64_t nb, int64_t K, int64_t L)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    int64_t N = nb * L;
    if (N <= 0 || K < 1)
        return;
    if (K > MAX_CLASSES) { /* the counts hold 256 classes */
        fine_cuda_fail(c, "fine_cu_dice_count", "more than 256 classes");
        return;
    }
    unsigned long long *red = (unsigned long long *)c->red, *host = (unsigned long long *)c->red_host;
    size_t bytes = 3 * MAX_CLASSES * sizeof(unsigned long long);
    if (!fine_cuda_ok(c, cudaMemsetAsync(red, 0, bytes, c->stream), "fine_cu_dice_count"))
        return;
    dice_count_kernel<<<reduction_blocks(N, RED_BLOCKS), THREADS, 0, c->stream>>>(logits, target, nb, K, L,
                                                                                   red);
    if (!fine_cuda_ok(c, cudaGetLastError(), "fine_cu_dice_count") ||
        !fine_cuda_ok(c, cudaMemcpyAsync(host, red, bytes, cudaMemcpyDeviceToHost, c->stream),
                      "fine_cu_dice_count") ||
        !fine_cuda_ok(c, cudaStreamSynchronize(c->stream), "fine_cu_dice_count"))
        return;
    for (int k = 0; k < MAX_CLASSES; k++) {
        s->tp[k] += (double)host[k];
        s->fp[k] += (double)host[MAX_CLASSES + k];
        s->fn[k] += (double)host[2 * MAX_CLASSES + k];
    }
}

/* ------------------------------------------------------------------ gradient norm, SGD */

__global__ static void sumsq_kernel(const float *x, int64_t n, double *out)
{
    __shared__ double sh[32];
    double acc = 0.0;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        double v = (double)x[i];
        acc += v * v;
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0)
        atomicAdd(out, acc);
}

extern "C" double fine_cu_sumsq(void *ctx, const float *x, size_t n)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (n == 0)
        return 0.0;
    double *red = (double *)c->red, *host = (double *)c->red_host;
    if (!fine_cuda_ok(c, cudaMemsetAsync(red, 0, sizeof(double), c->stream), "fine_cu_sumsq"))
        return NAN;
    sumsq_kernel<<<reduction_blocks((int64_t)n, RED_BLOCKS), THREADS, 0, c->stream>>>(x, (int64_t)n, red);
    if (!fine_cuda_ok(c, cudaGetLastError(), "fine_cu_sumsq") ||
        !fine_cuda_ok(c, cudaMemcpyAsync(host, red, sizeof(double), cudaMemcpyDeviceToHost, c->stream),
                      "fine_cu_sumsq") ||
        !fine_cuda_ok(c, cudaStreamSynchronize(c->stream), "fine_cu_sumsq"))
        return NAN;
    return host[0];
}

/* d = g*gscale + wd*p; buf = mu*buf + d; p -= lr*(d + mu*buf) (train.c). Each product and sum
 * rounded on its own (no FMA contraction), as the CPU's -std=c11 build does: buf = mu*buf + d
 * nearly cancels once the momentum settles, and a fused rounding would differ there. */
__global__ static void sgd_step_kernel(float *p, float *buf, const float *g, int64_t n, float gscale,
                                       float mu, float wd, float lr)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float pi = p[i];
        float d = __fadd_rn(__fmul_rn(g[i], gscale), __fmul_rn(wd, pi));
        float bi = __fadd_rn(__fmul_rn(mu, buf[i]), d);
        buf[i] = bi;
        p[i] = __fsub_rn(pi, __fmul_rn(lr, __fadd_rn(d, __fmul_rn(mu, bi))));
    }
}

extern "C" void fine_cu_sgd_step(void *ctx, float *p, float *buf, const float *g, size_t n, float gscale,
                                 float mu, float wd, float lr)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (n == 0)
        return;
    sgd_step_kernel<<<fine_cuda_blocks((int64_t)n, THREADS), THREADS, 0, c->stream>>>(p, buf, g, (int64_t)n,
                                                                                     gscale, mu, wd, lr);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_sgd_step");
}

/* The CPU's operations in its order, each rounded to nearest (no contraction into FMAs), so the
 * update is the CPU's bit for bit (sqrtf is correctly rounded on both). */
__global__ static void adamw_step_kernel(float *p, float *m1, float *m2, const float *g, int64_t n, float gscale,
                                         float b1, float b2, float eps, float decay, float step, float rbc2)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float d = __fmul_rn(g[i], gscale);
        float a = __fadd_rn(__fmul_rn(b1, m1[i]), __fmul_rn(__fsub_rn(1.0f, b1), d));
        float v = __fadd_rn(__fmul_rn(b2, m2[i]), __fmul_rn(__fsub_rn(1.0f, b2), __fmul_rn(d, d)));
        m1[i] = a;
        m2[i] = v;
        float den = __fadd_rn(__fmul_rn(__fsqrt_rn(v), rbc2), eps);
        p[i] = __fsub_rn(__fmul_rn(p[i], decay), __fmul_rn(step, __fdiv_rn(a, den)));
    }
}

extern "C" void fine_cu_adamw_step(void *ctx, float *p, float *m1, float *m2, const float *g, size_t n,
                                   float gscale, float b1, float b2, float eps, float lr, float wd, float step,
                                   float rbc2)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (n == 0)
        return;
    float decay = 1.0f - lr * wd; /* computed as the CPU computes it */
    adamw_step_kernel<<<fine_cuda_blocks((int64_t)n, THREADS), THREADS, 0, c->stream>>>(
        p, m1, m2, g, (int64_t)n, gscale, b1, b2, eps, decay, step, rbc2);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_adamw_step");
}

/* ------------------------------------------------------------------ softmax for inference */

/* One thread per voxel of (B, K, L): the CPU's order (max, expf(x - max), 1 / sum, products). */
__global__ static void softmax_channels_kernel(float *out, const float *in, int64_t B, int64_t K, int64_t L)
{
    for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < B * L;
         v += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = v / L, i = v % L;
        const float *l = in + b * K * L + i;
        float *p = out + b * K * L + i;
        float mx = l[0];
        for (int64_t k = 1; k < K; k++)
            mx = l[k * L] > mx ? l[k * L] : mx;
        float sum = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            float e = expf(l[k * L] - mx);
            p[k * L] = e;
            sum += e;
        }
        float r = 1.0f / sum;
        for (int64_t k = 0; k < K; k++)
            p[k * L] *= r;
    }
}

extern "C" void fine_cu_softmax_channels(void *ctx, float *out, const float *in, int64_t B, int64_t K, int64_t L)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (B <= 0 || K <= 0 || L <= 0)
        return;
    softmax_channels_kernel<<<fine_cuda_blocks(B * L, THREADS), THREADS, 0, c->stream>>>(out, in, B, K, L);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_softmax_channels");
}
