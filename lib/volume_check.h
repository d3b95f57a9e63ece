/* volume_check.h: the bad-input checks of a case's volumes that the tools reading them share
 * (fine-normalize, fine-patch; fine-resample has its own on NIfTI input): an image without
 * voxels or with a NaN or infinite intensity, a label of a float dtype or with a value outside
 * 0..max_label, a label whose shape or spacing differs from its image's. Each returns 0, or -1
 * with e set to a one-line message that names the case. */
#ifndef FINE_VOLUME_CHECK_H
#define FINE_VOLUME_CHECK_H

#include "error.h"
#include "tensor.h"

#define FINE_MAX_LABEL_DEFAULT 13 /* the BCV organs */

/* img: [z, y, x] or [C, z, y, x], any dtype. */
int fine_check_image(const fine_tensor *img, const char *case_id, fine_err *e);
/* lab: [z, y, x], an integer dtype. */
int fine_check_label(const fine_tensor *lab, int max_label, const char *case_id, fine_err *e);
/* The label's shape equals the image's last three dimensions. */
int fine_check_same_shape(const fine_tensor *img, const fine_tensor *lab, const char *case_id, fine_err *e);
/* Spacings (mm, z y x) equal to 1e-5 relative. */
int fine_check_same_spacing(const double img[3], const double lab[3], const char *case_id, fine_err *e);

#endif
