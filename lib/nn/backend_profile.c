/* backend_profile.c: the timing backend (backend_profile.h). One wrapper per slot of the table:
 * each passes its arguments to the inner backend and books the call. */
#include "nn/backend_profile.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum {
    S_UPLOAD, S_DOWNLOAD, S_ZERO, S_COPY, S_COPY_ROWS, S_AXPY_ROWS, S_SUM_ROWS_ACC, S_MEMTOK_GATHER,
    S_MEMTOK_GATHER_BACKWARD, S_CONV3D_FORWARD, S_CONV3D_BACKWARD, S_CONVT3D_FORWARD, S_CONVT3D_BACKWARD,
    S_TO_CHANNELS_LAST, S_TO_CHANNELS_FIRST, S_TO_CHANNELS_LAST_BACKWARD, S_LAYERNORM_FORWARD,
    S_LAYERNORM_BACKWARD, S_GELU_FORWARD, S_GELU_BACKWARD, S_LINEAR_FORWARD, S_LINEAR_BACKWARD, S_ADD,
    S_ACCUMULATE, S_DROP_PATH, S_WINDOW_PARTITION, S_WINDOW_REVERSE, S_WINDOW_PARTITION_ACC, S_RELPOS_BIAS,
    S_RELPOS_BIAS_BACKWARD, S_ATTENTION_FORWARD, S_ATTENTION_BACKWARD, S_SOFTMAX_CE, S_SOFT_DICE,
    S_DOWNSAMPLE_LABELS, S_DICE_COUNT, S_SOFTMAX_CHANNELS, S_SUMSQ, S_SGD_STEP, S_ADAMW_STEP, NSLOT
};

/* the field names of backend.h, in the order above */
static const char *const slot_name[NSLOT] = {
    "upload", "download", "zero", "copy", "copy_rows", "axpy_rows", "sum_rows_acc", "memtok_gather",
    "memtok_gather_backward", "conv3d_forward", "conv3d_backward", "convT3d_forward", "convT3d_backward",
    "to_channels_last", "to_channels_first", "to_channels_last_backward", "layernorm_forward",
    "layernorm_backward", "gelu_forward", "gelu_backward", "linear_forward", "linear_backward", "add",
    "accumulate", "drop_path", "window_partition", "window_reverse", "window_partition_acc", "relpos_bias",
    "relpos_bias_backward", "attention_forward", "attention_backward", "softmax_ce", "soft_dice",
    "downsample_labels", "dice_count", "softmax_channels", "sumsq", "sgd_step", "adamw_step"};

typedef struct slot_stat {
    int64_t calls;
    double seconds, flops;
} slot_stat;

typedef struct prof {
    fine_backend be; /* first: the table's ctx points back at the whole struct */
    fine_backend *in;
    pthread_mutex_t mu;
    int on; /* 0: calls pass through untimed (fine_profile_enable) */
    slot_stat s[NSLOT];
} prof;

/* Waits for the call to finish and books it. A failure the wait reports stays recorded in the
 * inner backend (the first one wins there), so the caller's own sync still sees it. */
static void book(prof *p, int slot, double t0, double flops)
{
    if (!p->on)
        return;
    fine_err e;
    p->in->sync(p->in->ctx, &e);
    double dt = fine_now() - t0;
    pthread_mutex_lock(&p->mu);
    p->s[slot].calls++;
    p->s[slot].seconds += dt;
    p->s[slot].flops += flops;
    pthread_mutex_unlock(&p->mu);
}

/* ------------------------------------------------------------------ passed through untimed */

static void *p_alloc(void *ctx, size_t bytes)
{
    prof *p = ctx;
    return p->in->alloc(p->in->ctx, bytes);
}

static void p_free(void *ctx, void *q)
{
    prof *p = ctx;
    p->in->free(p->in->ctx, q);
}

static void *p_host_alloc(void *ctx, size_t bytes)
{
    prof *p = ctx;
    return p->in->host_alloc(p->in->ctx, bytes);
}

static void p_host_free(void *ctx, void *q)
{
    prof *p = ctx;
    p->in->host_free(p->in->ctx, q);
}

static int p_sync(void *ctx, fine_err *e)
{
    prof *p = ctx;
    return p->in->sync(p->in->ctx, e);
}

static int p_set_precision(void *ctx, const char *name, fine_err *e)
{
    prof *p = ctx;
    return p->in->set_precision(p->in->ctx, name, e);
}

static const char *p_precision(void *ctx)
{
    prof *p = ctx;
    return p->in->precision(p->in->ctx);
}

static size_t p_peak_bytes(void *ctx)
{
    prof *p = ctx;
    return p->in->peak_bytes(p->in->ctx);
}

static size_t p_conv3d_scratch(void *ctx, const fine_conv3d_shape *s)
{
    prof *p = ctx;
    return p->in->conv3d_scratch(p->in->ctx, s);
}

static size_t p_convT3d_scratch(void *ctx, const fine_convT3d_shape *s)
{
    prof *p = ctx;
    return p->in->convT3d_scratch(p->in->ctx, s);
}

static size_t p_attention_scratch(void *ctx, const fine_attn_shape *s)
{
    prof *p = ctx;
    return p->in->attention_scratch(p->in->ctx, s);
}

/* ------------------------------------------------------------------ FLOPs of the products */

static double conv3d_macs(const fine_conv3d_shape *s)
{
    int64_t Do, Ho, Wo;
    fine_conv3d_out_size(s, &Do, &Ho, &Wo);
    return (double)s->B * (double)s->Cout * (double)(Do * Ho * Wo) * (double)s->Cin *
           (double)(s->k[0] * s->k[1] * s->k[2]);
}

static double convT3d_macs(const fine_convT3d_shape *s)
{
    return (double)s->B * (double)s->Cin * (double)(s->D * s->H * s->W) * (double)s->Cout *
           (double)(s->k[0] * s->k[1] * s->k[2]);
}

/* one of the attention's (T x T x d) products over every sequence and head */
static double attention_product_flops(const fine_attn_shape *s)
{
    return 2.0 * (double)s->Bs * (double)s->T * (double)s->T * (double)s->C;
}

/* ------------------------------------------------------------------ timed */

static void p_upload(void *ctx, void *dst, const void *src, size_t bytes)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->upload(p->in->ctx, dst, src, bytes);
    book(p, S_UPLOAD, t0, 0);
}

static void p_download(void *ctx, void *dst, const void *src, size_t bytes)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->download(p->in->ctx, dst, src, bytes);
    book(p, S_DOWNLOAD, t0, 0);
}

static void p_zero(void *ctx, void *q, size_t bytes)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->zero(p->in->ctx, q, bytes);
    book(p, S_ZERO, t0, 0);
}

static void p_copy(void *ctx, void *dst, const void *src, size_t bytes)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->copy(p->in->ctx, dst, src, bytes);
    book(p, S_COPY, t0, 0);
}

static void p_copy_rows(void *ctx, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                        int64_t rows, int64_t width)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->copy_rows(p->in->ctx, dst, dst_stride, src, src_stride, rows, width);
    book(p, S_COPY_ROWS, t0, 0);
}

static void p_axpy_rows(void *ctx, float *out, int64_t out_stride, const float *a, const float *b,
                        int64_t b_stride, const float *scale, int64_t rows, int64_t C)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->axpy_rows(p->in->ctx, out, out_stride, a, b, b_stride, scale, rows, C);
    book(p, S_AXPY_ROWS, t0, 0);
}

static void p_sum_rows_acc(void *ctx, float *dst, const float *src, int64_t rows, int64_t C)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->sum_rows_acc(p->in->ctx, dst, src, rows, C);
    book(p, S_SUM_ROWS_ACC, t0, 0);
}

static void p_memtok_gather(void *ctx, float *u, const float *table, const int *idx, const float *g2,
                            const float *pe, int64_t B, int64_t nW, int64_t C, int nvt)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->memtok_gather(p->in->ctx, u, table, idx, g2, pe, B, nW, C, nvt);
    book(p, S_MEMTOK_GATHER, t0, 0);
}

static void p_memtok_gather_backward(void *ctx, float *dtable, float *dpe, float *dg2, const float *du,
                                     const int *idx, int64_t B, int64_t nW, int64_t C, int nvt)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->memtok_gather_backward(p->in->ctx, dtable, dpe, dg2, du, idx, B, nW, C, nvt);
    book(p, S_MEMTOK_GATHER_BACKWARD, t0, 0);
}

static void p_conv3d_forward(void *ctx, const fine_conv3d_shape *s, float *out, const float *in,
                             const float *w, const float *b, float *scratch)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->conv3d_forward(p->in->ctx, s, out, in, w, b, scratch);
    book(p, S_CONV3D_FORWARD, t0, 2 * conv3d_macs(s));
}

static void p_conv3d_backward(void *ctx, const fine_conv3d_shape *s, float *din, float *dw, float *db,
                              const float *dout, const float *in, const float *w, float *scratch)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->conv3d_backward(p->in->ctx, s, din, dw, db, dout, in, w, scratch);
    book(p, S_CONV3D_BACKWARD, t0, 2 * conv3d_macs(s) * ((din != NULL) + (dw != NULL)));
}

static void p_convT3d_forward(void *ctx, const fine_convT3d_shape *s, float *out, const float *in,
                              const float *w, const float *b, float *scratch)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->convT3d_forward(p->in->ctx, s, out, in, w, b, scratch);
    book(p, S_CONVT3D_FORWARD, t0, 2 * convT3d_macs(s));
}

static void p_convT3d_backward(void *ctx, const fine_convT3d_shape *s, float *din, float *dw, float *db,
                               const float *dout, const float *in, const float *w, float *scratch)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->convT3d_backward(p->in->ctx, s, din, dw, db, dout, in, w, scratch);
    book(p, S_CONVT3D_BACKWARD, t0, 2 * convT3d_macs(s) * ((din != NULL) + (dw != NULL)));
}

static void p_to_channels_last(void *ctx, float *out, const float *in, int64_t B, int64_t C, int64_t L)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->to_channels_last(p->in->ctx, out, in, B, C, L);
    book(p, S_TO_CHANNELS_LAST, t0, 0);
}

static void p_to_channels_first(void *ctx, float *out, const float *in, int64_t B, int64_t C, int64_t L)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->to_channels_first(p->in->ctx, out, in, B, C, L);
    book(p, S_TO_CHANNELS_FIRST, t0, 0);
}

static void p_to_channels_last_backward(void *ctx, float *din, const float *dout, int64_t B, int64_t C,
                                        int64_t L)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->to_channels_last_backward(p->in->ctx, din, dout, B, C, L);
    book(p, S_TO_CHANNELS_LAST_BACKWARD, t0, 0);
}

static void p_layernorm_forward(void *ctx, float *out, float *mean, float *rstd, const float *in,
                                const float *weight, const float *bias, int64_t N, int64_t C)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->layernorm_forward(p->in->ctx, out, mean, rstd, in, weight, bias, N, C);
    book(p, S_LAYERNORM_FORWARD, t0, 0);
}

static void p_layernorm_backward(void *ctx, float *din, float *dweight, float *dbias, const float *dout,
                                 const float *in, const float *weight, const float *mean, const float *rstd,
                                 int64_t N, int64_t C)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->layernorm_backward(p->in->ctx, din, dweight, dbias, dout, in, weight, mean, rstd, N, C);
    book(p, S_LAYERNORM_BACKWARD, t0, 0);
}

static void p_gelu_forward(void *ctx, float *out, const float *in, int64_t n)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->gelu_forward(p->in->ctx, out, in, n);
    book(p, S_GELU_FORWARD, t0, 0);
}

static void p_gelu_backward(void *ctx, float *din, const float *dout, const float *in, int64_t n)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->gelu_backward(p->in->ctx, din, dout, in, n);
    book(p, S_GELU_BACKWARD, t0, 0);
}

static void p_linear_forward(void *ctx, float *out, const float *in, const float *w, const float *b, int64_t N,
                             int64_t in_features, int64_t out_features)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->linear_forward(p->in->ctx, out, in, w, b, N, in_features, out_features);
    book(p, S_LINEAR_FORWARD, t0, 2.0 * (double)N * (double)in_features * (double)out_features);
}

static void p_linear_backward(void *ctx, float *din, float *dw, float *db, const float *dout, const float *in,
                              const float *w, int64_t N, int64_t in_features, int64_t out_features)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->linear_backward(p->in->ctx, din, dw, db, dout, in, w, N, in_features, out_features);
    book(p, S_LINEAR_BACKWARD, t0,
         2.0 * (double)N * (double)in_features * (double)out_features * ((din != NULL) + (dw != NULL)));
}

static void p_add(void *ctx, float *out, const float *a, const float *b, int64_t n)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->add(p->in->ctx, out, a, b, n);
    book(p, S_ADD, t0, 0);
}

static void p_accumulate(void *ctx, float *y, const float *x, int64_t n)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->accumulate(p->in->ctx, y, x, n);
    book(p, S_ACCUMULATE, t0, 0);
}

static void p_drop_path(void *ctx, float *x, const float *mask, int64_t samples, int64_t rows_per_sample,
                        int64_t C)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->drop_path(p->in->ctx, x, mask, samples, rows_per_sample, C);
    book(p, S_DROP_PATH, t0, 0);
}

static void p_window_partition(void *ctx, float *out, const float *x, int64_t B, int64_t D, int64_t H,
                               int64_t W, int64_t C, int ws, int shift)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->window_partition(p->in->ctx, out, x, B, D, H, W, C, ws, shift);
    book(p, S_WINDOW_PARTITION, t0, 0);
}

static void p_window_reverse(void *ctx, float *x, const float *win, int64_t B, int64_t D, int64_t H, int64_t W,
                             int64_t C, int ws, int shift)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->window_reverse(p->in->ctx, x, win, B, D, H, W, C, ws, shift);
    book(p, S_WINDOW_REVERSE, t0, 0);
}

static void p_window_partition_acc(void *ctx, float *dx, const float *dwin, int64_t B, int64_t D, int64_t H,
                                   int64_t W, int64_t C, int ws, int shift)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->window_partition_acc(p->in->ctx, dx, dwin, B, D, H, W, C, ws, shift);
    book(p, S_WINDOW_PARTITION_ACC, t0, 0);
}

static void p_relpos_bias(void *ctx, float *bias, const float *table, const int64_t *index, int heads, int N)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->relpos_bias(p->in->ctx, bias, table, index, heads, N);
    book(p, S_RELPOS_BIAS, t0, 0);
}

static void p_relpos_bias_backward(void *ctx, float *dtable, const float *dbias, const int64_t *index,
                                   int heads, int N)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->relpos_bias_backward(p->in->ctx, dtable, dbias, index, heads, N);
    book(p, S_RELPOS_BIAS_BACKWARD, t0, 0);
}

static void p_attention_forward(void *ctx, const fine_attn_shape *s, float *out, float *att, const float *qkv,
                                const float *bias, const float *mask, const float *key_mask)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->attention_forward(p->in->ctx, s, out, att, qkv, bias, mask, key_mask);
    book(p, S_ATTENTION_FORWARD, t0, 2 * attention_product_flops(s));
}

static void p_attention_backward(void *ctx, const fine_attn_shape *s, float *dqkv, float *dbias,
                                 const float *dout, const float *qkv, const float *att, float *scratch)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->attention_backward(p->in->ctx, s, dqkv, dbias, dout, qkv, att, scratch);
    /* dP always; dv, dq and dk with dqkv */
    book(p, S_ATTENTION_BACKWARD, t0, attention_product_flops(s) * (1 + 3 * (dqkv != NULL)));
}

static double p_softmax_ce(void *ctx, float *probs, float *dlogits, const float *logits, const uint8_t *target,
                           int64_t B, int64_t K, int64_t L, float scale)
{
    prof *p = ctx;
    double t0 = fine_now();
    double r = p->in->softmax_ce(p->in->ctx, probs, dlogits, logits, target, B, K, L, scale);
    book(p, S_SOFTMAX_CE, t0, 0);
    return r;
}

static double p_soft_dice(void *ctx, float *dlogits, const float *probs, const uint8_t *target, int64_t B,
                          int64_t K, int64_t L, float scale)
{
    prof *p = ctx;
    double t0 = fine_now();
    double r = p->in->soft_dice(p->in->ctx, dlogits, probs, target, B, K, L, scale);
    book(p, S_SOFT_DICE, t0, 0);
    return r;
}

static void p_downsample_labels(void *ctx, uint8_t *out, const uint8_t *in, int64_t B, int64_t D, int64_t H,
                                int64_t W, const int f[3])
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->downsample_labels(p->in->ctx, out, in, B, D, H, W, f);
    book(p, S_DOWNSAMPLE_LABELS, t0, 0);
}

static void p_dice_count(void *ctx, fine_dice_counts *s, const float *logits, const uint8_t *target,
                         int64_t nb, int64_t K, int64_t L)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->dice_count(p->in->ctx, s, logits, target, nb, K, L);
    book(p, S_DICE_COUNT, t0, 0);
}

static void p_softmax_channels(void *ctx, float *out, const float *in, int64_t B, int64_t K, int64_t L)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->softmax_channels(p->in->ctx, out, in, B, K, L);
    book(p, S_SOFTMAX_CHANNELS, t0, 0);
}

static double p_sumsq(void *ctx, const float *x, size_t n)
{
    prof *p = ctx;
    double t0 = fine_now();
    double r = p->in->sumsq(p->in->ctx, x, n);
    book(p, S_SUMSQ, t0, 0);
    return r;
}

static void p_sgd_step(void *ctx, float *q, float *buf, const float *g, size_t n, float gscale, float mu,
                       float wd, float lr)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->sgd_step(p->in->ctx, q, buf, g, n, gscale, mu, wd, lr);
    book(p, S_SGD_STEP, t0, 0);
}

static void p_adamw_step(void *ctx, float *q, float *m1, float *m2, const float *g, size_t n, float gscale,
                         float b1, float b2, float eps, float lr, float wd, float step, float rbc2)
{
    prof *p = ctx;
    double t0 = fine_now();
    p->in->adamw_step(p->in->ctx, q, m1, m2, g, n, gscale, b1, b2, eps, lr, wd, step, rbc2);
    book(p, S_ADAMW_STEP, t0, 0);
}

/* ------------------------------------------------------------------ open, close, report */

static void p_close(fine_backend *be)
{
    prof *p = (prof *)be;
    fine_backend_close(p->in);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

fine_backend *fine_backend_profile_open(fine_backend *inner, fine_err *e)
{
    prof *p = calloc(1, sizeof *p);
    if (!p || pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        fine_err_set(e, "out of memory");
        return NULL;
    }
    p->in = inner;
    p->on = 1;
    fine_backend *b = &p->be;
    b->name = inner->name;
    b->ctx = p;
    b->is_device = inner->is_device;
    b->close = p_close;
    b->alloc = p_alloc;
    b->free = p_free;
    b->host_alloc = p_host_alloc;
    b->host_free = p_host_free;
    b->upload = p_upload;
    b->download = p_download;
    b->zero = p_zero;
    b->copy = p_copy;
    b->sync = p_sync;
    b->set_precision = p_set_precision;
    b->precision = p_precision;
    b->peak_bytes = p_peak_bytes;
    b->copy_rows = p_copy_rows;
    b->axpy_rows = p_axpy_rows;
    b->sum_rows_acc = p_sum_rows_acc;
    b->memtok_gather = p_memtok_gather;
    b->memtok_gather_backward = p_memtok_gather_backward;
    b->conv3d_scratch = p_conv3d_scratch;
    b->conv3d_forward = p_conv3d_forward;
    b->conv3d_backward = p_conv3d_backward;
    b->convT3d_scratch = p_convT3d_scratch;
    b->convT3d_forward = p_convT3d_forward;
    b->convT3d_backward = p_convT3d_backward;
    b->to_channels_last = p_to_channels_last;
    b->to_channels_first = p_to_channels_first;
    b->to_channels_last_backward = p_to_channels_last_backward;
    b->layernorm_forward = p_layernorm_forward;
    b->layernorm_backward = p_layernorm_backward;
    b->gelu_forward = p_gelu_forward;
    b->gelu_backward = p_gelu_backward;
    b->linear_forward = p_linear_forward;
    b->linear_backward = p_linear_backward;
    b->add = p_add;
    b->accumulate = p_accumulate;
    b->drop_path = p_drop_path;
    b->window_partition = p_window_partition;
    b->window_reverse = p_window_reverse;
    b->window_partition_acc = p_window_partition_acc;
    b->relpos_bias = p_relpos_bias;
    b->relpos_bias_backward = p_relpos_bias_backward;
    b->attention_forward = p_attention_forward;
    b->attention_scratch = p_attention_scratch;
    b->attention_backward = p_attention_backward;
    b->softmax_ce = p_softmax_ce;
    b->soft_dice = p_soft_dice;
    b->downsample_labels = p_downsample_labels;
    b->dice_count = p_dice_count;
    b->softmax_channels = p_softmax_channels;
    b->sumsq = p_sumsq;
    b->sgd_step = p_sgd_step;
    b->adamw_step = p_adamw_step;
    return b;
}

int fine_backend_is_profile(const fine_backend *be)
{
    return be && be->close == p_close;
}

void fine_profile_enable(fine_backend *be, int on)
{
    ((prof *)be)->on = on;
}

void fine_profile_reset(fine_backend *be)
{
    prof *p = (prof *)be;
    pthread_mutex_lock(&p->mu);
    memset(p->s, 0, sizeof p->s);
    pthread_mutex_unlock(&p->mu);
}

int64_t fine_profile_calls(const fine_backend *be, const char *slot, double *seconds, double *flops)
{
    prof *p = (prof *)be;
    for (int i = 0; i < NSLOT; i++)
        if (strcmp(slot_name[i], slot) == 0) {
            pthread_mutex_lock(&p->mu);
            slot_stat s = p->s[i];
            pthread_mutex_unlock(&p->mu);
            if (seconds)
                *seconds = s.seconds;
            if (flops)
                *flops = s.flops;
            return s.calls;
        }
    return -1;
}

void fine_profile_print(const fine_backend *be, FILE *f, const char *title)
{
    prof *p = (prof *)be;
    slot_stat s[NSLOT];
    pthread_mutex_lock(&p->mu);
    memcpy(s, p->s, sizeof s);
    pthread_mutex_unlock(&p->mu);
    int order[NSLOT], n = 0;
    int64_t calls = 0;
    double total = 0;
    for (int i = 0; i < NSLOT; i++)
        if (s[i].calls > 0) {
            order[n++] = i;
            calls += s[i].calls;
            total += s[i].seconds;
        }
    for (int i = 1; i < n; i++) /* insertion sort, most time first: at most NSLOT lines */
        for (int j = i; j > 0 && s[order[j]].seconds > s[order[j - 1]].seconds; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    fprintf(f, "# profile: %s on %s (%s): %lld calls, %.3f s inside them, each timed to its end\n", title,
            p->in->name, p->in->precision(p->in->ctx), (long long)calls, total);
    fprintf(f, "# %-26s %8s %10s %6s %10s %9s\n", "slot", "calls", "seconds", "%", "ms/call", "GFLOP/s");
    for (int k = 0; k < n; k++) {
        const slot_stat *x = &s[order[k]];
        fprintf(f, "%-28s %8lld %10.4f %6.1f %10.4f", slot_name[order[k]], (long long)x->calls, x->seconds,
                total > 0 ? 100 * x->seconds / total : 0.0, 1e3 * x->seconds / (double)x->calls);
        if (x->flops > 0 && x->seconds > 0)
            fprintf(f, " %9.1f", x->flops / x->seconds / 1e9);
        fputc('\n', f);
    }
}
