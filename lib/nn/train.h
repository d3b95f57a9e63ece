/* train.h: one training step of the FINE model (fine-reference B 5.2-5.3, A5, A9): Dice + CE
 * with deep supervision on the two heads, SGD with Nesterov momentum and weight decay, global
 * gradient-norm clipping, the poly learning-rate schedule. The optimizer state lives in one
 * buffer of the parameter layout. */
#ifndef FINE_TRAIN_H
#define FINE_TRAIN_H

#include <stdint.h>

#include "error.h"
#include "nn/fine_model.h"
#include "nn/fine_net.h"
#include "stream.h"

typedef struct fine_train_opts {
    double lr, momentum, weight_decay, clip; /* 0.01, 0.99, 3e-5, 12 */
    int epochs, iters_per_epoch;             /* 1000 x 250 for bcv */
    uint64_t seed;                           /* drop-path masks of iteration i use seed ^ i */
} fine_train_opts;

void fine_train_opts_init(fine_train_opts *o);

/* lr of epoch e: lr0 * (1 - e / epochs)^0.9 */
double fine_poly_lr(double lr0, int epoch, int epochs);

typedef struct fine_trainer {
    fine_net *net;
    int B;
    float *grad, *momentum;  /* m->nfloats each */
    float *probs, *dlog0, *dlog1; /* head-sized work buffers */
    uint8_t *target1;        /* labels downsampled for head 1 */
    int64_t iteration;       /* completed iterations */
    /* per-class tp/fp/fn of the argmax of head 0 since the last reset (online Dice, B 5.3) */
    double tp[256], fp[256], fn[256];
} fine_trainer;

int fine_trainer_init(fine_trainer *t, const fine_model *m, int B, fine_err *e);
void fine_trainer_free(fine_trainer *t);

/* One iteration on x (B, C, crop) and labels (B, crop): forward in training mode, loss, backward,
 * clipping, SGD at learning rate lr. Returns the loss (weighted sum over the two heads) and sets
 * *grad_norm to the norm before clipping. */
double fine_train_step(fine_trainer *t, fine_model *m, const fine_train_opts *o, const float *x,
                       const uint8_t *labels, const int64_t *pos, double lr, double *grad_norm);

/* Global Dice over the classes 1..K-1 seen since the last reset (mean over classes that
 * occurred), and reset. */
double fine_trainer_dice(fine_trainer *t, int K, int reset);

/* The `train_state` record of a checkpoint: iteration, epoch, options, momentum buffer. */
int fine_trainer_write_state(fine_writer *w, const fine_trainer *t, const fine_model *m,
                             const fine_train_opts *o, int epoch, fine_err *e);
/* Reads a train_state record into t (momentum, iteration) and o; 0 or -1. */
int fine_trainer_read_state(const fine_record *r, fine_trainer *t, const fine_model *m,
                            fine_train_opts *o, int *epoch, fine_err *e);

#endif
