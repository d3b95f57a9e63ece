/* nifti_io.h: NIfTI-1 and NIfTI-2 (.nii, .nii.gz) <-> a (z, y, x) volume and its geometry,
 * through nifti_clib. The axis convention is in geometry.h and formats/STREAM.md: NIfTI voxel
 * (i, j, k) is array element [k][j][i]; no data is transposed. */
#ifndef FINE_NIFTI_IO_H
#define FINE_NIFTI_IO_H

#include "error.h"
#include "geometry.h"
#include "tensor.h"

/* 1 when path names a NIfTI file by its extension (.nii or .nii.gz). */
int fine_nifti_is_path(const char *path);

/* Reads a 3-D NIfTI image (a 4-D one with a single volume is accepted; more volumes is an
 * error). Any common datatype is read; when scl_slope is non-zero and not (1, 0), the scaling
 * is applied and the data becomes f32. Otherwise integer data keep an integer dtype
 * (u8 i8 i16 u16 i32 i64 as stored; u32 becomes i64) and float data become f32 (f64 is
 * narrowed to f32). The geometry is filled from the header exactly (both forms and codes,
 * pixdim, units, description), with size and original_size the array shape (z, y, x),
 * spacing and original_spacing (pixdim[3], pixdim[2], pixdim[1]) and a crop box covering the
 * whole grid. Returns 0, or -1 with e naming the file and the problem. */
int fine_nifti_read(const char *path, fine_tensor *vol, fine_geometry *g, fine_err *e);

/* Writes vol (3-D, shape equal to g->size) with the header fields of g (NIfTI-1 unless
 * g->nifti_version is 2; .nii.gz compressed when path ends in .gz). The data type follows
 * vol's dtype (f16 is written as f32); no scaling. When vol's grid is not the original grid
 * (size differs from original_size or the crop box is not the whole grid) the sform and
 * qform are those of fine_geometry_current_affine and pixdim the current spacing.
 * Written to a temporary file in the same directory and renamed, so a failure leaves no
 * partial file; an existing file is refused unless force. Returns 0 or -1 with e set. */
int fine_nifti_write(const char *path, const fine_tensor *vol, const fine_geometry *g, int force,
                     fine_err *e);

#endif
