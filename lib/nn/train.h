/* train.h: one training step of the FINE model (fine-reference B 5.2-5.3, A5, A9): Dice + CE
 * with deep supervision on the two heads, SGD with Nesterov momentum and weight decay (the
 * reference's optimizer) or AdamW (an option), global gradient-norm clipping, the poly
 * learning-rate schedule. The optimizer state lives in buffers of the parameter layout. */
#ifndef FINE_TRAIN_H
#define FINE_TRAIN_H

#include <stdint.h>

#include "error.h"
#include "nn/fine_model.h"
#include "nn/fine_net.h"
#include "nn/shards.h"
#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The optimizer: the reference's SGD, or AdamW (PyTorch's, betas 0.9 and 0.999, eps 1e-8,
 * decoupled weight decay), which learns this model's small classes in far fewer iterations. */
typedef enum { FINE_OPT_SGD = 0, FINE_OPT_ADAMW = 1 } fine_optimizer;

#define FINE_ADAMW_BETA1 0.9
#define FINE_ADAMW_BETA2 0.999
#define FINE_ADAMW_EPS 1e-8

/* "sgd" or "adamw"; -1 for another name. */
int fine_optimizer_parse(const char *name);
const char *fine_optimizer_name(int opt);

typedef struct fine_train_opts {
    int optimizer;                           /* fine_optimizer, FINE_OPT_SGD */
    double lr, momentum, weight_decay, clip; /* 0.01, 0.99 (SGD only), 3e-5, 12 */
    int epochs, iters_per_epoch;             /* 1000 x 250 for bcv */
    uint64_t seed;                           /* drop-path masks of iteration i use seed ^ i */
} fine_train_opts;

void fine_train_opts_init(fine_train_opts *o);

/* lr of epoch e: lr0 * (1 - e / epochs)^0.9 */
double fine_poly_lr(double lr0, int epoch, int epochs);

/* Per-class true positives, false positives and false negatives of an argmax segmentation,
 * accumulated over batches (the online evaluation of B 5.3). */
typedef struct fine_dice_counts {
    double tp[256], fp[256], fn[256];
} fine_dice_counts;

/* Adds the counts of argmax(logits) (B, K, L) against target (B, L) for the first nb samples. */
void fine_dice_count(fine_dice_counts *s, const float *logits, const uint8_t *target, int64_t nb,
                     int64_t K, int64_t L);
/* Global Dice per class 1..K-1 into per_class (NaN where the class occurs neither in the
 * target nor in the prediction); returns their mean over non-NaN classes (NaN if none). */
double fine_dice_global(const fine_dice_counts *s, int K, double *per_class);

typedef struct fine_backend fine_backend;

typedef struct fine_trainer {
    fine_net *net;           /* the net (shards: the first shard's) */
    /* Data parallelism on the CPU (shards.h, fine_shard_count at init): each shard's backward
     * into its own gradient buffer, the buffers summed in shard order. The step equals the
     * one-net step up to the order of the batch sums. */
    int shards;
    fine_net *part[FINE_MAX_SHARDS];       /* part[0] = net */
    float *part_grad[FINE_MAX_SHARDS];     /* part_grad[0] = grad */
    float *logits0, *logits1;              /* shards: the logits of the whole batch */
    const fine_backend *be;  /* where net, grad, momentum and the loss buffers live */
    int B;
    float *grad, *momentum;  /* m->nfloats each; momentum is AdamW's first moment */
    float *momentum_host;    /* the momentum the checkpoint reads and writes (= momentum on the CPU) */
    float *moment2, *moment2_host; /* AdamW's second moment (NULL for SGD), as momentum */
    uint8_t *labels;         /* device backends: the uploaded labels */
    float *probs, *dlog0, *dlog1; /* head-sized work buffers */
    uint8_t *target1;        /* labels downsampled for head 1 */
    int64_t iteration;       /* completed iterations */
    fine_dice_counts train;  /* argmax of head 0 on the training batches since the last reset */
    double val_ema, val_best; /* moving average (alpha 0.9) of the validation Dice and its best; NaN before */
    /* Dynamic loss scaling (fp16 training; fine_trainer_set_loss_scaling): the loss's gradient
     * is multiplied by loss_scale (0: off) and the parameter gradients divided by it before
     * clipping; a step whose gradient is not finite changes no parameter and halves the
     * scale, FINE_SCALE_GROWTH finite steps in a row double it (PyTorch's GradScaler). */
    double loss_scale;
    int64_t scale_good;      /* finite steps since the scale last changed */
    int64_t skipped;         /* steps skipped for a non-finite gradient */
} fine_trainer;

#define FINE_SCALE_INIT 65536.0 /* 2^16, GradScaler's initial scale */
#define FINE_SCALE_GROWTH 2000

/* Plans the network and the optimizer buffers for batch B on the CPU, or on backend be. */
int fine_trainer_init(fine_trainer *t, const fine_model *m, int B, fine_err *e);
int fine_trainer_init_on(fine_trainer *t, const fine_backend *be, const fine_model *m, int B, fine_err *e);
/* The same with the net's recompute level (fine_net.h; init_on: fine_recompute_default), or
 * with recompute -1 (auto) the default level, and the next ones while the activations and the
 * optimizer's buffers do not fit in the backend's memory. */
int fine_trainer_init_ex(fine_trainer *t, const fine_backend *be, const fine_model *m, int B, int recompute,
                         fine_err *e);
void fine_trainer_free(fine_trainer *t);
/* Allocates the buffers optimizer opt needs beyond the momentum (AdamW: the second moment,
 * zeroed); call after init and before push or read_state. 0 or -1 (out of memory). */
int fine_trainer_set_optimizer(fine_trainer *t, const fine_model *m, int opt, fine_err *e);
/* Turns dynamic loss scaling on (scale FINE_SCALE_INIT) or off. Scaling by powers of two is
 * exact in fp32, so on fp32 data it changes no update unless a gradient overflows. */
void fine_trainer_set_loss_scaling(fine_trainer *t, int on);
/* Device backends keep parameters and momentum on the device: push sends m->w and the host
 * momentum there (after init or a resume), pull brings them back (before a checkpoint is
 * written). No-ops on the CPU. 0 or -1. */
int fine_trainer_push(fine_trainer *t, const fine_model *m, fine_err *e);
int fine_trainer_pull(fine_trainer *t, fine_model *m, fine_err *e);
/* 0, or -1 with e set when the backend reported a failure since the last check. */
int fine_trainer_check(fine_trainer *t, fine_err *e);

/* One iteration on x (B, C, crop) and labels (B, crop): forward in training mode, loss, backward,
 * clipping, the optimizer of o at learning rate lr. Returns the loss (weighted sum over the two
 * heads) and sets *grad_norm to the norm before clipping (NaN for a step loss scaling skipped).
 * AdamW needs fine_trainer_set_optimizer first: without it nothing is updated and the result is
 * NaN. */
double fine_train_step(fine_trainer *t, fine_model *m, const fine_train_opts *o, const float *x,
                       const uint8_t *labels, const int64_t *pos, double lr, double *grad_norm);

/* Global Dice of the training batches since the last reset (mean over non-NaN classes), and
 * reset. */
double fine_trainer_dice(fine_trainer *t, int K, int reset);

/* Evaluation-mode forward of x (B, C, crop) and the Dice counts of head 0 against labels for
 * the first nb <= B samples (the others are computed and ignored). Updates vt_check as every
 * forward of the reference does (B 2.7). */
void fine_trainer_eval(fine_trainer *t, fine_model *m, const float *x, const uint8_t *labels,
                       const int64_t *pos, int nb, fine_dice_counts *s);

/* Folds one epoch's validation Dice into the moving average as nnU-Net v1 does
 * (ema = 0.9 ema + 0.1 dice, the first epoch's dice as start). Returns 1 when the average is a
 * new best (the best checkpoint is then due), else 0. */
int fine_trainer_val_update(fine_trainer *t, double dice);

/* The `train_state` record of a checkpoint: iteration, epoch, options (the optimizer among them),
 * validation average and best, momentum buffer (and AdamW's second moment). */
int fine_trainer_write_state(fine_writer *w, const fine_trainer *t, const fine_model *m,
                             const fine_train_opts *o, int epoch, fine_err *e);
/* Reads a train_state record into t (momentum, iteration) and o; allocates AdamW's second moment
 * when the state has one (a state without `optimizer` is SGD's). 0 or -1. */
int fine_trainer_read_state(const fine_record *r, fine_trainer *t, const fine_model *m,
                            fine_train_opts *o, int *epoch, fine_err *e);

#ifdef __cplusplus
}
#endif

#endif
