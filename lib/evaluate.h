/* evaluate.h: the evaluation of a set of cases around metrics.h: which prediction goes with
 * which reference (case names), whether their grids agree, the BCV label names, and the
 * reports (a markdown table, CSV, nnU-Net-like summary.json) of the per-label means.
 *
 * Averages follow fine-reference A11 / B 6.3: per label, the mean over cases ignores NaN
 * (numpy.nanmean); the summary rows are the NaN-ignoring means over labels of those per-label
 * means: every evaluated label except 0 ("mean (13 organs)" when that is exactly 1..13), and
 * the 8 "Synapse" organs (1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 6 liver,
 * 7 stomach, 8 aorta, 11 pancreas) when all of them are evaluated. */
#ifndef FINE_EVALUATE_H
#define FINE_EVALUATE_H

#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "metrics.h"
#include "volume.h"

/* ---------------------------------------------------------------- labels */

/* The organ of a BCV label id (B 6.2: "background", "spleen", ..., "left adrenal gland"); NULL
 * outside 0..13. */
const char *fine_bcv_organ(int64_t label);
/* 1 for the 8 Synapse organs 1, 2, 3, 4, 6, 7, 8, 11. */
int fine_bcv_is_synapse(int64_t label);

/* Parses a label list: comma-separated ids and ranges ("1-13", "1,2,6-8", "0-13"), each 0 to
 * 2^31-1, no repeats, at most max in all. Returns the count, or -1 with e set. */
int fine_parse_labels(const char *s, int64_t *out, int max, fine_err *e);

/* ---------------------------------------------------------------- matching cases */

/* The key two case ids must share to be paired. A trailing nnU-Net channel suffix "_0000" is
 * dropped; then an id of the BCV forms "ABD_<digits>", "img<digits>" or "label<digits>" becomes
 * its serial number ("#1" for ABD_001, img0001 and label0001 alike); any other id is its own
 * key ("case_00012" pairs only with "case_00012"). */
void fine_case_key(const char *case_id, char *key, size_t cap);

/* The NIfTI files (.nii, .nii.gz) directly inside dir, as "dir/name", sorted by name.
 * *paths is an array of *n malloc'ed strings (free with fine_free_strings). Returns 0, or -1
 * with e naming dir when it cannot be read. */
int fine_list_nifti_dir(const char *dir, char ***paths, int *n, fine_err *e);

/* The pairs of a list file: one "PRED REF" pair of paths per line, separated by spaces or tabs;
 * blank lines and lines starting with '#' are skipped; paths are taken as written (relative to
 * the current directory). Returns 0 with *pred, *ref (n strings each, malloc'ed), or -1 with
 * e naming the file and line. */
int fine_read_pair_list(const char *path, char ***pred, char ***ref, int *n, fine_err *e);

void fine_free_strings(char **s, int n);

/* Refuses a prediction and a reference on different grids: the shapes differ, a spacing
 * differs by more than tol relative, or the voxel-to-world maps of the current grids
 * (fine_geometry_current_affine) put one of the 8 corner voxels more than tol times the
 * smallest spacing apart (tol = 0.01: a hundredth of a voxel). The message names both files
 * and both shapes. Returns 0 or -1 with e set. */
int fine_check_same_grid(const fine_volume *pred, const char *pred_name, const fine_volume *ref,
                         const char *ref_name, double tol, fine_err *e);

/* ---------------------------------------------------------------- results and reports */

typedef struct fine_eval_case {
    char case_id[FINE_CASE_MAX];
    char *pred, *ref;       /* names shown in reports (paths, or "stream:case"); owned */
    fine_label_metrics *m;  /* one per evaluated label, in the order of the label list; owned */
} fine_eval_case;

/* The per-label means over cases and the summary rows. */
typedef struct fine_eval_summary {
    int nlabels;
    int64_t labels[FINE_METRICS_MAX_LABELS];
    double dice[FINE_METRICS_MAX_LABELS], hd95[FINE_METRICS_MAX_LABELS], assd[FINE_METRICS_MAX_LABELS];
    int n_dice[FINE_METRICS_MAX_LABELS]; /* cases whose Dice is not NaN */
    /* summary rows: [0] all evaluated labels except 0, [1] the 8 Synapse organs */
    char row_name[2][48];
    int row_present[2];
    double row_dice[2], row_hd95[2], row_assd[2];
} fine_eval_summary;

void fine_eval_summarize(const fine_eval_case *cases, int ncases, const int64_t *labels, int nlabels,
                         fine_eval_summary *s);

/* The markdown summary table (label, organ, Dice, HD95 mm, ASSD mm, n); with per_case, first a
 * table of the per-case Dice of every label and the per-case means. NaN prints as "NaN". */
void fine_eval_print_table(FILE *f, const fine_eval_case *cases, int ncases, const fine_eval_summary *s,
                           int per_case);

/* CSV, one row per case and label: case,label,organ,dice,hd95,assd,tp,fp,fn,pred_voxels,
 * ref_voxels,pred,ref (NaN as "NaN", full double precision). */
void fine_eval_print_csv(FILE *f, const fine_eval_case *cases, int ncases, const fine_eval_summary *s);

/* JSON laid out as nnU-Net's summary.json: {"name", "labels", "results": {"all": [{"reference",
 * "test", "case", "<label>": {"Dice", "Hausdorff Distance 95", "Avg. Symmetric Surface
 * Distance", "True Positives", "False Positives", "False Negatives", "Total Positives Test",
 * "Total Positives Reference"}}...], "mean": {"<label>": {...}}, "mean (13 organs)": {...},
 * "mean (8 Synapse organs)": {...}}}. NaN is written as null (strict JSON). */
void fine_eval_print_json(FILE *f, const fine_eval_case *cases, int ncases, const fine_eval_summary *s);

/* Writes a report with print() to path atomically (temporary file, rename); "-" is stdout.
 * An existing file is refused unless force. Returns 0 or -1 with e set. */
typedef void (*fine_eval_printer)(FILE *f, const fine_eval_case *cases, int ncases,
                                  const fine_eval_summary *s);
int fine_eval_save(const char *path, int force, fine_eval_printer print, const fine_eval_case *cases,
                   int ncases, const fine_eval_summary *s, fine_err *e);

#endif
