/* resample.h: nnU-Net v1's resampling to a target spacing and back (fine-reference A7, A10,
 * B §6.1 step 4, B §5.6), reproduced exactly:
 *
 *  - The new size is round(size · spacing / target_spacing) per axis (471.6 -> 472).
 *  - "Separate z": when max/min of the original spacing is > 3, else when max/min of the target
 *    spacing is > 3, the low-resolution axis is the axis holding the largest spacing (of that
 *    spacing); none when two or three axes hold it (nnunet/preprocessing/preprocessing.py:
 *    resample_patient, get_do_separate_z, get_lowres_axis).
 *  - Images (order 3): every slice across the low-resolution axis is resized in-plane by cubic
 *    B-spline interpolation with the spline prefilter, edge extension and samples at pixel
 *    centres, which is skimage's resize(order=3, mode='edge', anti_aliasing=False) =
 *    scipy.ndimage.zoom(order=3, mode='nearest', grid_mode=True), and clipped to that slice's
 *    input min/max (skimage's clip); then the low-resolution axis is resampled by nearest
 *    neighbour: output slice j takes input slice floor(c + 0.5) clamped, c = (j + 0.5)·old/new
 *    − 0.5 (scipy.ndimage.map_coordinates(order=0, mode='nearest') at nnU-Net's coordinates).
 *    Without separate z the whole volume is resized in 3-D (order 3) and clipped to its min/max.
 *  - Labels: per-label linear in-plane (batchgenerators resize_segmentation order 1: for each
 *    label in ascending order, the label's 0/1 mask resized with order 1 and edge extension,
 *    voxels where it is >= 0.5 set to the label, so a later label overwrites; 0 where no label
 *    reaches 0.5), then nearest along the low-resolution axis; per-label trilinear in 3-D
 *    without separate z.
 *  - Probabilities back to the original grid (nnunet/inference/segmentation_export.py): order 1
 *    per channel, in-plane linear and nearest along the low-resolution axis with separate z,
 *    trilinear otherwise; then argmax and paste into the crop box.
 *
 * Arithmetic: coordinates and weights in double; the separable passes (prefilter, then 4-tap
 * interpolation, one axis at a time) in float. Against scipy in float64 the difference is
 * ~1e-6 of the value range (tests/unit/test_resample.c and tests/bats/resample.bats measure it).
 * Label decisions use double weights summed in scipy's order, so ties at 0.5 fall as scipy's.
 *
 * Threads: every function takes a thread count (1 = no threads started); the result does not
 * depend on it. */
#ifndef FINE_RESAMPLE_H
#define FINE_RESAMPLE_H

#include <stdint.h>

#include "error.h"
#include "volume.h"

/* nnunet/configuration.py: RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD */
#define FINE_SEPARATE_Z_THRESHOLD 3.0

typedef enum fine_interp {
    FINE_INTERP_NEAREST = 0, /* map_coordinates order 0 at pixel centres */
    FINE_INTERP_LINEAR = 1,  /* zoom order 1, grid_mode, edge */
    FINE_INTERP_CUBIC = 3,   /* zoom order 3 with prefilter, grid_mode, edge */
} fine_interp;

/* out[d] = round(size[d] · spacing[d] / new_spacing[d]) (half away from zero, as numpy's
 * round of a value that is never exactly .5 in practice), at least 1. */
void fine_resample_size(const int64_t size[3], const double spacing[3], const double new_spacing[3],
                        int64_t out[3]);

/* The low-resolution axis (0, 1 or 2) for resampling between original_spacing and
 * target_spacing with separate z, or -1 for a plain 3-D resize (see the rule above). The same
 * pair decides the way back (segmentation_export checks original, then resampled spacing). */
int fine_resample_lowres_axis(const double original_spacing[3], const double target_spacing[3]);

/* Resamples a float volume of shape in (z, y, x) into dst of shape out (allocated by the
 * caller, in[0]·in[1]·in[2] and out[0]·out[1]·out[2] floats, not overlapping src).
 * order FINE_INTERP_CUBIC or FINE_INTERP_LINEAR: with lowres_axis in 0..2, every slice
 * across that axis is resized in-plane with `order` and clipped to its input min/max, and the
 * axis itself is resampled by nearest neighbour; with lowres_axis -1 the volume is resized in
 * 3-D with `order` and clipped to its min/max. An axis whose size does not change is copied
 * (scipy's zoom there reproduces the input to rounding). Non-finite input gives undefined
 * values. Returns 0, or -1 with e set (out of memory, bad sizes). */
int fine_resample_f32(const float *src, const int64_t in[3], float *dst, const int64_t out[3], fine_interp order,
                      int lowres_axis, int threads, fine_err *e);

/* Resamples a label volume (u8) as nnU-Net resamples segmentations: per-label linear over
 * the axes other than lowres_axis and nearest along lowres_axis (0..2), or per-label trilinear
 * (lowres_axis -1). dst holds out[0]·out[1]·out[2] bytes. Returns 0 or -1 with e set. */
int fine_resample_labels_u8(const uint8_t *src, const int64_t in[3], uint8_t *dst, const int64_t out[3],
                            int lowres_axis, int threads, fine_err *e);

/* Resamples a case volume to target_spacing: the new size by fine_resample_size from its
 * current size and spacing, the separate-z choice by fine_resample_lowres_axis(current spacing,
 * target). An "image" (any numeric dtype) becomes f32 with order 3; a "label" or "seg"
 * (integer, values 0..255) becomes u8 with per-label linear. out gets the same case id, name
 * and geometry, except size = the new size and spacing = target_spacing; the crop box is
 * unchanged (the new voxel centres are spread over the same box, formats/STREAM.md 2.3).
 * A size that does not change on any axis copies the data exactly. Returns 0 or -1 with e
 * naming the case. */
int fine_volume_resample(const fine_volume *in, const double target_spacing[3], int threads, fine_volume *out,
                         fine_err *e);

/* The way back, for fine-resample --to-original and fine-stitch. `in` is a volume made on the
 * preprocessed grid of a case (geometry as fine_volume_resample leaves it: size, spacing =
 * target, original_size, original_spacing, crop box): a "prob" [C, z, y, x] (f32 or f16), a
 * "seg" or "label" [z, y, x] (integer, 0..255) or an "image" [z, y, x]. It is resampled to
 * the crop box's extent (prob: order 1 per channel, separate z as above; seg/label: per-label
 * linear and nearest, as forward; image: order 3) and pasted into the full original grid.
 * Outside the crop box: seg/label/image 0, prob 1 for channel 0 (background) and 0 for the
 * others, so every voxel stays a distribution and its argmax is the background, as nnU-Net
 * pastes its argmax with 0 outside. out: same case and name, dtype f32 for image, u8 for
 * seg/label, the input's dtype for prob; geometry: the original grid (size = original_size,
 * spacing = original_spacing, crop box = the whole grid), NIfTI fields kept, so
 * fine_nifti_write puts it exactly over the original image. Returns 0 or -1. */
int fine_resample_to_original(const fine_volume *in, int threads, fine_volume *out, fine_err *e);

/* The same for a "prob" volume, fused with nnU-Net's argmax (first maximum wins): out is a
 * "seg" (u8) on the original grid, 0 outside the crop box. Needs one crop-sized f32 channel
 * and one running maximum instead of C channels on the original grid. Returns 0 or -1. */
int fine_resample_to_original_argmax(const fine_volume *prob, int threads, fine_volume *out, fine_err *e);

#endif
