/* patch_grid.h: the sliding-window tiling of a case and the Gaussian importance map that
 * weighs the tiles' predictions when they are stitched back (fine-reference A10, B §3.2, §5.6;
 * nnU-Net v1 `SegmentationNetwork._compute_steps_for_sliding_window`, `_get_gaussian`,
 * batchgenerators `pad_nd_image`).
 *
 * Coordinates: axes (z, y, x). A case volume of size L (per axis) smaller than the patch P is
 * zero-padded to P, centred: pad_lo = (P - L) / 2 voxels before, the rest after. Tiles start at
 * the steps of the padded size; a tile's `origin` in the case volume is step - pad_lo (negative
 * when padded), its `pos` is step + P/2 - padded/2 (integer division, B §3.2). */
#ifndef FINE_PATCH_GRID_H
#define FINE_PATCH_GRID_H

#include <stdint.h>

#include "error.h"
#include "tensor.h"

/* The start positions of the tiles along one axis of length L >= P >= 1, for a step fraction
 * 0 < step <= 1 of the patch: n = ceil((L - P) / (P * step)) + 1 positions, round(i * (L - P) /
 * (n - 1)) (round half to even, as numpy), i = 0..n-1; one position 0 when L == P. Writes at
 * most cap positions to out and returns n (which may exceed cap: call with cap 0 to size), or
 * -1 with e set when the arguments are out of range. */
int64_t fine_grid_steps(int64_t L, int64_t P, double step, int64_t *out, int64_t cap, fine_err *e);

/* The padding that makes a case of size L at least P along one axis: lo = max(0, P - L) / 2
 * before, hi = max(0, P - L) - lo after (pad_nd_image). */
void fine_grid_pad(int64_t L, int64_t P, int64_t *lo, int64_t *hi);

/* The tiling of one case volume. */
typedef struct fine_grid {
    int64_t size[3];      /* the case volume (z, y, x) */
    int64_t patch[3];     /* tile size */
    int64_t pad_lo[3];    /* zero padding before the volume, per axis */
    int64_t padded[3];    /* size + padding = max(size, patch) */
    int64_t n[3];         /* tiles per axis */
    int64_t *steps[3];    /* n[d] start positions per axis, in padded coordinates (owned) */
    int64_t count;        /* n[0] * n[1] * n[2] */
} fine_grid;

/* Plans the tiles of a volume of `size` with patches of `patch` and step fraction `step`
 * (0.5 in the reference). Returns 0, or -1 with e set (sizes not positive, step out of range,
 * out of memory). Free with fine_grid_free. */
int fine_grid_plan(fine_grid *g, const int64_t size[3], const int64_t patch[3], double step,
                   fine_err *e);
void fine_grid_free(fine_grid *g);

/* Tile i (0 <= i < count) in the reference's order (axis z outermost, x innermost): its start
 * in padded coordinates (lb), its origin in the case volume (lb - pad_lo) and its pos
 * (lb + patch/2 - padded/2). Any output pointer may be NULL. */
void fine_grid_tile(const fine_grid *g, int64_t i, int64_t lb[3], int64_t origin[3], int64_t pos[3]);

/* Copies the box [origin, origin + box) of vol (a [z, y, x] tensor, any dtype; the last three
 * dimensions are used) into out (box[0] * box[1] * box[2] elements of vol's dtype, row-major),
 * with zeros where the box leaves the volume (constant-0 padding). */
void fine_grid_extract(const fine_tensor *vol, const int64_t origin[3], const int64_t box[3], void *out);

/* The Gaussian importance map of a tile of `patch` voxels (row-major, patch[0]*patch[1]*patch[2]
 * floats into out): an impulse at patch/2 filtered with scipy.ndimage.gaussian_filter semantics
 * (sigma = patch * sigma_scale per axis, truncate 4.0, constant-0 boundary), divided by its
 * maximum, rounded to f32, and every zero replaced by the smallest non-zero value. sigma_scale
 * is 1/8 in the reference. Returns 0, or -1 with e set (sizes not positive, out of memory). */
int fine_gaussian_map(const int64_t patch[3], double sigma_scale, float *out, fine_err *e);

/* The 1-D factor of the map along one axis before normalisation: scipy's gaussian_kernel1d
 * (radius int(4 sigma + 0.5), weights normalised to sum 1) applied to an impulse at P/2 with
 * zeros outside, i.e. w[i] = kernel[i - P/2 + radius] or 0. Writes P doubles. */
void fine_gaussian_1d(int64_t P, double sigma, double *w);

#endif
