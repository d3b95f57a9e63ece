/* cuda_ctx.h: the CUDA backend's context (one per opened device), shared by the .cu files.
 * Everything runs on ctx->stream; cuBLAS and cuDNN handles are bound to it. The layer functions
 * return nothing (backend.h): a failure is recorded once in the context (the first one wins)
 * and reported by the backend's sync(). */
#ifndef FINE_NN_CUDA_CTX_H
#define FINE_NN_CUDA_CTX_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "nn/conv_cache.h"

#ifdef __cplusplus
extern "C" {
#endif

/* bytes of ctx->red (device) and ctx->red_host (pinned host): reduction results of the losses,
 * the Dice counts and the gradient norm */
#define FINE_CUDA_RED_BYTES 65536

typedef struct fine_cuda_ctx {
    int device;
    int major, minor;         /* compute capability */
    char precision[8];        /* what set_precision chose ("auto" resolved) */
    cudaStream_t stream;
    cublasHandle_t blas;
    cudnnHandle_t dnn;
    fine_conv_cache conv;     /* cuDNN algorithms per convolution shape */
    int tf32;                 /* TF32 tensor cores in the convolutions (every precision but fp32) */
    cublasComputeType_t gemm_compute; /* the matrix products' arithmetic (fine_cu_gemm) */
    void **head_ptrs;         /* attention: 3 x head_cap device pointers (cuda_attn.cu) */
    int64_t head_cap;
    void *red;                /* FINE_CUDA_RED_BYTES of device memory */
    void *red_host;           /* FINE_CUDA_RED_BYTES of pinned host memory */
    size_t live_bytes, peak_bytes; /* of alloc()ed memory, tracked in the table below */
    void **ptrs;
    size_t *sizes;
    int nalloc, cap;
    int failed;
    char msg[FINE_ERR_MAX];
} fine_cuda_ctx;

/* Record a failure (only the first is kept). */
void fine_cuda_fail(fine_cuda_ctx *c, const char *where, const char *what);
/* Each returns 1 when r is success, else records "where: <error string>" and returns 0. */
int fine_cuda_ok(fine_cuda_ctx *c, cudaError_t r, const char *where);
int fine_cublas_ok(fine_cuda_ctx *c, cublasStatus_t r, const char *where);
int fine_cudnn_ok(fine_cuda_ctx *c, cudnnStatus_t r, const char *where);

/* C = alpha op(A) op(B) + beta C on fp32 matrices (column-major, as cuBLAS), products in the
 * context's precision: fp32, TF32, or bf16 / fp16 (inputs rounded to 16 bits inside cuBLAS),
 * always summed in fp32. 1, or 0 with the failure recorded. */
int fine_cu_gemm(fine_cuda_ctx *c, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *cm,
                 int64_t ldc, const char *where);

/* Grid size for n elements at `threads` per block, capped (kernels use grid-stride loops). */
unsigned fine_cuda_blocks(int64_t n, int threads);

#ifdef __cplusplus
}
#endif

#endif
