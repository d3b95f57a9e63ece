/* cuda_conv.cu: the CUDA 3-D convolution (cuDNN) and transposed convolution with kernel = stride
 * (cuBLAS + layout kernels); contracts in ops.h, CPU reference in ops_conv.c.
 *
 * conv3d. NCDHW float tensors, filter (Cout, Cin, k0, k1, k2) = cuDNN's NCHW filter with five
 * dimensions, cross-correlation, FMA math (no TF32) unless the context's precision is tf32. The legacy descriptors are made per call
 * (cheap); the algorithms are chosen once per shape, at plan time by fine_cu_conv3d_scratch, from
 * cuDNN's heuristics (the first usable result: fastest expected, FMA math, workspace <= 1 GiB),
 * and kept in ctx->conv. Forward and backward find them there and use the caller's scratch as the
 * workspace; a shape that was never planned is an error (its workspace was not reserved). The
 * legacy API limits a tensor to 2^31 elements, so a large batch runs in equal chunks of samples.
 * The bias is added, and its gradient reduced, by our own kernels.
 *
 * convT3d (kernel = stride, no padding). The input is tokens X (M = B*D*H*W, Cin) and the weight
 * (Cin, Cout, k0, k1, k2) is the row-major matrix Wm (Cin, N = Cout*kv), kv = k0*k1*k2, so
 *     Y (M, N) = X @ Wm,   Y[t, o*kv + (i*k1 + j)*k2 + l] -> out[b, o, k0*z+i, k1*y+j, k2*x+l]
 * for token t = (b, z, y, x): a GEMM into scratch, then one kernel scatters Y (+ bias) into out,
 * channels-first or tokens. Backward gathers dout into dY (Y's layout, in scratch), then
 * din += dY @ Wm^T and dw += X^T @ dY; db by a reduction over dout.
 *
 * Row-major GEMMs through column-major cuBLAS: a row-major (r, c) matrix is the column-major
 * (c, r) matrix with the same leading dimension c, i.e. its transpose, so C = A @ B is computed
 * as C^T = B^T @ A^T with the operands swapped. */
#include <limits.h>
#include <stdio.h>
#include <stdint.h>

#include "nn/conv_cache.h"
#include "nn/ops.h"
#include "nn/cuda/cuda_ctx.h"
#include "nn/cuda/cuda_ops.h"

#define CONV_THREADS 256
#define CONV_MAX_WORKSPACE ((size_t)1 << 30) /* bytes of cuDNN work space we accept */
#define BIAS_CHUNK 4096                       /* floats of one row per bias-gradient block */
#define BIAS_TOKENS 512                       /* tokens per bias-gradient block (channels-last) */

/* ------------------------------------------------------------------ reductions and bias */

/* Sum of v over the block (blockDim.x a multiple of 32, at most 1024); the result is valid in
 * thread 0. sh holds 32 floats. Every thread of the block must call it. */
__device__ static float block_sum(float v, float *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

/* out[i] += b[(i / P) % C] over the n values of a (B, C, P) tensor */
__global__ static void add_bias_cf_kernel(float *out, const float *b, int64_t C, int64_t P, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] += b[i / P % C];
}

/* db[o] += sum over b, l of g[(b*C + o)*L + l]. A unit of work is a chunk of BIAS_CHUNK values of
 * one row (b, o), summed by one block and added into db[o] atomically. */
__global__ static void bias_grad_cf_kernel(float *db, const float *g, int64_t C, int64_t L,
                                           int64_t chunks, int64_t units)
{
    __shared__ float sh[32];
    for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
        int64_t row = u / chunks, l0 = u % chunks * BIAS_CHUNK;
        int64_t l1 = l0 + BIAS_CHUNK < L ? l0 + BIAS_CHUNK : L;
        const float *src = g + row * L;
        float acc = 0.0f;
        for (int64_t l = l0 + threadIdx.x; l < l1; l += blockDim.x)
            acc += src[l];
        acc = block_sum(acc, sh);
        if (threadIdx.x == 0)
            atomicAdd(&db[row % C], acc);
    }
}

/* db[o] += sum over t of g[t*C + o] (tokens (N, C)). Blocks of 32 x 8 threads: x is a channel of
 * a chunk of 32 (coalesced reads along a token), y strides over a chunk of BIAS_TOKENS tokens. */
__global__ static void bias_grad_cl_kernel(float *db, const float *g, int64_t N, int64_t C,
                                           int64_t cchunks, int64_t units)
{
    __shared__ float part[8][33];
    for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
        int64_t ch = u % cchunks * 32 + threadIdx.x;
        int64_t t0 = u / cchunks * BIAS_TOKENS;
        int64_t t1 = t0 + BIAS_TOKENS < N ? t0 + BIAS_TOKENS : N;
        float acc = 0.0f;
        if (ch < C)
            for (int64_t t = t0 + threadIdx.y; t < t1; t += blockDim.y)
                acc += g[t * C + ch];
        __syncthreads(); /* part may still be read by the previous unit */
        part[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && ch < C) {
            float s = 0.0f;
            for (int k = 0; k < (int)blockDim.y; k++)
                s += part[k][threadIdx.x];
            atomicAdd(&db[ch], s);
        }
    }
}

/* db (C) += the sum of g over everything but the channel; g is (B, C, L) or tokens (B*L, C). */
static void bias_grad(fine_cuda_ctx *c, float *db, const float *g, int64_t B, int64_t C, int64_t L,
                      int channels_last, const char *where)
{
    if (B <= 0 || C <= 0 || L <= 0)
        return;
    if (!channels_last) {
        int64_t chunks = (L + BIAS_CHUNK - 1) / BIAS_CHUNK, units = B * C * chunks;
        bias_grad_cf_kernel<<<fine_cuda_blocks(units, 1), CONV_THREADS, 0, c->stream>>>(db, g, C, L,
                                                                                       chunks, units);
    } else {
        int64_t cchunks = (C + 31) / 32, units = cchunks * ((B * L + BIAS_TOKENS - 1) / BIAS_TOKENS);
        bias_grad_cl_kernel<<<fine_cuda_blocks(units, 1), dim3(32, 8), 0, c->stream>>>(db, g, B * L, C,
                                                                                       cchunks, units);
    }
    fine_cuda_ok(c, cudaGetLastError(), where);
}

/* ------------------------------------------------------------------ conv3d (cuDNN) */

typedef struct conv_geom {
    int64_t Do, Ho, Wo;
    int64_t in_sample, out_sample; /* floats of one sample of in and out */
    int64_t nb;                    /* samples per cuDNN call: a divisor of B */
    int empty;                     /* 1 when there is nothing to compute */
} conv_geom;

/* The output size (as fine_conv3d_out_size) and the batch chunking; 0 (with an error recorded)
 * when a tensor cannot be described to cuDNN. */
static int conv_geom_make(fine_cuda_ctx *c, const fine_conv3d_shape *s, conv_geom *g, const char *where)
{
    g->Do = (s->D + 2 * s->pad[0] - s->k[0]) / s->stride[0] + 1;
    g->Ho = (s->H + 2 * s->pad[1] - s->k[1]) / s->stride[1] + 1;
    g->Wo = (s->W + 2 * s->pad[2] - s->k[2]) / s->stride[2] + 1;
    g->in_sample = s->Cin * s->D * s->H * s->W;
    g->out_sample = s->Cout * g->Do * g->Ho * g->Wo;
    g->nb = 1;
    g->empty = s->B <= 0 || s->Cout <= 0 || g->Do <= 0 || g->Ho <= 0 || g->Wo <= 0;
    if (g->empty)
        return 1;
    int64_t per = g->in_sample > g->out_sample ? g->in_sample : g->out_sample;
    if (per > INT_MAX || s->Cout * s->Cin * s->k[0] * s->k[1] * s->k[2] > INT_MAX) {
        fine_cuda_fail(c, where, "convolution tensor of one sample over 2^31 elements (cuDNN limit)");
        return 0;
    }
    for (int64_t nb = s->B; nb >= 1; nb--)
        if (s->B % nb == 0 && nb * per <= INT_MAX) {
            g->nb = nb;
            break;
        }
    return 1;
}

typedef struct conv_descs {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
} conv_descs;

static void conv_descs_free(conv_descs *d)
{
    if (d->x)
        cudnnDestroyTensorDescriptor(d->x);
    if (d->y)
        cudnnDestroyTensorDescriptor(d->y);
    if (d->w)
        cudnnDestroyFilterDescriptor(d->w);
    if (d->conv)
        cudnnDestroyConvolutionDescriptor(d->conv);
    d->x = d->y = NULL;
    d->w = NULL;
    d->conv = NULL;
}

/* Descriptors of one chunk of g->nb samples; 0 (error recorded, nothing to free) on failure. */
static int conv_descs_make(fine_cuda_ctx *c, const fine_conv3d_shape *s, const conv_geom *g,
                           conv_descs *d, const char *where)
{
    d->x = d->y = NULL;
    d->w = NULL;
    d->conv = NULL;
    const int xdim[5] = {(int)g->nb, (int)s->Cin, (int)s->D, (int)s->H, (int)s->W};
    const int ydim[5] = {(int)g->nb, (int)s->Cout, (int)g->Do, (int)g->Ho, (int)g->Wo};
    const int wdim[5] = {(int)s->Cout, (int)s->Cin, s->k[0], s->k[1], s->k[2]};
    int xstr[5], ystr[5];
    xstr[4] = ystr[4] = 1;
    for (int i = 3; i >= 0; i--) {
        xstr[i] = xstr[i + 1] * xdim[i + 1];
        ystr[i] = ystr[i + 1] * ydim[i + 1];
    }
    const int dil[3] = {1, 1, 1};
    int ok = fine_cudnn_ok(c, cudnnCreateTensorDescriptor(&d->x), where) &&
             fine_cudnn_ok(c, cudnnCreateTensorDescriptor(&d->y), where) &&
             fine_cudnn_ok(c, cudnnCreateFilterDescriptor(&d->w), where) &&
             fine_cudnn_ok(c, cudnnCreateConvolutionDescriptor(&d->conv), where) &&
             fine_cudnn_ok(c, cudnnSetTensorNdDescriptor(d->x, CUDNN_DATA_FLOAT, 5, xdim, xstr), where) &&
             fine_cudnn_ok(c, cudnnSetTensorNdDescriptor(d->y, CUDNN_DATA_FLOAT, 5, ydim, ystr), where) &&
             fine_cudnn_ok(c, cudnnSetFilterNdDescriptor(d->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 5, wdim),
                           where) &&
             fine_cudnn_ok(c, cudnnSetConvolutionNdDescriptor(d->conv, 3, s->pad, s->stride, dil,
                                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                           where) &&
             fine_cudnn_ok(c, cudnnSetConvolutionMathType(d->conv, c->tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH),
                           where);
    if (!ok)
        conv_descs_free(d);
    return ok;
}

/* Tensor-core results of the heuristics are TF32 for float: only at precision tf32. Never the
 * ones that convert to half precision. */
static int conv_math_ok(const fine_cuda_ctx *c, cudnnMathType_t m)
{
    if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
        return 0;
    return c->tf32 || m != CUDNN_TENSOR_OP_MATH;
}

/* The three algorithms of the shape behind d: for each direction the first heuristic result
 * (they come fastest first) that succeeded, uses FMA math, and whose work space for our
 * descriptors is at most CONV_MAX_WORKSPACE. 0 with an error recorded when a direction has none. */
static int conv_select(fine_cuda_ctx *c, const conv_descs *d, fine_conv_choice dir[3], const char *where)
{
    for (int i = 0; i < 3; i++)
        dir[i].algo = -1, dir[i].workspace = 0;
    int n = 0;
    size_t ws = 0;

    cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    if (!fine_cudnn_ok(c, cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, d->x, d->w, d->conv, d->y,
                                                                 CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, fwd),
                       where))
        return 0;
    for (int i = 0; i < n && dir[FINE_CONV_FWD].algo < 0; i++)
        if (fwd[i].status == CUDNN_STATUS_SUCCESS && conv_math_ok(c, fwd[i].mathType) &&
            cudnnGetConvolutionForwardWorkspaceSize(c->dnn, d->x, d->w, d->conv, d->y, fwd[i].algo, &ws) ==
                CUDNN_STATUS_SUCCESS &&
            ws <= CONV_MAX_WORKSPACE)
            dir[FINE_CONV_FWD] = (fine_conv_choice){(int)fwd[i].algo, ws};

    cudnnConvolutionBwdDataAlgoPerf_t bwd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    if (!fine_cudnn_ok(c, cudnnGetConvolutionBackwardDataAlgorithm_v7(c->dnn, d->w, d->y, d->conv, d->x,
                                                                      CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                                      &n, bwd),
                       where))
        return 0;
    for (int i = 0; i < n && dir[FINE_CONV_BWD_DATA].algo < 0; i++)
        if (bwd[i].status == CUDNN_STATUS_SUCCESS && conv_math_ok(c, bwd[i].mathType) &&
            cudnnGetConvolutionBackwardDataWorkspaceSize(c->dnn, d->w, d->y, d->conv, d->x, bwd[i].algo,
                                                         &ws) == CUDNN_STATUS_SUCCESS &&
            ws <= CONV_MAX_WORKSPACE)
            dir[FINE_CONV_BWD_DATA] = (fine_conv_choice){(int)bwd[i].algo, ws};

    cudnnConvolutionBwdFilterAlgoPerf_t bwf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    if (!fine_cudnn_ok(c, cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                              c->dnn, d->x, d->y, d->conv, d->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n,
                              bwf),
                       where))
        return 0;
    for (int i = 0; i < n && dir[FINE_CONV_BWD_FILTER].algo < 0; i++)
        if (bwf[i].status == CUDNN_STATUS_SUCCESS && conv_math_ok(c, bwf[i].mathType) &&
            cudnnGetConvolutionBackwardFilterWorkspaceSize(c->dnn, d->x, d->y, d->conv, d->w, bwf[i].algo,
                                                           &ws) == CUDNN_STATUS_SUCCESS &&
            ws <= CONV_MAX_WORKSPACE)
            dir[FINE_CONV_BWD_FILTER] = (fine_conv_choice){(int)bwf[i].algo, ws};

    static const char *const names[3] = {"forward", "backward data", "backward filter"};
    for (int i = 0; i < 3; i++)
        if (dir[i].algo < 0) {
            char what[96];
            snprintf(what, sizeof what, "cuDNN offers no FMA %s algorithm within 1 GiB of work space",
                     names[i]);
            fine_cuda_fail(c, where, what);
            return 0;
        }
    return 1;
}

size_t fine_cu_conv3d_scratch(void *ctx, const fine_conv3d_shape *s)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    const char *where = "fine_cu_conv3d_scratch";
    conv_geom g;
    if (!conv_geom_make(c, s, &g, where) || g.empty || s->Cin <= 0)
        return 0;
    const fine_conv_cache_entry *e = fine_conv_cache_find(&c->conv, s);
    fine_conv_choice dir[3];
    if (e) {
        for (int i = 0; i < 3; i++)
            dir[i] = e->dir[i];
    } else {
        conv_descs d;
        if (!conv_descs_make(c, s, &g, &d, where))
            return 0;
        int ok = conv_select(c, &d, dir, where);
        conv_descs_free(&d);
        if (!ok)
            return 0;
        if (fine_conv_cache_put(&c->conv, s, dir) != 0) {
            fine_cuda_fail(c, where, "convolution algorithm cache full (FINE_CONV_CACHE_MAX shapes)");
            return 0;
        }
    }
    size_t bytes = 0;
    for (int i = 0; i < 3; i++)
        bytes = dir[i].workspace > bytes ? dir[i].workspace : bytes;
    return (bytes + sizeof(float) - 1) / sizeof(float);
}

/* The cached algorithms of s, or NULL with an error recorded. */
static const fine_conv_cache_entry *conv_planned(fine_cuda_ctx *c, const fine_conv3d_shape *s,
                                                 const char *where)
{
    const fine_conv_cache_entry *e = fine_conv_cache_find(&c->conv, s);
    if (!e)
        fine_cuda_fail(c, where, "convolution shape not planned (call fine_cu_conv3d_scratch first)");
    return e;
}

void fine_cu_conv3d_forward(void *ctx, const fine_conv3d_shape *s, float *out, const float *in,
                            const float *w, const float *b, float *scratch)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    const char *where = "fine_cu_conv3d_forward";
    conv_geom g;
    if (!conv_geom_make(c, s, &g, where) || g.empty)
        return;
    const int64_t n = s->B * g.out_sample;
    if (s->Cin <= 0) { /* no input channels: the output is the bias alone */
        if (!fine_cuda_ok(c, cudaMemsetAsync(out, 0, (size_t)n * sizeof(float), c->stream), where))
            return;
    } else {
        const fine_conv_cache_entry *e = conv_planned(c, s, where);
        conv_descs d;
        if (!e || !conv_descs_make(c, s, &g, &d, where))
            return;
        const fine_conv_choice *ch = &e->dir[FINE_CONV_FWD];
        const float one = 1.0f, zero = 0.0f;
        for (int64_t b0 = 0; b0 < s->B; b0 += g.nb)
            if (!fine_cudnn_ok(c, cudnnConvolutionForward(c->dnn, &one, d.x, in + b0 * g.in_sample, d.w, w,
                                                          d.conv, (cudnnConvolutionFwdAlgo_t)ch->algo, scratch,
                                                          ch->workspace, &zero, d.y, out + b0 * g.out_sample),
                               where))
                break;
        conv_descs_free(&d);
    }
    if (b) {
        add_bias_cf_kernel<<<fine_cuda_blocks(n, CONV_THREADS), CONV_THREADS, 0, c->stream>>>(
            out, b, s->Cout, g.Do * g.Ho * g.Wo, n);
        fine_cuda_ok(c, cudaGetLastError(), where);
    }
}

void fine_cu_conv3d_backward(void *ctx, const fine_conv3d_shape *s, float *din, float *dw, float *db,
                             const float *dout, const float *in, const float *w, float *scratch)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    const char *where = "fine_cu_conv3d_backward";
    conv_geom g;
    if (!conv_geom_make(c, s, &g, where) || g.empty)
        return;
    if (db)
        bias_grad(c, db, dout, s->B, s->Cout, g.Do * g.Ho * g.Wo, 0, where);
    if ((!din && !dw) || s->Cin <= 0)
        return;
    const fine_conv_cache_entry *e = conv_planned(c, s, where);
    conv_descs d;
    if (!e || !conv_descs_make(c, s, &g, &d, where))
        return;
    const fine_conv_choice *bd = &e->dir[FINE_CONV_BWD_DATA], *bf = &e->dir[FINE_CONV_BWD_FILTER];
    const float one = 1.0f; /* beta 1: both gradients accumulate (dw over the chunks too) */
    for (int64_t b0 = 0; b0 < s->B; b0 += g.nb) {
        const float *gy = dout + b0 * g.out_sample;
        if (din && !fine_cudnn_ok(c, cudnnConvolutionBackwardData(c->dnn, &one, d.w, w, d.y, gy, d.conv,
                                                                  (cudnnConvolutionBwdDataAlgo_t)bd->algo,
                                                                  scratch, bd->workspace, &one, d.x,
                                                                  din + b0 * g.in_sample),
                                     where))
            break;
        if (dw && !fine_cudnn_ok(c, cudnnConvolutionBackwardFilter(c->dnn, &one, d.x, in + b0 * g.in_sample,
                                                                   d.y, gy, d.conv,
                                                                   (cudnnConvolutionBwdFilterAlgo_t)bf->algo,
                                                                   scratch, bf->workspace, &one, d.w, dw),
                                    where))
            break;
    }
    conv_descs_free(&d);
}

/* ------------------------------------------------------------------ convT3d (kernel = stride) */

typedef struct convT_geom {
    int64_t D, H, W, Cout;
    int64_t N, kv; /* columns of Y: Cout*kv; kv = k0*k1*k2 */
    int k0, k1, k2;
    int channels_last;
} convT_geom;

/* For element e of the output, its index in Y (tokens, N) and its channel *o (ops.h: out[b, o,
 * k0*z+i, k1*y+j, k2*x+l] comes from Y[((b*D + z)*H + y)*W + x, o*kv + (i*k1 + j)*k2 + l]). */
__device__ static int64_t convT_y_index(const convT_geom g, int64_t e, int64_t *o)
{
    const int64_t Do = g.D * g.k0, Ho = g.H * g.k1, Wo = g.W * g.k2;
    int64_t X, Yo, Z, b, oc, t;
    if (g.channels_last) { /* (B, Do, Ho, Wo, Cout) */
        oc = e % g.Cout, t = e / g.Cout;
        X = t % Wo, t /= Wo;
        Yo = t % Ho, t /= Ho;
        Z = t % Do, b = t / Do;
    } else { /* (B, Cout, Do, Ho, Wo) */
        X = e % Wo, t = e / Wo;
        Yo = t % Ho, t /= Ho;
        Z = t % Do, t /= Do;
        oc = t % g.Cout, b = t / g.Cout;
    }
    const int64_t z = Z / g.k0, i = Z % g.k0, y = Yo / g.k1, j = Yo % g.k1, x = X / g.k2, l = X % g.k2;
    const int64_t tok = ((b * g.D + z) * g.H + y) * g.W + x;
    *o = oc;
    return tok * g.N + oc * g.kv + (i * g.k1 + j) * g.k2 + l;
}

/* out[e] = Y[...] + bias[o] over the n output elements (writes coalesced) */
__global__ static void convT_scatter_kernel(float *out, const float *Y, const float *bias, const convT_geom g,
                                            int64_t n)
{
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t o;
        int64_t yi = convT_y_index(g, e, &o);
        out[e] = Y[yi] + (bias ? bias[o] : 0.0f);
    }
}

/* dY[...] = dout[e]: the inverse permutation (reads coalesced) */
__global__ static void convT_gather_kernel(float *dY, const float *dout, const convT_geom g, int64_t n)
{
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t o;
        int64_t yi = convT_y_index(g, e, &o);
        dY[yi] = dout[e];
    }
}

static convT_geom convT_geom_make(const fine_convT3d_shape *s)
{
    convT_geom g;
    g.D = s->D, g.H = s->H, g.W = s->W, g.Cout = s->Cout;
    g.k0 = s->k[0], g.k1 = s->k[1], g.k2 = s->k[2];
    g.kv = (int64_t)g.k0 * g.k1 * g.k2;
    g.N = s->Cout * g.kv;
    g.channels_last = s->out_channels_last;
    return g;
}

/* tokens of the input; 0 when there is nothing to compute */
static int64_t convT_tokens(const fine_convT3d_shape *s, const convT_geom *g)
{
    if (s->B <= 0 || s->D <= 0 || s->H <= 0 || s->W <= 0 || g->N <= 0)
        return 0;
    return s->B * s->D * s->H * s->W;
}

size_t fine_cu_convT3d_scratch(void *ctx, const fine_convT3d_shape *s)
{
    (void)ctx;
    convT_geom g = convT_geom_make(s);
    return (size_t)(convT_tokens(s, &g) * g.N);
}

void fine_cu_convT3d_forward(void *ctx, const fine_convT3d_shape *s, float *out, const float *in,
                             const float *w, const float *b, float *scratch)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    const char *where = "fine_cu_convT3d_forward";
    convT_geom g = convT_geom_make(s);
    const int64_t M = convT_tokens(s, &g), n = M * g.N;
    if (M == 0)
        return;
    if (s->Cin <= 0) {
        if (!fine_cuda_ok(c, cudaMemsetAsync(scratch, 0, (size_t)n * sizeof(float), c->stream), where))
            return;
    } else {
        /* Y (M, N) = X (M, Cin) @ Wm (Cin, N)  <=>  Y^T = Wm^T @ X^T (column-major) */
        const float one = 1.0f, zero = 0.0f;
        if (!fine_cu_gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, g.N, M, s->Cin, one, w, g.N, in, s->Cin, zero, scratch,
                          g.N, where))
            return;
    }
    convT_scatter_kernel<<<fine_cuda_blocks(n, CONV_THREADS), CONV_THREADS, 0, c->stream>>>(out, scratch, b, g,
                                                                                          n);
    fine_cuda_ok(c, cudaGetLastError(), where);
}

void fine_cu_convT3d_backward(void *ctx, const fine_convT3d_shape *s, float *din, float *dw, float *db,
                              const float *dout, const float *in, const float *w, float *scratch)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    const char *where = "fine_cu_convT3d_backward";
    convT_geom g = convT_geom_make(s);
    const int64_t M = convT_tokens(s, &g), n = M * g.N;
    if (M == 0)
        return;
    if (db)
        bias_grad(c, db, dout, s->B, s->Cout, s->D * s->k[0] * s->H * s->k[1] * s->W * s->k[2],
                  s->out_channels_last, where);
    if ((!din && !dw) || s->Cin <= 0)
        return;
    convT_gather_kernel<<<fine_cuda_blocks(n, CONV_THREADS), CONV_THREADS, 0, c->stream>>>(scratch, dout, g, n);
    if (!fine_cuda_ok(c, cudaGetLastError(), where))
        return;
    const float one = 1.0f;
    /* dw (Cin, N) += X^T @ dY  <=>  dw^T (N, Cin) += dY^T (N, M) @ X (M, Cin): X^T stored, so op T */
    if (dw && !fine_cu_gemm(c, CUBLAS_OP_N, CUBLAS_OP_T, g.N, s->Cin, M, one, scratch, g.N, in, s->Cin, one, dw,
                            g.N, where))
        return;
    /* din (M, Cin) += dY @ Wm^T  <=>  din^T (Cin, M) += Wm (Cin, N) @ dY^T (N, M): Wm^T stored, op T */
    if (din)
        fine_cu_gemm(c, CUBLAS_OP_T, CUBLAS_OP_N, s->Cin, M, g.N, one, w, g.N, scratch, g.N, one, din, s->Cin,
                     where);
}
