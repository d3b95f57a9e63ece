/* report_slices.c: fine-report's slices: planning a view from the NIfTI affine, the centre of
 * the reference foreground, rendering CT and labels to RGB (report.h). */
#include "report.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- slices */

/* For each array axis (0 z, 1 y, 2 x): the world axis (0 R, 1 A, 2 S) it moves along most, and
 * the sign of that move. Greedy on the largest remaining |affine| entry, so always a permutation. */
static void array_to_world(const fine_geometry *g, int world[3], int sign[3])
{
    double A[4][4];
    fine_geometry_current_affine(g, A);
    int used_w[3] = {0, 0, 0}, used_a[3] = {0, 0, 0};
    for (int round = 0; round < 3; round++) {
        int bw = -1, ba = -1;
        double best = -1;
        for (int a = 0; a < 3; a++)
            for (int w = 0; w < 3; w++) {
                if (used_a[a] || used_w[w])
                    continue;
                double v = fabs(A[w][2 - a]); /* array axis z is NIfTI k, column 2 */
                if (!isfinite(v))
                    v = 0;
                if (bw < 0 || v > best)
                    best = v, bw = w, ba = a;
            }
        used_w[bw] = used_a[ba] = 1;
        world[ba] = bw;
        sign[ba] = A[bw][2 - ba] < 0 ? -1 : 1;
    }
}

int fine_slice_plan_make(const fine_geometry *g, fine_view view, const int64_t centre[3], int max_px,
                         fine_slice_plan *p, fine_err *e)
{
    memset(p, 0, sizeof *p);
    if (max_px < 16)
        return fine_err_set(e, "slice size %d is below 16 pixels", max_px);
    for (int d = 0; d < 3; d++)
        if (g->size[d] < 1)
            return fine_err_set(e, "volume size %lldx%lldx%lld is empty", (long long)g->size[0],
                                (long long)g->size[1], (long long)g->size[2]);
    int world[3], sign[3], of_world[3];
    array_to_world(g, world, sign);
    for (int a = 0; a < 3; a++)
        of_world[world[a]] = a;
    /* the world axis held fixed, and the world axes the columns and rows run along (each toward
     * the world's negative direction: left, posterior, inferior) */
    static const int fixed_w[3] = {2, 1, 0}, col_w[3] = {0, 0, 1}, row_w[3] = {1, 2, 2};
    p->fixed_axis = of_world[fixed_w[view]];
    p->col_axis = of_world[col_w[view]];
    p->row_axis = of_world[row_w[view]];
    p->col_flip = sign[p->col_axis] > 0;
    p->row_flip = sign[p->row_axis] > 0;
    p->index = centre[p->fixed_axis];
    if (p->index < 0 || p->index >= g->size[p->fixed_axis])
        return fine_err_set(e, "slice %lld outside 0..%lld", (long long)p->index,
                            (long long)g->size[p->fixed_axis] - 1);
    /* one pixel size for every view of the volume: its longest extent over max_px pixels */
    double ext[3], longest = 0;
    for (int a = 0; a < 3; a++) {
        double sp = fabs(g->spacing[a]);
        ext[a] = (sp > 0 && isfinite(sp) ? sp : 1) * (double)g->size[a];
        longest = fmax(longest, ext[a]);
    }
    double px = longest / max_px;
    double w = fmin(fmax(round(ext[p->col_axis] / px), 1), max_px);
    double h = fmin(fmax(round(ext[p->row_axis] / px), 1), max_px);
    p->width = (int)w;
    p->height = (int)h;
    return 0;
}

int64_t fine_foreground_centre(const fine_tensor *lab, int64_t centre[3])
{
    const int64_t *s = lab->shape;
    double sum[3] = {0, 0, 0};
    int64_t n = 0, i = 0;
    for (int64_t z = 0; z < s[0]; z++)
        for (int64_t y = 0; y < s[1]; y++)
            for (int64_t x = 0; x < s[2]; x++, i++) {
                int in = lab->dtype == FINE_U8 ? ((const uint8_t *)lab->data)[i] > 0 : fine_tensor_get(lab, i) > 0;
                if (in) {
                    sum[0] += (double)z, sum[1] += (double)y, sum[2] += (double)x;
                    n++;
                }
            }
    for (int d = 0; d < 3; d++) {
        centre[d] = n ? (int64_t)llround(sum[d] / (double)n) : s[d] / 2;
        if (centre[d] >= s[d])
            centre[d] = s[d] - 1;
        if (centre[d] < 0)
            centre[d] = 0;
    }
    return n;
}

void fine_slice_render(const fine_tensor *img, const fine_tensor *lab, const fine_slice_plan *p, double lo,
                       double hi, double alpha, uint8_t *rgb)
{
    const int64_t *s = img->shape;
    int64_t nc = s[p->col_axis], nr = s[p->row_axis];
    double scale = hi > lo ? 255.0 / (hi - lo) : 0;
    for (int r = 0; r < p->height; r++) {
        int64_t ir = (int64_t)(((double)r + 0.5) * (double)nr / p->height);
        ir = ir >= nr ? nr - 1 : ir;
        if (p->row_flip)
            ir = nr - 1 - ir;
        for (int c = 0; c < p->width; c++) {
            int64_t ic = (int64_t)(((double)c + 0.5) * (double)nc / p->width);
            ic = ic >= nc ? nc - 1 : ic;
            if (p->col_flip)
                ic = nc - 1 - ic;
            int64_t v[3];
            v[p->fixed_axis] = p->index;
            v[p->col_axis] = ic;
            v[p->row_axis] = ir;
            int64_t i = (v[0] * s[1] + v[1]) * s[2] + v[2];
            double x = fine_tensor_get(img, i);
            double gv = isnan(x) ? 0 : (x - lo) * scale;
            gv = gv < 0 ? 0 : gv > 255 ? 255 : gv;
            double out[3] = {gv, gv, gv};
            double l = lab ? fine_tensor_get(lab, i) : 0;
            if (l > 0) {
                uint8_t col[3];
                fine_label_color((int64_t)l, col);
                for (int k = 0; k < 3; k++)
                    out[k] = (1 - alpha) * gv + alpha * col[k];
            }
            uint8_t *o = rgb + ((size_t)r * (size_t)p->width + (size_t)c) * 3;
            for (int k = 0; k < 3; k++)
                o[k] = (uint8_t)lround(out[k]);
        }
    }
}
