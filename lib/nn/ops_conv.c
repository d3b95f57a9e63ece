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
    p.rows = p.Do * p.Ho;
    int64_t per_row = p.K * p.Wo;
    p.tile_rows = per_row > 0 ? CONV_TILE_FLOATS / per_row : 1;
    if (p.tile_rows < 1)
        p.tile_rows = 1;
    if (p.tile_rows > p.rows)
        p.tile_rows = p.rows;
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

/* col (K, nr*Wo) for output rows [r0, r0+nr) of one sample x (Cin, D, H, W). */
static void im2col(const fine_conv3d_shape *s, const conv_plan *p, float *col, const float *x,
                   int64_t r0, int64_t nr)
{
    const int64_t n = nr * p->Wo, Wo = p->Wo, Ho = p->Ho;
    const int64_t D = s->D, H = s->H, W = s->W;
    const int k1 = s->k[1], k2 = s->k[2];
    const int s0 = s->stride[0], s1 = s->stride[1], s2 = s->stride[2];
    const int p0 = s->pad[0], p1 = s->pad[1], p2 = s->pad[2];
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t row = 0; row < p->K; row++) {
        int64_t c = row / p->kv, q = row % p->kv;
        int kd = (int)(q / (k1 * k2)), kh = (int)(q / k2 % k1), kw = (int)(q % k2);
        int64_t lo, hi;
        valid_range(W, Wo, s2, p2, kw, &lo, &hi);
        const float *xc = x + c * D * H * W;
        float *dst = col + row * n;
        for (int64_t r = r0; r < r0 + nr; r++, dst += Wo) {
            int64_t id = r / Ho * s0 - p0 + kd, ih = r % Ho * s1 - p1 + kh;
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
            im2col(s, &p, scratch, x, r0, nr);
            if (b) {
#pragma omp parallel for schedule(static)
                for (int64_t o = 0; o < s->Cout; o++) {
                    float *yo = y + o * p.P + p0;
                    for (int64_t i = 0; i < n; i++)
                        yo[i] = b[o];
                }
            }
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
            for (int64_t bi = 0; bi < s->B; bi++) {
                const float *g = dout + bi * out_sample + o * p.P;
                float part = 0;
                for (int64_t i = 0; i < p.P; i++)
                    part += g[i];
                acc += part;
            }
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
                im2col(s, &p, scratch, x, r0, nr);
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
    p.rows = s->B * s->D * s->H;
    int64_t per_row = s->W * p.N;
    p.tile_rows = per_row > 0 ? CONV_TILE_FLOATS / per_row : 1;
    if (p.tile_rows < 1)
        p.tile_rows = 1;
    if (p.tile_rows > p.rows)
        p.tile_rows = p.rows;
    return p;
}

size_t fine_convT3d_scratch(const fine_convT3d_shape *s)
{
    convT_plan p = convT_plan_make(s);
    return (size_t)(p.tile_rows * s->W * p.N);
}

/* Moves values between y (tile tokens, Cout*kv) and the output for input rows [r0, r0+nr).
 * to_out: out = y + bias (bias may be NULL); otherwise y = out (the gather of dout). */
static void convT_move(const fine_convT3d_shape *s, const convT_plan *p, float *out, float *y,
                       const float *bias, int64_t r0, int64_t nr, int to_out)
{
    const int64_t D = s->D, H = s->H, W = s->W, Cout = s->Cout, N = p->N, kv = p->kv;
    const int k0 = s->k[0], k1 = s->k[1], k2 = s->k[2];
    const int64_t Do = D * k0, Ho = H * k1, Wo = W * k2;
    if (!s->out_channels_last) {
        /* out (B, Cout, Do, Ho, Wo): one output row segment per (input row, o, i, j) */
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t r = r0; r < r0 + nr; r++)
            for (int64_t o = 0; o < Cout; o++) {
                int64_t bi = r / (D * H), z = r / H % D, yy = r % H;
                float bo = bias && to_out ? bias[o] : 0.0f;
                const int64_t t0 = (r - r0) * W;
                for (int i = 0; i < k0; i++)
                    for (int j = 0; j < k1; j++) {
                        float *orow = out + (((bi * Cout + o) * Do + z * k0 + i) * Ho + yy * k1 + j) * Wo;
                        const int64_t col0 = o * kv + (i * k1 + j) * k2;
                        for (int64_t x = 0; x < W; x++) {
                            float *yv = y + (t0 + x) * N + col0;
                            float *ov = orow + x * k2;
                            if (to_out)
                                for (int l = 0; l < k2; l++)
                                    ov[l] = yv[l] + bo;
                            else
                                for (int l = 0; l < k2; l++)
                                    yv[l] = ov[l];
                        }
                    }
            }
    } else {
        /* out (B, Do*Ho*Wo, Cout): one output token per (input token, i, j, l) */
#pragma omp parallel for schedule(static)
        for (int64_t r = r0; r < r0 + nr; r++) {
            int64_t bi = r / (D * H), z = r / H % D, yy = r % H;
            for (int64_t x = 0; x < W; x++) {
                float *yv = y + ((r - r0) * W + x) * N;
                for (int i = 0; i < k0; i++)
                    for (int j = 0; j < k1; j++)
                        for (int l = 0; l < k2; l++) {
                            int64_t tok = ((bi * Do + z * k0 + i) * Ho + yy * k1 + j) * Wo + x * k2 + l;
                            float *ov = out + tok * Cout;
                            const float *yc = yv + (i * k1 + j) * k2 + l;
                            if (to_out && bias)
                                for (int64_t o = 0; o < Cout; o++)
                                    ov[o] = yc[o * kv] + bias[o];
                            else if (to_out)
                                for (int64_t o = 0; o < Cout; o++)
                                    ov[o] = yc[o * kv];
                            else
                                for (int64_t o = 0; o < Cout; o++)
                                    yv[(i * k1 + j) * k2 + l + o * kv] = ov[o];
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
        convT_move(s, &p, out, scratch, b, r0, nr, 1);
    }
}

void fine_convT3d_backward(const fine_convT3d_shape *s, float *din, float *dw, float *db,
                           const float *dout, const float *in, const float *w, float *scratch)
{
    convT_plan p = convT_plan_make(s);
    const int64_t Lo = s->D * s->k[0] * s->H * s->k[1] * s->W * s->k[2];
    if (db) {
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < s->Cout; o++) {
            double acc = 0;
            for (int64_t bi = 0; bi < s->B; bi++) {
                float part = 0;
                if (!s->out_channels_last) {
                    const float *g = dout + (bi * s->Cout + o) * Lo;
                    for (int64_t i = 0; i < Lo; i++)
                        part += g[i];
                } else {
                    const float *g = dout + bi * Lo * s->Cout + o;
                    for (int64_t i = 0; i < Lo; i++)
                        part += g[i * s->Cout];
                }
                acc += part;
            }
            db[o] += (float)acc;
        }
    }
    if (!din && !dw)
        return;
    for (int64_t r0 = 0; r0 < p.rows; r0 += p.tile_rows) {
        int64_t nr = p.rows - r0 < p.tile_rows ? p.rows - r0 : p.tile_rows;
        int64_t nt = nr * s->W, t0 = r0 * s->W;
        convT_move(s, &p, (float *)dout, scratch, NULL, r0, nr, 0);
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
