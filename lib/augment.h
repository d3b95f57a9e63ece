/* augment.h: the data augmentation of the training recipe (fine-reference A8, B §5.4: nnU-Net
 * v1 "moreDA" with the FINE trainer's overrides), as plain functions with explicit parameters
 * and an explicit random generator.
 *
 * Arrays are row-major (z, y, x), one channel. The order of a training sample's steps is the
 * reference's: spatial (rotation, scaling, centre crop) -> Gaussian noise -> Gaussian blur ->
 * multiplicative brightness -> contrast -> simulated low resolution -> inverted gamma -> gamma
 * -> mirroring. Each step is a function below; fine_aug_draw_spatial and fine_aug_intensity
 * draw the random choices with the reference's probabilities and call them.
 *
 * Spatial semantics (batchgenerators augment_spatial with random_crop False):
 * - The source is the enlarged "basic patch" box of the case (fine_aug_basic_patch), which may
 *   overhang the image: image values outside the image are 0, labels -1 (nnU-Net's loader pad).
 * - Output voxel i (per axis d) has the offset o_d = i_d - (crop_d - 1)/2; its box coordinate is
 *   p = centre + m * o with centre_d = box_d/2 - 0.5, m = scale * R^T and
 *   R = Rx(a0) Ry(a1) Rz(a2) (rotations about array axes 0, 1, 2 as batchgenerators builds them).
 * - The image is a cubic B-spline of the box (scipy map_coordinates order 3 with prefilter:
 *   mirror boundaries at the box faces); a coordinate outside [0, box_d - 1] on any axis gives 0.
 * - The label is linear per label (batchgenerators interpolate_img with is_seg): each label's
 *   indicator is interpolated trilinearly and a voxel takes the largest label whose weight is
 *   >= 0.5, else 0; coordinates outside the box give 0. The reference's -1 (outside the image)
 *   then becomes 0 (RemoveLabelTransform); with that rule treating outside voxels as 0 is the
 *   same thing, so labels never hold a class that is not in the source.
 * - When neither rotation nor scaling is drawn, the step is a plain centre crop of the box
 *   (start (box - crop) / 2, rounded down), as batchgenerators does; no interpolation.
 * - Dummy-2D ("planar"): the box has crop_0 slices and each slice is rotated and scaled in the
 *   (y, x) plane on its own (2-D spline prefilter, no interpolation along z). */
#ifndef FINE_AUGMENT_H
#define FINE_AUGMENT_H

#include <stdint.h>

#include "error.h"
#include "rng.h"

/* ---------------------------------------------------------------- the recipe */

typedef struct fine_aug_params {
    int planar;              /* dummy-2D augmentation (rotation and scaling per z slice) */
    /* spatial */
    double p_rot;            /* per sample */
    double p_rot_axis;       /* per axis once rotating (1: every axis gets an angle) */
    double rot[3][2];        /* angle ranges (radians) about array axes 0, 1, 2; planar: [0] only */
    double p_scale;          /* per sample */
    double scale[2];         /* one factor for all axes; with prob. 1/2 from [lo, 1), else [1, hi) */
    double basic_scale_min;  /* the smallest scale the enlarged-box rule assumes (0.85) */
    /* intensity */
    double p_noise, noise_std[2];                      /* std uniform in the range, per sample */
    double p_blur, p_blur_channel, blur_sigma[2];      /* isotropic sigma (voxels) */
    double p_brightness, brightness[2];                /* multiplier range */
    double p_contrast, contrast[2];                    /* factor, halves like scale */
    int contrast_preserve_range;
    double p_lowres, p_lowres_channel, lowres_zoom[2]; /* down with order 0, up with order 3 */
    double p_gamma_invert, p_gamma, gamma[2];          /* gamma halves like scale */
    int gamma_retain_stats;
    double p_mirror;                                   /* per axis */
} fine_aug_params;

/* The 3-D branch of B §5.4 (planar 0) or its dummy-2D branch (planar 1: in-plane rotation
 * +-180 degrees, low resolution never along z). */
void fine_aug_params_default(fine_aug_params *p, int planar);
/* Every probability 0 (ranges kept, so the enlarged box is the same as with the defaults). */
void fine_aug_params_off(fine_aug_params *p);
/* Rotation and scaling only: intensity and mirroring probabilities 0. */
void fine_aug_params_spatial_only(fine_aug_params *p);

/* The enlarged ("basic generator") patch for a final crop: nnU-Net's get_patch_size with the
 * largest angle of each rotation range (capped at 90 degrees), the box of the crop rotated
 * about each axis alone, divided by basic_scale_min and truncated. Planar: axis 0 is the crop's,
 * the in-plane size uses rot[0]. 3-D defaults and crop 64,128,128 give 140,205,168; planar
 * gives 64,150,150. */
void fine_aug_basic_patch(const fine_aug_params *p, const int64_t crop[3], int64_t box[3]);

/* ---------------------------------------------------------------- spatial step */

/* The enlarged box of a case. */
typedef struct fine_aug_source {
    const float *image;     /* case image [z, y, x] */
    const uint8_t *label;   /* case label, same shape; NULL: no label */
    int64_t size[3];        /* case size */
    int64_t box_lo[3];      /* the box's first voxel in case coordinates (may be negative) */
    int64_t box_size[3];    /* its size (>= the crop on every axis) */
} fine_aug_source;

/* The spatial choices for one sample. */
typedef struct fine_aug_spatial {
    int rotated, scaled;    /* what was drawn; neither: plain centre crop */
    double angle[3];        /* radians about axes 0, 1, 2 (planar: angle[0], in the y-x plane) */
    double scale;
    double m[3][3];         /* box offset = m * output offset */
} fine_aug_spatial;

/* Scratch memory of the transforms, grown on demand and reused (one per thread). */
typedef struct fine_aug_work fine_aug_work;
fine_aug_work *fine_aug_work_new(void);
void fine_aug_work_free(fine_aug_work *w);

/* m = scale * R^T for the angles (planar: the 2-D rotation by angle[0] in (y, x), axis 0 fixed). */
void fine_aug_spatial_matrix(int planar, const double angle[3], double scale, double m[3][3]);

/* Draws rotation and scaling as batchgenerators does (p_rot, then an angle per axis with
 * p_rot_axis, then p_scale) and fills s (m included). */
void fine_aug_draw_spatial(const fine_aug_params *p, fine_rng *rng, fine_aug_spatial *s);

/* The plain centre crop of the box: image outside the case 0, label 0. */
int fine_aug_crop(const fine_aug_source *src, const int64_t crop[3], float *image, uint8_t *label,
                  fine_err *e);

/* The resampled crop for matrix m (see the top of this file). label may be NULL. planar needs
 * box_size[0] == crop[0] and m's row and column 0 equal to the unit vector. Returns 0, or -1
 * with e set (out of memory, bad sizes). */
int fine_aug_resample(const fine_aug_source *src, const double m[3][3], int planar,
                      const int64_t crop[3], float *image, uint8_t *label, fine_aug_work *w,
                      fine_err *e);

/* ---------------------------------------------------------------- intensity steps */

/* x += N(0, std^2) (GaussianNoiseTransform: std drawn uniformly from its range). */
void fine_aug_noise(float *x, int64_t n, double std, fine_rng *rng);
/* scipy gaussian_filter(x, sigma) (truncate 4, mode reflect), axis by axis, f32 between axes. */
int fine_aug_blur(float *x, const int64_t size[3], double sigma, fine_aug_work *w, fine_err *e);
/* x *= factor. */
void fine_aug_brightness(float *x, int64_t n, double factor);
/* x = (x - mean) * factor + mean, then clipped to the old [min, max] when preserve_range. */
void fine_aug_contrast(float *x, int64_t n, double factor, int preserve_range);
/* Simulated low resolution: resize to `down` with order 0, back with order 3 (skimage resize,
 * mode edge, no anti-aliasing, clipped to the low-resolution range), i.e. scipy zoom with
 * grid_mode=True and mode nearest. */
int fine_aug_lowres(float *x, const int64_t size[3], const int64_t down[3], fine_aug_work *w,
                    fine_err *e);
/* Gamma (batchgenerators augment_gamma, per channel): invert -> x = ((x - min)/(r + 1e-7))^gamma
 * * (r + 1e-7) + min with r = max - min -> restore mean and std when retain_stats -> invert. */
void fine_aug_gamma(float *x, int64_t n, double gamma, int invert, int retain_stats);
/* Reverses axis `axis` of image (and label when not NULL). */
void fine_aug_mirror(float *image, uint8_t *label, const int64_t size[3], int axis);

/* What fine_aug_intensity applied (0 / not set for a step that was not drawn). */
typedef struct fine_aug_applied {
    double noise_std;       /* > 0 when noise was added */
    int noise;
    double blur_sigma;      /* > 0 when blurred */
    double brightness;      /* 0 when not applied */
    double contrast;        /* 0 when not applied */
    int64_t lowres[3];      /* low-resolution size; [0] == 0 when not applied */
    double gamma_invert;    /* 0 when not applied */
    double gamma;           /* 0 when not applied */
    int mirror[3];
} fine_aug_applied;

/* Draws and applies, in the reference's order, noise, blur, brightness, contrast, low
 * resolution, inverted gamma, gamma and mirroring (mirroring also flips label, which may be
 * NULL) to one crop. a may be NULL. Returns 0 or -1 with e set (out of memory). */
int fine_aug_intensity(const fine_aug_params *p, fine_rng *rng, float *image, uint8_t *label,
                       const int64_t size[3], fine_aug_work *w, fine_aug_applied *a, fine_err *e);

#endif
