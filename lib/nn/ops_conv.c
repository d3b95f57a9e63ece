/* ops_conv.c: 3-D convolution, transposed convolution with kernel = stride, and the
 * channels-first <-> channels-last layout changes of the CPU backend (contracts in ops.h).
 *
 * Tiling strategy. A convolution of one sample is the GEMM
 *     out (Cout, P) = w (Cout, K) @ col (K, P),   K = Cin*k0*k1*k2, P = Do*Ho*Wo,
 * where column p of col holds the input values under the kernel at output position p. The full
 * col of a 96-channel 32x64x64 output would be 1.4 GB, so it is never built: the output
 * positions of a sample are cut into tiles of whole output rows (an (od, oh) pair, Wo
 * positions; a tile may run across planes), as many rows as keep K x (tile positions) under
 * CONV_TILE_FLOATS (16 MiB; one row if a row alone is larger). Per tile:
 *   forward   im2col the tile, sgemm into the tile's columns of out (ldc = P, bias pre-filled);
 *   backward  im2col again, dw += dout_tile @ col^T (sgemm, beta 1: the sum over tiles);
 *             din: with stride 1 the data gradient is itself a convolution, of dout with the
 *             flipped, transposed kernel, so it runs as a forward (tiled im2col + sgemm,
 *             beta 1) onto din; otherwise col = w^T @ dout_tile (same buffer) and col2im
 *             scatter-adds col into din.
 * im2col works row by row: for a kernel offset and an output row the valid range of ow is
 * computed once, the rest is zero-filled, and the copy is a memcpy (stride 1 along x) or a
 * strided gather (stride 2: the (2,2,2) and (1,2,2) patch embeddings). Kernel = stride with
 * pad 0 (PatchMerging) takes the same route, where im2col is a pure gather with no zeros and no
 * overlap (a direct GEMM on the gathered 2x2x2 patches), and col2im a pure scatter. Any kernel,
 * stride and padding work; k3/pad 1 and kernel = stride are the cases that matter for speed.
 *
 * Transposed convolution with kernel = stride has no overlap: on tokens (B*D*H*W, Cin) it is
 *     y (tokens, Cout*kv) = in (tokens, Cin) @ w (Cin, Cout*kv),   kv = k0*k1*k2,
 * followed by a scatter of each token's Cout x kv block (plus bias) into the output. Tokens are
 * tiled by whole input rows under the same budget. Backward gathers dout into that layout and
 * runs dw += in^T @ g and din += g @ w^T.
 *
 * Threads. sgemm runs in the calling thread and OpenBLAS parallelises it. The loops between two
 * sgemm calls (im2col, col2im, scatter, gather) do not use an OpenMP team: after its loop a
 * team keeps spinning for milliseconds (libgomp's default GOMP_SPINCOUNT) on the cores the
 * OpenBLAS threads need for the next sgemm (measured on 2 cores: an OpenMP loop before each
 * sgemm halves its throughput). And the OpenBLAS workers themselves spin (sched_yield) between
 * calls, so a helper thread on their cores runs slowly. These loops therefore run in fork_join,
 * on threads started and joined per call, one fewer than the thread count: on 2 cores they
 * run on the calling thread alone, which measured fastest. The thread count is OpenMP's
 * (fine_nn_set_threads). Every sum is computed by one thread in a fixed order, so results do
 * not depend on the thread count except through the order of summation inside BLAS. */
#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <string.h>

#include "nn/ops.h"

/* Scratch budget per tile, in floats (16 MiB): small enough to stay in the last-level cache
 * between im2col and sgemm, large enough that every sgemm has hundreds to thousands of
 * columns and the tile loop alternates rarely between data movement and sgemm. */
#ifndef CONV_TILE_FLOATS
#define CONV_TILE_FLOATS ((int64_t)1 << 22)
#endif

void fine_nn_set_threads(int n)
{
    if (n <= 0) /* OMP_NUM_THREADS when set, else the cores this process may use */
        n = omp_get_max_threads();
    omp_set_num_threads(n);
    omp_set_max_active_levels(1); /* an op inside a shard's thread (train.h) runs on it alone */
    openblas_set_num_threads(n);
}

/* ------------------------------------------------------------------ fork-join */

#define FJ_MAX_THREADS 64
#define FJ_MIN_FLOATS 32768 /* work per thread (floats moved) worth a thread start */

typedef void (*fj_fn)(void *ctx, int64_t i0, int64_t i1);

typedef struct fj_part {
    fj_fn fn;
    void *ctx;
    int64_t i0, i1;
} fj_part;

static void *fj_run(void *arg)
{
    fj_part *p = arg;
    p->fn(p->ctx, p->i0, p->i1);
    return NULL;
}

/* fn(ctx, i0, i1) over the items [0, n) in contiguous parts, one per thread, on (thread count
 * - 1) threads (see the top of the file); the caller runs the first part. Items move about
 * item_floats floats each, which limits the thread count for small work. A thread that cannot
 * be started has its part run by the caller. */
static void fork_join(int64_t n, int64_t item_floats, fj_fn fn, void *ctx)
{
    /* inside a shard's thread (train.h) the work stays on that thread */
    int64_t parts = omp_in_parallel() ? 1 : omp_get_max_threads() - 1;
    int64_t by_work = n * (item_floats > 0 ? item_floats : 1) / FJ_MIN_FLOATS;
    parts = parts < by_work ? parts : by_work;
    parts = parts < n ? parts : n;
    parts = parts < FJ_MAX_THREADS ? parts : FJ_MAX_THREADS;
    if (parts <= 1) {
        if (n > 0)
            fn(ctx, 0, n);
        return;
    }
    fj_part part[FJ_MAX_THREADS];
    pthread_t th[FJ_MAX_THREADS];
    int started[FJ_MAX_THREADS] = {0};
    for (int64_t i = 0; i < parts; i++)
        part[i] = (fj_part){fn, ctx, n * i / parts, n * (i + 1) / parts};
    for (int64_t i = 1; i < parts; i++)
        started[i] = pthread_create(&th[i], NULL, fj_run, &part[i]) == 0;
    fj_run(&part[0]);
    for (int64_t i = 1; i < parts; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            fj_run(&part[i]);
    }
}

/* ------------------------------------------------------------------ sums */

/* Sum of n floats: float over chunks of 8 lanes x 64, double across chunks (accurate for the
 * 10^5..10^6 terms of a bias gradient). */
static double sum_floats(const float *g, int64_t n)
{
    double acc = 0;
    for (int64_t i0 = 0; i0 < n; i0 += 512) {
        int64_t e = n - i0 < 512 ? n : i0 + 512, i = i0;
        float lane[8] = {0};
        for (; i + 8 <= e; i += 8)
            for (int j = 0; j < 8; j++)
                lane[j] += g[i + j];
        float part = 0;
        for (; i < e; i++)
            part += g[i];
        for (int j = 0; j < 8; j++)
            part += lane[j];
        acc += part;
    }
    return acc;
}

/* Bias gradient: db[o] += the sum of dout over everything but the channel; dout is
 * channels-first (B, C, L) or tokens (B, L, C). Items are channels. */
typedef struct bias_grad_ctx {
    float *db;
    const float *dout;
    int64_t B, C, L;
    int channels_last;
} bias_grad_ctx;

static void bias_grad_part(void *arg, int64_t o0, int64_t o1)
{
    const bias_grad_ctx *a = arg;
    if (!a->channels_last) {
        for (int64_t o = o0; o < o1; o++) {
            double acc = 0;
            for (int64_t b = 0; b < a->B; b++)
                acc += sum_floats(a->dout + (b * a->C + o) * a->L, a->L);
            a->db[o] += (float)acc;
        }
        return;
    }
    /* tokens: blocks of 16 channels, float over chunks of 256 tokens, double across chunks */
    const int64_t n = a->B * a->L;
    for (int64_t c0 = o0; c0 < o1; c0 += 16) {
        int64_t m = o1 - c0 < 16 ? o1 - c0 : 16;
        double acc[16] = {0};
        for (int64_t i0 = 0; i0 < n; i0 += 256) {
            int64_t e = n - i0 < 256 ? n : i0 + 256;
            float part[16] = {0};
            for (int64_t i = i0; i < e; i++)
                for (int64_t j = 0; j < m; j++)
                    part[j] += a->dout[i * a->C + c0 + j];
            for (int64_t j = 0; j < m; j++)
                acc[j] += part[j];
        }
        for (int64_t j = 0; j < m; j++)
            a->db[c0 + j] += (float)acc[j];
    }
}

static void bias_grad(float *db, const float *dout, int64_t B, int64_t C, int64_t L,
                      int channels_last)
{
    bias_grad_ctx a = {db, dout, B, C, L, channels_last};
    fork_join(C, B * L, bias_grad_part, &a);
}

/* ------------------------------------------------------------------ conv3d */

void fine_conv3d_out_size(const fine_conv3d_shape *s, int64_t *Do, int64_t *Ho, int64_t *Wo)
{
    *Do = (s->D + 2 * s->pad[0] - s->k[0]) / s->stride[0] + 1;
    *Ho = (s->H + 2 * s->pad[1] - s->k[1]) / s->stride[1] + 1;
    *Wo = (s->W + 2 * s->pad[2] - s->k[2]) / s->stride[2] + 1;
}

/* Rows per tile when a row needs row_floats of scratch: as many as fit in CONV_TILE_FLOATS,
 * at least one, at most all; 0 when there is nothing to compute. */
static int64_t tile_rows(int64_t row_floats, int64_t rows)
{
    if (rows <= 0 || row_floats <= 0)
        return 0;
    int64_t t = CONV_TILE_FLOATS / row_floats;
    t = t < 1 ? 1 : t;
    return t < rows ? t : rows;
}

typedef struct conv_plan {
    int64_t Do, Ho, Wo;
    int64_t P;         /* output positions per sample */
    int64_t K;         /* rows of col: Cin * kv */
    int64_t kv;        /* k0*k1*k2 */
    int64_t rows;      /* output rows per sample: Do*Ho */
    int64_t tile_rows; /* output rows per tile */
} conv_plan;

static conv_plan conv_plan_make(const fine_conv3d_shape *s)
{
    conv_plan p;
    fine_conv3d_out_size(s, &p.Do, &p.Ho, &p.Wo);
    p.P = p.Do * p.Ho * p.Wo;
    p.kv = (int64_t)s->k[0] * s->k[1] * s->k[2];
    p.K = s->Cin * p.kv;
    p.rows = p.Do > 0 && p.Ho > 0 && p.Wo > 0 ? p.Do * p.Ho : 0;
    p.tile_rows = tile_rows(p.K * p.Wo, p.rows);
    return p;
}

/* Stride 1 and pad <= k-1 in every axis: then the data gradient is a convolution of dout with
 * the flipped, transposed kernel w'[c, o, i, j, l] = w[o, c, k0-1-i, k1-1-j, k2-1-l] and pad
 * k-1-pad, whose output grid is exactly the input grid. *t receives that convolution. */
static int data_grad_is_conv(const fine_conv3d_shape *s, fine_conv3d_shape *t)
{
    for (int d = 0; d < 3; d++)
        if (s->stride[d] != 1 || s->pad[d] < 0 || s->pad[d] > s->k[d] - 1)
            return 0;
    int64_t Do, Ho, Wo;
    fine_conv3d_out_size(s, &Do, &Ho, &Wo);
    *t = (fine_conv3d_shape){s->B, s->Cout, Do, Ho, Wo, s->Cin, {s->k[0], s->k[1], s->k[2]},
                             {1, 1, 1},
                             {s->k[0] - 1 - s->pad[0], s->k[1] - 1 - s->pad[1],
                              s->k[2] - 1 - s->pad[2]}};
    return 1;
}

static int64_t conv_tile_floats(const fine_conv3d_shape *s)
{
    conv_plan p = conv_plan_make(s);
    return p.K * p.tile_rows * p.Wo;
}

/* The forward's col tile; with stride 1 also the flipped kernel and the data gradient's col
 * tile (used one after the other, so the larger of the two). */
size_t fine_conv3d_scratch(const fine_conv3d_shape *s)
{
    int64_t n = conv_tile_floats(s);
    fine_conv3d_shape t;
    if (data_grad_is_conv(s, &t)) {
        int64_t nt = s->Cout * s->Cin * s->k[0] * s->k[1] * s->k[2] + conv_tile_floats(&t);
        n = nt > n ? nt : n;
    }
    return (size_t)n;
}

/* floor(a / b) for b > 0 */
static int64_t floor_div(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* The output columns ow in [*lo, *hi) whose input column ow*stride - pad + kw lies in [0, W). */
static void valid_range(int64_t W, int64_t Wo, int stride, int pad, int kw, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = pad - kw; /* ow*stride >= a */
    int64_t l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int64_t h = floor_div(W - 1 + pad - kw, stride) + 1; /* ow*stride <= W-1+pad-kw */
    h = h < Wo ? h : Wo;
    *lo = l < h ? l : h;
    *hi = h;
}

/* One tile of one sample: output rows [r0, r0+nr), n = nr*Wo columns. */
typedef struct conv_tile {
    const fine_conv3d_shape *s;
    const conv_plan *p;
    int64_t r0, nr, n;
    float *col;       /* (K, n) */
    const float *x;   /* im2col source (Cin, D, H, W) */
    float *y;         /* (Cout, P): bias fill target of the forward */
    const float *bias;
    float *dx;        /* col2im target (Cin, D, H, W) */
} conv_tile;

/* Row `row` = (c, kd, kh, kw) of col. */
static void im2col_row(const conv_tile *t, int64_t row)
{
    const fine_conv3d_shape *s = t->s;
    const int64_t Wo = t->p->Wo, Ho = t->p->Ho, D = s->D, H = s->H, W = s->W;
    const int k1 = s->k[1], k2 = s->k[2], s2 = s->stride[2], p2 = s->pad[2];
    int64_t c = row / t->p->kv, q = row % t->p->kv;
    int kd = (int)(q / (k1 * k2)), kh = (int)(q / k2 % k1), kw = (int)(q % k2);
    int64_t lo, hi;
    valid_range(W, Wo, s2, p2, kw, &lo, &hi);
    const float *xc = t->x + c * D * H * W;
    float *dst = t->col + row * t->n;
    for (int64_t r = t->r0; r < t->r0 + t->nr; r++, dst += Wo) {
        int64_t id = r / Ho * s->stride[0] - s->pad[0] + kd;
        int64_t ih = r % Ho * s->stride[1] - s->pad[1] + kh;
        if (id < 0 || id >= D || ih < 0 || ih >= H || lo >= hi) {
            memset(dst, 0, (size_t)Wo * sizeof(float));
            continue;
        }
        if (lo > 0)
            memset(dst, 0, (size_t)lo * sizeof(float));
        if (hi < Wo)
            memset(dst + hi, 0, (size_t)(Wo - hi) * sizeof(float));
        const float *src = xc + (id * H + ih) * W + lo * s2 - p2 + kw;
        float *d = dst + lo;
        int64_t m = hi - lo;
        if (s2 == 1)
            memcpy(d, src, (size_t)m * sizeof(float));
        else if (s2 == 2)
            for (int64_t i = 0; i < m; i++)
                d[i] = src[2 * i];
        else
            for (int64_t i = 0; i < m; i++)
                d[i] = src[i * s2];
    }
}

/* Items [0, K) are the rows of col, items [K, K+Cout) (with a bias) the bias rows of y. */
static void im2col_part(void *arg, int64_t i0, int64_t i1)
{
    const conv_tile *t = arg;
    for (int64_t i = i0; i < i1; i++) {
        if (i < t->p->K) {
            im2col_row(t, i);
        } else {
            int64_t o = i - t->p->K;
            float *yo = t->y + o * t->p->P + t->r0 * t->p->Wo;
            for (int64_t j = 0; j < t->n; j++)
                yo[j] = t->bias[o];
        }
    }
}

/* dx += the scatter of col; the items are input channels, so no two threads add to the same
 * value. */
static void col2im_part(void *arg, int64_t c0, int64_t c1)
{
    const conv_tile *t = arg;
    const fine_conv3d_shape *s = t->s;
    const int64_t Wo = t->p->Wo, Ho = t->p->Ho, D = s->D, H = s->H, W = s->W, kv = t->p->kv;
    const int k1 = s->k[1], k2 = s->k[2], s2 = s->stride[2], p2 = s->pad[2];
    for (int64_t c = c0; c < c1; c++) {
        float *xc = t->dx + c * D * H * W;
        for (int64_t q = 0; q < kv; q++) {
            int kd = (int)(q / (k1 * k2)), kh = (int)(q / k2 % k1), kw = (int)(q % k2);
            int64_t lo, hi;
            valid_range(W, Wo, s2, p2, kw, &lo, &hi);
            const float *src = t->col + (c * kv + q) * t->n;
            for (int64_t r = t->r0; r < t->r0 + t->nr; r++, src += Wo) {
                int64_t id = r / Ho * s->stride[0] - s->pad[0] + kd;
                int64_t ih = r % Ho * s->stride[1] - s->pad[1] + kh;
                if (id < 0 || id >= D || ih < 0 || ih >= H)
                    continue;
                float *d = xc + (id * H + ih) * W + lo * s2 - p2 + kw;
                const float *sv = src + lo;
                int64_t m = hi - lo;
                if (s2 == 1)
                    for (int64_t i = 0; i < m; i++)
                        d[i] += sv[i];
                else
                    for (int64_t i = 0; i < m; i++)
                        d[i * s2] += sv[i];
            }
        }
    }
}

/* y (B, Cout, Do, Ho, Wo) = conv(x, w) + bias (bias may be NULL), or y += conv(x, w) when
 * accumulate (bias must then be NULL); tile by tile with col (conv_tile_floats) as scratch. */
static void conv_tiles(const fine_conv3d_shape *s, float *y, const float *x, const float *w,
                       const float *bias, int accumulate, float *col)
{
    conv_plan p = conv_plan_make(s);
    const int64_t in_sample = s->Cin * s->D * s->H * s->W, out_sample = s->Cout * p.P;
    const float beta = bias || accumulate ? 1.0f : 0.0f;
    const float *fill = accumulate ? NULL : bias;
    for (int64_t b = 0; b < s->B; b++) {
        float *yb = y + b * out_sample;
        for (int64_t r0 = 0; r0 < p.rows; r0 += p.tile_rows) {
            int64_t nr = p.rows - r0 < p.tile_rows ? p.rows - r0 : p.tile_rows;
            conv_tile t = {s, &p, r0, nr, nr * p.Wo, col, x + b * in_sample, yb, fill, NULL};
            fork_join(p.K + (fill ? s->Cout : 0), t.n, im2col_part, &t);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->Cout, (int)t.n,
                        (int)p.K, 1.0f, w, (int)p.K, col, (int)t.n, beta, yb + r0 * p.Wo,
                        (int)p.P);
        }
    }
}

void fine_conv3d_forward(const fine_conv3d_shape *s, float *out, const float *in, const float *w,
                         const float *b, float *scratch)
{
    conv_tiles(s, out, in, w, b, 0, scratch);
}

/* w' (Cin, Cout, k) = w (Cout, Cin, k) flipped in every axis; items are input channels. */
typedef struct flip_ctx {
    const fine_conv3d_shape *s;
    float *wt;
    const float *w;
} flip_ctx;

static void flip_part(void *arg, int64_t c0, int64_t c1)
{
    const flip_ctx *a = arg;
    const int k0 = a->s->k[0], k1 = a->s->k[1], k2 = a->s->k[2];
    const int64_t kv = (int64_t)k0 * k1 * k2, Cin = a->s->Cin, Cout = a->s->Cout;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t o = 0; o < Cout; o++)
            for (int64_t q = 0; q < kv; q++) {
                int i = (int)(q / (k1 * k2)), j = (int)(q / k2 % k1), l = (int)(q % k2);
                int64_t qf = ((k0 - 1 - i) * k1 + (k1 - 1 - j)) * k2 + (k2 - 1 - l);
                a->wt[(c * Cout + o) * kv + q] = a->w[(o * Cin + c) * kv + qf];
            }
}

void fine_conv3d_backward(const fine_conv3d_shape *s, float *din, float *dw, float *db,
                          const float *dout, const float *in, const float *w, float *scratch)
{
    conv_plan p = conv_plan_make(s);
    const int64_t in_sample = s->Cin * s->D * s->H * s->W, out_sample = s->Cout * p.P;
    if (db)
        bias_grad(db, dout, s->B, s->Cout, p.P, 0);
    fine_conv3d_shape tc;
    const int flip = din && data_grad_is_conv(s, &tc);
    /* dw += dout_tile @ col^T over all tiles; din by col2im when it is not a convolution */
    if (dw || (din && !flip)) {
        for (int64_t b = 0; b < s->B; b++) {
            const float *g = dout + b * out_sample;
            for (int64_t r0 = 0; r0 < p.rows; r0 += p.tile_rows) {
                int64_t nr = p.rows - r0 < p.tile_rows ? p.rows - r0 : p.tile_rows;
                conv_tile t = {s, &p, r0, nr, nr * p.Wo, scratch, in + b * in_sample, NULL, NULL,
                               din ? din + b * in_sample : NULL};
                if (dw) {
                    fork_join(p.K, t.n, im2col_part, &t);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->Cout, (int)p.K,
                                (int)t.n, 1.0f, g + r0 * p.Wo, (int)p.P, scratch, (int)t.n, 1.0f,
                                dw, (int)p.K);
                }
                if (din && !flip) {
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)p.K, (int)t.n,
                                (int)s->Cout, 1.0f, w, (int)p.K, g + r0 * p.Wo, (int)p.P, 0.0f,
                                scratch, (int)t.n);
                    fork_join(s->Cin, p.kv * t.n, col2im_part, &t);
                }
            }
        }
    }
    /* stride 1: din += conv(dout, w'), w' at the head of scratch, col tiles after it */
    if (flip) {
        flip_ctx f = {s, scratch, w};
        fork_join(s->Cin, s->Cout * p.kv, flip_part, &f);
        conv_tiles(&tc, din, dout, scratch, NULL, 1, scratch + s->Cin * s->Cout * p.kv);
    }
}

/* ------------------------------------------------------------------ convT3d (kernel = stride) */

typedef struct convT_plan {
    int64_t kv;        /* k0*k1*k2 */
    int64_t N;         /* columns of y: Cout*kv */
    int64_t rows;      /* input rows (b, z, y) over the batch: B*D*H */
    int64_t tile_rows; /* input rows per tile */
} convT_plan;

static convT_plan convT_plan_make(const fine_convT3d_shape *s)
{
    convT_plan p;
    p.kv = (int64_t)s->k[0] * s->k[1] * s->k[2];
    p.N = s->Cout * p.kv;
    p.rows = s->B > 0 && s->D > 0 && s->H > 0 && s->W > 0 ? s->B * s->D * s->H : 0;
    p.tile_rows = tile_rows(s->W * p.N, p.rows);
    return p;
}

size_t fine_convT3d_scratch(const fine_convT3d_shape *s)
{
    convT_plan p = convT_plan_make(s);
    return (size_t)(p.tile_rows * s->W * p.N);
}

/* A tile of input rows [r0, r0+nr) (a row is (b, z, y), W tokens); y row t of the tile holds
 * the token's Cout blocks of kv = (i, j, l) values. */
typedef struct convT_tile {
    const fine_convT3d_shape *s;
    const convT_plan *p;
    int64_t r0;
    float *y;
    float *out;        /* scatter target (forward) */
    const float *dout; /* gather source (backward) */
    const float *bias;
} convT_tile;

/* out = y + bias for the input rows [r0 + i0, r0 + i1); or y = dout (gather) when t->dout. */
static void convT_move_part(void *arg, int64_t i0, int64_t i1)
{
    const convT_tile *t = arg;
    const fine_convT3d_shape *s = t->s;
    const int64_t D = s->D, H = s->H, W = s->W, Cout = s->Cout, N = t->p->N, kv = t->p->kv;
    const int k0 = s->k[0], k1 = s->k[1], k2 = s->k[2];
    const int64_t Do = D * k0, Ho = H * k1, Wo = W * k2;
    const int gather = t->dout != NULL;
    for (int64_t r = t->r0 + i0; r < t->r0 + i1; r++) {
        int64_t b = r / (D * H), z = r / H % D, yy = r % H;
        float *yr = t->y + (r - t->r0) * W * N;
        if (!s->out_channels_last) {
            /* (B, Cout, Do, Ho, Wo): (o, i, j) of an input row make one output row */
            for (int64_t o = 0; o < Cout; o++) {
                float bo = t->bias ? t->bias[o] : 0.0f;
                for (int i = 0; i < k0; i++)
                    for (int j = 0; j < k1; j++) {
                        int64_t orow = (((b * Cout + o) * Do + z * k0 + i) * Ho + yy * k1 + j) * Wo;
                        float *yc = yr + o * kv + (i * k1 + j) * k2;
                        if (gather) {
                            const float *g = t->dout + orow;
                            for (int64_t x = 0; x < W; x++)
                                for (int l = 0; l < k2; l++)
                                    yc[x * N + l] = g[x * k2 + l];
                        } else {
                            float *ov = t->out + orow;
                            for (int64_t x = 0; x < W; x++)
                                for (int l = 0; l < k2; l++)
                                    ov[x * k2 + l] = yc[x * N + l] + bo;
                        }
                    }
            }
        } else {
            /* (B, Do*Ho*Wo, Cout): (i, j, l) of an input token make one output token */
            for (int64_t x = 0; x < W; x++) {
                float *yt = yr + x * N;
                for (int64_t q = 0; q < kv; q++) {
                    int64_t i = q / (k1 * k2), j = q / k2 % k1, l = q % k2;
                    int64_t tok = ((b * Do + z * k0 + i) * Ho + yy * k1 + j) * Wo + x * k2 + l;
                    if (gather) {
                        const float *g = t->dout + tok * Cout;
                        for (int64_t o = 0; o < Cout; o++)
                            yt[o * kv + q] = g[o];
                    } else {
                        float *ov = t->out + tok * Cout;
                        for (int64_t o = 0; o < Cout; o++)
                            ov[o] = yt[o * kv + q] + (t->bias ? t->bias[o] : 0.0f);
                    }
                }
            }
        }
    }
}

void fine_convT3d_forward(const fine_convT3d_shape *s, float *out, const float *in, const float *w,
                          const float *b, float *scratch)
{
    convT_plan p = convT_plan_make(s);
    for (int64_t r0 = 0; r0 < p.rows; r0 += p.tile_rows) {
        int64_t nr = p.rows - r0 < p.tile_rows ? p.rows - r0 : p.tile_rows;
        int64_t nt = nr * s->W;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nt, (int)p.N, (int)s->Cin,
                    1.0f, in + r0 * s->W * s->Cin, (int)s->Cin, w, (int)p.N, 0.0f, scratch,
                    (int)p.N);
        convT_tile t = {s, &p, r0, scratch, out, NULL, b};
        fork_join(nr, s->W * p.N, convT_move_part, &t);
    }
}

void fine_convT3d_backward(const fine_convT3d_shape *s, float *din, float *dw, float *db,
                           const float *dout, const float *in, const float *w, float *scratch)
{
    convT_plan p = convT_plan_make(s);
    if (db)
        bias_grad(db, dout, s->B, s->Cout, s->D * s->k[0] * s->H * s->k[1] * s->W * s->k[2],
                  s->out_channels_last);
    if (!din && !dw)
        return;
    for (int64_t r0 = 0; r0 < p.rows; r0 += p.tile_rows) {
        int64_t nr = p.rows - r0 < p.tile_rows ? p.rows - r0 : p.tile_rows;
        int64_t nt = nr * s->W, t0 = r0 * s->W;
        convT_tile t = {s, &p, r0, scratch, NULL, dout, NULL};
        fork_join(nr, s->W * p.N, convT_move_part, &t);
        if (dw)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)s->Cin, (int)p.N, (int)nt,
                        1.0f, in + t0 * s->Cin, (int)s->Cin, scratch, (int)p.N, 1.0f, dw,
                        (int)p.N);
        if (din)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nt, (int)s->Cin, (int)p.N,
                        1.0f, scratch, (int)p.N, w, (int)p.N, 1.0f, din + t0 * s->Cin,
                        (int)s->Cin);
    }
}

/* ------------------------------------------------------------------ layout changes */

#define TR_BLOCK 32

/* out (B, cols, rows) (= or +=) the transpose of in (B, rows, cols), in 32x32 blocks; items
 * are (b, block of 32 rows). */
typedef struct transpose_ctx {
    float *out;
    const float *in;
    int64_t rows, cols;
    int acc;
} transpose_ctx;

static void transpose_part(void *arg, int64_t i0, int64_t i1)
{
    const transpose_ctx *a = arg;
    const int64_t rows = a->rows, cols = a->cols, rb = (rows + TR_BLOCK - 1) / TR_BLOCK;
    for (int64_t it = i0; it < i1; it++) {
        int64_t b = it / rb, r0 = it % rb * TR_BLOCK;
        int64_t re = r0 + TR_BLOCK < rows ? r0 + TR_BLOCK : rows;
        const float *src = a->in + b * rows * cols;
        float *dst = a->out + b * rows * cols;
        for (int64_t c0 = 0; c0 < cols; c0 += TR_BLOCK) {
            int64_t ce = c0 + TR_BLOCK < cols ? c0 + TR_BLOCK : cols;
            for (int64_t c = c0; c < ce; c++)
                for (int64_t r = r0; r < re; r++) {
                    if (a->acc)
                        dst[c * rows + r] += src[r * cols + c];
                    else
                        dst[c * rows + r] = src[r * cols + c];
                }
        }
    }
}

static void transpose(float *out, const float *in, int64_t B, int64_t rows, int64_t cols, int acc)
{
    transpose_ctx a = {out, in, rows, cols, acc};
    fork_join(B * ((rows + TR_BLOCK - 1) / TR_BLOCK), TR_BLOCK * cols, transpose_part, &a);
}

void fine_to_channels_last(float *out, const float *in, int64_t B, int64_t C, int64_t L)
{
    transpose(out, in, B, C, L, 0);
}

void fine_to_channels_first(float *out, const float *in, int64_t B, int64_t C, int64_t L)
{
    transpose(out, in, B, L, C, 0);
}

void fine_to_channels_last_backward(float *din, const float *dout, int64_t B, int64_t C, int64_t L)
{
    transpose(din, dout, B, L, C, 1);
}

void fine_to_channels_first_backward(float *din, const float *dout, int64_t B, int64_t C, int64_t L)
{
    transpose(din, dout, B, C, L, 1);
}
