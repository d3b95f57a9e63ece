/* metrics.h: how well one label volume matches another, per label: Dice, and the surface
 * distances HD95 and ASSD in millimetres, computed as medpy's `hd95` and `assd`
 * (medpy.metric.binary) compute them with a voxel spacing, under nnU-Net's NaN conventions
 * (fine-reference A11, B 6.3).
 *
 * Definitions (a = prediction mask, b = reference mask, both on the same (z, y, x) grid):
 *   Dice   = 2 TP / (2 TP + FP + FN); NaN when both masks are empty.
 *   border = the mask voxels that are not in its erosion by the 6-connected cross
 *            (scipy.ndimage.binary_erosion with generate_binary_structure(3, 1); voxels outside
 *            the array count as background, so a mask touching the array's edge has a border
 *            there).
 *   d(a->b)= for every border voxel of a, the Euclidean distance in mm (voxel index
 *            differences times the spacing) to the nearest border voxel of b.
 *   HD95   = the 95th percentile (numpy's default, linear interpolation) of d(a->b) and
 *            d(b->a) pooled.
 *   ASSD   = (mean d(a->b) + mean d(b->a)) / 2.
 *   HD95 and ASSD are NaN when either mask is empty or fills the whole array (nnU-Net's
 *   convention; medpy itself raises on an empty mask and computes full ones).
 *
 * Distances come from an exact Euclidean distance transform (Felzenszwalb and Huttenlocher's
 * separable lower envelope of parabolas, with each axis' spacing). Work per label is confined to
 * the bounding box of the two masks together, which changes no result: every border voxel, and
 * so every distance that counts, lies inside it. No state, no threads: callers run cases in
 * parallel. */
#ifndef FINE_METRICS_H
#define FINE_METRICS_H

#include <stdint.h>

#include "error.h"
#include "tensor.h"

/* Squared Euclidean distance transform: out[i] = the squared distance in mm^2 from voxel i to the
 * nearest voxel f with feature[f] != 0 (0 on feature voxels), +INFINITY everywhere when there is
 * none. shape is (z, y, x), spacing (z, y, x) in mm (positive). The result is exact up to the
 * rounding of one sum of three squares. Returns 0, or -1 with e set when out of memory. */
int fine_edt_sq(const uint8_t *feature, const int64_t shape[3], const double spacing[3], double *out,
                fine_err *e);

/* border[i] = 1 where mask[i] != 0 and at least one of its six face neighbours is background
 * or outside the array, else 0. Returns the number of border voxels. */
int64_t fine_mask_border(const uint8_t *mask, const int64_t shape[3], uint8_t *border);

/* The q-th percentile (0..100) of v[0..n) as numpy.percentile computes it by default: the
 * sorted values interpolated linearly at rank q/100 * (n - 1). Reorders v. NaN when n == 0. */
double fine_percentile(double *v, int64_t n, double q);

/* HD95 and ASSD of two masks (any non-zero byte is inside) as medpy computes them, without
 * nnU-Net's NaN rule for full masks: NaN for both when either mask is empty. Also the two
 * directed mean distances (asd_ab = mean d(a->b)) and the plain Hausdorff distance (the largest
 * distance). Returns 0, or -1 with e set when out of memory. */
typedef struct fine_surface_dist {
    double hd95, assd, asd_ab, asd_ba, hd;
    int64_t border_a, border_b; /* border voxel counts */
} fine_surface_dist;

int fine_surface_distances(const uint8_t *a, const uint8_t *b, const int64_t shape[3],
                           const double spacing[3], fine_surface_dist *out, fine_err *e);

/* The metrics of one label in one case. */
typedef struct fine_label_metrics {
    int64_t label;
    int64_t tp, fp, fn;         /* voxel counts */
    int64_t n_pred, n_ref;      /* voxels of the label in the prediction / the reference */
    double dice, hd95, assd;    /* NaN as described above */
} fine_label_metrics;

/* The most labels one call compares. */
#define FINE_METRICS_MAX_LABELS 255

/* Compares the label volumes pred and ref (3-D, the same shape, any dtype; a voxel belongs to
 * label L when its value equals L exactly) for each of the nlabels distinct labels, at the
 * given (z, y, x) spacing in mm. out[k] is filled for labels[k]. One pass over the volumes
 * counts every label; the surface distances of each label work in that label's bounding box.
 * Temporary memory: 2 bytes per voxel plus about 12 bytes per voxel of the largest box.
 * Returns 0, or -1 with e set (shapes differ, not 3-D, too many or repeated labels, out of
 * memory). */
int fine_label_metrics_compute(const fine_tensor *pred, const fine_tensor *ref, const double spacing[3],
                               const int64_t *labels, int nlabels, fine_label_metrics *out, fine_err *e);

#endif
