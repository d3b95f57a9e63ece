/* cuda_backend.cu: opening a GPU (stream, cuBLAS and cuDNN handles, reduction buffers), its
 * memory functions, error recording, and the backend table of the CUDA implementations in
 * the other .cu files here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_ctx.h"
#include "nn/cuda/cuda_ops.h"

typedef struct cuda_backend {
    fine_backend be; /* first: fine_cuda_backend_close casts back */
    fine_cuda_ctx ctx;
    char name[300];
} cuda_backend;

extern "C" void fine_cuda_backend_close(fine_backend *be);

extern "C" void fine_cuda_fail(fine_cuda_ctx *c, const char *where, const char *what)
{
    if (c->failed)
        return;
    c->failed = 1;
    snprintf(c->msg, sizeof c->msg, "%s: %s", where, what);
}

extern "C" int fine_cuda_ok(fine_cuda_ctx *c, cudaError_t r, const char *where)
{
    if (r == cudaSuccess)
        return 1;
    fine_cuda_fail(c, where, cudaGetErrorString(r));
    return 0;
}

extern "C" int fine_cublas_ok(fine_cuda_ctx *c, cublasStatus_t r, const char *where)
{
    if (r == CUBLAS_STATUS_SUCCESS)
        return 1;
    char what[64];
    snprintf(what, sizeof what, "cuBLAS status %d", (int)r);
    fine_cuda_fail(c, where, what);
    return 0;
}

extern "C" int fine_cudnn_ok(fine_cuda_ctx *c, cudnnStatus_t r, const char *where)
{
    if (r == CUDNN_STATUS_SUCCESS)
        return 1;
    fine_cuda_fail(c, where, cudnnGetErrorString(r));
    return 0;
}

extern "C" unsigned fine_cuda_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1)
        b = 1;
    if (b > 65535 * 16)
        b = 65535 * 16;
    return (unsigned)b;
}

/* ------------------------------------------------------------------ memory */

static void *cu_alloc(void *ctx, size_t bytes)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (c->nalloc == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        void **p = (void **)realloc(c->ptrs, (size_t)cap * sizeof *p);
        if (!p)
            return NULL;
        c->ptrs = p;
        size_t *s = (size_t *)realloc(c->sizes, (size_t)cap * sizeof *s);
        if (!s)
            return NULL;
        c->sizes = s;
        c->cap = cap;
    }
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* out of memory is reported by the caller, not sticky */
        return NULL;
    }
    if (!fine_cuda_ok(c, cudaMemsetAsync(d, 0, bytes, c->stream), "alloc")) {
        cudaFree(d);
        return NULL;
    }
    c->ptrs[c->nalloc] = d;
    c->sizes[c->nalloc] = bytes;
    c->nalloc++;
    c->live_bytes += bytes;
    if (c->live_bytes > c->peak_bytes)
        c->peak_bytes = c->live_bytes;
    return d;
}

static void cu_free(void *ctx, void *p)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (!p)
        return;
    for (int i = 0; i < c->nalloc; i++)
        if (c->ptrs[i] == p) {
            c->live_bytes -= c->sizes[i];
            c->ptrs[i] = c->ptrs[c->nalloc - 1];
            c->sizes[i] = c->sizes[c->nalloc - 1];
            c->nalloc--;
            break;
        }
    cudaStreamSynchronize(c->stream); /* queued work may still read p */
    fine_cuda_ok(c, cudaFree(p), "free");
}

static void *cu_host_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cu_host_free(void *ctx, void *p)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (p) {
        cudaStreamSynchronize(c->stream);
        fine_cuda_ok(c, cudaFreeHost(p), "host_free");
    }
}

static void cu_upload(void *ctx, void *dst, const void *src, size_t bytes)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    /* pageable source: cudaMemcpyAsync stages it before returning, so src may be reused */
    fine_cuda_ok(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
}

static void cu_download(void *ctx, void *dst, const void *src, size_t bytes)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    fine_cuda_ok(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
    fine_cuda_ok(c, cudaStreamSynchronize(c->stream), "download");
}

static int cu_sync(void *ctx, fine_err *e)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    fine_cuda_ok(c, cudaStreamSynchronize(c->stream), "sync");
    fine_cuda_ok(c, cudaGetLastError(), "sync");
    if (!c->failed)
        return 0;
    fine_err_set(e, "cuda:%d: %s", c->device, c->msg);
    return -1;
}

int fine_cu_gemm(fine_cuda_ctx *c, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *cm,
                 int64_t ldc, const char *where)
{
    return fine_cublas_ok(c,
                          cublasGemmEx_64(c->blas, ta, tb, m, n, k, &alpha, a, CUDA_R_32F, lda, b, CUDA_R_32F,
                                          ldb, &beta, cm, CUDA_R_32F, ldc, c->gemm_compute, CUBLAS_GEMM_DEFAULT),
                          where);
}

/* fp32: exact fp32 products everywhere. tf32: TF32 tensor cores for the products and the
 * convolutions. bf16 and fp16: the matrix products (linear layers, attention, transposed
 * convolutions) round their fp32 inputs to bf16 / fp16 inside cuBLAS and sum in fp32; the
 * convolutions run on TF32 tensor cores (cuDNN has no such rounding mode for fp32 data);
 * activations, parameters and optimizer state stay fp32. auto: bf16 where the GPU has bf16
 * tensor cores (compute capability 8.0 and later), fp32 otherwise. */
static int cu_set_precision(void *ctx, const char *name, fine_err *e)
{
    fine_cuda_ctx *c = (fine_cuda_ctx *)ctx;
    if (strcmp(name, "auto") == 0)
        name = c->major >= 8 ? "bf16" : "fp32";
    cublasComputeType_t compute;
    if (strcmp(name, "fp32") == 0)
        compute = CUBLAS_COMPUTE_32F;
    else if (strcmp(name, "tf32") == 0)
        compute = CUBLAS_COMPUTE_32F_FAST_TF32;
    else if (strcmp(name, "bf16") == 0)
        compute = CUBLAS_COMPUTE_32F_FAST_16BF;
    else if (strcmp(name, "fp16") == 0)
        compute = CUBLAS_COMPUTE_32F_FAST_16F;
    else
        return fine_err_set(e, "cuda:%d: unknown precision '%s' (fp32, tf32, bf16, fp16 or auto)", c->device, name);
    if (compute != CUBLAS_COMPUTE_32F && c->major < 8)
        return fine_err_set(e, "cuda:%d: precision %s needs tensor cores of compute capability 8.0 or later "
                               "(this GPU has %d.%d)", c->device, name, c->major, c->minor);
    int tf32 = compute != CUBLAS_COMPUTE_32F;
    if (cublasSetMathMode(c->blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS)
        return fine_err_set(e, "cuda:%d: cuBLAS refused the math mode of precision %s", c->device, name);
    c->tf32 = tf32;
    c->gemm_compute = compute;
    snprintf(c->precision, sizeof c->precision, "%s", name);
    c->conv.n = 0; /* algorithms were chosen for the other math */
    return 0;
}

static const char *cu_precision(void *ctx)
{
    return ((fine_cuda_ctx *)ctx)->precision;
}

static size_t cu_peak(void *ctx)
{
    return ((fine_cuda_ctx *)ctx)->peak_bytes;
}

/* ------------------------------------------------------------------ open and close */

static void fill_table(fine_backend *b)
{
    b->is_device = 1;
    b->alloc = cu_alloc;
    b->free = cu_free;
    b->host_alloc = cu_host_alloc;
    b->host_free = cu_host_free;
    b->upload = cu_upload;
    b->download = cu_download;
    b->zero = fine_cu_zero;
    b->copy = fine_cu_copy;
    b->sync = cu_sync;
    b->set_precision = cu_set_precision;
    b->precision = cu_precision;
    b->peak_bytes = cu_peak;
    b->close = fine_cuda_backend_close;
    b->copy_rows = fine_cu_copy_rows;
    b->axpy_rows = fine_cu_axpy_rows;
    b->sum_rows_acc = fine_cu_sum_rows_acc;
    b->memtok_gather = fine_cu_memtok_gather;
    b->memtok_gather_backward = fine_cu_memtok_gather_backward;
    b->conv3d_scratch = fine_cu_conv3d_scratch;
    b->conv3d_forward = fine_cu_conv3d_forward;
    b->conv3d_backward = fine_cu_conv3d_backward;
    b->convT3d_scratch = fine_cu_convT3d_scratch;
    b->convT3d_forward = fine_cu_convT3d_forward;
    b->convT3d_backward = fine_cu_convT3d_backward;
    b->to_channels_last = fine_cu_to_channels_last;
    b->to_channels_first = fine_cu_to_channels_first;
    b->to_channels_last_backward = fine_cu_to_channels_last_backward;
    b->layernorm_forward = fine_cu_layernorm_forward;
    b->layernorm_backward = fine_cu_layernorm_backward;
    b->gelu_forward = fine_cu_gelu_forward;
    b->gelu_backward = fine_cu_gelu_backward;
    b->linear_forward = fine_cu_linear_forward;
    b->linear_backward = fine_cu_linear_backward;
    b->add = fine_cu_add;
    b->accumulate = fine_cu_accumulate;
    b->drop_path = fine_cu_drop_path;
    b->window_partition = fine_cu_window_partition;
    b->window_reverse = fine_cu_window_reverse;
    b->window_partition_acc = fine_cu_window_partition_acc;
    b->relpos_bias = fine_cu_relpos_bias;
    b->relpos_bias_backward = fine_cu_relpos_bias_backward;
    b->attention_forward = fine_cu_attention_forward;
    b->attention_scratch = fine_cu_attention_scratch;
    b->attention_backward = fine_cu_attention_backward;
    b->softmax_ce = fine_cu_softmax_ce;
    b->soft_dice = fine_cu_soft_dice;
    b->downsample_labels = fine_cu_downsample_labels;
    b->dice_count = fine_cu_dice_count;
    b->softmax_channels = fine_cu_softmax_channels;
    b->sumsq = fine_cu_sumsq;
    b->sgd_step = fine_cu_sgd_step;
    b->adamw_step = fine_cu_adamw_step;
}

extern "C" void fine_cuda_backend_close(fine_backend *be)
{
    if (!be)
        return;
    cuda_backend *cb = (cuda_backend *)be;
    fine_cuda_ctx *c = &cb->ctx;
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    for (int i = 0; i < c->nalloc; i++)
        cudaFree(c->ptrs[i]);
    if (c->head_ptrs)
        cudaFree(c->head_ptrs);
    free(c->ptrs);
    free(c->sizes);
    if (c->red)
        cudaFree(c->red);
    if (c->red_host)
        cudaFreeHost(c->red_host);
    if (c->dnn)
        cudnnDestroy(c->dnn);
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(cb);
}

extern "C" fine_backend *fine_cuda_backend_open(int device, fine_err *e)
{
    int count = 0;
    cudaError_t r = cudaGetDeviceCount(&count);
    if (r != cudaSuccess) {
        fine_err_set(e, "cuda:%d: no usable GPU (%s)", device, cudaGetErrorString(r));
        return NULL;
    }
    if (device >= count) {
        fine_err_set(e, "cuda:%d: no such GPU (%d found)", device, count);
        return NULL;
    }
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!cb) {
        fine_err_set(e, "out of memory");
        return NULL;
    }
    fine_cuda_ctx *c = &cb->ctx;
    c->device = device;
    cudaDeviceProp prop;
    const char *step = "cudaSetDevice";
    r = cudaSetDevice(device);
    if (r == cudaSuccess) {
        step = "cudaGetDeviceProperties";
        r = cudaGetDeviceProperties(&prop, device);
    }
    if (r == cudaSuccess) {
        step = "cudaStreamCreate";
        r = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    }
    if (r == cudaSuccess) {
        step = "cudaMalloc";
        r = cudaMalloc(&c->red, FINE_CUDA_RED_BYTES);
    }
    if (r == cudaSuccess) {
        step = "cudaMallocHost";
        r = cudaMallocHost(&c->red_host, FINE_CUDA_RED_BYTES);
    }
    if (r != cudaSuccess) {
        fine_err_set(e, "cuda:%d: %s: %s", device, step, cudaGetErrorString(r));
        fine_cuda_backend_close(&cb->be);
        return NULL;
    }
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS) {
        c->blas = c->blas ? c->blas : NULL;
        fine_err_set(e, "cuda:%d: cuBLAS could not be initialised", device);
        fine_cuda_backend_close(&cb->be);
        return NULL;
    }
    cudnnStatus_t ds = cudnnCreate(&c->dnn);
    if (ds == CUDNN_STATUS_SUCCESS)
        ds = cudnnSetStream(c->dnn, c->stream);
    if (ds != CUDNN_STATUS_SUCCESS) {
        fine_err_set(e, "cuda:%d: cuDNN could not be initialised: %s", device, cudnnGetErrorString(ds));
        fine_cuda_backend_close(&cb->be);
        return NULL;
    }
    c->major = prop.major, c->minor = prop.minor;
    c->gemm_compute = CUBLAS_COMPUTE_32F;
    snprintf(c->precision, sizeof c->precision, "fp32");
    snprintf(cb->name, sizeof cb->name, "cuda:%d (%s)", device, prop.name);
    cb->be.name = cb->name;
    cb->be.ctx = c;
    fill_table(&cb->be);
    return &cb->be;
}
