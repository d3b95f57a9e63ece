/* synth.h: a synthetic abdominal CT case in memory, in the shape of the BCV data set
 * (Multi-Atlas Labeling Beyond the Cranial Vault): an int16 image in Hounsfield units, a uint8
 * label volume with the 13 organ ids of the BCV label map (0 background, 1 spleen, 2 right
 * kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 inferior
 * vena cava, 10 portal and splenic vein, 11 pancreas, 12 right adrenal, 13 left adrenal) and a
 * BCV-like NIfTI geometry. No file I/O here: tools/fine-synth.c writes the files.
 *
 * Determinism: a case depends only on (seed, serial) and the grid scale: the anatomy is drawn
 * from a generator seeded by (seed, serial) alone, so case 21 is the same whether it is made
 * alone or among 30, on one thread or many, and the same anatomy (in millimetres) is rendered
 * at every scale.
 *
 * Orientation (the convention the tests check): array element [z][y][x] (NIfTI voxel (x, y, z))
 *   x grows toward the PATIENT'S LEFT   (x = 0 is the patient's right side, shown on the left
 *                                        of a radiological display),
 *   y grows toward POSTERIOR            (the spine is at large y, the table below it),
 *   z grows toward SUPERIOR             (the liver dome is at large z).
 * So the right kidney (2), the liver (6), the gallbladder (4), the IVC (9) and the right
 * adrenal (12) lie at small x; the left kidney (3), the spleen (1), the stomach (7) and the
 * left adrenal (13) at large x. The affine is the one a DICOM (LPS) scanner export gives,
 * diag(-sx, -sy, +sz) with qform and sform code 1 (nibabel axis codes L, P, S).
 *
 * Grid: at scale 1 the in-plane grid is 512 x 512 at 0.6-1.0 mm and there are 85-198 slices of
 * 2.5-5 mm. At scale F every axis has round(F * n) voxels over the same physical extent, so the
 * spacing grows as 1/F (scale 0.25: 128 x 128 and 21-50 slices). */
#ifndef FINE_SYNTH_H
#define FINE_SYNTH_H

#include <stdint.h>

#include "error.h"
#include "geometry.h"
#include "tensor.h"

#define FINE_SYNTH_LABELS 14 /* 0 background + 13 organs */

typedef struct fine_synth_opts {
    uint64_t seed;          /* the data set's seed */
    double scale;           /* grid scale, 1 = full size; 0.05 to 2 */
    fine_dtype image_dtype; /* FINE_I16 (HU rounded, clamped to [-1024, 3071]) or FINE_F32 */
} fine_synth_opts;

/* Defaults: seed 0, scale 1, i16 images. */
void fine_synth_opts_init(fine_synth_opts *o);

/* The organ name of a BCV label id 0..13, as in the nnU-Net Task017 dataset.json
 * ("background", "spleen", ..., "left adrenal gland"); NULL for other ids. */
const char *fine_synth_label_name(int id);

/* The serial of the index-th default case (index from 0): the 30 labelled BCV serials 1-10 and
 * 21-40 first, then 41, 42, ... So "--cases N" makes serials fine_synth_serial(0..N-1). */
int fine_synth_serial(int index);

/* The grid and NIfTI geometry of case `serial` (1..9999) without rendering it: g->size and
 * g->spacing (z, y, x), the header fields (qform and sform code 1, mm units). Cheap.
 * Returns 0, or -1 with e set for bad options. */
int fine_synth_geometry(const fine_synth_opts *o, int serial, fine_geometry *g, fine_err *e);

/* Renders case `serial`: allocates image ((z, y, x), o->image_dtype, HU) and label ((z, y, x),
 * u8, ids 0..13) and fills g as fine_synth_geometry does. The caller owns both tensors and
 * frees them with fine_tensor_free. Single-threaded and reentrant (no global state), so cases
 * may be rendered on several threads at once. Memory: about 8 bytes per voxel while running.
 * Returns 0, or -1 with e set (bad options or out of memory; nothing is left allocated). */
int fine_synth_case(const fine_synth_opts *o, int serial, fine_tensor *image, fine_tensor *label,
                    fine_geometry *g, fine_err *e);

#endif
