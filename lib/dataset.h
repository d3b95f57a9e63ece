/* dataset.h: which cases a run works on, and the preprocessing plan computed from them.
 *
 * Case discovery (fine-reference A12, B §7.1): a raw BCV folder (img/imgXXXX.nii.gz and
 * label/labelXXXX.nii.gz, also found under RawData/Training/ or Training/ of the folder given),
 * an nnU-Net raw folder (imagesTr/NAME_0000.nii.gz and labelsTr/NAME.nii.gz, dataset.json
 * optional), or NIfTI files named on the command line. BCV serials become case ids ABD_%03d
 * (img0001 -> ABD_001), as the Task017 conversion script does. A selection file (--cases,
 * --split) lists case ids, one a line, '#' starting a comment.
 *
 * The plan (B §6.1 step 3, A2): target spacing by nnU-Net v1's ExperimentPlanner3D_v21 rule,
 * sizes after resampling, the model crop, and vt_map / max_imsize for the volume-token grid. */
#ifndef FINE_DATASET_H
#define FINE_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "stream.h"
#include "volume.h"

/* ---------------------------------------------------------------- cases */

typedef struct fine_case_files {
    char id[FINE_CASE_MAX];
    char *image; /* path, owned */
    char *label; /* path, owned; NULL for an unlabelled case */
} fine_case_files;

typedef struct fine_dataset {
    fine_case_files *cases;
    int n, cap;
    char layout[16]; /* "bcv", "nnunet" or "files" */
    char root[4096]; /* the folder the cases were found in ("" for files) */
} fine_dataset;

/* The case id a NIfTI file name implies: imgXXXX / labelXXXX (BCV) -> ABD_%03d of the serial
 * int(XXXX); NAME_0000 (an nnU-Net image) -> NAME; anything else: the base name without
 * .nii.gz / .nii / .fst (fine_case_id_from_path). */
void fine_case_id_from_file(const char *path, char *out, size_t cap);

/* A selection entry as a case id: "ABD_005", "img0005" and "5" all give ABD_005; other
 * strings are kept as they are. */
void fine_case_id_normalize(const char *s, char *out, size_t cap);

/* Finds the cases of a data set folder: the nnU-Net layout when dir/imagesTr exists, else the
 * BCV layout in dir, dir/RawData/Training or dir/Training (the first holding img/). Images are
 * sorted by case id. An image whose label is missing while the label folder exists is kept
 * with label NULL here; fine_dataset_require_labels makes that an error. Fails (e naming
 * the folder) when no layout is found, a folder holds no image, a second modality
 * (NAME_0001) is present, or two files give the same case id. */
int fine_dataset_scan(const char *dir, fine_dataset *ds, fine_err *e);

/* Adds one case from files (label may be NULL); id NULL derives it from the image name. A
 * duplicate id is an error. */
int fine_dataset_add(fine_dataset *ds, const char *id, const char *image, const char *label, fine_err *e);

/* Fails naming the first case without a label file. */
int fine_dataset_require_labels(const fine_dataset *ds, fine_err *e);

void fine_dataset_free(fine_dataset *ds);

/* A selection: case ids in the order listed. */
typedef struct fine_case_list {
    char (*ids)[FINE_CASE_MAX];
    int n;
} fine_case_list;

/* Reads a selection file: one case id per line (normalised as fine_case_id_normalize),
 * blank lines ignored, '#' starts a comment. A repeated id or an empty list is an error.
 * Returns 0 or -1 with e naming the file and line. */
int fine_case_list_read(const char *path, fine_case_list *list, fine_err *e);
/* 1 when id is in the list. */
int fine_case_list_has(const fine_case_list *list, const char *id);
void fine_case_list_free(fine_case_list *list);

/* Keeps only the listed cases, in the list's order; a listed id missing from the data set is
 * an error naming it and `what` (the selection file). */
int fine_dataset_select(fine_dataset *ds, const fine_case_list *list, const char *what, fine_err *e);

/* ---------------------------------------------------------------- plan */

#define FINE_PLAN_DEFAULT_CROP {64, 128, 128}

typedef struct fine_plan {
    double target_spacing[3]; /* (z, y, x) mm */
    double median_size[3];    /* median over the cases of the size after resampling */
    int64_t max_size[3];      /* largest size after resampling */
    int64_t crop[3];          /* the model crop (patch) */
    int64_t max_imsize[3];    /* = max_size (A2) */
    int64_t vt_map[3];        /* max(2, floor(max_imsize / crop)) (A2) */
    int n;                    /* cases */
    char (*cases)[FINE_CASE_MAX];
    double *spacings;         /* n x 3: original spacing of each case */
    int64_t *crop_sizes;      /* n x 3: size after cropping to non-zero (original grid) */
    int64_t *sizes;           /* n x 3: size after resampling */
} fine_plan;

/* nnU-Net v1 ExperimentPlanner3D_v21.get_target_spacing on n cases' spacings (original, z y x)
 * and sizes after cropping (original voxels): the per-axis median spacing (numpy percentile
 * 50, linear); if the coarsest axis's median spacing is > 3 x the largest other and its median
 * size x 3 < the smallest other median size, that axis gets the 10th percentile of its
 * spacings instead, raised to the largest other spacing + 1e-5 when below it. */
void fine_plan_target_spacing(const double *spacings, const int64_t *crop_sizes, int n, double target[3]);

/* Fills a plan from n cases (ids, original spacings and sizes after cropping, n x 3 each) and
 * the crop: target spacing by the rule above unless target is not NULL (then that spacing),
 * sizes after resampling by fine_resample_size, their median and maximum, max_imsize and
 * vt_map. Copies the inputs. Returns 0 or -1 with e set. */
int fine_plan_make(fine_plan *p, int n, const char (*ids)[FINE_CASE_MAX], const double *spacings,
                   const int64_t *crop_sizes, const int64_t crop[3], const double *target, fine_err *e);

/* A `plan` record (formats/STREAM.md 2.4): target_spacing, median_size, max_size, crop,
 * vt_map, max_imsize, cases, and per case (n x 3, flattened, case order) case_spacing,
 * case_crop_size and case_size, plus rule = "nnunet-v2.1" and separate_z_threshold. The plan
 * must outlive the record. NULL when out of memory. */
fine_map *fine_plan_record(const fine_plan *p);

/* Reads a plan record: target_spacing, crop, vt_map and max_imsize are required, the rest
 * optional (absent: zero / no cases). Returns 0 or -1 with e set. */
int fine_plan_from_record(const fine_record *r, fine_plan *p, fine_err *e);

/* Reads the first plan record of a stream file. Returns 0 or -1 with e naming the file. */
int fine_plan_read(const char *path, fine_plan *p, fine_err *e);

void fine_plan_free(fine_plan *p);

#endif
