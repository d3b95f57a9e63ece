/* ops_conv.c: 3-D convolution, transposed convolution with kernel = stride, and the
 * channels-first <-> channels-last layout changes of the CPU backend (contracts in ops.h).
 *
 * Tiling strategy. A convolution of one sample is the GEMM
 *     out (Cout, P) = w (Cout, K) @ col (K, P),   K = Cin*k0*k1*k2, P = Do*Ho*Wo,
 * where column p of col holds the input values under the kernel at output position p. The full
 * col of a 96-channel 32x64x64 output would be 1.4 GB, so it is never built: the output
 * positions of a sample are cut into tiles of whole output rows (an (od, oh) pair, Wo
 * positions; a tile may run across planes), sized so that K x (positions of a tile) stays under
 * CONV_TILE_FLOATS (or is one output row when a row alone is larger). Per tile:
 *   forward   im2col the tile, sgemm into the tile's columns of out (ldc = P, bias pre-filled);
 *   backward  im2col again, dw += dout_tile @ col^T (sgemm, beta 1, the sum over tiles);
 *             col = w^T @ dout_tile (same buffer), then col2im scatter-adds col into din.
 * im2col works row by row: for a kernel offset and an output row the valid range of ow is
 * computed once, the rest is zero-filled, and the copy is a memcpy (stride 1 along x) or a
 * strided gather (stride 2, the (1,2,2) and (2,2,2) patch embeddings). Kernel = stride with pad
 * 0 (PatchMerging) takes the same route, where im2col degenerates to a pure gather with no
 * zeros and no overlap (a direct GEMM on the gathered 2x2x2 patches). Any kernel, stride and
 * padding work; the k3/pad 1 and kernel = stride cases are the ones that matter for speed.
 * sgemm runs in the calling thread (OpenBLAS parallelises it); im2col is an OpenMP loop over
 * the rows of col, col2im an OpenMP loop over input channels (each thread owns its channels,
 * so the scatter-add has no races and no atomics).
 *
 * Transposed convolution with kernel = stride has no overlap: on tokens (B*D*H*W, Cin) it is
 *     y (tokens, Cout*kv) = in (tokens, Cin) @ w (Cin, Cout*kv),   kv = k0*k1*k2,
 * followed by a scatter of each token's Cout x kv block (plus bias) into the output. Tokens are
 * tiled by whole input rows under the same budget. Backward gathers dout into the tile layout
 * and runs dw += in^T @ g and din += g @ w^T.
 *
 * Every loop that sums writes one output from one thread in a fixed order, so results do not
 * depend on the thread count except through the order of summation inside BLAS. */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "nn/ops.h"

/* Scratch budget per tile, in floats (16 MiB): small enough to stay near the last-level cache,
 * large enough that every sgemm has hundreds to thousands of columns. */
#ifndef CONV_TILE_FLOATS
#define CONV_TILE_FLOATS ((int64_t)1 << 22)
#endif

void fine_nn_set_threads(int n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
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

/* Sum of n floats, in float over chunks of 8 lanes x 64 and in double across chunks (accurate
 * for the 10^5-10^6 terms of a bias gradient, and independent of the thread count). */
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

/* acc[0..m) += the sum of n rows g[i*ld + 0..m), m <= 16, in float over chunks of 256 rows. */
static void sum_rows(double *acc, const float *g, int64_t n, int64_t ld, int64_t m)
{
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int64_t e = n - i0 < 256 ? n : i0 + 256;
        float part[16] = {0};
        for (int64_t i = i0; i < e; i++)
            for (int64_t j = 0; j < m; j++)
                part[j] += g[i * ld + j];
        for (int64_t j = 0; j < m; j++)
            acc[j] += part[j];
    }
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

size_t fine_conv3d_scratch(const fine_conv3d_shape *s)
{
    conv_plan p = conv_plan_make(s);
    return (size_t)(p.K * p.tile_rows * p.Wo);
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
    int64_t a = pad - kw;                             /* ow*stride >= a */
    int64_t l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int64_t h = floor_div(W - 1 + pad - kw, stride) + 1; /* ow*stride <= W-1+pad-kw */
    if (h > Wo)
        h = Wo;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* Row `row` = (c, kd, kh, kw) of col for output rows [r0, r0+nr) of one sample x. */
static void im2col_row(const fine_conv3d_shape *s, const conv_plan *p, float *dst, const float *x,
                       int64_t row, int64_t r0, int64_t nr)
{
    const int64_t Wo = p->Wo, Ho = p->Ho, D = s->D, H = s->H, W = s->W;
    const int k1 = s->k[1], k2 = s->k[2], s2 = s->stride[2], p2 = s->pad[2];
    int64_t c = row / p->kv, q = row % p->kv;
    int kd = (int)(q / (k1 * k2)), kh = (int)(q / k2 % k1), kw = (int)(q % k2);
    int64_t lo, hi;
    valid_range(W, Wo, s2, p2, kw, &lo, &hi);
    const float *xc = x + c * D * H * W;
    for (int64_t r = r0; r < r0 + nr; r++, dst += Wo) {
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

/* col (K, nr*Wo) for output rows [r0, r0+nr) of one sample x (Cin, D, H, W). If bias is not
 * NULL, also fills the same columns of y (Cout, P) with it, in the same parallel region. */
static void im2col(const fine_conv3d_shape *s, const conv_plan *p, float *col, const float *x,
                   int64_t r0, int64_t nr, float *y, const float *bias)
{
    const int64_t n = nr * p->Wo;
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, 4) nowait
        for (int64_t row = 0; row < p->K; row++)
            im2col_row(s, p, col + row * n, x, row, r0, nr);
        if (bias) {
#pragma omp for schedule(static)
            for (int64_t o = 0; o < s->Cout; o++) {
                float *yo = y + o * p->P + r0 * p->Wo;
                for (int64_t i = 0; i < n; i++)
                    yo[i] = bias[o];
            }
        }
    }
}

/* dx (Cin, D, H, W) += the scatter of col (K, nr*Wo) for output rows [r0, r0+nr). */
static void col2im(const fine_conv3d_shape *s, const conv_plan *p, float *dx, const float *col,
                   int64_t r0, int64_t nr)
{
    const int64_t n = nr * p->Wo, Wo = p->Wo, Ho = p->Ho;
    const int64_t D = s->D, H = s->H, W = s->W;
    const int k1 = s->k[1], k2 = s->k[2];
    const int s0 = s->stride[0], s1 = s->stride[1], s2 = s->stride[2];
    const int p0 = s->pad[0], p1 = s->pad[1], p2 = s->pad[2];
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < s->Cin; c++) {
        float *xc = dx + c * D * H * W;
        for (int64_t q = 0; q < p->kv; q++) {
            int kd = (int)(q / (k1 * k2)), kh = (int)(q / k2 % k1), kw = (int)(q % k2);
            int64_t lo, hi;
            valid_range(W, Wo, s2, p2, kw, &lo, &hi);
            const float *src = col + (c * p->kv + q) * n;
            for (int64_t r = r0; r < r0 + nr; r++, src += Wo) {
                int64_t id = r / Ho * s0 - p0 + kd, ih = r % Ho * s1 - p1 + kh;
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

void fine_conv3d_forward(const fine_conv3d_shape *s, float *out, const float *in, const float *w,
                         const float *b, float *scratch)
{
    conv_plan p = conv_plan_make(s);
    const int64_t in_sample = s->Cin * s->D * s->H * s->W, out_sample = s->Cout * p.P;
    for (int64_t bi = 0; bi < s->B; bi++) {
        const float *x = in + bi * in_sample;
        float *y = out + bi * out_sample;
        for (int64_t r0 = 0; r0 < p.rows; r0 += p.tile_rows) {
            int64_t nr = p.rows - r0 < p.tile_rows ? p.rows - r0 : p.tile_rows;
            int64_t n = nr * p.Wo, p0 = r0 * p.Wo;
            im2col(s, &p, scratch, x, r0, nr, y, b);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->Cout, (int)n, (int)p.K,
                        1.0f, w, (int)p.K, scratch, (int)n, b ? 1.0f : 0.0f, y + p0, (int)p.P);
        }
    }
}

void fine_conv3d_backward(const fine_conv3d_shape *s, float *din, float *dw, float *db,
                          const float *dout, const float *in, const float *w, float *scratch)
{
    conv_plan p = conv_plan_make(s);
    const int64_t in_sample = s->Cin * s->D * s->H * s->W, out_sample = s->Cout * p.P;
    if (db) {
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < s->Cout; o++) {
            double acc = 0;
            for (int64_t bi = 0; bi < s->B; bi++)
                acc += sum_floats(dout + bi * out_sample + o * p.P, p.P);
            db[o] += (float)acc;
        }
    }
    if (!din && !dw)
        return;
    for (int64_t bi = 0; bi < s->B; bi++) {
        const float *x = in + bi * in_sample;
        const float *g = dout + bi * out_sample;
        for (int64_t r0 = 0; r0 < p.rows; r0 += p.tile_rows) {
            int64_t nr = p.rows - r0 < p.tile_rows ? p.rows - r0 : p.tile_rows;
            int64_t n = nr * p.Wo, p0 = r0 * p.Wo;
            if (dw) {
                im2col(s, &p, scratch, x, r0, nr, NULL, NULL);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->Cout, (int)p.K,
                            (int)n, 1.0f, g + p0, (int)p.P, scratch, (int)n, 1.0f, dw, (int)p.K);
            }
            if (din) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)p.K, (int)n,
                            (int)s->Cout, 1.0f, w, (int)p.K, g + p0, (int)p.P, 0.0f, scratch,
                            (int)n);
                col2im(s, &p, din + bi * in_sample, scratch, r0, nr);
            }
        }
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

/* out = y + bias (bias may be NULL) for the tokens of input rows [r0, r0+nr) (a row is
 * (b, z, y), W tokens): token t's y row holds Cout blocks of kv = (i, j, l) values. */
static void convT_scatter(const fine_convT3d_shape *s, const convT_plan *p, float *out,
                          const float *y, const float *bias, int64_t r0, int64_t nr)
{
    const int64_t D = s->D, H = s->H, W = s->W, Cout = s->Cout, N = p->N, kv = p->kv;
    const int k0 = s->k[0], k1 = s->k[1], k2 = s->k[2];
    const int64_t Do = D * k0, Ho = H * k1, Wo = W * k2;
    if (!s->out_channels_last) {
        /* (B, Cout, Do, Ho, Wo): an input row and (o, i, j) make one output row */
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t r = r0; r < r0 + nr; r++)
            for (int64_t o = 0; o < Cout; o++) {
                int64_t bi = r / (D * H), z = r / H % D, yy = r % H;
                float bo = bias ? bias[o] : 0.0f;
                for (int i = 0; i < k0; i++)
                    for (int j = 0; j < k1; j++) {
                        float *orow = out + (((bi * Cout + o) * Do + z * k0 + i) * Ho + yy * k1 + j) * Wo;
                        const float *yr = y + (r - r0) * W * N + o * kv + (i * k1 + j) * k2;
                        for (int64_t x = 0; x < W; x++)
                            for (int l = 0; l < k2; l++)
                                orow[x * k2 + l] = yr[x * N + l] + bo;
                    }
            }
    } else {
        /* (B, Do*Ho*Wo, Cout): an input token and (i, j, l) make one output token */
#pragma omp parallel for schedule(static)
        for (int64_t r = r0; r < r0 + nr; r++) {
            int64_t bi = r / (D * H), z = r / H % D, yy = r % H;
            for (int64_t x = 0; x < W; x++) {
                const float *yt = y + ((r - r0) * W + x) * N;
                for (int64_t q = 0; q < kv; q++) {
                    int64_t i = q / (k1 * k2), j = q / k2 % k1, l = q % k2;
                    float *ov = out + (((bi * Do + z * k0 + i) * Ho + yy * k1 + j) * Wo + x * k2 + l) * Cout;
                    for (int64_t o = 0; o < Cout; o++)
                        ov[o] = yt[o * kv + q] + (bias ? bias[o] : 0.0f);
                }
            }
        }
    }
}

/* The reverse of convT_scatter without bias: y (tile tokens, Cout*kv) = the values of dout. */
static void convT_gather(const fine_convT3d_shape *s, const convT_plan *p, float *y,
                         const float *dout, int64_t r0, int64_t nr)
{
    const int64_t D = s->D, H = s->H, W = s->W, Cout = s->Cout, N = p->N, kv = p->kv;
    const int k0 = s->k[0], k1 = s->k[1], k2 = s->k[2];
    const int64_t Do = D * k0, Ho = H * k1, Wo = W * k2;
    if (!s->out_channels_last) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t r = r0; r < r0 + nr; r++)
            for (int64_t o = 0; o < Cout; o++) {
                int64_t bi = r / (D * H), z = r / H % D, yy = r % H;
                for (int i = 0; i < k0; i++)
                    for (int j = 0; j < k1; j++) {
                        const float *grow = dout + (((bi * Cout + o) * Do + z * k0 + i) * Ho + yy * k1 + j) * Wo;
                        float *yr = y + (r - r0) * W * N + o * kv + (i * k1 + j) * k2;
                        for (int64_t x = 0; x < W; x++)
                            for (int l = 0; l < k2; l++)
                                yr[x * N + l] = grow[x * k2 + l];
                    }
            }
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t r = r0; r < r0 + nr; r++) {
            int64_t bi = r / (D * H), z = r / H % D, yy = r % H;
            for (int64_t x = 0; x < W; x++) {
                float *yt = y + ((r - r0) * W + x) * N;
                for (int64_t q = 0; q < kv; q++) {
                    int64_t i = q / (k1 * k2), j = q / k2 % k1, l = q % k2;
                    const float *gv = dout + (((bi * Do + z * k0 + i) * Ho + yy * k1 + j) * Wo + x * k2 + l) * Cout;
                    for (int64_t o = 0; o < Cout; o++)
                        yt[o * kv + q] = gv[o];
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
        convT_scatter(s, &p, out, scratch, b, r0, nr);
    }
}

void fine_convT3d_backward(const fine_convT3d_shape *s, float *din, float *dw, float *db,
                           const float *dout, const float *in, const float *w, float *scratch)
{
    convT_plan p = convT_plan_make(s);
    const int64_t Lo = s->D * s->k[0] * s->H * s->k[1] * s->W * s->k[2];
    if (db) {
        if (!s->out_channels_last) {
#pragma omp parallel for schedule(static)
            for (int64_t o = 0; o < s->Cout; o++) {
                double acc = 0;
                for (int64_t bi = 0; bi < s->B; bi++)
                    acc += sum_floats(dout + (bi * s->Cout + o) * Lo, Lo);
                db[o] += (float)acc;
            }
        } else {
            /* tokens (B*Lo, Cout): each thread sums a block of 16 channels over all tokens */
#pragma omp parallel for schedule(static)
            for (int64_t o0 = 0; o0 < s->Cout; o0 += 16) {
                int64_t m = s->Cout - o0 < 16 ? s->Cout - o0 : 16;
                double acc[16] = {0};
                sum_rows(acc, dout + o0, s->B * Lo, s->Cout, m);
                for (int64_t j = 0; j < m; j++)
                    db[o0 + j] += (float)acc[j];
            }
        }
    }
    if (!din && !dw)
        return;
    for (int64_t r0 = 0; r0 < p.rows; r0 += p.tile_rows) {
        int64_t nr = p.rows - r0 < p.tile_rows ? p.rows - r0 : p.tile_rows;
        int64_t nt = nr * s->W, t0 = r0 * s->W;
        convT_gather(s, &p, scratch, dout, r0, nr);
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

/* out (B, cols, rows) (= or +=) the transpose of in (B, rows, cols), in 32x32 blocks. */
static void transpose(float *out, const float *in, int64_t B, int64_t rows, int64_t cols, int acc)
{
    const int64_t rb = (rows + TR_BLOCK - 1) / TR_BLOCK, cb = (cols + TR_BLOCK - 1) / TR_BLOCK;
#pragma omp parallel for collapse(3) schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t i0 = 0; i0 < rb; i0++)
            for (int64_t j0 = 0; j0 < cb; j0++) {
                const float *src = in + b * rows * cols;
                float *dst = out + b * rows * cols;
                int64_t ie = (i0 + 1) * TR_BLOCK < rows ? (i0 + 1) * TR_BLOCK : rows;
                int64_t je = (j0 + 1) * TR_BLOCK < cols ? (j0 + 1) * TR_BLOCK : cols;
                for (int64_t j = j0 * TR_BLOCK; j < je; j++)
                    for (int64_t i = i0 * TR_BLOCK; i < ie; i++) {
                        if (acc)
                            dst[j * rows + i] += src[i * cols + j];
                        else
                            dst[j * rows + i] = src[i * cols + j];
                    }
            }
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
