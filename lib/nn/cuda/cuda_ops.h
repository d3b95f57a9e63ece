/* cuda_ops.h: the CUDA implementations of the backend table (backend.h). Each has the table's
 * signature: ctx is a fine_cuda_ctx *, every pointer is device memory, every contract is that of
 * the CPU function of the same name in ops.h / backend.h (forwards overwrite, backwards
 * accumulate). All work is queued on ctx->stream; the functions that return a value on the host
 * (losses, sumsq) wait for it. */
#ifndef FINE_NN_CUDA_OPS_H
#define FINE_NN_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/ops.h"
#include "nn/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cuda_elem.cu: pointwise, per-token and data-movement kernels */
void fine_cu_zero(void *ctx, void *p, size_t bytes);
void fine_cu_copy(void *ctx, void *dst, const void *src, size_t bytes);
void fine_cu_copy_rows(void *ctx, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                       int64_t rows, int64_t width);
void fine_cu_axpy_rows(void *ctx, float *out, int64_t out_stride, const float *a, const float *b,
                       int64_t b_stride, const float *scale, int64_t rows, int64_t C);
void fine_cu_sum_rows_acc(void *ctx, float *dst, const float *src, int64_t rows, int64_t C);
void fine_cu_memtok_gather(void *ctx, float *u, const float *table, const int *idx, const float *g2,
                           const float *pe, int64_t B, int64_t nW, int64_t C, int nvt);
void fine_cu_memtok_gather_backward(void *ctx, float *dtable, float *dpe, float *dg2, const float *du,
                                    const int *idx, int64_t B, int64_t nW, int64_t C, int nvt);
void fine_cu_to_channels_last(void *ctx, float *out, const float *in, int64_t B, int64_t C, int64_t L);
void fine_cu_to_channels_first(void *ctx, float *out, const float *in, int64_t B, int64_t C, int64_t L);
void fine_cu_to_channels_last_backward(void *ctx, float *din, const float *dout, int64_t B, int64_t C,
                                       int64_t L);
void fine_cu_layernorm_forward(void *ctx, float *out, float *mean, float *rstd, const float *in,
                               const float *weight, const float *bias, int64_t N, int64_t C);
void fine_cu_layernorm_backward(void *ctx, float *din, float *dweight, float *dbias, const float *dout,
                                const float *in, const float *weight, const float *mean,
                                const float *rstd, int64_t N, int64_t C);
void fine_cu_gelu_forward(void *ctx, float *out, const float *in, int64_t n);
void fine_cu_gelu_backward(void *ctx, float *din, const float *dout, const float *in, int64_t n);
void fine_cu_add(void *ctx, float *out, const float *a, const float *b, int64_t n);
void fine_cu_accumulate(void *ctx, float *y, const float *x, int64_t n);
void fine_cu_drop_path(void *ctx, float *x, const float *mask, int64_t samples, int64_t rows_per_sample,
                       int64_t C);
void fine_cu_window_partition(void *ctx, float *out, const float *x, int64_t B, int64_t D, int64_t H,
                              int64_t W, int64_t C, int ws, int shift);
void fine_cu_window_reverse(void *ctx, float *x, const float *win, int64_t B, int64_t D, int64_t H,
                            int64_t W, int64_t C, int ws, int shift);
void fine_cu_window_partition_acc(void *ctx, float *dx, const float *dwin, int64_t B, int64_t D,
                                  int64_t H, int64_t W, int64_t C, int ws, int shift);

/* cuda_conv.cu: cuDNN convolutions, transposed convolutions (kernel = stride) */
size_t fine_cu_conv3d_scratch(void *ctx, const fine_conv3d_shape *s);
void fine_cu_conv3d_forward(void *ctx, const fine_conv3d_shape *s, float *out, const float *in,
                            const float *w, const float *b, float *scratch);
void fine_cu_conv3d_backward(void *ctx, const fine_conv3d_shape *s, float *din, float *dw, float *db,
                             const float *dout, const float *in, const float *w, float *scratch);
size_t fine_cu_convT3d_scratch(void *ctx, const fine_convT3d_shape *s);
void fine_cu_convT3d_forward(void *ctx, const fine_convT3d_shape *s, float *out, const float *in,
                             const float *w, const float *b, float *scratch);
void fine_cu_convT3d_backward(void *ctx, const fine_convT3d_shape *s, float *din, float *dw, float *db,
                              const float *dout, const float *in, const float *w, float *scratch);

/* cuda_attn.cu: cuBLAS linear layers and attention, relative position bias */
void fine_cu_linear_forward(void *ctx, float *out, const float *in, const float *w, const float *b,
                            int64_t N, int64_t in_features, int64_t out_features);
void fine_cu_linear_backward(void *ctx, float *din, float *dw, float *db, const float *dout,
                             const float *in, const float *w, int64_t N, int64_t in_features,
                             int64_t out_features);
void fine_cu_relpos_bias(void *ctx, float *bias, const float *table, const int64_t *index, int heads, int N);
void fine_cu_relpos_bias_backward(void *ctx, float *dtable, const float *dbias, const int64_t *index,
                                  int heads, int N);
void fine_cu_attention_forward(void *ctx, const fine_attn_shape *s, float *out, float *att,
                               const float *qkv, const float *bias, const float *mask,
                               const float *key_mask);
/* Floats of scratch attention_backward needs (the score gradients, s->Bs * heads * T * T). */
size_t fine_cu_attention_scratch(void *ctx, const fine_attn_shape *s);
void fine_cu_attention_backward(void *ctx, const fine_attn_shape *s, float *dqkv, float *dbias,
                                const float *dout, const float *qkv, const float *att, float *scratch);

/* cuda_loss.cu: losses, Dice counts, gradient norm, SGD */
double fine_cu_softmax_ce(void *ctx, float *probs, float *dlogits, const float *logits,
                          const uint8_t *target, int64_t B, int64_t K, int64_t L, float scale);
double fine_cu_soft_dice(void *ctx, float *dlogits, const float *probs, const uint8_t *target,
                         int64_t B, int64_t K, int64_t L, float scale);
void fine_cu_downsample_labels(void *ctx, uint8_t *out, const uint8_t *in, int64_t B, int64_t D,
                               int64_t H, int64_t W, const int f[3]);
void fine_cu_dice_count(void *ctx, fine_dice_counts *s, const float *logits, const uint8_t *target,
                        int64_t nb, int64_t K, int64_t L);
double fine_cu_sumsq(void *ctx, const float *x, size_t n);
void fine_cu_softmax_channels(void *ctx, float *out, const float *in, int64_t B, int64_t K, int64_t L);
void fine_cu_sgd_step(void *ctx, float *p, float *buf, const float *g, size_t n, float gscale, float mu,
                      float wd, float lr);
void fine_cu_adamw_step(void *ctx, float *p, float *m1, float *m2, const float *g, size_t n, float gscale,
                        float b1, float b2, float eps, float lr, float wd, float step, float rbc2);

#ifdef __cplusplus
}
#endif

#endif
