/* infer.h: class probabilities of patches from a model, as nnU-Net v1 predicts one tile
 * (fine-reference B 5.6, A4, A10): the full-resolution head's logits, a softmax over the
 * classes, and with test-time augmentation the mean of the 8 passes that mirror the input over
 * every subset of the axes (z, y, x), each pass's softmax mirrored back, weight 1/8; every pass
 * keeps the unmirrored crop position `pos`.
 *
 * Layouts: a patch is (C, z, y, x) f32, C order; probabilities (K, z, y, x) f32. */
#ifndef FINE_INFER_H
#define FINE_INFER_H

#include <stdint.h>

#include "error.h"
#include "nn/fine_model.h"

/* Axis bits of a mirroring: which of (z, y, x) a pass flips. 0..7 covers the 8 TTA passes. */
enum { FINE_MIRROR_Z = 1, FINE_MIRROR_Y = 2, FINE_MIRROR_X = 4 };

/* dst = src mirrored over the axes in `axes` (FINE_MIRROR_* bits), for C channels of dims
 * (z, y, x). dst and src must not overlap. Mirroring twice is the identity. */
void fine_mirror(float *dst, const float *src, int64_t C, const int64_t dims[3], unsigned axes);

/* acc += weight * (src mirrored over axes), src and acc (C, dims). */
void fine_mirror_accumulate(float *acc, const float *src, int64_t C, const int64_t dims[3], unsigned axes,
                            float weight);

/* A planned predictor for batches of up to `batch` patches of m's crop. */
typedef struct fine_infer fine_infer;

/* Plans the network for `batch` patches; tta: 8 mirrored passes instead of 1. NULL with e set
 * when out of memory. m must outlive the predictor; forwards update m->vt_check (B 2.7). */
fine_infer *fine_infer_new(fine_model *m, int batch, int tta, fine_err *e);
/* The same on backend be (backend.h): the network and its parameters live there; patches,
 * positions and probabilities stay in host memory. */
typedef struct fine_backend fine_backend;
fine_infer *fine_infer_new_on(const fine_backend *be, fine_model *m, int batch, int tta, fine_err *e);
void fine_infer_free(fine_infer *p);

/* Where patch b (0 <= b < batch) of the next run is put: in_chans x crop floats, and its
 * pos (3 values, z y x). */
float *fine_infer_input(fine_infer *p, int b);
int64_t *fine_infer_pos(fine_infer *p, int b);

/* Predicts the first n (1..batch) patches put; the remaining slots are padded with copies of
 * the first and their results discarded. Afterwards fine_infer_prob(p, b), b < n, holds
 * patch b's probabilities (num_classes x crop floats, valid until the next run). 0, or -1
 * with e set when the backend failed. */
int fine_infer_run(fine_infer *p, int n, fine_err *e);
const float *fine_infer_prob(const fine_infer *p, int b);

/* Elements per patch of the input and of the probabilities. */
int64_t fine_infer_in_numel(const fine_infer *p);
int64_t fine_infer_prob_numel(const fine_infer *p);

#endif
