/* train_patch.h: training batches from preprocessed cases (fine-patch --train), as nnU-Net
 * v1's DataLoader3D and the FINE trainer make them (fine-reference A4, A8, B §3.1, §5.4, §5.5):
 *
 * - Cases (image f32 + label u8) are held in memory; each case's "class locations" (up to
 *   10,000 random voxels of every foreground class, at least 1 % of the class) are drawn once.
 * - Batch b draws from generator stream b of the seed (fine_rng_seed_stream), so a batch is
 *   the same whichever thread makes it. It picks B cases uniformly with replacement; sample k
 *   is forced to hold foreground iff k >= round(B * (1 - 0.33)).
 * - A sample's box is the enlarged basic patch P (fine_aug_basic_patch; 140,205,168 for a
 *   64,128,128 crop): a random box has its first voxel uniform in [lb, ub] per axis with
 *   need = P - crop (or P - size when the case is smaller), lb = -ceil(need/2),
 *   ub = size + floor(need/2) + need%2 - P; a forced one is centred on a random stored voxel of
 *   a random present class: lo = max(lb, v - P//2).
 * - pos = the centre of the box's in-image part minus the case centre (B §3.1, A4);
 *   origin = the first voxel of the crop before augmentation, lo + (P - crop)//2.
 * - The crop is then made by the augmentation (augment.h): spatial, intensity, mirroring. */
#ifndef FINE_TRAIN_PATCH_H
#define FINE_TRAIN_PATCH_H

#include <stdint.h>

#include "augment.h"
#include "error.h"
#include "rng.h"
#include "tensor.h"
#include "volume.h"

/* ---------------------------------------------------------------- cases */

typedef struct fine_train_case {
    char id[FINE_CASE_MAX];
    fine_tensor image;   /* f32 [z, y, x], owned */
    fine_tensor label;   /* u8 [z, y, x], owned */
    int64_t size[3];
    double spacing[2][3];/* of the image and the label volume (0: no geometry), for the check */
    int nclasses;        /* foreground classes present (label values 1..255) */
    uint8_t classes[255];/* their values, ascending */
    int64_t *locs[255];  /* per present class: stored voxel indices (z*Y + y)*X + x */
    int64_t nlocs[255];
} fine_train_case;

/* nnU-Net's class_locations (preprocessing.py: 10,000 samples per class, at least 1 %
 * coverage): for every foreground class with n voxels, max(min(10000, n), ceil(n * 0.01))
 * distinct voxels drawn uniformly without replacement from a generator seeded with `seed`
 * (the reference uses RandomState(1234) for every case). Returns 0 or -1 (out of memory). */
int fine_train_case_locations(fine_train_case *c, uint64_t seed, fine_err *e);
/* Frees tensors and locations; safe on a zeroed struct. */
void fine_train_case_free(fine_train_case *c);

/* ---------------------------------------------------------------- the sampler's rules */

/* 1 when sample k of a batch of B is forced to contain foreground: k >= round(B * (1 - p))
 * (Python's round, half to even), p = 0.33 in the reference. */
int fine_train_forced_fg(int k, int batch, double oversample);

/* The range [lb, ub] of a box's first voxel per axis, for a case of `size` (see above). */
void fine_train_box_bounds(const int64_t size[3], const int64_t box[3], const int64_t crop[3],
                           int64_t lb[3], int64_t ub[3]);

/* pos_d = valid_lo + (valid_hi - valid_lo)//2 - size_d//2 with the valid (in-image) part
 * [max(0, lo), min(size, lo + box)) of the box; floor divisions. */
void fine_train_pos(const int64_t lo[3], const int64_t box[3], const int64_t size[3], int64_t pos[3]);

/* Draws a box's first voxel for case c (random, or on foreground when force_fg and the case
 * has any; *fg_class is then the class, else 0). */
void fine_train_draw_box(const fine_train_case *c, int force_fg, const int64_t box[3],
                         const int64_t crop[3], fine_rng *rng, int64_t lo[3], int *fg_class);

/* ---------------------------------------------------------------- batches */

typedef struct fine_train_config {
    int64_t crop[3];      /* final patch (z, y, x) */
    int64_t box[3];       /* enlarged box, normally fine_aug_basic_patch(&aug, crop) */
    int batch;            /* patches per batch */
    double oversample;    /* foreground fraction, 0.33 */
    uint64_t seed;
    fine_aug_params aug;
} fine_train_config;

/* Defaults: crop 64,128,128, batch 2, oversample 0.33, seed 12345 (the reference's), the 3-D
 * augmentation, and the box from the crop. */
void fine_train_config_default(fine_train_config *cfg);

/* One training patch: buffers owned by the caller (crop voxels each), and what was drawn. */
typedef struct fine_train_patch {
    float *image;
    uint8_t *label;
    int case_index;
    int forced_fg, fg_class;
    int64_t box_lo[3], origin[3], pos[3];
    fine_aug_spatial spatial;
    fine_aug_applied applied;
} fine_train_patch;

/* Makes batch number batch_no (cfg->batch patches into out[0..batch)) from the cases.
 * Deterministic in (cfg, cases, batch_no). Returns 0 or -1 with e set. */
int fine_train_make_batch(const fine_train_config *cfg, const fine_train_case *cases, int ncases,
                          uint64_t batch_no, fine_train_patch *out, fine_aug_work *w, fine_err *e);

/* ---------------------------------------------------------------- the command */

/* `fine-patch --train [options] IN [-o OUT]`: the whole command, option parsing included
 * (argv may hold --train anywhere; --help describes this mode). Messages are prefixed with
 * `tool`. Returns the exit status (0, 1 failure, 2 usage). */
int fine_patch_train(int argc, char **argv, const char *tool);

#endif
