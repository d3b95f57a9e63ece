/* report.h: the pieces of fine-report's self-contained HTML page (the text buffer and the
 * JSON reader it builds on are json.h):
 *
 *   - the page's data: the scores of a fine-dice summary, the epochs of a training log;
 *   - the page's sections: the score tables, inline SVG charts (bars, curves), the colour legend;
 *   - slices of a CT with labels overlaid, as RGB pixels (png_write.h turns them into PNG;
 *     report_slices.c).
 *
 * No state, no threads, no printing: every function that can fail returns -1 (or NULL) and
 * leaves a one-line message in its fine_err. */
#ifndef FINE_REPORT_H
#define FINE_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "geometry.h"
#include "json.h"
#include "tensor.h"

/* ---------------------------------------------------------------- the page's data */

/* The scores of a fine-dice --json summary (nnU-Net summary.json layout; see evaluate.h):
 * labels and organ names from "labels" (or, in an nnU-Net summary without it, the numeric keys
 * of results.mean, named by fine_bcv_organ), the per-case Dice and HD95 of results.all, the
 * per-label means of results.mean and the summary rows ("mean (13 organs)", "mean (8 Synapse
 * organs)": every key of results that starts with "mean ("), all taken as written (null and
 * missing values are NaN; nothing is recomputed). */
typedef struct fine_report_scores {
    int nlabels;
    int64_t *labels;
    char **organs;
    int ncases;
    char **cases;               /* "case", else the base name of "test" */
    double *dice, *hd95;        /* [case * nlabels + label index] */
    double *mean_dice, *mean_hd95; /* [label index] */
    int nrows;
    char **row_names;
    double *row_dice, *row_hd95;
} fine_report_scores;

/* Loads path into s (zeroed first). Returns 0, or -1 with e "PATH: what is wrong". */
int fine_report_scores_load(const char *path, fine_report_scores *s, fine_err *e);
void fine_report_scores_free(fine_report_scores *s);

/* One epoch of a fine-train --log file (one JSON object a line). Missing or null fields are
 * NaN; val_dice and val_dice_ema are NaN when training ran without --val. */
typedef struct fine_report_epoch {
    int64_t epoch;
    double loss, train_dice, lr, val_dice, val_dice_ema;
} fine_report_epoch;

/* Loads a log: every non-blank line must be a JSON object with a numeric "epoch" >= 0. A run
 * resumed from an earlier checkpoint appends epochs again; the last line of an epoch wins.
 * Returns 0 with *ep (malloc'ed, sorted by epoch; NULL when n is 0) and *n, or -1 with e
 * "PATH: line N: what is wrong". */
int fine_report_log_load(const char *path, fine_report_epoch **ep, int *n, fine_err *e);

/* ---------------------------------------------------------------- sections of the page */

/* The fixed overlay colour of a label: the 13 BCV organs get 13 distinct colours (the same in
 * the legend, the bar chart and the images); other labels > 0 cycle through them. */
void fine_label_color(int64_t label, uint8_t rgb[3]);

/* A table (id="ID") of one metric per organ (rows) and case (columns), the mean over cases
 * (results.mean) in the last column and the summary rows at the bottom (their per-case cells
 * are empty: fine-dice's summary has no per-case means). metric 0: Dice (4 decimals, cells
 * shaded red to green), 1: HD95 in mm (2 decimals). NaN shows as "n/a". */
void fine_report_table(fine_buf *b, const fine_report_scores *s, int metric, const char *id);

/* The colour legend: a swatch and the name of each of s's labels (all 13 BCV organs when s
 * is NULL). */
void fine_report_legend(fine_buf *b, const fine_report_scores *s);

/* A curve of a line chart: n points (x[i], y[i]); points with a non-finite y break the line. */
typedef struct fine_svg_series {
    const char *name, *color; /* legend text, CSS colour */
    const double *x, *y;
    int n, dashed;
} fine_svg_series;

/* An inline <svg> line chart with axes, ticks, axis labels, a title and a legend. ylo, yhi fix
 * the y range (NaN: from the data, widened to round ticks). */
void fine_svg_line_chart(fine_buf *b, const char *title, const char *xlabel, const char *ylabel,
                         const fine_svg_series *s, int ns, double ylo, double yhi);

/* An inline <svg> horizontal bar chart of values in [0, 1] (clipped), one bar per name in the
 * label's colour with its value written at the end ("n/a" for NaN), and a dashed vertical line
 * at mark (labelled mark_name; none when mark is NaN). */
void fine_svg_bar_chart(fine_buf *b, const char *title, const char *const *names, const int64_t *labels,
                        const double *values, int n, const char *mark_name, double mark);

/* ---------------------------------------------------------------- slices */

typedef enum { FINE_VIEW_AXIAL, FINE_VIEW_CORONAL, FINE_VIEW_SAGITTAL } fine_view;

/* How to draw one view of a (z, y, x) volume: the array axis held fixed at `index`, the array
 * axes along the image's columns and rows, whether each runs backwards, and the image size. */
typedef struct fine_slice_plan {
    int fixed_axis, col_axis, row_axis;  /* 0 z, 1 y, 2 x */
    int64_t index;
    int col_flip, row_flip;
    int width, height;
} fine_slice_plan;

/* Plans a view through voxel centre (z, y, x) of a volume of geometry g (current grid), in the
 * radiological convention read from the voxel-to-world affine (fine_geometry_current_affine;
 * NIfTI world is RAS: each array axis is matched to the world axis it moves along most):
 * axial: anterior at the top, the patient's right on the image's left; coronal: superior at the
 * top, right on the left; sagittal: superior at the top, anterior on the left. The image has
 * square pixels, of one size for the three views of a volume: its longest extent in mm over
 * max_px (>= 16) pixels, so the longest side of the three views is max_px pixels and a coarser
 * axis is stretched to its true length (nearest neighbour). Returns 0 or -1 with e set (a size
 * or index out of range). */
int fine_slice_plan_make(const fine_geometry *g, fine_view view, const int64_t centre[3], int max_px,
                         fine_slice_plan *p, fine_err *e);

/* The voxel (z, y, x) nearest the centroid of the voxels of lab (3-D, any dtype) that are > 0;
 * the centre of the grid when there is none. Returns the number of foreground voxels. */
int64_t fine_foreground_centre(const fine_tensor *lab, int64_t centre[3]);

/* Draws plan p of img (3-D CT, any dtype) as grey (window lo..hi mapped to 0..255, clipped)
 * with lab's labels > 0 (lab may be NULL: none) blended over it in fine_label_color at alpha
 * (0..1). rgb: p->width * p->height * 3 bytes, row-major, top row first. img and lab must have
 * the geometry's shape. */
void fine_slice_render(const fine_tensor *img, const fine_tensor *lab, const fine_slice_plan *p, double lo,
                       double hi, double alpha, uint8_t *rgb);

#endif
