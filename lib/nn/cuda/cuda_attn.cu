/* cuda_attn.cu: the CUDA linear layers, relative position bias and attention core (ops.h,
 * CPU reference in ops_norm.c, ops_window.c and ops_attention.c).
 *
 * All matrices are row-major; cuBLAS is column-major, so each product is written for the
 * transposes: a row-major (r x c) matrix with row stride ld is, read column-major, its
 * transpose (c x r) with leading dimension ld. Row-major C = A B is then column-major
 * C^T = B^T A^T, which is why the operands below appear swapped.
 *
 * Attention: one batched GEMM per product over every (sequence, head) pair (a head's q, k, v
 * are a d-column slice of each qkv row, so sequences are a fixed stride apart and heads another:
 * no single stride, hence cuBLAS's pointer-array batches, the pointers written by a kernel),
 * rather than one call per head: the deep stages have up to 48 heads of small windows, where
 * calls, not arithmetic, were the cost. One warp per score row for the bias, masks, softmax. */
#include <math.h>

#include "nn/cuda/cuda_ctx.h"
#include "nn/cuda/cuda_ops.h"

/* cuBLAS takes int sizes: the linear layers go through rows in slices of at most this many. */
#define BLAS_ROWS ((int64_t)1 << 24)
/* Rows each block of the column-sum kernel reduces per step, and its block shape (32 columns
 * by COLSUM_LANES row lanes). */
#define COLSUM_ROWS 1024
#define COLSUM_LANES 8
/* Rows (warps) per block of the row kernels. */
#define ROW_WARPS 8

/* ------------------------------------------------------------------ small helpers */

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* ------------------------------------------------------------------ linear */

/* out[r, o] += b[o] over N rows of O columns */
__global__ void add_bias_kernel(float *out, const float *b, int64_t N, int64_t O)
{
    int64_t n = N * O;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] += b[i % O];
}

/* db[c] += sum_r x[r, c]. Block (32, COLSUM_LANES): threadIdx.x picks a column of the block's
 * 32-column tile (so a warp reads 32 consecutive floats of a row), threadIdx.y a row lane; the
 * blocks along y take chunks of COLSUM_ROWS rows, grid-stride. Each thread sums its rows in
 * float, the lanes are added in shared memory, and one atomicAdd per column and block adds
 * the block's partial to db. */
__global__ void column_sum_kernel(float *db, const float *x, int64_t N, int64_t C)
{
    __shared__ float part[COLSUM_LANES][32];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t c = blockIdx.x * (int64_t)32 + tx;
    float acc = 0.0f;
    if (c < C)
        for (int64_t r0 = blockIdx.y * (int64_t)COLSUM_ROWS; r0 < N;
             r0 += (int64_t)gridDim.y * COLSUM_ROWS) {
            int64_t r1 = r0 + COLSUM_ROWS < N ? r0 + COLSUM_ROWS : N;
            for (int64_t r = r0 + ty; r < r1; r += COLSUM_LANES)
                acc += x[r * C + c];
        }
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && c < C) {
        float s = 0.0f;
        for (int l = 0; l < COLSUM_LANES; l++)
            s += part[l][tx];
        atomicAdd(db + c, s);
    }
}

extern "C" void fine_cu_linear_forward(void *ctx, float *out, const float *in, const float *w,
                                       const float *b, int64_t N, int64_t in_features,
                                       int64_t out_features)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (N <= 0 || out_features <= 0)
        return;
    const float one = 1.0f, zero = 0.0f;
    /* out^T (out, rn) = w (out, in) in^T (in, rn): w read column-major is w^T, hence OP_T */
    for (int64_t r0 = 0; r0 < N; r0 += BLAS_ROWS) {
        int64_t rn = N - r0 < BLAS_ROWS ? N - r0 : BLAS_ROWS;
        if (!fine_cu_gemm(c, CUBLAS_OP_T, CUBLAS_OP_N, out_features, rn, in_features, one, w, in_features,
                          in + r0 * in_features, in_features, zero, out + r0 * out_features, out_features,
                          "fine_cu_linear_forward"))
            return;
    }
    if (b) {
        add_bias_kernel<<<fine_cuda_blocks(N * out_features, 256), 256, 0, c->stream>>>(
            out, b, N, out_features);
        fine_cuda_ok(c, cudaGetLastError(), "fine_cu_linear_forward");
    }
}

extern "C" void fine_cu_linear_backward(void *ctx, float *din, float *dw, float *db,
                                        const float *dout, const float *in, const float *w,
                                        int64_t N, int64_t in_features, int64_t out_features)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (N <= 0 || out_features <= 0)
        return;
    const float one = 1.0f;
    for (int64_t r0 = 0; r0 < N; r0 += BLAS_ROWS) {
        int64_t rn = N - r0 < BLAS_ROWS ? N - r0 : BLAS_ROWS;
        const float *g = dout + r0 * out_features;
        /* din (rn, in) += dout (rn, out) w (out, in); column-major: din^T = w^T dout^T */
        if (din && in_features > 0 &&
            !fine_cu_gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, in_features, rn, out_features, one, w, in_features, g,
                          out_features, one, din + r0 * in_features, in_features, "fine_cu_linear_backward"))
            return;
        /* dw (out, in) += dout^T (out, rn) in (rn, in); column-major: dw^T = in^T dout */
        if (dw && in_features > 0 &&
            !fine_cu_gemm(c, CUBLAS_OP_N, CUBLAS_OP_T, in_features, out_features, rn, one,
                          in + r0 * in_features, in_features, g, out_features, one, dw, in_features,
                          "fine_cu_linear_backward"))
            return;
    }
    if (db) {
        int64_t chunks = (N + COLSUM_ROWS - 1) / COLSUM_ROWS;
        dim3 grid((unsigned)((out_features + 31) / 32), (unsigned)(chunks < 65535 ? chunks : 65535));
        dim3 block(32, COLSUM_LANES);
        column_sum_kernel<<<grid, block, 0, c->stream>>>(db, dout, N, out_features);
        fine_cuda_ok(c, cudaGetLastError(), "fine_cu_linear_backward");
    }
}

/* ------------------------------------------------------------------ relative position bias */

/* bias[h, k] = table[index[k], h], k < N*N; table is (rows, heads) row-major */
__global__ void relpos_bias_kernel(float *bias, const float *table, const int64_t *index,
                                   int heads, int64_t NN)
{
    int64_t n = heads * NN;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t h = i / NN, k = i - h * NN;
        bias[i] = table[index[k] * heads + h];
    }
}

/* dtable[index[k], h] += dbias[h, k]; the index is not injective, hence the atomics */
__global__ void relpos_bias_backward_kernel(float *dtable, const float *dbias,
                                            const int64_t *index, int heads, int64_t NN)
{
    int64_t n = heads * NN;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t h = i / NN, k = i - h * NN;
        atomicAdd(dtable + index[k] * heads + h, dbias[i]);
    }
}

extern "C" void fine_cu_relpos_bias(void *ctx, float *bias, const float *table, const int64_t *index,
                                    int heads, int N)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    int64_t NN = (int64_t)N * N;
    if (heads <= 0 || NN <= 0)
        return;
    relpos_bias_kernel<<<fine_cuda_blocks(heads * NN, 256), 256, 0, c->stream>>>(bias, table, index,
                                                                               heads, NN);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_relpos_bias");
}

extern "C" void fine_cu_relpos_bias_backward(void *ctx, float *dtable, const float *dbias,
                                             const int64_t *index, int heads, int N)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    int64_t NN = (int64_t)N * N;
    if (heads <= 0 || NN <= 0)
        return;
    relpos_bias_backward_kernel<<<fine_cuda_blocks(heads * NN, 256), 256, 0, c->stream>>>(
        dtable, dbias, index, heads, NN);
    fine_cuda_ok(c, cudaGetLastError(), "fine_cu_relpos_bias_backward");
}

/* ------------------------------------------------------------------ attention */

/* One warp per row of att (Bs, heads, T, T), rows r = (seq*heads + h)*T + i, holding the
 * scaled scores: adds bias[h, i-G, j-G] then mask[seq % mask_count, i-G, j-G] on the sub-block
 * (i, j >= G), then key_mask[j] on every column (the CPU's order of additions), then the
 * softmax as the CPU: e = exp(x - rowmax), p = e * (1 / sum e). Each lane keeps to its own
 * columns j = lane + 32 t across the passes, so the passes need no barrier. */
__global__ void attn_softmax_kernel(float *att, int64_t rows, int64_t T, int64_t G, int heads,
                                    const float *bias, const float *mask, int64_t mask_count,
                                    const float *key_mask)
{
    int lane = threadIdx.x & 31;
    int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    int64_t N = T - G;
    for (int64_t r = warp; r < rows; r += warps) {
        float *row = att + r * T;
        int64_t i = r % T, sh = r / T, h = sh % heads, seq = sh / heads;
        const float *bh = NULL, *mw = NULL;
        if (i >= G) {
            if (bias)
                bh = bias + (h * N + (i - G)) * N;
            if (mask)
                mw = mask + ((seq % mask_count) * N + (i - G)) * N;
        }
        float mx = -INFINITY;
        for (int64_t j = lane; j < T; j += 32) {
            float x = row[j];
            if (j >= G) {
                if (bh)
                    x += bh[j - G];
                if (mw)
                    x += mw[j - G];
            }
            if (key_mask)
                x += key_mask[j];
            row[j] = x;
            mx = fmaxf(mx, x);
        }
        mx = warp_max(mx);
        float sum = 0.0f;
        for (int64_t j = lane; j < T; j += 32) {
            float e = expf(row[j] - mx);
            row[j] = e;
            sum += e;
        }
        float inv = 1.0f / warp_sum(sum);
        for (int64_t j = lane; j < T; j += 32)
            row[j] *= inv;
    }
}

/* One warp per row: ds = P o (dP - sum_j P dP), in place on ds (which holds dP) */
__global__ void attn_softmax_backward_kernel(float *ds, const float *P, int64_t rows, int64_t T)
{
    int lane = threadIdx.x & 31;
    int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = warp; r < rows; r += warps) {
        float *g = ds + r * T;
        const float *p = P + r * T;
        float dot = 0.0f;
        for (int64_t j = lane; j < T; j += 32)
            dot += p[j] * g[j];
        dot = warp_sum(dot);
        for (int64_t j = lane; j < T; j += 32)
            g[j] = p[j] * (g[j] - dot);
    }
}

/* dbias[h, i, j] += sum over seq of ds[seq, h, G + i, G + j]; one thread per entry, the
 * sequences summed in order (deterministic) */
__global__ void attn_dbias_kernel(float *dbias, const float *ds, int64_t Bs, int heads, int64_t T,
                                  int64_t G)
{
    int64_t N = T - G, NN = N * N, n = heads * NN, seq_stride = heads * T * T;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t h = e / NN, k = e - h * NN, i = k / N, j = k - i * N;
        const float *p = ds + (h * T + G + i) * T + G + j;
        float s = 0.0f;
        for (int64_t seq = 0; seq < Bs; seq++)
            s += p[seq * seq_stride];
        dbias[e] += s;
    }
}

/* pointer i = seq * heads + h of each array: base + seq * s + h * hs */
__global__ void head_ptrs_kernel(const float **pa, const float **pb, float **pc, const float *a, int64_t sa,
                                 int64_t ha, const float *b, int64_t sb, int64_t hb, float *cm, int64_t sc,
                                 int64_t hc, int64_t heads, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t seq = i / heads, h = i - seq * heads;
        pa[i] = a + seq * sa + h * ha;
        pb[i] = b + seq * sb + h * hb;
        pc[i] = cm + seq * sc + h * hc;
    }
}

/* Room for n pointers in each of the three arrays (grown once per larger shape: planning asks
 * through fine_cu_attention_scratch, so training never waits here). */
static int head_ptrs_reserve(fine_cuda_ctx *c, int64_t n, const char *where)
{
    if (n <= c->head_cap)
        return 1;
    if (c->head_ptrs) { /* queued products may still read the old arrays */
        if (!fine_cuda_ok(c, cudaStreamSynchronize(c->stream), where))
            return 0;
        cudaFree(c->head_ptrs);
        c->head_ptrs = NULL;
        c->head_cap = 0;
    }
    if (!fine_cuda_ok(c, cudaMalloc((void **)&c->head_ptrs, (size_t)(3 * n) * sizeof(void *)), where))
        return 0;
    c->head_cap = n;
    return 1;
}

/* C = alpha op(A) op(B) + beta C for each of the Bs sequences and each head (column-major, as
 * cuBLAS): the matrices of (seq, h) start at a + seq*sa + h*ha, b + seq*sb + h*hb,
 * cm + seq*sc + h*hc. */
static int gemm_heads(fine_cuda_ctx *c, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                      int64_t k, float alpha, const float *a, int64_t lda, int64_t sa, int64_t ha,
                      const float *b, int64_t ldb, int64_t sb, int64_t hb, float beta, float *cm, int64_t ldc,
                      int64_t sc, int64_t hc, int64_t Bs, int64_t heads, const char *where)
{
    int64_t count = Bs * heads;
    if (!head_ptrs_reserve(c, count, where))
        return 0;
    const float **pa = (const float **)c->head_ptrs, **pb = pa + c->head_cap;
    float **pc = (float **)(c->head_ptrs + 2 * c->head_cap);
    head_ptrs_kernel<<<fine_cuda_blocks(count, 256), 256, 0, c->stream>>>(pa, pb, pc, a, sa, ha, b, sb, hb, cm, sc,
                                                                           hc, heads, count);
    if (!fine_cuda_ok(c, cudaGetLastError(), where))
        return 0;
    return fine_cublas_ok(c,
                          cublasGemmBatchedEx(c->blas, ta, tb, (int)m, (int)n, (int)k, &alpha,
                                              (const void *const *)pa, CUDA_R_32F, (int)lda,
                                              (const void *const *)pb, CUDA_R_32F, (int)ldb, &beta,
                                              (void *const *)pc, CUDA_R_32F, (int)ldc, (int)count,
                                              c->gemm_compute, CUBLAS_GEMM_DEFAULT),
                          where);
}

extern "C" void fine_cu_attention_forward(void *ctx, const fine_attn_shape *s, float *out,
                                          float *att, const float *qkv, const float *bias,
                                          const float *mask, const float *key_mask)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    const char *where = "fine_cu_attention_forward";
    int64_t T = s->T, C = s->C, d = C / s->heads, ld = 3 * C, TT = T * T;
    int64_t sq = T * ld, satt = s->heads * TT; /* per-sequence strides of qkv and att */
    if (s->Bs <= 0 || T <= 0)
        return;
    if (s->mask_count <= 0)
        mask = NULL;
    float scale = (float)(1.0 / sqrt((double)d));
    /* scores: att_h (T, T) = scale q k^T; column-major att_h^T = scale k q^T */
    if (!gemm_heads(c, CUBLAS_OP_T, CUBLAS_OP_N, T, T, d, scale, qkv + C, ld, sq, d, qkv, ld, sq, d, 0.0f, att, T,
                    satt, TT, s->Bs, s->heads, where))
        return;
    int64_t rows = s->Bs * s->heads * T;
    attn_softmax_kernel<<<fine_cuda_blocks(rows, ROW_WARPS), 32 * ROW_WARPS, 0, c->stream>>>(
        att, rows, T, s->G, s->heads, bias, mask, s->mask_count, key_mask);
    if (!fine_cuda_ok(c, cudaGetLastError(), where))
        return;
    /* out_h (T, d) = P v; column-major out_h^T = v^T P^T */
    gemm_heads(c, CUBLAS_OP_N, CUBLAS_OP_N, d, T, T, 1.0f, qkv + 2 * C, ld, sq, d, att, T, satt, TT, 0.0f, out, C,
               T * C, d, s->Bs, s->heads, where);
}

extern "C" size_t fine_cu_attention_scratch(void *ctx, const fine_attn_shape *s)
{
    /* planning: the pointer arrays of this shape now, not in the first training step */
    head_ptrs_reserve((fine_cuda_ctx *)ctx, s->Bs * s->heads, "fine_cu_attention_scratch");
    return (size_t)(s->Bs * s->heads * s->T * s->T);
}

extern "C" void fine_cu_attention_backward(void *ctx, const fine_attn_shape *s, float *dqkv,
                                           float *dbias, const float *dout, const float *qkv,
                                           const float *att, float *scratch)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    const char *where = "fine_cu_attention_backward";
    int64_t T = s->T, C = s->C, d = C / s->heads, ld = 3 * C, TT = T * T;
    int64_t sq = T * ld, so = T * C, satt = s->heads * TT;
    if (s->Bs <= 0 || T <= 0 || (!dqkv && !dbias))
        return;
    float scale = (float)(1.0 / sqrt((double)d));
    /* dP_h (T, T) = dO_h v^T into scratch (same layout as att); column-major dP^T = v dO^T */
    if (!gemm_heads(c, CUBLAS_OP_T, CUBLAS_OP_N, T, T, d, 1.0f, qkv + 2 * C, ld, sq, d, dout, C, so, d, 0.0f,
                    scratch, T, satt, TT, s->Bs, s->heads, where))
        return;
    /* dv_h (T, d) += P^T dO_h; column-major dv^T += dO^T P */
    if (dqkv && !gemm_heads(c, CUBLAS_OP_N, CUBLAS_OP_T, d, T, T, 1.0f, dout, C, so, d, att, T, satt, TT, 1.0f,
                            dqkv + 2 * C, ld, sq, d, s->Bs, s->heads, where))
        return;
    int64_t rows = s->Bs * s->heads * T;
    attn_softmax_backward_kernel<<<fine_cuda_blocks(rows, ROW_WARPS), 32 * ROW_WARPS, 0,
                                   c->stream>>>(scratch, att, rows, T);
    if (!fine_cuda_ok(c, cudaGetLastError(), where))
        return;
    if (dqkv) {
        /* dq_h += scale dS k; column-major dq^T += scale k^T dS^T */
        if (!gemm_heads(c, CUBLAS_OP_N, CUBLAS_OP_N, d, T, T, scale, qkv + C, ld, sq, d, scratch, T, satt, TT, 1.0f,
                        dqkv, ld, sq, d, s->Bs, s->heads, where))
            return;
        /* dk_h += scale dS^T q; column-major dk^T += scale q^T dS */
        if (!gemm_heads(c, CUBLAS_OP_N, CUBLAS_OP_T, d, T, T, scale, qkv, ld, sq, d, scratch, T, satt, TT, 1.0f,
                        dqkv + C, ld, sq, d, s->Bs, s->heads, where))
            return;
    }
    int64_t N = T - s->G;
    if (dbias && N > 0) {
        attn_dbias_kernel<<<fine_cuda_blocks(s->heads * N * N, 256), 256, 0, c->stream>>>(
            dbias, scratch, s->Bs, s->heads, T, s->G);
        fine_cuda_ok(c, cudaGetLastError(), where);
    }
}
