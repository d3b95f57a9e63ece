/* backend.h: where the network engine runs. A backend is a table of the layer functions of
 * ops.h (same contracts, same layouts, a context pointer first) plus the memory operations
 * the network needs around them. fine_net and the trainer call only through this table, so
 * one network code drives the CPU (the ops files) and the GPU (the .cu files under lib/nn/cuda).
 *
 * Pointers handed to a backend's functions are that backend's memory: host memory for the CPU
 * backend, device memory (cudaMalloc) for CUDA. Only upload and download cross over.
 *
 * Errors: the layer functions return nothing (as ops.h); a backend that can fail inside them
 * (a CUDA launch, cuDNN) records the first failure in its context, and sync() reports it. */
#ifndef FINE_NN_BACKEND_H
#define FINE_NN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "nn/ops.h"
#include "nn/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fine_backend {
    const char *name; /* "cpu" or "cuda:N" */
    void *ctx;
    int is_device;    /* 1 when pointers are device memory */
    /* Releases the backend and everything it allocated (fine_backend_close calls it); NULL for
     * the CPU backend, which is static. */
    void (*close)(struct fine_backend *be);

    /* memory */
    void *(*alloc)(void *ctx, size_t bytes); /* NULL when out of memory; zeroed */
    void (*free)(void *ctx, void *p);
    /* Host memory the backend copies to and from fastest (pinned for CUDA); NULL when out of
     * memory. */
    void *(*host_alloc)(void *ctx, size_t bytes);
    void (*host_free)(void *ctx, void *p);
    void (*upload)(void *ctx, void *dst, const void *host_src, size_t bytes);
    void (*download)(void *ctx, void *host_dst, const void *src, size_t bytes); /* waits */
    void (*zero)(void *ctx, void *p, size_t bytes);
    void (*copy)(void *ctx, void *dst, const void *src, size_t bytes);
    /* Waits for queued work; 0, or -1 with e set to the first failure since the last sync. */
    int (*sync)(void *ctx, fine_err *e);
    /* Arithmetic, before planning a network: "fp32" (the default; every backend); on CUDA also
     * "tf32" (tensor-core products of 10-bit mantissas, fp32 sums, in the matrix products and
     * convolutions), "bf16" and "fp16" (the matrix products round their fp32 inputs to 16 bits
     * and sum in fp32; convolutions as tf32; fp16 needs loss scaling in training); "auto": bf16
     * where the GPU has bf16 tensor cores, else fp32. Activations, parameters and optimizer
     * state stay fp32 at every precision. 0, or -1 with e set for a precision this backend
     * does not have. */
    int (*set_precision)(void *ctx, const char *name, fine_err *e);
    /* The precision in force ("auto" resolved). */
    const char *(*precision)(void *ctx);
    /* Bytes of device memory in use at most so far (0 for the CPU). */
    size_t (*peak_bytes)(void *ctx);

    /* rows: dst[r*dst_stride + c] = src[r*src_stride + c], c < width (src_stride 0 broadcasts) */
    void (*copy_rows)(void *ctx, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                      int64_t rows, int64_t width);
    /* out[r*out_stride + c] = (a ? a[r*C + c] : 0) + scale[r] * b[r*b_stride + c] */
    void (*axpy_rows)(void *ctx, float *out, int64_t out_stride, const float *a, const float *b,
                      int64_t b_stride, const float *scale, int64_t rows, int64_t C);
    /* dst[c] += sum_r src[r*C + c] */
    void (*sum_rows_acc)(void *ctx, float *dst, const float *src, int64_t rows, int64_t C);
    /* Memory-token attention input (B 2.5): u (B, nvt + nW, C) with u[b, q] = table[idx[b*nvt + q]]
     * and u[b, nvt + r] = g2[b*nW + r] + pe[r]. */
    void (*memtok_gather)(void *ctx, float *u, const float *table, const int *idx, const float *g2,
                          const float *pe, int64_t B, int64_t nW, int64_t C, int nvt);
    /* Its backward: dtable[idx] += du rows, dpe += sum over b, dg2 = du rows nvt.. (overwritten). */
    void (*memtok_gather_backward)(void *ctx, float *dtable, float *dpe, float *dg2, const float *du,
                                   const int *idx, int64_t B, int64_t nW, int64_t C, int nvt);

    /* ops.h, one for one */
    size_t (*conv3d_scratch)(void *ctx, const fine_conv3d_shape *s);
    void (*conv3d_forward)(void *ctx, const fine_conv3d_shape *s, float *out, const float *in,
                           const float *w, const float *b, float *scratch);
    void (*conv3d_backward)(void *ctx, const fine_conv3d_shape *s, float *din, float *dw, float *db,
                            const float *dout, const float *in, const float *w, float *scratch);
    size_t (*convT3d_scratch)(void *ctx, const fine_convT3d_shape *s);
    void (*convT3d_forward)(void *ctx, const fine_convT3d_shape *s, float *out, const float *in,
                            const float *w, const float *b, float *scratch);
    void (*convT3d_backward)(void *ctx, const fine_convT3d_shape *s, float *din, float *dw, float *db,
                             const float *dout, const float *in, const float *w, float *scratch);
    void (*to_channels_last)(void *ctx, float *out, const float *in, int64_t B, int64_t C, int64_t L);
    void (*to_channels_first)(void *ctx, float *out, const float *in, int64_t B, int64_t C, int64_t L);
    void (*to_channels_last_backward)(void *ctx, float *din, const float *dout, int64_t B, int64_t C,
                                      int64_t L);
    void (*layernorm_forward)(void *ctx, float *out, float *mean, float *rstd, const float *in,
                              const float *weight, const float *bias, int64_t N, int64_t C);
    void (*layernorm_backward)(void *ctx, float *din, float *dweight, float *dbias, const float *dout,
                               const float *in, const float *weight, const float *mean,
                               const float *rstd, int64_t N, int64_t C);
    void (*gelu_forward)(void *ctx, float *out, const float *in, int64_t n);
    void (*gelu_backward)(void *ctx, float *din, const float *dout, const float *in, int64_t n);
    void (*linear_forward)(void *ctx, float *out, const float *in, const float *w, const float *b,
                           int64_t N, int64_t in_features, int64_t out_features);
    void (*linear_backward)(void *ctx, float *din, float *dw, float *db, const float *dout,
                            const float *in, const float *w, int64_t N, int64_t in_features,
                            int64_t out_features);
    void (*add)(void *ctx, float *out, const float *a, const float *b, int64_t n);
    void (*accumulate)(void *ctx, float *y, const float *x, int64_t n);
    void (*drop_path)(void *ctx, float *x, const float *mask, int64_t samples, int64_t rows_per_sample,
                      int64_t C);
    void (*window_partition)(void *ctx, float *out, const float *x, int64_t B, int64_t D, int64_t H,
                             int64_t W, int64_t C, int ws, int shift);
    void (*window_reverse)(void *ctx, float *x, const float *win, int64_t B, int64_t D, int64_t H,
                           int64_t W, int64_t C, int ws, int shift);
    void (*window_partition_acc)(void *ctx, float *dx, const float *dwin, int64_t B, int64_t D,
                                 int64_t H, int64_t W, int64_t C, int ws, int shift);
    /* index is int64 (ws^3 x ws^3) in this backend's memory */
    void (*relpos_bias)(void *ctx, float *bias, const float *table, const int64_t *index, int heads,
                        int N);
    void (*relpos_bias_backward)(void *ctx, float *dtable, const float *dbias, const int64_t *index,
                                 int heads, int N);
    void (*attention_forward)(void *ctx, const fine_attn_shape *s, float *out, float *att,
                              const float *qkv, const float *bias, const float *mask,
                              const float *key_mask);
    /* Floats of work space attention_backward needs (0 on the CPU). */
    size_t (*attention_scratch)(void *ctx, const fine_attn_shape *s);
    void (*attention_backward)(void *ctx, const fine_attn_shape *s, float *dqkv, float *dbias,
                               const float *dout, const float *qkv, const float *att, float *scratch);

    /* losses and the optimizer (train.c); the losses return the value on the host */
    double (*softmax_ce)(void *ctx, float *probs, float *dlogits, const float *logits,
                         const uint8_t *target, int64_t B, int64_t K, int64_t L, float scale);
    double (*soft_dice)(void *ctx, float *dlogits, const float *probs, const uint8_t *target,
                        int64_t B, int64_t K, int64_t L, float scale);
    void (*downsample_labels)(void *ctx, uint8_t *out, const uint8_t *in, int64_t B, int64_t D,
                              int64_t H, int64_t W, const int f[3]);
    /* Adds the argmax counts (train.h fine_dice_count) into the host struct s. */
    void (*dice_count)(void *ctx, fine_dice_counts *s, const float *logits, const uint8_t *target,
                       int64_t nb, int64_t K, int64_t L);
    /* Softmax over the K channels of (B, K, L) logits (inference). */
    void (*softmax_channels)(void *ctx, float *out, const float *in, int64_t B, int64_t K, int64_t L);
    /* sum of x[i]^2 in double, returned on the host */
    double (*sumsq)(void *ctx, const float *x, size_t n);
    /* SGD with Nesterov momentum and L2 weight decay as PyTorch, on clipped gradients:
     * d = g*gscale + wd*p; buf = mu*buf + d; p -= lr*(d + mu*buf) */
    void (*sgd_step)(void *ctx, float *p, float *buf, const float *g, size_t n, float gscale, float mu,
                     float wd, float lr);
    /* AdamW as PyTorch (decoupled weight decay), on clipped gradients, with the bias corrections
     * folded in by the caller (step = lr / (1 - b1^t), rbc2 = 1 / sqrt(1 - b2^t)):
     * d = g*gscale; m1 = b1*m1 + (1-b1)*d; m2 = b2*m2 + (1-b2)*d*d;
     * p = p*(1 - lr*wd); p -= step * m1 / (sqrt(m2)*rbc2 + eps) */
    void (*adamw_step)(void *ctx, float *p, float *m1, float *m2, const float *g, size_t n, float gscale,
                       float b1, float b2, float eps, float lr, float wd, float step, float rbc2);
} fine_backend;

/* The CPU backend (the ops files); static, never fails. */
const fine_backend *fine_backend_cpu(void);

/* Opens a backend by name: "cpu", "cuda" or "cuda:N". NULL with e set when the name is unknown,
 * the build has no CUDA backend, or no usable GPU or driver is present. */
fine_backend *fine_backend_open(const char *name, fine_err *e);
/* Frees what fine_backend_open made (nothing for the CPU). */
void fine_backend_close(fine_backend *be);

#ifdef __cplusplus
}
#endif

#endif
