/* crop.h: crop a case to its non-zero box, as nnU-Net v1 does before resampling
 * (nnunet/preprocessing/cropping.py: crop_to_nonzero; fine-reference B §6.1 step 1).
 *
 * The mask is "image != 0" with its holes filled (scipy.ndimage.binary_fill_holes: background
 * voxels not 6-connected to the array border become foreground); the box is the mask's bounding
 * box. Filling holes never moves a bounding box (a hole lies between foreground voxels on every
 * axis), so the box equals the box of the non-zero voxels; the filled mask itself is what
 * nnU-Net writes as -1 into the label outside the body, and what a non-CT normalisation with
 * use_nonzero_mask needs. The box is kept in the geometry (crop_lo, crop_hi of the original
 * grid) so every later stage can put a result back (fine_resample_to_original). */
#ifndef FINE_CROP_H
#define FINE_CROP_H

#include <stdint.h>

#include "error.h"
#include "tensor.h"
#include "volume.h"

/* Fills the holes of a binary mask (0 or 1 bytes) of shape (z, y, x) in place: every 0 voxel
 * that is not connected to the border of the array through 0 voxels, with 6-connectivity
 * (scipy's default structure), becomes 1. Memory: a stack of voxel runs, at most a few bytes
 * per background voxel. Returns 0, or -1 with e set when out of memory. */
int fine_fill_holes(uint8_t *mask, const int64_t size[3], fine_err *e);

/* The non-zero mask of a 3-D tensor of any dtype (1 where the value is not 0; NaN counts as
 * non-zero, as numpy's != 0), holes filled. mask must hold numel bytes. Returns 0 or -1. */
int fine_nonzero_mask(const fine_tensor *t, uint8_t *mask, fine_err *e);

/* The bounding box of the 1 voxels of a mask: lo inclusive, hi exclusive, (z, y, x).
 * Returns 1 when the mask has a 1 voxel, 0 when it is empty (lo = hi = 0). */
int fine_mask_box(const uint8_t *mask, const int64_t size[3], int64_t lo[3], int64_t hi[3]);

/* The crop box of a 3-D image: the box of its filled non-zero mask (fine_nonzero_mask, then
 * fine_mask_box). Fails with "image is empty (no non-zero voxel)" when every value is 0, and
 * with "non-finite intensity (NaN or inf) at voxel (z, y, x)" when a value is NaN or infinite:
 * fine refuses such data instead of zeroing the NaNs as nnU-Net does (B §6.1 step 4), so a
 * broken scan is noticed. Returns 0 or -1 with e set. */
int fine_crop_box(const fine_tensor *image, int64_t lo[3], int64_t hi[3], fine_err *e);

/* dst = src[lo:hi] (last three axes; a leading channel axis of a 4-D tensor is kept), converted
 * to dtype `to` (as fine_tensor_convert: rounding and saturating into integers). dst is
 * allocated. Returns 0 or -1 with e set (a box outside the array is an error). */
int fine_crop_tensor(const fine_tensor *src, const int64_t lo[3], const int64_t hi[3], fine_dtype to,
                     fine_tensor *dst, fine_err *e);

/* Crops a volume in place to the box lo..hi of its current array (converting its data to `to`,
 * or keeping the dtype when to < 0) and updates the geometry: size, and the crop box in the
 * original grid. The volume's array must be a plain crop of the original grid (size equal to
 * its crop box's extent: not resampled), otherwise the call fails. Returns 0 or -1. */
int fine_volume_crop(fine_volume *v, const int64_t lo[3], const int64_t hi[3], int to, fine_err *e);

#endif
