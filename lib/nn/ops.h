/* ops.h: the layer contracts of the network engine (CPU reference implementation in
 * ops_*.c; the CUDA implementation in lib/nn/cuda mirrors them one for one, and the network
 * reaches either through the backend table of backend.h).
 *
 * Conventions, as llm.c:
 * - Plain functions on raw float pointers and explicit sizes; no tensor objects, no graph.
 * - A forward writes its output (overwrites). A backward ACCUMULATES (+=) into the gradients
 *   of its inputs and parameters: the caller zeroes gradient buffers once per step. A gradient
 *   pointer may be NULL when that gradient is not needed (e.g. the input of the first layer).
 * - Layouts: volumes are channels-first (B, C, D, H, W) like PyTorch's Conv3d, D = S (z),
 *   H = y, W = x; token sequences are channels-last (B, L, C), L = D*H*W in (d, h, w) raster
 *   order. Weights keep PyTorch layouts: Linear (out, in); Conv3d (out, in, kd, kh, kw);
 *   ConvTranspose3d (in, out, kd, kh, kw).
 * - Sizes are int64_t where a product can exceed 2^31 (B*C*D*H*W of a 64x128x128 crop with
 *   96 channels already does).
 * - Parallelism: OpenMP loops and OpenBLAS inside; the thread count is set once by the tool
 *   (fine_nn_set_threads). Results do not depend on the thread count beyond float summation
 *   order inside BLAS.
 * - Scratch memory: functions that need a work buffer take it as an argument with its size
 *   given by a companion *_scratch() function, so the model plans all memory once. */
#ifndef FINE_NN_OPS_H
#define FINE_NN_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets the OpenMP and OpenBLAS thread counts (n <= 0: OMP_NUM_THREADS when set, else all cores). */
void fine_nn_set_threads(int n);

/* ------------------------------------------------------------------ 3-D convolutions */

/* Shape of a 3-D convolution: input (B, Cin, D, H, W) -> output (B, Cout, Do, Ho, Wo) with
 * Do = (D + 2*pad[0] - k[0]) / stride[0] + 1, and so on. */
typedef struct fine_conv3d_shape {
    int64_t B, Cin, D, H, W;
    int64_t Cout;
    int k[3], stride[3], pad[3];
} fine_conv3d_shape;

void fine_conv3d_out_size(const fine_conv3d_shape *s, int64_t *Do, int64_t *Ho, int64_t *Wo);
/* Floats of scratch the forward and backward need (im2col tiles). */
size_t fine_conv3d_scratch(const fine_conv3d_shape *s);

/* out (B,Cout,Do,Ho,Wo) = conv(in (B,Cin,D,H,W), w (Cout,Cin,k0,k1,k2)) + b (Cout), zero padding.
 * Any kernel, stride and padding; fast paths: k=3 pad=1 (strides 1, 2, (1,2,2)) and
 * kernel = stride with pad 0 (patch merging). */
void fine_conv3d_forward(const fine_conv3d_shape *s, float *out, const float *in, const float *w,
                         const float *b, float *scratch);
/* din += dL/din, dw += dL/dw, db += dL/db given dout; any of din, dw, db may be NULL. */
void fine_conv3d_backward(const fine_conv3d_shape *s, float *din, float *dw, float *db,
                          const float *dout, const float *in, const float *w, float *scratch);

/* Transposed convolution with kernel = stride (non-overlapping), no padding:
 * out[b, o, k0*z+i, k1*y+j, k2*x+l] = bias[o] + sum_c in[b, c, z, y, x] * w[c, o, i, j, l].
 * The input is given CHANNELS-LAST as tokens (B, D*H*W, Cin) (that is where the decoder has
 * it); out_channels_last selects the output layout: 0 -> (B, Cout, D*k0, H*k1, W*k2)
 * (the segmentation heads), 1 -> tokens (B, (D*k0)*(H*k1)*(W*k2), Cout) (the decoder's
 * Patch_Expanding). */
typedef struct fine_convT3d_shape {
    int64_t B, Cin, D, H, W;
    int64_t Cout;
    int k[3];
    int out_channels_last;
} fine_convT3d_shape;

size_t fine_convT3d_scratch(const fine_convT3d_shape *s);
void fine_convT3d_forward(const fine_convT3d_shape *s, float *out, const float *in, const float *w,
                          const float *b, float *scratch);
void fine_convT3d_backward(const fine_convT3d_shape *s, float *din, float *dw, float *db,
                           const float *dout, const float *in, const float *w, float *scratch);

/* Layout changes: (B, C, L) <-> (B, L, C). Backward of one is the other (accumulating). */
void fine_to_channels_last(float *out, const float *in, int64_t B, int64_t C, int64_t L);
void fine_to_channels_first(float *out, const float *in, int64_t B, int64_t C, int64_t L);
void fine_to_channels_last_backward(float *din, const float *dout, int64_t B, int64_t C, int64_t L);
void fine_to_channels_first_backward(float *din, const float *dout, int64_t B, int64_t C, int64_t L);

/* ------------------------------------------------------------------ pointwise and per token */

/* LayerNorm over the last dimension C of N rows, eps 1e-5, affine (weight, bias).
 * mean and rstd (N floats each) are saved for the backward. */
void fine_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                            const float *weight, const float *bias, int64_t N, int64_t C);
void fine_layernorm_backward(float *din, float *dweight, float *dbias, const float *dout,
                             const float *in, const float *weight, const float *mean,
                             const float *rstd, int64_t N, int64_t C);

/* Exact (erf) GELU on n values; backward from the saved input. */
void fine_gelu_forward(float *out, const float *in, int64_t n);
void fine_gelu_backward(float *din, const float *dout, const float *in, int64_t n);

/* out (N, out) = in (N, in) @ w^T (w is (out, in)) + b (b may be NULL). */
void fine_linear_forward(float *out, const float *in, const float *w, const float *b, int64_t N,
                         int64_t in_features, int64_t out_features);
void fine_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                          const float *w, int64_t N, int64_t in_features, int64_t out_features);

/* out = a + b (n values); used for residuals. The backward of a residual is two accumulations
 * and needs no function. */
void fine_add(float *out, const float *a, const float *b, int64_t n);
/* y += x (n values). */
void fine_accumulate(float *y, const float *x, int64_t n);

/* Drop path (stochastic depth): rows of sample i (row_count rows of C) scaled by mask[i],
 * which is 0 or 1/keep (drawn by the caller from its RNG). In place on x. Backward: the same
 * scaling of the gradient. */
void fine_drop_path(float *x, const float *mask, int64_t samples, int64_t rows_per_sample, int64_t C);

/* ------------------------------------------------------------------ windows */

/* Window partition of tokens x (B, D, H, W, C) (channels-last volume) into windows of ws^3
 * tokens after a cyclic shift by -shift along D, H, W (xs[i] = x[(i + shift) mod size]):
 * out (B * nW, ws^3, C), windows in (b, wd, wh, ww) raster order, tokens inside a window in
 * (d, h, w) raster order; nW = (D/ws)(H/ws)(W/ws). D, H, W must be multiples of ws.
 * Reverse undoes it (the roll by +shift). Each is the other's backward (accumulating forms). */
void fine_window_partition(float *out, const float *x, int64_t B, int64_t D, int64_t H, int64_t W,
                           int64_t C, int ws, int shift);
void fine_window_reverse(float *x, const float *win, int64_t B, int64_t D, int64_t H, int64_t W,
                         int64_t C, int ws, int shift);
/* Accumulating versions for the backward passes: partition_acc does dx += reverse(dwin) (the
 * backward of partition); reverse_acc does dwin += partition(dx) (the backward of reverse). */
void fine_window_partition_acc(float *dx, const float *dwin, int64_t B, int64_t D, int64_t H,
                               int64_t W, int64_t C, int ws, int shift);
void fine_window_reverse_acc(float *dwin, const float *dx, int64_t B, int64_t D, int64_t H,
                             int64_t W, int64_t C, int ws, int shift);

/* Relative position index of fine-reference B 2.2 (the non-injective nnFormer index):
 * index[i*N + j] = ds*(3ws-1) + dh*(2ws-1) + dw, N = ws^3. */
void fine_relpos_index(int64_t *index, int ws);
/* bias (h, N, N) = table[index[i, j], head] with table (rows, h). Backward scatter-adds. */
void fine_relpos_bias(float *bias, const float *table, const int64_t *index, int heads, int N);
void fine_relpos_bias_backward(float *dtable, const float *dbias, const int64_t *index, int heads,
                               int N);

/* Shift mask of fine-reference B 2.3: mask (nW, N, N), 0 within a region, -100 across regions,
 * for a (D, H, W) token grid, window ws, shift. */
void fine_shift_mask(float *mask, int64_t D, int64_t H, int64_t W, int ws, int shift);

/* ------------------------------------------------------------------ attention */

/* Multi-head self-attention core on sequences that already went through the qkv Linear:
 * qkv (Bs, T, 3C) with channel index s*C + head*d + j (s = q, k, v; d = C / heads) ->
 * out (Bs, T, C) in head-major channel order (before the proj Linear). Per sequence and head:
 * A = d^-0.5 q k^T (the reference scales q first; equal up to rounding); then, if bias != NULL, A[G + i, G + j] += bias[head, i, j] for
 * i, j < T - G (the window sub-block; the first G tokens, the memory tokens, get none);
 * if mask != NULL, A[G + i, G + j] += mask[(seq % mask_count), i, j] likewise (the shift mask,
 * one per window index); if key_mask != NULL, A[i, j] += key_mask[j] for all i (the
 * volume-token visitation mask, B 2.5); softmax over j; out = A v.
 * att (Bs, heads, T, T) receives the softmax probabilities (saved for the backward). */
typedef struct fine_attn_shape {
    int64_t Bs;    /* sequences */
    int64_t T;     /* tokens per sequence */
    int64_t C;     /* channels */
    int heads;
    int G;         /* leading tokens exempt from bias and mask */
    int64_t mask_count; /* rows of mask (windows per sample); 0 if no mask */
} fine_attn_shape;

void fine_attention_forward(const fine_attn_shape *s, float *out, float *att, const float *qkv,
                            const float *bias, const float *mask, const float *key_mask);
/* dqkv += ..., dbias (heads, N, N) += ... (may be NULL); masks get no gradient. */
void fine_attention_backward(const fine_attn_shape *s, float *dqkv, float *dbias,
                             const float *dout, const float *qkv, const float *att);

/* ------------------------------------------------------------------ losses (B 5.2) */

/* Both losses return NaN for a target id >= K (dlogits may be partly updated then);
 * fine_soft_dice needs 2 <= K <= 256.
 * Softmax cross-entropy, mean over all B*L voxels: logits (B, K, L) channels-first, target
 * (B, L) class ids. Returns the loss; dlogits += scale * dL/dlogits (may be NULL).
 * probs (B, K, L) receives the softmax (reused by the Dice loss). */
double fine_softmax_ce(float *probs, float *dlogits, const float *logits, const uint8_t *target,
                       int64_t B, int64_t K, int64_t L, float scale);
/* Soft Dice with batch dice (sums over batch and voxels per class), smooth 1e-5, classes
 * 1..K-1 (background excluded): loss = -mean_c (2tp + s) / (2tp + fp + fn + s + 1e-8).
 * Uses probs from fine_softmax_ce; dlogits += scale * dL/dlogits through the softmax. */
double fine_soft_dice(float *dlogits, const float *probs, const uint8_t *target, int64_t B,
                      int64_t K, int64_t L, float scale);
/* prob = softmax over the K channels at each of n voxels of logits (K, n), in f32 with the
 * maximum subtracted first (inference). prob may equal logits (in place). */
void fine_softmax_channels(float *prob, const float *logits, int64_t K, int64_t n);
/* Nearest-neighbour downsampling of a label volume (B, D, H, W) by integer factors, as skimage
 * resize(order=0, anti_aliasing=False) samples it (points f*(o + 0.5) - 0.5, halves rounded up):
 * out[z, y, x] = in[z*f0 + f0/2, y*f1 + f1/2, x*f2 + f2/2] (integer division), so factor 1 is
 * the identity and factor 2 takes index 2o + 1. D, H, W must be multiples of the factors. */
void fine_downsample_labels(uint8_t *out, const uint8_t *in, int64_t B, int64_t D, int64_t H,
                            int64_t W, const int f[3]);

#ifdef __cplusplus
}
#endif

#endif
