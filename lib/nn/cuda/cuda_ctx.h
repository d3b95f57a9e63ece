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
    cudaStream_t stream;
    cublasHandle_t blas;
    cudnnHandle_t dnn;
    fine_conv_cache conv;     /* cuDNN algorithms per convolution shape */
    int tf32;                 /* precision tf32: tensor-core GEMMs and convolutions on fp32 data */
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

/* Grid size for n elements at `threads` per block, capped (kernels use grid-stride loops). */
unsigned fine_cuda_blocks(int64_t n, int threads);

#ifdef __cplusplus
}
#endif

#endif
