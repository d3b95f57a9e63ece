/* normalize.h: intensity normalisation of CT volumes (fine-reference A7, B §6.1 step 5;
 * nnU-Net v1 `DatasetAnalyzer.collect_intensity_properties`, `_get_voxels_in_foreground`,
 * `_compute_stats` and `GenericPreprocessor.resample_and_normalize`).
 *
 * Schemes:
 *   ct      statistics pooled over the training cases: every 10th foreground voxel (label > 0)
 *           of each case, in C order, at the original spacing after cropping; lower = p0.5,
 *           upper = p99.5 (numpy `percentile`, linear), mean and std (population) of that sample.
 *           Applied as clip(x, lower, upper), then (x - mean) / std.
 *   zscore  per case: (x - mean) / (std + 1e-8) with the mean and std of the whole image
 *           (nnU-Net's non-CT scheme without the nonzero mask).
 *   none    the values unchanged (as f32).
 * The arithmetic of the apply step is f32, as nnU-Net's numpy arithmetic on f32 arrays
 * (the statistics are rounded to f32 first); the statistics are computed in double. */
#ifndef FINE_NORMALIZE_H
#define FINE_NORMALIZE_H

#include <stdint.h>

#include "error.h"
#include "tensor.h"

typedef enum fine_norm_scheme { FINE_NORM_NONE, FINE_NORM_CT, FINE_NORM_ZSCORE } fine_norm_scheme;

/* "none", "ct", "zscore" <-> the enum. Parse returns 0, or -1 for an unknown name. */
int fine_norm_scheme_parse(const char *name, fine_norm_scheme *out);
const char *fine_norm_scheme_name(fine_norm_scheme s);

typedef struct fine_norm_stats {
    fine_norm_scheme scheme;
    /* ct: what the apply step uses */
    double lower, upper, mean, std;
    /* ct: more about the pooled sample (informative) */
    double median, min, max;
    int64_t count;
} fine_norm_stats;

/* ---------------------------------------------------------------- fitting (ct) */

/* The pooled foreground sample. Zero-initialise, add cases, compute, free. */
typedef struct fine_fg_sample {
    double *v;
    int64_t n, cap;
} fine_fg_sample;

/* Appends every 10th voxel of image among those whose label is > 0, in C order (numpy
 * `image[label > 0][::10]`). image and label must have the same shape (any dtypes; the label
 * integral). Returns the number of foreground voxels of the case (>= 0), or -1 with e set
 * (shapes differ, out of memory). NaN image values are an error. */
int64_t fine_fg_sample_add(fine_fg_sample *s, const fine_tensor *image, const fine_tensor *label,
                           fine_err *e);
void fine_fg_sample_free(fine_fg_sample *s);

/* The ct statistics of the sample (reorders s->v). Fails when the sample is empty. */
int fine_fg_sample_stats(fine_fg_sample *s, fine_norm_stats *st, fine_err *e);

/* The q-th percentile (0 <= q <= 100) of v[0..n), n >= 1, as numpy.percentile(v, q) with the
 * default linear method: index (n - 1) * q / 100 between the two order statistics around it,
 * found by selection (v is reordered, not sorted). */
double fine_norm_percentile(double *v, int64_t n, double q);

/* Mean and population standard deviation (numpy mean, std) of v[0..n), in double, two passes. */
void fine_norm_mean_std(const double *v, int64_t n, double *mean, double *std);

/* ---------------------------------------------------------------- applying */

/* Normalises in (any dtype, any shape) into out (allocated here, f32, same shape) with the
 * scheme of st; for zscore the case's own mean and std are computed (in double) and returned
 * in *mean and *std (either may be NULL); for ct they are st's. Returns 0, or -1 with e set
 * (out of memory; ct with std <= 0). */
int fine_norm_apply(const fine_tensor *in, const fine_norm_stats *st, fine_tensor *out,
                    double *mean, double *std, fine_err *e);

#endif
