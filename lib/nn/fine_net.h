/* fine_net.h: forward and backward of the FINE network for a fixed batch size, with every
 * activation the backward needs planned once (fine-reference B 1.2, B 2.1-2.9).
 *
 * Layout of the inputs and outputs: x (B, in_chans, crop z, y, x); pos (B, 3) crop positions
 * (A4); head 0 logits (B, K, crop) at full resolution, head 1 logits (B, K, crop z, y/2, x/2)
 * (the 64^3 head of the bcv preset). */
#ifndef FINE_NET_H
#define FINE_NET_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "nn/fine_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fine_net fine_net;

typedef struct fine_backend fine_backend;

/* Plans and allocates the activations of m for batch B on the CPU. NULL with e set when out of
 * memory. */
fine_net *fine_net_plan(const fine_model *m, int B, fine_err *e);
/* The same on backend be (backend.h). On a device backend the net also holds the parameters
 * (send them with fine_net_load_params before the first forward), the input and the index
 * buffers; pointers it hands out (logits, parameters) are device memory. */
fine_net *fine_net_plan_on(const fine_backend *be, const fine_model *m, int B, fine_err *e); /* default level */
/* What a training net recomputes in the backward instead of keeping from the forward (per
 * block, fine_net.c): nothing; the GELU output; the MLP's LN2 output, fc1 and GELU output;
 * those and the attention's sequences, qkv, probabilities and output. Each level trades
 * memory for arithmetic; the gradients are the same at every level, bit for bit. */
enum { FINE_RECOMPUTE_NONE = 0, FINE_RECOMPUTE_GELU = 1, FINE_RECOMPUTE_MLP = 2, FINE_RECOMPUTE_ALL = 3 };
/* The default level on a backend: gelu on a GPU (bcv at batch 2 on an H200: 0.86 GB less than
 * none's 9.67 for 2.5% more time; mlp 7.73 GB and 7%, all 5.83 GB and 21%; README), none on the
 * CPU (all costs the tiny preset about 10%). */
int fine_recompute_default(const fine_backend *be);
/* "none", "gelu", "mlp", "all"; parse returns -1 for another name. */
const char *fine_recompute_name(int level);
int fine_recompute_parse(const char *name);
/* fine_net_plan_on at a recompute level. */
fine_net *fine_net_plan_train_on(const fine_backend *be, const fine_model *m, int B, int recompute, fine_err *e);
/* Bytes a training net at that level would allocate (recompute -1: an evaluation net). */
size_t fine_net_plan_train_bytes_on(const fine_backend *be, const fine_model *m, int B, int recompute);
/* An evaluation-only net: the same forward and logits with far less memory (block activations
 * are reused from block to block); fine_net_backward must not be called on it. */
fine_net *fine_net_plan_eval_on(const fine_backend *be, const fine_model *m, int B, fine_err *e);
/* Bytes fine_net_plan_on (eval 0) or fine_net_plan_eval_on (eval 1) would allocate. */
size_t fine_net_plan_bytes_on(const fine_backend *be, const fine_model *m, int B, int eval);
const fine_backend *fine_net_backend(const fine_net *n);
/* The parameters the net computes with: m->w on the CPU, the net's device copy otherwise. */
float *fine_net_params(fine_net *n, fine_model *m);
/* Device backends: copy m->w to the device (load) or back (store); no-ops on the CPU. 0 or -1. */
int fine_net_load_params(fine_net *n, const fine_model *m, fine_err *e);
int fine_net_store_params(fine_net *n, fine_model *m, fine_err *e);
/* Copies the logits of a head to host memory dst (fine_net_logits_numel floats). 0 or -1 with e
 * set when the backend reported a failure. */
int fine_net_logits_host(fine_net *n, int head, float *dst, fine_err *e);
void fine_net_free(fine_net *n);
/* Bytes fine_net_plan would allocate for batch B. */
size_t fine_net_plan_bytes(const fine_model *m, int B);
/* The recompute level n was planned at (evaluation nets: none). */
int fine_net_recompute(const fine_net *n);
/* Bytes of activations and scratch held by n. */
size_t fine_net_bytes(const fine_net *n);

/* Forward. x is host memory (uploaded by device backends). train: drop path on, with masks
 * drawn from dp_seed (reproducible). Updates m->vt_check as the reference does on every
 * forward (B 2.7). */
void fine_net_forward(fine_net *n, fine_model *m, const float *x, const int64_t *pos, int train,
                      uint64_t dp_seed);
/* Data parallelism: n computes samples [first, first + its B) of a batch of `batch` (0: off).
 * Its forward then draws the drop-path masks of the whole batch and uses its own, so the shards
 * of a batch together compute what one net of the whole batch computes, and leaves
 * m->vt_check alone: the caller counts the whole batch once with fine_vt_visit. */
void fine_net_set_shard(fine_net *n, int first, int batch);
/* The visitation counter of one forward of B crops at pos (B, 3) (B 2.7): +1 for each volume
 * token used by any of them, once per forward. */
void fine_vt_visit(fine_model *m, const int64_t *pos, int64_t B);
/* The logits of head 0 or 1 from the last forward, and their element counts. */
float *fine_net_logits(fine_net *n, int head);
int64_t fine_net_logits_numel(const fine_net *n, int head);
void fine_net_logits_shape(const fine_net *n, int head, int64_t shape[5]);

/* Backward of the last forward: grad (m->nfloats, the parameter layout) += dL/dparams given
 * dlogits of both heads (dlog1 may be NULL); dx (may be NULL) += dL/dx. All in the backend's
 * memory. */
void fine_net_backward(fine_net *n, const fine_model *m, float *grad, const float *dlog0,
                       const float *dlog1, float *dx);

/* FLOPs of one forward for batch B (multiply-adds count 2), from the layer shapes. */
double fine_net_forward_flops(const fine_model *m, int B);

#ifdef __cplusplus
}
#endif

#endif
