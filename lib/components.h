/* components.h: 6-connected components of a (z, y, x) segmentation and nnU-Net's
 * largest-component postprocessing (fine-reference B §5.7; nnU-Net v1
 * `postprocessing/connected_components.py: remove_all_but_the_largest_connected_component`,
 * which labels with scipy.ndimage.label's default 6-connectivity and removes every component
 * whose size differs from the largest one: components tied for the largest are all kept). */
#ifndef FINE_COMPONENTS_H
#define FINE_COMPONENTS_H

#include <stdint.h>

#include "error.h"

/* Component labelling rule: FINE_CC_BY_VALUE joins face-adjacent voxels of the same non-zero
 * value (every class's components at once); FINE_CC_FOREGROUND joins face-adjacent non-zero
 * voxels whatever their values. */
enum { FINE_CC_BY_VALUE = 0, FINE_CC_FOREGROUND = 1 };

/* Labels the components of seg (dims[0] * dims[1] * dims[2] voxels, row-major): labels[i] is
 * 0 where seg[i] == 0, else the component id 1..*count, numbered in raster order of their
 * first voxel (as scipy.ndimage.label). *sizes (allocated here, *count + 1 entries, [0] unused;
 * the caller frees it) receives the voxel count of each component. Returns 0, or -1 with e
 * set (out of memory, more than 2^31 - 1 voxels). */
int fine_cc_label(const uint8_t *seg, const int64_t dims[3], int rule, int32_t *labels,
                  int64_t *count, int64_t **sizes, fine_err *e);

/* For each class c with keep[c] non-zero (c = 1..255; keep has 256 entries, NULL means every
 * class), removes (sets to 0) every 6-connected component of seg == c whose size is not the
 * largest of that class. *removed (may be NULL) receives the number of voxels set to 0.
 * Returns 0, or -1 with e set. */
int fine_cc_keep_largest_per_class(uint8_t *seg, const int64_t dims[3], const uint8_t *keep,
                                   int64_t *removed, fine_err *e);

/* Removes every 6-connected component of seg > 0 (all classes together) whose size is not
 * the largest. Returns 0, or -1 with e set. */
int fine_cc_keep_largest_foreground(uint8_t *seg, const int64_t dims[3], int64_t *removed,
                                    fine_err *e);

#endif
