/* geometry.h: where a volume's voxels are in the world, and how it got to its current grid.
 *
 * Axis convention (also in formats/STREAM.md): a NIfTI image with dimensions (ni, nj, nk) is held
 * in memory as a row-major array of shape (z, y, x) = (nk, nj, ni) with no transposition:
 * element [k][j][i] is NIfTI voxel (i, j, k). Every per-axis array in this struct is in the
 * array order (z, y, x) = (k, j, i), except the NIfTI fields, which keep NIfTI's own order. */
#ifndef FINE_GEOMETRY_H
#define FINE_GEOMETRY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fine_geometry {
    /* The current grid. */
    int64_t size[3];     /* (z, y, x) voxels */
    double spacing[3];   /* (z, y, x) millimetres */

    /* The NIfTI header fields of the original image, kept exactly (NIfTI order). */
    int nifti_version;   /* 1 or 2 (0: not from NIfTI) */
    int qform_code, sform_code;
    double quatern[3];   /* quatern_b, quatern_c, quatern_d */
    double qoffset[3];   /* qoffset_x, qoffset_y, qoffset_z */
    double qfac;         /* -1 or 1 */
    double pixdim[8];
    double srow[3][4];   /* srow_x, srow_y, srow_z */
    int xyz_units, time_units;
    char descrip[81];

    /* What inverting preprocessing needs: the original grid and the crop box in it. */
    int64_t original_size[3];    /* (z, y, x) */
    double original_spacing[3];  /* (z, y, x) */
    int64_t crop_lo[3], crop_hi[3]; /* (z, y, x), original voxel indices, hi exclusive */
} fine_geometry;

/* A geometry for an array of `size` voxels at `spacing` that is its own original grid:
 * no crop, identity-like affine (diagonal spacing, qform and sform code 1... set by caller). */
void fine_geometry_init(fine_geometry *g, const int64_t size[3], const double spacing[3]);

/* The 4x4 voxel-to-world affine of the ORIGINAL grid, (i, j, k, 1) -> (x, y, z, 1) RAS mm, as
 * NIfTI defines it: the sform when sform_code > 0, else the qform when qform_code > 0, else
 * the pixdim scaling (NIfTI "method 1"). */
void fine_geometry_original_affine(const fine_geometry *g, double a[4][4]);

/* The affine of the CURRENT grid: the original affine composed with the crop offset and the
 * resampling (voxel centres of the current grid spread evenly over the crop box, as
 * nnU-Net's resize does: original index = lo + (c + 0.5) * extent / size - 0.5). */
void fine_geometry_current_affine(const fine_geometry *g, double a[4][4]);

#ifdef __cplusplus
}
#endif

#endif
