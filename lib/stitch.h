/* stitch.h: the sliding-window predictions of a case back into one volume (fine-reference A10,
 * B §5.6; nnU-Net v1 `_internal_predict_3D_3Dconv_tiled` and
 * `segmentation_export.save_segmentation_nifti_from_softmax`).
 *
 * Each tile's probabilities p (K classes) are weighted by the Gaussian importance map g of the
 * tile size (lib/patch_grid.h) and summed, with the weights, into the case volume; the
 * probabilities are Σ(p·g) / Σ(g). Tiles are placed at their origin in the case volume; the
 * parts of a tile outside the volume (the zero padding of a case smaller than the patch) are
 * dropped, which is nnU-Net's "aggregate on the padded volume, then crop the padding off".
 * When a case has a single tile, nnU-Net weighs it by ones instead of the Gaussian; so does
 * fine_stitch_begin with gaussian = 0. Sums are f32, as the reference's numpy arrays. */
#ifndef FINE_STITCH_H
#define FINE_STITCH_H

#include <stdint.h>

#include "error.h"
#include "geometry.h"
#include "tensor.h"

typedef struct fine_stitch {
    int64_t size[3];    /* the case volume (z, y, x) */
    int64_t classes;    /* K, known from the first tile */
    int gaussian;       /* 1: Gaussian weights; 0: unit weights */
    int threads;
    float *acc;         /* K * numel: Σ p·g */
    float *wsum;        /* numel: Σ g */
    int64_t patch[3];   /* the tile size the cached map is for */
    float *gmap;        /* the cached weight map */
    float *f16;         /* f16 -> f32 table (65536 entries), made at the first f16 tile */
    int64_t tiles;      /* tiles added so far */
} fine_stitch;

/* Starts a case of `size` voxels. gaussian: 1 for the importance map, 0 for unit weights.
 * threads >= 1. The buffers are allocated at the first tile (when K is known). Returns 0 or
 * -1 with e set. */
int fine_stitch_begin(fine_stitch *s, const int64_t size[3], int gaussian, int threads, fine_err *e);

/* Adds one tile: pred is [K, z, y, x] f16 or f32; origin is the tile's first voxel in the case
 * volume (may be negative, and the tile may extend past the volume). With logits, a softmax
 * over the K channels is applied first. Fails when K differs from earlier tiles or the tile does
 * not overlap the volume (a value that is not finite is reported by fine_stitch_finish). */
int fine_stitch_add(fine_stitch *s, const fine_tensor *pred, const int64_t origin[3], int logits,
                    fine_err *e);

/* Ends the case: prob becomes the [K, z, y, x] f32 probabilities Σ(p·g)/Σ(g) (the buffer
 * moves into prob, owned by it). Fails when no tile was added, some voxel was covered by none
 * (naming the first one), or a prediction held a value that is not finite. s is freed either
 * way. */
int fine_stitch_finish(fine_stitch *s, fine_tensor *prob, fine_err *e);

/* Frees the buffers (safe on a zeroed or finished struct). */
void fine_stitch_free(fine_stitch *s);

/* The index of the largest of the K channels of prob ([K, z, y, x], f32) per voxel, the first
 * one on ties (numpy argmax), into seg (allocated here, u8 [z, y, x]). K must be <= 256. */
int fine_argmax_u8(const fine_tensor *prob, fine_tensor *seg, fine_err *e);

/* A crop-box result back on the original grid of g: crop ([z, y, x], or [C, z, y, x] for
 * probabilities; any dtype; the spatial size of g's crop box) pasted at g->crop_lo into a new
 * tensor out of g->original_size (with the channel axis kept), filled outside the box with 0,
 * except channel 0 of a 4-D tensor, filled with fill0 (1 for probabilities: outside the box
 * every voxel is background, as nnU-Net pastes its argmax into zeros). The parts of the box past
 * the original grid are dropped (nnU-Net clips the box). Returns 0 or -1 with e set. */
int fine_paste_crop(const fine_tensor *crop, const fine_geometry *g, double fill0, fine_tensor *out,
                    fine_err *e);

/* The geometry of g's original grid (size and spacing the original ones, crop box the whole
 * grid), and that of g's crop box at the original spacing (size = the crop box extent). */
void fine_stitch_original_geometry(const fine_geometry *g, fine_geometry *out);
void fine_stitch_crop_geometry(const fine_geometry *g, fine_geometry *out);

/* 1 when g's current grid is its crop box voxel for voxel (size = crop box extent): nothing
 * to resample back. */
int fine_stitch_is_unresampled(const fine_geometry *g);

#endif
