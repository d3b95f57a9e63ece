/* cuda_elem.cu: the pointwise, per-token and data-movement layers of the CUDA backend: memory
 * fills and copies, the row helpers of backend.h (sequence packing, memory-token gather),
 * the (B, C, L) <-> (B, L, C) layout changes, LayerNorm, exact GELU, residual adds, drop path
 * and the shifted window partition. Each mirrors its CPU function (ops_norm.c, ops_window.c,
 * ops_conv.c, backend_cpu.c): forwards overwrite, backwards accumulate.
 *
 * Kernels use grid-stride loops (fine_cuda_blocks caps the grid). Row-shaped work uses a 2-D
 * grid (rows on y, columns on x) so no per-element 64-bit division is needed; per-row
 * reductions use one warp per row; sums over rows (parameter gradients) go through
 * per-block partials and one atomicAdd per block and column. */
#include <math.h>
#include <stdint.h>

#include "nn/cuda/cuda_ctx.h"
#include "nn/cuda/cuda_ops.h"

#define THREADS 256
#define WARPS_PER_BLOCK (THREADS / 32)
/* cap on the blocks of a 2-D row grid (x * y) */
#define GRID_2D_BLOCKS (1 << 20)
/* blocks the column-sum kernel aims for (enough to fill any current GPU) */
#define COLSUM_BLOCKS 2048

/* ------------------------------------------------------------------ helpers */

/* Grid for `rows` rows of `width` values: rows on y (capped at 65535, the kernels stride),
 * columns on x at THREADS per block, x*y at most GRID_2D_BLOCKS. */
static dim3 grid_rows(int64_t rows, int64_t width)
{
    int64_t gy = rows < 65535 ? rows : 65535;
    int64_t gx = (width + THREADS - 1) / THREADS;
    int64_t cap = GRID_2D_BLOCKS / gy;
    if (cap < 1)
        cap = 1;
    if (gx > cap)
        gx = cap;
    return dim3((unsigned)gx, (unsigned)gy);
}

__device__ __forceinline__ float warp_sum_f(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ------------------------------------------------------------------ memory */

extern "C" void fine_cu_zero(void *ctx, void *p, size_t bytes)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (bytes == 0)
        return;
    fine_cuda_ok(c, cudaMemsetAsync(p, 0, bytes, c->stream), "fine_cu_zero");
}

extern "C" void fine_cu_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (bytes == 0 || dst == src)
        return;
    fine_cuda_ok(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream),
                 "fine_cu_copy");
}

/* ------------------------------------------------------------------ row helpers */

__global__ void copy_rows_kernel(float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                                 int64_t rows, int64_t width)
{
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        float *d = dst + r * dst_stride;
        const float *s = src + r * src_stride;
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < width;
             c += (int64_t)gridDim.x * blockDim.x)
            d[c] = s[c];
    }
}

extern "C" void fine_cu_copy_rows(void *ctx, float *dst, int64_t dst_stride, const float *src,
                                  int64_t src_stride, int64_t rows, int64_t width)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (rows <= 0 || width <= 0)
        return;
    copy_rows_kernel<<<grid_rows(rows, width), THREADS, 0, c->stream>>>(dst, dst_stride, src, src_stride,
                                                                         rows, width);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_copy_rows");
}

__global__ void axpy_rows_kernel(float *out, int64_t out_stride, const float *a, const float *b,
                                 int64_t b_stride, const float *scale, int64_t rows, int64_t C)
{
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        float s = scale[r];
        float *o = out + r * out_stride;
        const float *br = b + r * b_stride;
        const float *ar = a ? a + r * C : NULL;
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C;
             c += (int64_t)gridDim.x * blockDim.x)
            o[c] = (ar ? ar[c] : 0.0f) + s * br[c];
    }
}

extern "C" void fine_cu_axpy_rows(void *ctx, float *out, int64_t out_stride, const float *a, const float *b,
                                  int64_t b_stride, const float *scale, int64_t rows, int64_t C)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (rows <= 0 || C <= 0)
        return;
    axpy_rows_kernel<<<grid_rows(rows, C), THREADS, 0, c->stream>>>(out, out_stride, a, b, b_stride, scale,
                                                                    rows, C);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_axpy_rows");
}

/* Column sums of g (N, C) over a 32-column slice (blockIdx.x) and a slice of rows
 * (blockIdx.y of gridDim.y): db[c] += sum g[r, c] and, when dw is not NULL,
 * dw[c] += sum g[r, c] * (x[r, c] - mean[r]) * rstd[r] (the LayerNorm affine gradients).
 * Block (32, 8): threadIdx.x is the column (coalesced reads), threadIdx.y strides the rows;
 * the 8 partials meet in shared memory and leave with one atomicAdd per column. */
__global__ void column_sums_kernel(float *dw, float *db, const float *g, const float *x, const float *mean,
                                   const float *rstd, int64_t N, int64_t C)
{
    __shared__ float sw[8][32], sb[8][32];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t c = (int64_t)blockIdx.x * 32 + tx;
    int64_t r0 = N * blockIdx.y / gridDim.y, r1 = N * (blockIdx.y + 1) / gridDim.y;
    float aw = 0.0f, ab = 0.0f;
    if (c < C) {
        for (int64_t r = r0 + ty; r < r1; r += 8) {
            float gv = g[r * C + c];
            ab += gv;
            if (dw)
                aw += gv * ((x[r * C + c] - mean[r]) * rstd[r]);
        }
    }
    sw[ty][tx] = aw;
    sb[ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && c < C) {
        float w = 0.0f, b = 0.0f;
        for (int i = 0; i < 8; i++) {
            w += sw[i][tx];
            b += sb[i][tx];
        }
        if (dw)
            atomicAdd(dw + c, w);
        if (db)
            atomicAdd(db + c, b);
    }
}

static void column_sums(fine_cuda_ctx *c, float *dw, float *db, const float *g, const float *x,
                        const float *mean, const float *rstd, int64_t N, int64_t C)
{
    int64_t ct = (C + 31) / 32;
    int64_t chunks = COLSUM_BLOCKS / ct;
    int64_t most = (N + 31) / 32; /* no slice under 32 rows */
    if (chunks > most)
        chunks = most;
    if (chunks > 65535)
        chunks = 65535;
    if (chunks < 1)
        chunks = 1;
    column_sums_kernel<<<dim3((unsigned)ct, (unsigned)chunks), dim3(32, 8), 0, c->stream>>>(dw, db, g, x, mean,
                                                                                          rstd, N, C);
}

extern "C" void fine_cu_sum_rows_acc(void *ctx, float *dst, const float *src, int64_t rows, int64_t C)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (rows <= 0 || C <= 0)
        return;
    column_sums(c, NULL, dst, src, NULL, NULL, NULL, rows, C);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_sum_rows_acc");
}

/* u (B, U, C), U = nvt + nW: rows q < nvt are table rows idx[b*nvt + q], the rest g2 + pe. */
__global__ void memtok_gather_kernel(float *u, const float *table, const int *idx, const float *g2,
                                     const float *pe, int64_t B, int64_t nW, int64_t C, int nvt)
{
    int64_t U = nvt + nW;
    for (int64_t row = blockIdx.y; row < B * U; row += gridDim.y) {
        int64_t b = row / U, q = row % U;
        float *o = u + row * C;
        if (q < nvt) {
            const float *t = table + (int64_t)idx[b * nvt + q] * C;
            for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C;
                 c += (int64_t)gridDim.x * blockDim.x)
                o[c] = t[c];
        } else {
            int64_t r = q - nvt;
            const float *g = g2 + (b * nW + r) * C, *p = pe + r * C;
            for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C;
                 c += (int64_t)gridDim.x * blockDim.x)
                o[c] = g[c] + p[c];
        }
    }
}

extern "C" void fine_cu_memtok_gather(void *ctx, float *u, const float *table, const int *idx, const float *g2,
                                      const float *pe, int64_t B, int64_t nW, int64_t C, int nvt)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    int64_t rows = B * (nvt + nW);
    if (rows <= 0 || C <= 0)
        return;
    memtok_gather_kernel<<<grid_rows(rows, C), THREADS, 0, c->stream>>>(u, table, idx, g2, pe, B, nW, C, nvt);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_memtok_gather");
}

/* dtable[idx[b*nvt + q]] += du[b, q]: atomics, as samples may pick the same volume token. */
__global__ void memtok_scatter_kernel(float *dtable, const float *du, const int *idx, int64_t B, int64_t nW,
                                      int64_t C, int nvt)
{
    int64_t U = nvt + nW;
    for (int64_t row = blockIdx.y; row < B * nvt; row += gridDim.y) {
        int64_t b = row / nvt, q = row % nvt;
        float *t = dtable + (int64_t)idx[row] * C;
        const float *g = du + (b * U + q) * C;
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C;
             c += (int64_t)gridDim.x * blockDim.x)
            atomicAdd(t + c, g[c]);
    }
}

/* One thread per (r, c) of the nW rows: dg2[b, r] = du[b, nvt + r] for every b, and
 * dpe[r] += their sum over b (one owner per entry: no atomics). */
__global__ void memtok_rows_back_kernel(float *dpe, float *dg2, const float *du, int64_t B, int64_t nW,
                                        int64_t C, int nvt)
{
    int64_t U = nvt + nW;
    for (int64_t r = blockIdx.y; r < nW; r += gridDim.y) {
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C;
             c += (int64_t)gridDim.x * blockDim.x) {
            float s = 0.0f;
            for (int64_t b = 0; b < B; b++) {
                float v = du[(b * U + nvt + r) * C + c];
                if (dg2)
                    dg2[(b * nW + r) * C + c] = v;
                s += v;
            }
            if (dpe)
                dpe[r * C + c] += s;
        }
    }
}

extern "C" void fine_cu_memtok_gather_backward(void *ctx, float *dtable, float *dpe, float *dg2, const float *du,
                                               const int *idx, int64_t B, int64_t nW, int64_t C, int nvt)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (B <= 0 || C <= 0)
        return;
    if (dtable && nvt > 0) {
        memtok_scatter_kernel<<<grid_rows(B * nvt, C), THREADS, 0, c->stream>>>(dtable, du, idx, B, nW, C, nvt);
        if (!fine_cuda_ok(c, cudaGetLastError(), "fine_cu_memtok_gather_backward"))
            return;
    }
    if ((dpe || dg2) && nW > 0) {
        memtok_rows_back_kernel<<<grid_rows(nW, C), THREADS, 0, c->stream>>>(dpe, dg2, du, B, nW, C, nvt);
        fine_cuda_ok(c, cudaGetLastError(), "fine_cu_memtok_gather_backward");
    }
}

/* ------------------------------------------------------------------ layout changes */

#define TILE 32
#define TILE_ROWS 8

/* out (B, cols, rows) (= or +=) the transpose of in (B, rows, cols), through 32x32 tiles of
 * shared memory so both the read and the write are coalesced. Block (32, 8); the tiles
 * (b, row tile, column tile) are walked grid-stride. The extra column avoids bank conflicts. */
__global__ void transpose_kernel(float *out, const float *in, int64_t B, int64_t rows, int64_t cols, int acc)
{
    __shared__ float tile[TILE][TILE + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t rt = (rows + TILE - 1) / TILE, ct = (cols + TILE - 1) / TILE;
    int64_t tiles = B * rt * ct;
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
        int64_t b = t / (rt * ct), rem = t % (rt * ct);
        int64_t r0 = rem / ct * TILE, c0 = rem % ct * TILE;
        const float *src = in + b * rows * cols;
        float *dst = out + b * rows * cols;
        for (int i = ty; i < TILE; i += TILE_ROWS) {
            int64_t r = r0 + i, c = c0 + tx;
            if (r < rows && c < cols)
                tile[i][tx] = src[r * cols + c];
        }
        __syncthreads();
        for (int i = ty; i < TILE; i += TILE_ROWS) {
            int64_t c = c0 + i, r = r0 + tx;
            if (r < rows && c < cols) {
                if (acc)
                    dst[c * rows + r] += tile[tx][i];
                else
                    dst[c * rows + r] = tile[tx][i];
            }
        }
        __syncthreads(); /* the tile is rewritten by the next iteration */
    }
}

static void transpose(fine_cuda_ctx *c, float *out, const float *in, int64_t B, int64_t rows, int64_t cols,
                      int acc, const char *where)
{
    if (B <= 0 || rows <= 0 || cols <= 0)
        return;
    int64_t tiles = B * ((rows + TILE - 1) / TILE) * ((cols + TILE - 1) / TILE);
    transpose_kernel<<<fine_cuda_blocks(tiles, 1), dim3(TILE, TILE_ROWS), 0, c->stream>>>(out, in, B, rows,
                                                                                         cols, acc);
    fine_cuda_ok(c, cudaGetLastError(), where);
}

extern "C" void fine_cu_to_channels_last(void *ctx, float *out, const float *in, int64_t B, int64_t C, int64_t L)
{
    transpose((fine_cuda_ctx *)ctx, out, in, B, C, L, 0, "fine_cu_to_channels_last");
}

extern "C" void fine_cu_to_channels_first(void *ctx, float *out, const float *in, int64_t B, int64_t C,
                                          int64_t L)
{
    transpose((fine_cuda_ctx *)ctx, out, in, B, L, C, 0, "fine_cu_to_channels_first");
}

extern "C" void fine_cu_to_channels_last_backward(void *ctx, float *din, const float *dout, int64_t B,
                                                  int64_t C, int64_t L)
{
    transpose((fine_cuda_ctx *)ctx, din, dout, B, L, C, 1, "fine_cu_to_channels_last_backward");
}

/* ------------------------------------------------------------------ LayerNorm */

/* One warp per row, two passes as the CPU (mean, then the biased variance of x - mean), both
 * summed in double. weight and bias are required (as on the CPU). */
__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *in,
                                         const float *weight, const float *bias, int64_t N, int64_t C)
{
    int lane = threadIdx.x & 31;
    int64_t warp = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int64_t nwarps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t r = warp; r < N; r += nwarps) {
        const float *x = in + r * C;
        float *o = out + r * C;
        double s = 0.0;
        for (int64_t c = lane; c < C; c += 32)
            s += (double)x[c];
        s = warp_sum_d(s);
        float m = (float)(s / (double)C);
        double v = 0.0;
        for (int64_t c = lane; c < C; c += 32) {
            float d = x[c] - m;
            v += (double)(d * d);
        }
        v = warp_sum_d(v);
        float rs = (float)(1.0 / sqrt(v / (double)C + 1e-5));
        for (int64_t c = lane; c < C; c += 32)
            o[c] = (x[c] - m) * rs * weight[c] + bias[c];
        if (lane == 0) {
            if (mean)
                mean[r] = m;
            if (rstd)
                rstd[r] = rs;
        }
    }
}

extern "C" void fine_cu_layernorm_forward(void *ctx, float *out, float *mean, float *rstd, const float *in,
                                          const float *weight, const float *bias, int64_t N, int64_t C)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (N <= 0 || C <= 0)
        return;
    layernorm_forward_kernel<<<fine_cuda_blocks(N, WARPS_PER_BLOCK), THREADS, 0, c->stream>>>(
        out, mean, rstd, in, weight, bias, N, C);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_layernorm_forward");
}

/* din += (g*w - mean(g*w) - xhat * mean(g*w*xhat)) * rstd, one warp per row (float sums, as
 * the CPU). */
__global__ void layernorm_backward_din_kernel(float *din, const float *dout, const float *in,
                                              const float *weight, const float *mean, const float *rstd,
                                              int64_t N, int64_t C)
{
    int lane = threadIdx.x & 31;
    int64_t warp = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int64_t nwarps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t r = warp; r < N; r += nwarps) {
        const float *x = in + r * C, *g = dout + r * C;
        float *dx = din + r * C;
        float m = mean[r], rs = rstd[r];
        float a = 0.0f, b = 0.0f;
        for (int64_t c = lane; c < C; c += 32) {
            float dn = g[c] * weight[c];
            a += dn;
            b += dn * ((x[c] - m) * rs);
        }
        a = warp_sum_f(a) / (float)C;
        b = warp_sum_f(b) / (float)C;
        for (int64_t c = lane; c < C; c += 32) {
            float xh = (x[c] - m) * rs;
            dx[c] += (g[c] * weight[c] - a - xh * b) * rs;
        }
    }
}

extern "C" void fine_cu_layernorm_backward(void *ctx, float *din, float *dweight, float *dbias, const float *dout,
                                           const float *in, const float *weight, const float *mean,
                                           const float *rstd, int64_t N, int64_t C)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (N <= 0 || C <= 0)
        return;
    if (din) {
        layernorm_backward_din_kernel<<<fine_cuda_blocks(N, WARPS_PER_BLOCK), THREADS, 0, c->stream>>>(
            din, dout, in, weight, mean, rstd, N, C);
        if (!fine_cuda_ok(c, cudaGetLastError(), "fine_cu_layernorm_backward"))
            return;
    }
    if (dweight || dbias) {
        column_sums(c, dweight, dbias, dout, in, mean, rstd, N, C);
        fine_cuda_ok(c, cudaGetLastError(), "fine_cu_layernorm_backward");
    }
}

/* ------------------------------------------------------------------ GELU */

/* Phi(x) = erfc(-x/sqrt2)/2: accurate in the negative tail, where 1 + erf loses digits. */
__device__ __forceinline__ float phi_cdf(float x)
{
    return 0.5f * erfcf(-x * 0.70710678118654752f);
}

__global__ void gelu_forward_kernel(float *out, const float *in, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float x = in[i];
        out[i] = x * phi_cdf(x);
    }
}

__global__ void gelu_backward_kernel(float *din, const float *dout, const float *in, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float x = in[i];
        float pdf = 0.398942280401432678f * expf(-0.5f * x * x);
        din[i] += dout[i] * (phi_cdf(x) + x * pdf);
    }
}

extern "C" void fine_cu_gelu_forward(void *ctx, float *out, const float *in, int64_t n)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (n <= 0)
        return;
    gelu_forward_kernel<<<fine_cuda_blocks(n, THREADS), THREADS, 0, c->stream>>>(out, in, n);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_gelu_forward");
}

extern "C" void fine_cu_gelu_backward(void *ctx, float *din, const float *dout, const float *in, int64_t n)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (n <= 0)
        return;
    gelu_backward_kernel<<<fine_cuda_blocks(n, THREADS), THREADS, 0, c->stream>>>(din, dout, in, n);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_gelu_backward");
}

/* ------------------------------------------------------------------ residuals, drop path */

__global__ void add_kernel(float *out, const float *a, const float *b, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void accumulate_kernel(float *y, const float *x, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

extern "C" void fine_cu_add(void *ctx, float *out, const float *a, const float *b, int64_t n)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (n <= 0)
        return;
    add_kernel<<<fine_cuda_blocks(n, THREADS), THREADS, 0, c->stream>>>(out, a, b, n);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_add");
}

extern "C" void fine_cu_accumulate(void *ctx, float *y, const float *x, int64_t n)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (n <= 0)
        return;
    accumulate_kernel<<<fine_cuda_blocks(n, THREADS), THREADS, 0, c->stream>>>(y, x, n);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_accumulate");
}

/* Sample s (blockIdx.y) is `per` contiguous values scaled by mask[s]; kept samples (mask 1)
 * are left untouched as on the CPU. */
__global__ void drop_path_kernel(float *x, const float *mask, int64_t samples, int64_t per)
{
    for (int64_t s = blockIdx.y; s < samples; s += gridDim.y) {
        float k = mask[s];
        if (k == 1.0f)
            continue;
        float *xs = x + s * per;
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < per;
             i += (int64_t)gridDim.x * blockDim.x)
            xs[i] *= k;
    }
}

extern "C" void fine_cu_drop_path(void *ctx, float *x, const float *mask, int64_t samples, int64_t rows_per_sample,
                                  int64_t C)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    int64_t per = rows_per_sample * C;
    if (samples <= 0 || per <= 0)
        return;
    drop_path_kernel<<<grid_rows(samples, per), THREADS, 0, c->stream>>>(x, mask, samples, per);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_drop_path");
}

/* ------------------------------------------------------------------ windows */

enum { WIN_PARTITION = 0, WIN_REVERSE = 1, WIN_PARTITION_ACC = 2 };

__device__ __forceinline__ int64_t wrap(int64_t i, int64_t n)
{
    int64_t r = i % n;
    return r < 0 ? r + n : r;
}

/* Window token n = (b*nW + window) * ws^3 + t (t the (d, h, w) raster index in the window)
 * sits at x[b, (d + shift) mod D, (h + shift) mod H, (w + shift) mod W] (ops_window.c
 * window_walk). A warp takes 32 tokens at a time: each lane works out one token's x index
 * (the 64-bit divisions dominate otherwise), then the warp moves the 32 tokens one after the
 * other, the lanes over the C channels (coalesced on both sides). The map is a permutation,
 * so the accumulating form needs no atomics. */
__global__ void window_kernel(float *dst, const float *src, int64_t B, int64_t D, int64_t H, int64_t W,
                              int64_t C, int ws, int shift, int mode)
{
    int lane = threadIdx.x & 31;
    int64_t warp = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int64_t nwarps = (int64_t)gridDim.x * (blockDim.x / 32);
    int64_t nd = D / ws, nh = H / ws, nw = W / ws, N = (int64_t)ws * ws * ws;
    int64_t tokens = B * nd * nh * nw * N;
    for (int64_t n0 = warp * 32; n0 < tokens; n0 += nwarps * 32) {
        int64_t n = n0 + lane, xi = 0;
        if (n < tokens) {
            int64_t win = n / N, t = n % N;
            int64_t ww = win % nw, wh = win / nw % nh, wd = win / (nw * nh) % nd, b = win / (nw * nh * nd);
            int64_t td = t / ((int64_t)ws * ws), th = t / ws % ws, tw = t % ws;
            int64_t d = wrap(wd * ws + td + shift, D);
            int64_t h = wrap(wh * ws + th + shift, H);
            int64_t w = wrap(ww * ws + tw + shift, W);
            xi = ((b * D + d) * H + h) * W + w;
        }
        int64_t count = tokens - n0 < 32 ? tokens - n0 : 32;
        for (int j = 0; j < count; j++) {
            int64_t xj = __shfl_sync(0xffffffffu, xi, j);
            const float *from = mode == WIN_PARTITION ? src + xj * C : src + (n0 + j) * C;
            float *to = mode == WIN_PARTITION ? dst + (n0 + j) * C : dst + xj * C;
            if (mode == WIN_PARTITION_ACC) {
                for (int64_t c = lane; c < C; c += 32)
                    to[c] += from[c];
            } else {
                for (int64_t c = lane; c < C; c += 32)
                    to[c] = from[c];
            }
        }
    }
}

static void window_move(fine_cuda_ctx *c, float *dst, const float *src, int64_t B, int64_t D, int64_t H,
                        int64_t W, int64_t C, int ws, int shift, int mode, const char *where)
{
    if (B <= 0 || C <= 0 || ws <= 0)
        return;
    int64_t tokens = B * (D / ws) * (H / ws) * (W / ws) * ((int64_t)ws * ws * ws);
    if (tokens <= 0)
        return;
    int64_t groups = (tokens + 31) / 32; /* 32 tokens per warp */
    window_kernel<<<fine_cuda_blocks(groups, WARPS_PER_BLOCK), THREADS, 0, c->stream>>>(dst, src, B, D, H, W, C,
                                                                                        ws, shift, mode);
    fine_cuda_ok(c, cudaGetLastError(), where);
}

extern "C" void fine_cu_window_partition(void *ctx, float *out, const float *x, int64_t B, int64_t D, int64_t H,
                                         int64_t W, int64_t C, int ws, int shift)
{
    window_move((fine_cuda_ctx *)ctx, out, x, B, D, H, W, C, ws, shift, WIN_PARTITION,
                "fine_cu_window_partition");
}

extern "C" void fine_cu_window_reverse(void *ctx, float *x, const float *win, int64_t B, int64_t D, int64_t H,
                                       int64_t W, int64_t C, int ws, int shift)
{
    window_move((fine_cuda_ctx *)ctx, x, win, B, D, H, W, C, ws, shift, WIN_REVERSE, "fine_cu_window_reverse");
}

extern "C" void fine_cu_window_partition_acc(void *ctx, float *dx, const float *dwin, int64_t B, int64_t D,
                                             int64_t H, int64_t W, int64_t C, int ws, int shift)
{
    window_move((fine_cuda_ctx *)ctx, dx, dwin, B, D, H, W, C, ws, shift, WIN_PARTITION_ACC,
                "fine_cu_window_partition_acc");
}
