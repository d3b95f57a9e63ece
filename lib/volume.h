/* volume.h: a case volume (tensor + geometry + case id + name) <-> a `volume` record of the
 * stream (formats/STREAM.md 2.4), and the small decisions every tool that makes one shares:
 * the case id of a file, the integer dtype of a label. */
#ifndef FINE_VOLUME_H
#define FINE_VOLUME_H

#include <stddef.h>

#include "error.h"
#include "geometry.h"
#include "nifti_io.h"
#include "stream.h"
#include "tensor.h"

#define FINE_CASE_MAX 256
#define FINE_NAME_MAX 32

typedef struct fine_volume {
    char case_id[FINE_CASE_MAX];
    char name[FINE_NAME_MAX]; /* "image", "label", "prob", "seg" */
    fine_tensor data;         /* [z, y, x] (or [C, z, y, x] for prob), owned */
    fine_geometry geom;
} fine_volume;

/* Frees the tensor and zeroes v. Safe on a zeroed struct. */
void fine_volume_free(fine_volume *v);

/* The case id a file name implies: the base name without its directory and without a
 * .nii.gz, .nii or .fst extension ("data/img0001.nii.gz" -> "img0001"). Truncated to cap. */
void fine_case_id_from_path(const char *path, char *out, size_t cap);

/* 1 when name is one of the volume names whose data must be integer ("label", "seg"). */
int fine_volume_name_is_integral(const char *name);

/* The dtype a label volume is stored as: u8 when every value is in 0..255, else i16, else
 * i32. Fails (with e naming the first offending value and its index) when a value is not a
 * finite integer or does not fit i32. */
int fine_label_dtype(const fine_tensor *t, fine_dtype *dt, fine_err *e);

/* 1 when every value of t is representable exactly in dtype dt (integral and in range for an
 * integer dtype; always for a float dtype). */
int fine_tensor_fits(const fine_tensor *t, fine_dtype dt);

/* Converts v's data to dtype dt in place. For the integral names (label, seg) dt must be an
 * integer dtype that holds every value exactly; other volumes are converted by rounding and
 * saturating. Returns 0 or -1 with e set. */
int fine_volume_set_dtype(fine_volume *v, fine_dtype dt, fine_err *e);

/* Reads a NIfTI file into v as a volume of the given case id and name. An integral name
 * (label, seg) gets the dtype fine_label_dtype chooses, unless dtype >= 0 forces one
 * (as fine_volume_set_dtype; pass -1 for none). Returns 0 or -1 with e naming the file. */
int fine_volume_from_nifti(const char *path, const char *case_id, const char *name, int dtype,
                           fine_volume *v, fine_err *e);

/* 1 when r is a volume record of that case and name (NULL or "" matches any). */
int fine_volume_record_matches(const fine_record *r, const char *case_id, const char *name);

/* A new `volume` record for v (type, case, name, the tensor fields, geometry). The tensor data
 * is referenced: v must outlive the record. Add a `meta` map with fine_map_map(rec, "meta").
 * NULL when out of memory. */
fine_map *fine_volume_record(const fine_volume *v);

/* Fills v (zeroed first; the tensor is copied) from a `volume` record: case, name, tensor and
 * geometry, and checks that the geometry's size is the tensor's last three dimensions.
 * Returns 0 or -1 with e set. */
int fine_volume_from_record(const fine_record *r, fine_volume *v, fine_err *e);

#endif
