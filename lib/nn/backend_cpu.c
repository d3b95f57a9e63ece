/* backend_cpu.c: the CPU backend: the ops_*.c functions behind the backend table (backend.h),
 * plus the row copies and gathers fine_net needs around them. Host memory; nothing can fail
 * after allocation, so sync() always succeeds. */
#include "nn/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Large blocks (the network's arena, gradients, optimizer state) ask for huge pages: on a
 * virtual machine each first touch of a 4 KiB page is a costly exit, and zeroing a fresh
 * arena page by page was most of a tool's start-up (0.4 s of 1 s for one tiny iteration). */
#define HUGE_BLOCK ((size_t)4 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)

static void *cpu_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    size_t align = bytes >= HUGE_BLOCK ? HUGE_ALIGN : 64;
    size_t cap = (bytes + align - 1) / align * align;
    void *p = aligned_alloc(align, cap ? cap : align);
    if (!p)
        return NULL;
    if (align == HUGE_ALIGN)
        madvise(p, cap, MADV_HUGEPAGE);
    memset(p, 0, bytes);
    return p;
}

static void cpu_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

static void *cpu_host_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

static void cpu_memcpy(void *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    if (bytes)
        memcpy(dst, src, bytes);
}

static void cpu_zero(void *ctx, void *p, size_t bytes)
{
    (void)ctx;
    memset(p, 0, bytes);
}

static int cpu_sync(void *ctx, fine_err *e)
{
    (void)ctx;
    (void)e;
    return 0;
}

static int cpu_set_precision(void *ctx, const char *name, fine_err *e)
{
    (void)ctx;
    if (strcmp(name, "fp32") == 0 || strcmp(name, "auto") == 0)
        return 0;
    return fine_err_set(e, "precision '%s' is not available on the CPU (fp32 only)", name);
}

static const char *cpu_precision(void *ctx)
{
    (void)ctx;
    return "fp32";
}

static size_t cpu_peak(void *ctx)
{
    (void)ctx;
    return 0;
}

static void cpu_copy_rows(void *ctx, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                          int64_t rows, int64_t width)
{
    (void)ctx;
#pragma omp parallel for schedule(static) if (rows * width > 65536)
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + r * dst_stride, src + r * src_stride, (size_t)width * sizeof(float));
}

static void cpu_axpy_rows(void *ctx, float *out, int64_t out_stride, const float *a, const float *b,
                          int64_t b_stride, const float *scale, int64_t rows, int64_t C)
{
    (void)ctx;
    for (int64_t r = 0; r < rows; r++) {
        float *o = out + r * out_stride;
        const float *br = b + r * b_stride;
        for (int64_t c = 0; c < C; c++)
            o[c] = (a ? a[r * C + c] : 0.0f) + scale[r] * br[c];
    }
}

static void cpu_sum_rows_acc(void *ctx, float *dst, const float *src, int64_t rows, int64_t C)
{
    (void)ctx;
    for (int64_t r = 0; r < rows; r++)
        fine_accumulate(dst, src + r * C, C);
}

static void cpu_memtok_gather(void *ctx, float *u, const float *table, const int *idx, const float *g2,
                              const float *pe, int64_t B, int64_t nW, int64_t C, int nvt)
{
    (void)ctx;
    int64_t U = nvt + nW;
    for (int64_t b = 0; b < B; b++) {
        float *ub = u + b * U * C;
        for (int q = 0; q < nvt; q++)
            memcpy(ub + q * C, table + (int64_t)idx[b * nvt + q] * C, (size_t)C * sizeof(float));
        for (int64_t r = 0; r < nW; r++)
            for (int64_t c = 0; c < C; c++)
                ub[(nvt + r) * C + c] = g2[(b * nW + r) * C + c] + pe[r * C + c];
    }
}

static void cpu_memtok_gather_backward(void *ctx, float *dtable, float *dpe, float *dg2, const float *du,
                                       const int *idx, int64_t B, int64_t nW, int64_t C, int nvt)
{
    (void)ctx;
    int64_t U = nvt + nW;
    for (int64_t b = 0; b < B; b++) {
        const float *db = du + b * U * C;
        for (int q = 0; q < nvt; q++)
            fine_accumulate(dtable + (int64_t)idx[b * nvt + q] * C, db + q * C, C);
        for (int64_t r = 0; r < nW; r++) {
            fine_accumulate(dpe + r * C, db + (nvt + r) * C, C);
            memcpy(dg2 + (b * nW + r) * C, db + (nvt + r) * C, (size_t)C * sizeof(float));
        }
    }
}

/* ops.h behind the table: the context is unused */

static size_t cpu_conv3d_scratch(void *ctx, const fine_conv3d_shape *s)
{
    (void)ctx;
    return fine_conv3d_scratch(s);
}

static void cpu_conv3d_forward(void *ctx, const fine_conv3d_shape *s, float *out, const float *in,
                               const float *w, const float *b, float *scratch)
{
    (void)ctx;
    fine_conv3d_forward(s, out, in, w, b, scratch);
}

static void cpu_conv3d_backward(void *ctx, const fine_conv3d_shape *s, float *din, float *dw, float *db,
                                const float *dout, const float *in, const float *w, float *scratch)
{
    (void)ctx;
    fine_conv3d_backward(s, din, dw, db, dout, in, w, scratch);
}

static size_t cpu_convT3d_scratch(void *ctx, const fine_convT3d_shape *s)
{
    (void)ctx;
    return fine_convT3d_scratch(s);
}

static void cpu_convT3d_forward(void *ctx, const fine_convT3d_shape *s, float *out, const float *in,
                                const float *w, const float *b, float *scratch)
{
    (void)ctx;
    fine_convT3d_forward(s, out, in, w, b, scratch);
}

static void cpu_convT3d_backward(void *ctx, const fine_convT3d_shape *s, float *din, float *dw, float *db,
                                 const float *dout, const float *in, const float *w, float *scratch)
{
    (void)ctx;
    fine_convT3d_backward(s, din, dw, db, dout, in, w, scratch);
}

static void cpu_to_cl(void *ctx, float *out, const float *in, int64_t B, int64_t C, int64_t L)
{
    (void)ctx;
    fine_to_channels_last(out, in, B, C, L);
}

static void cpu_to_cf(void *ctx, float *out, const float *in, int64_t B, int64_t C, int64_t L)
{
    (void)ctx;
    fine_to_channels_first(out, in, B, C, L);
}

static void cpu_to_cl_backward(void *ctx, float *din, const float *dout, int64_t B, int64_t C, int64_t L)
{
    (void)ctx;
    fine_to_channels_last_backward(din, dout, B, C, L);
}

static void cpu_ln_forward(void *ctx, float *out, float *mean, float *rstd, const float *in,
                           const float *weight, const float *bias, int64_t N, int64_t C)
{
    (void)ctx;
    fine_layernorm_forward(out, mean, rstd, in, weight, bias, N, C);
}

static void cpu_ln_backward(void *ctx, float *din, float *dweight, float *dbias, const float *dout,
                            const float *in, const float *weight, const float *mean, const float *rstd,
                            int64_t N, int64_t C)
{
    (void)ctx;
    fine_layernorm_backward(din, dweight, dbias, dout, in, weight, mean, rstd, N, C);
}

static void cpu_gelu_forward(void *ctx, float *out, const float *in, int64_t n)
{
    (void)ctx;
    fine_gelu_forward(out, in, n);
}

static void cpu_gelu_backward(void *ctx, float *din, const float *dout, const float *in, int64_t n)
{
    (void)ctx;
    fine_gelu_backward(din, dout, in, n);
}

static void cpu_linear_forward(void *ctx, float *out, const float *in, const float *w, const float *b,
                               int64_t N, int64_t in_features, int64_t out_features)
{
    (void)ctx;
    fine_linear_forward(out, in, w, b, N, in_features, out_features);
}

static void cpu_linear_backward(void *ctx, float *din, float *dw, float *db, const float *dout,
                                const float *in, const float *w, int64_t N, int64_t in_features,
                                int64_t out_features)
{
    (void)ctx;
    fine_linear_backward(din, dw, db, dout, in, w, N, in_features, out_features);
}

static void cpu_add(void *ctx, float *out, const float *a, const float *b, int64_t n)
{
    (void)ctx;
    fine_add(out, a, b, n);
}

static void cpu_accumulate(void *ctx, float *y, const float *x, int64_t n)
{
    (void)ctx;
    fine_accumulate(y, x, n);
}

static void cpu_drop_path(void *ctx, float *x, const float *mask, int64_t samples, int64_t rows_per_sample,
                          int64_t C)
{
    (void)ctx;
    fine_drop_path(x, mask, samples, rows_per_sample, C);
}

static void cpu_window_partition(void *ctx, float *out, const float *x, int64_t B, int64_t D, int64_t H,
                                 int64_t W, int64_t C, int ws, int shift)
{
    (void)ctx;
    fine_window_partition(out, x, B, D, H, W, C, ws, shift);
}

static void cpu_window_reverse(void *ctx, float *x, const float *win, int64_t B, int64_t D, int64_t H,
                               int64_t W, int64_t C, int ws, int shift)
{
    (void)ctx;
    fine_window_reverse(x, win, B, D, H, W, C, ws, shift);
}

static void cpu_window_partition_acc(void *ctx, float *dx, const float *dwin, int64_t B, int64_t D,
                                     int64_t H, int64_t W, int64_t C, int ws, int shift)
{
    (void)ctx;
    fine_window_partition_acc(dx, dwin, B, D, H, W, C, ws, shift);
}

static void cpu_relpos_bias(void *ctx, float *bias, const float *table, const int64_t *index, int heads,
                            int N)
{
    (void)ctx;
    fine_relpos_bias(bias, table, index, heads, N);
}

static void cpu_relpos_bias_backward(void *ctx, float *dtable, const float *dbias, const int64_t *index,
                                     int heads, int N)
{
    (void)ctx;
    fine_relpos_bias_backward(dtable, dbias, index, heads, N);
}

static void cpu_attention_forward(void *ctx, const fine_attn_shape *s, float *out, float *att,
                                  const float *qkv, const float *bias, const float *mask,
                                  const float *key_mask)
{
    (void)ctx;
    fine_attention_forward(s, out, att, qkv, bias, mask, key_mask);
}

static size_t cpu_attention_scratch(void *ctx, const fine_attn_shape *s)
{
    (void)ctx;
    (void)s;
    return 0;
}

static void cpu_attention_backward(void *ctx, const fine_attn_shape *s, float *dqkv, float *dbias,
                                   const float *dout, const float *qkv, const float *att, float *scratch)
{
    (void)ctx;
    (void)scratch;
    fine_attention_backward(s, dqkv, dbias, dout, qkv, att);
}

static double cpu_softmax_ce(void *ctx, float *probs, float *dlogits, const float *logits,
                             const uint8_t *target, int64_t B, int64_t K, int64_t L, float scale)
{
    (void)ctx;
    return fine_softmax_ce(probs, dlogits, logits, target, B, K, L, scale);
}

static double cpu_soft_dice(void *ctx, float *dlogits, const float *probs, const uint8_t *target, int64_t B,
                            int64_t K, int64_t L, float scale)
{
    (void)ctx;
    return fine_soft_dice(dlogits, probs, target, B, K, L, scale);
}

static void cpu_downsample_labels(void *ctx, uint8_t *out, const uint8_t *in, int64_t B, int64_t D,
                                  int64_t H, int64_t W, const int f[3])
{
    (void)ctx;
    fine_downsample_labels(out, in, B, D, H, W, f);
}

static void cpu_dice_count(void *ctx, fine_dice_counts *s, const float *logits, const uint8_t *target,
                           int64_t nb, int64_t K, int64_t L)
{
    (void)ctx;
    fine_dice_count(s, logits, target, nb, K, L);
}

static void cpu_softmax_channels(void *ctx, float *out, const float *in, int64_t B, int64_t K, int64_t L)
{
    (void)ctx;
    for (int64_t b = 0; b < B; b++)
        fine_softmax_channels(out + b * K * L, in + b * K * L, K, L);
}

/* Sums of fixed chunks (at least 64 Ki floats, at most 4096 chunks) added in chunk order: the
 * same result on any thread count. */
#define SUMSQ_CHUNK 65536
#define SUMSQ_MAX_CHUNKS 4096

static double cpu_sumsq(void *ctx, const float *x, size_t n)
{
    (void)ctx;
    size_t chunk = (n + SUMSQ_MAX_CHUNKS - 1) / SUMSQ_MAX_CHUNKS;
    chunk = chunk > SUMSQ_CHUNK ? chunk : SUMSQ_CHUNK;
    int64_t chunks = (int64_t)((n + chunk - 1) / chunk);
    double part[SUMSQ_MAX_CHUNKS];
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; c++) {
        size_t i0 = (size_t)c * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        double ss = 0;
        for (size_t i = i0; i < i1; i++)
            ss += (double)x[i] * x[i];
        part[c] = ss;
    }
    double ss = 0;
    for (int64_t c = 0; c < chunks; c++)
        ss += part[c];
    return ss;
}

static void cpu_sgd_step(void *ctx, float *p, float *buf, const float *g, size_t n, float gscale, float mu,
                         float wd, float lr)
{
    (void)ctx;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float d = g[i] * gscale + wd * p[i];
        buf[i] = mu * buf[i] + d;
        p[i] -= lr * (d + mu * buf[i]);
    }
}

static void cpu_adamw_step(void *ctx, float *p, float *m1, float *m2, const float *g, size_t n, float gscale,
                           float b1, float b2, float eps, float lr, float wd, float step, float rbc2)
{
    (void)ctx;
    float decay = 1.0f - lr * wd;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float d = g[i] * gscale;
        float a = b1 * m1[i] + (1.0f - b1) * d;
        float v = b2 * m2[i] + (1.0f - b2) * (d * d);
        m1[i] = a;
        m2[i] = v;
        p[i] = p[i] * decay - step * (a / (sqrtf(v) * rbc2 + eps));
    }
}

static const fine_backend cpu_backend = {
    .name = "cpu",
    .ctx = NULL,
    .is_device = 0,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .zero = cpu_zero,
    .copy = cpu_memcpy,
    .sync = cpu_sync,
    .set_precision = cpu_set_precision,
    .precision = cpu_precision,
    .peak_bytes = cpu_peak,
    .copy_rows = cpu_copy_rows,
    .axpy_rows = cpu_axpy_rows,
    .sum_rows_acc = cpu_sum_rows_acc,
    .memtok_gather = cpu_memtok_gather,
    .memtok_gather_backward = cpu_memtok_gather_backward,
    .conv3d_scratch = cpu_conv3d_scratch,
    .conv3d_forward = cpu_conv3d_forward,
    .conv3d_backward = cpu_conv3d_backward,
    .convT3d_scratch = cpu_convT3d_scratch,
    .convT3d_forward = cpu_convT3d_forward,
    .convT3d_backward = cpu_convT3d_backward,
    .to_channels_last = cpu_to_cl,
    .to_channels_first = cpu_to_cf,
    .to_channels_last_backward = cpu_to_cl_backward,
    .layernorm_forward = cpu_ln_forward,
    .layernorm_backward = cpu_ln_backward,
    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .add = cpu_add,
    .accumulate = cpu_accumulate,
    .drop_path = cpu_drop_path,
    .window_partition = cpu_window_partition,
    .window_reverse = cpu_window_reverse,
    .window_partition_acc = cpu_window_partition_acc,
    .relpos_bias = cpu_relpos_bias,
    .relpos_bias_backward = cpu_relpos_bias_backward,
    .attention_forward = cpu_attention_forward,
    .attention_scratch = cpu_attention_scratch,
    .attention_backward = cpu_attention_backward,
    .softmax_ce = cpu_softmax_ce,
    .soft_dice = cpu_soft_dice,
    .downsample_labels = cpu_downsample_labels,
    .dice_count = cpu_dice_count,
    .softmax_channels = cpu_softmax_channels,
    .sumsq = cpu_sumsq,
    .sgd_step = cpu_sgd_step,
    .adamw_step = cpu_adamw_step,
};

const fine_backend *fine_backend_cpu(void)
{
    return &cpu_backend;
}
