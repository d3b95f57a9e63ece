/* augment.c: the training augmentation (see augment.h for the semantics and their sources).
 *
 * The spatial step is the expensive one. It evaluates the cubic B-spline of the enlarged box
 * exactly as scipy's map_coordinates(order=3, mode='constant') does on nnU-Net's padded box:
 * the box is prefiltered with mirror boundary conditions at its own faces. Only the part of
 * the box the rotated crop can touch (plus a 16-voxel margin, where the recursive filter's
 * influence has decayed to |sqrt(3)-2|^16 < 1e-9) is filtered, in float, one sample at a time;
 * where that region is cut short of the box face the filter starts from the cut, which
 * changes coefficients near the cut by at most that factor. */
#include "augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double PI = 3.14159265358979323846;

/* ---------------------------------------------------------------- the recipe */

void fine_aug_params_default(fine_aug_params *p, int planar)
{
    memset(p, 0, sizeof *p);
    p->planar = planar ? 1 : 0;
    /* nnUNetTrainerV2.setup_DA_params: +-30 degrees about every axis (written as numpy does,
     * so the radians are the same doubles); dummy-2D: +-180 degrees in plane. */
    double a30 = 30.0 / 360.0 * 2.0 * PI;
    for (int d = 0; d < 3; d++) {
        p->rot[d][0] = -a30;
        p->rot[d][1] = a30;
    }
    if (planar) {
        double a180 = 180.0 / 360.0 * 2.0 * PI;
        p->rot[0][0] = -a180;
        p->rot[0][1] = a180;
    }
    p->p_rot = 0.2;
    p->p_rot_axis = 1.0;
    p->p_scale = 0.2;
    p->scale[0] = 0.7;
    p->scale[1] = 1.4;
    p->basic_scale_min = 0.85; /* get_patch_size runs before scale_range becomes (0.7, 1.4) */
    p->p_noise = 0.1;
    p->noise_std[0] = 0.0;
    p->noise_std[1] = 0.1;
    p->p_blur = 0.2;
    p->p_blur_channel = 0.5;
    p->blur_sigma[0] = 0.5;
    p->blur_sigma[1] = 1.0;
    p->p_brightness = 0.15;
    p->brightness[0] = 0.75;
    p->brightness[1] = 1.25;
    p->p_contrast = 0.15;
    p->contrast[0] = 0.75;
    p->contrast[1] = 1.25;
    p->contrast_preserve_range = 1;
    p->p_lowres = 0.25;
    p->p_lowres_channel = 0.5;
    p->lowres_zoom[0] = 0.5;
    p->lowres_zoom[1] = 1.0;
    p->p_gamma_invert = 0.1;
    p->p_gamma = 0.3;
    p->gamma[0] = 0.7;
    p->gamma[1] = 1.5;
    p->gamma_retain_stats = 1;
    p->p_mirror = 0.5;
}

void fine_aug_params_spatial_only(fine_aug_params *p)
{
    p->p_noise = p->p_blur = p->p_brightness = p->p_contrast = p->p_lowres = 0;
    p->p_gamma_invert = p->p_gamma = p->p_mirror = 0;
}

void fine_aug_params_off(fine_aug_params *p)
{
    fine_aug_params_spatial_only(p);
    p->p_rot = p->p_scale = 0;
}

static double max_abs(const double r[2])
{
    return fmax(fabs(r[0]), fabs(r[1]));
}

/* batchgenerators' rotation matrices about array axes 0 ("x"), 1 ("y") and 2 ("z"). */
static void mat_rot(int axis, double a, double r[3][3])
{
    double c = cos(a), s = sin(a);
    memset(r, 0, 9 * sizeof(double));
    if (axis == 0) {
        r[0][0] = 1;
        r[1][1] = c, r[1][2] = -s;
        r[2][1] = s, r[2][2] = c;
    } else if (axis == 1) {
        r[1][1] = 1;
        r[0][0] = c, r[0][2] = s;
        r[2][0] = -s, r[2][2] = c;
    } else {
        r[2][2] = 1;
        r[0][0] = c, r[0][1] = -s;
        r[1][0] = s, r[1][1] = c;
    }
}

static void mat_mul(const double a[3][3], const double b[3][3], double out[3][3])
{
    double t[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            t[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
    memcpy(out, t, sizeof t);
}

/* R = Rx(a0) Ry(a1) Rz(a2), as rotate_coords_3d builds it. */
static void rotation(const double angle[3], double r[3][3])
{
    double t[3][3];
    mat_rot(0, angle[0], r);
    mat_rot(1, angle[1], t);
    mat_mul(r, t, r);
    mat_rot(2, angle[2], t);
    mat_mul(r, t, r);
}

void fine_aug_basic_patch(const fine_aug_params *p, const int64_t crop[3], int64_t box[3])
{
    double cap = 90.0 / 360.0 * 2.0 * PI;
    double smin = p->basic_scale_min > 0 ? p->basic_scale_min : 1.0;
    if (p->planar) {
        double a = fmin(cap, max_abs(p->rot[0]));
        double v0 = (double)crop[1], v1 = (double)crop[2], c = cos(a), s = sin(a);
        /* rotate_coords_2d: the row vector (v0, v1) times [[c, -s], [s, c]] */
        double f0 = fmax(fabs(v0 * c + v1 * s), v0), f1 = fmax(fabs(-v0 * s + v1 * c), v1);
        box[0] = crop[0];
        box[1] = (int64_t)(f0 / smin);
        box[2] = (int64_t)(f1 / smin);
        return;
    }
    double f[3] = {(double)crop[0], (double)crop[1], (double)crop[2]};
    double v[3] = {f[0], f[1], f[2]};
    for (int axis = 0; axis < 3; axis++) {
        double ang[3] = {0, 0, 0}, r[3][3];
        ang[axis] = fmin(cap, max_abs(p->rot[axis]));
        rotation(ang, r);
        for (int j = 0; j < 3; j++) /* the row vector v times r */
            f[j] = fmax(f[j], fabs(v[0] * r[0][j] + v[1] * r[1][j] + v[2] * r[2][j]));
    }
    for (int d = 0; d < 3; d++)
        box[d] = (int64_t)(f[d] / smin);
}

/* ---------------------------------------------------------------- scratch memory */

struct fine_aug_work {
    float *coef;   /* spline coefficients of a box region; low-resolution volume */
    size_t coef_n;
    float *tmp;    /* intermediate volumes (resizing); the x-pass lanes of the prefilter */
    size_t tmp_n;
    double *lin;   /* bundles of lines for the 1-D filters (in and out) */
    size_t lin_n;
    double *pad;   /* a padded bundle (order-3 zoom) */
    size_t pad_n;
};

fine_aug_work *fine_aug_work_new(void)
{
    return calloc(1, sizeof(fine_aug_work));
}

void fine_aug_work_free(fine_aug_work *w)
{
    if (!w)
        return;
    free(w->coef);
    free(w->tmp);
    free(w->lin);
    free(w->pad);
    free(w);
}

/* Makes *p hold at least n elements of size sz (contents not kept). */
static int reserve(void **p, size_t *have, size_t n, size_t sz, fine_err *e)
{
    if (n <= *have && *p)
        return 0;
    free(*p);
    *have = 0;
    size_t bytes = (n * sz + 63) / 64 * 64;
    *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!*p)
        return fine_err_set(e, "out of memory (%zu bytes of augmentation scratch)", bytes);
    *have = n;
    return 0;
}

#define RESERVE(w, field, cnt, n, e) reserve((void **)&(w)->field, &(w)->cnt, (n), sizeof *(w)->field, e)

/* ---------------------------------------------------------------- lines along an axis */

/* The lines of a [z, y, x] array along `axis`, visited in bundles of up to LANES neighbouring
 * lines so that the 1-D filters run across the bundle (vectorisable, cache friendly). Line
 * (g, c) starts at g * group_stride + c * lane_stride and steps by elem_stride. */
typedef struct lines {
    int64_t n;             /* elements per line */
    int64_t groups, lanes; /* lines = groups x lanes */
    int64_t group_stride, lane_stride, elem_stride;
} lines;

enum { LANES = 64 };

static lines lines_along(const int64_t size[3], int axis)
{
    lines l;
    int64_t nz = size[0], ny = size[1], nx = size[2];
    if (axis == 2) {
        l = (lines){nx, 1, nz * ny, 0, nx, 1};
    } else if (axis == 1) {
        l = (lines){ny, nz, nx, ny * nx, 1, nx};
    } else {
        l = (lines){nz, 1, ny * nx, 0, 1, ny * nx};
    }
    return l;
}

static void gather(const float *x, const lines *l, int64_t g, int64_t c0, int64_t w, double *b)
{
    const float *base = x + g * l->group_stride + c0 * l->lane_stride;
    for (int64_t i = 0; i < l->n; i++) {
        const float *row = base + i * l->elem_stride;
        for (int64_t c = 0; c < w; c++)
            b[i * w + c] = row[c * l->lane_stride];
    }
}

static void scatter(const double *b, const lines *l, int64_t g, int64_t c0, int64_t w, float *x)
{
    float *base = x + g * l->group_stride + c0 * l->lane_stride;
    for (int64_t i = 0; i < l->n; i++) {
        float *row = base + i * l->elem_stride;
        for (int64_t c = 0; c < w; c++)
            row[c * l->lane_stride] = (float)b[i * w + c];
    }
}

/* A 1-D operation on a bundle: in holds n_in rows of w lanes, out gets n_out rows. */
typedef void (*line_op)(const double *in, int64_t n_in, double *out, int64_t n_out, int64_t w,
                        const void *ctx);

/* y (shape size with size[axis] replaced by n_out) = op applied along axis of x (shape size).
 * x and y may be the same array when n_out == size[axis]. */
static int along_axis(const float *x, const int64_t size[3], int axis, float *y, int64_t n_out,
                      line_op op, const void *ctx, fine_aug_work *wk, fine_err *e)
{
    lines li = lines_along(size, axis);
    int64_t osize[3] = {size[0], size[1], size[2]};
    osize[axis] = n_out;
    lines lo = lines_along(osize, axis);
    int64_t nmax = li.n > n_out ? li.n : n_out;
    if (RESERVE(wk, lin, lin_n, (size_t)(2 * nmax * LANES), e) < 0)
        return -1;
    double *bin = wk->lin, *bout = wk->lin + nmax * LANES;
    for (int64_t g = 0; g < li.groups; g++)
        for (int64_t c0 = 0; c0 < li.lanes; c0 += LANES) {
            int64_t w = li.lanes - c0 < LANES ? li.lanes - c0 : LANES;
            gather(x, &li, g, c0, w, bin);
            op(bin, li.n, bout, n_out, w, ctx);
            scatter(bout, &lo, g, c0, w, y);
        }
    return 0;
}

/* ---------------------------------------------------------------- cubic B-spline prefilter */

/* scipy's spline_filter1d(order=3) with half-sample ('reflect', 'nearest') boundaries on each
 * lane of a bundle (n rows of w lanes): gain, causal and anticausal recursions with the pole
 * z = sqrt(3) - 2. The causal start is the reflected sum; it equals scipy's to 1e-12 for
 * lines of 13 samples or more, and it is only used on lines padded by 12 (op_cubic_nearest).
 * A line of one sample is left as it is. */
static void bspline_lanes_reflect(double *b, int64_t n, int64_t w)
{
    if (n < 2)
        return;
    const double z = sqrt(3.0) - 2.0, gain = (1.0 - z) * (1.0 - 1.0 / z);
    for (int64_t i = 0; i < n * w; i++)
        b[i] *= gain;
    /* terms beyond z^40 are below double precision and skipped */
    int64_t kmax = n < 42 ? n : 42;
    double zn = pow(z, (double)n), zi = z, f = z / (1.0 - zn * zn);
    double c0[LANES];
    for (int64_t c = 0; c < w; c++) {
        c0[c] = b[c];
        b[c] = b[c] + zn * b[(n - 1) * w + c];
    }
    for (int64_t i = 1; i < n && i < kmax; i++, zi *= z)
        for (int64_t c = 0; c < w; c++)
            b[c] += zi * (b[i * w + c] + zn * b[(n - 1 - i) * w + c]);
    for (int64_t c = 0; c < w; c++)
        b[c] = b[c] * f + c0[c];
    for (int64_t i = 1; i < n; i++)
        for (int64_t c = 0; c < w; c++)
            b[i * w + c] += z * b[(i - 1) * w + c];
    double *last = b + (n - 1) * w, fa = z / (z - 1.0);
    for (int64_t c = 0; c < w; c++)
        last[c] *= fa;
    for (int64_t i = n - 2; i >= 0; i--)
        for (int64_t c = 0; c < w; c++)
            b[i * w + c] = z * (b[(i + 1) * w + c] - b[i * w + c]);
}

/* scipy's spline_filter1d(order=3) with whole-sample boundaries (its 'mirror', which
 * map_coordinates also uses for mode 'constant'), in float, in place: n rows of w contiguous
 * lanes, row i at b + i * stride. The y and z passes of a [z, y, x] block run on it directly
 * (recursions across x, no copies); the x pass on transposed bundles (prefilter_axis). */
static void bspline_rows_f(float *b, int64_t n, int64_t w, int64_t stride)
{
    if (n < 2)
        return;
    const double zd = sqrt(3.0) - 2.0;
    const float z = (float)zd, gain = (float)((1.0 - zd) * (1.0 - 1.0 / zd));
    for (int64_t i = 0; i < n; i++) {
        float *r = b + i * stride;
        for (int64_t c = 0; c < w; c++)
            r[c] *= gain;
    }
    int64_t kmax = n < 42 ? n : 42;
    float zn1 = (float)pow(zd, (double)(n - 1)), den = (float)(1.0 - pow(zd, 2.0 * (double)(n - 1)));
    float *r0 = b, *rl = b + (n - 1) * stride;
    for (int64_t c = 0; c < w; c++)
        r0[c] = r0[c] + zn1 * rl[c];
    double zi = zd;
    for (int64_t i = 1; i < n - 1 && i < kmax; i++, zi *= zd) {
        const float *a = b + i * stride, *m = b + (n - 1 - i) * stride;
        float zf = (float)zi;
        for (int64_t c = 0; c < w; c++)
            r0[c] += zf * (a[c] + zn1 * m[c]);
    }
    for (int64_t c = 0; c < w; c++)
        r0[c] /= den;
    for (int64_t i = 1; i < n; i++) {
        float *r = b + i * stride, *p = r - stride;
        for (int64_t c = 0; c < w; c++)
            r[c] += z * p[c];
    }
    float f = (float)(zd / (zd * zd - 1.0));
    float *rp = rl - stride;
    for (int64_t c = 0; c < w; c++)
        rl[c] = (z * rp[c] + rl[c]) * f;
    for (int64_t i = n - 2; i >= 0; i--) {
        float *r = b + i * stride, *nx = r + stride;
        for (int64_t c = 0; c < w; c++)
            r[c] = z * (nx[c] - r[c]);
    }
}

/* The mirror prefilter of a [z, y, x] float block along axis, in place; buf is a scratch of
 * size[2] * XLANES floats. */
enum { XLANES = 32 };

static void prefilter_axis(float *C, const int64_t size[3], int axis, float *buf)
{
    int64_t nz = size[0], ny = size[1], nx = size[2];
    if (axis == 2) { /* XLANES rows at a time, transposed so the recursions run across rows */
        int64_t rows = nz * ny;
        for (int64_t r0 = 0; r0 < rows; r0 += XLANES) {
            int64_t w = rows - r0 < XLANES ? rows - r0 : XLANES;
            for (int64_t c = 0; c < w; c++) {
                const float *a = C + (r0 + c) * nx;
                for (int64_t i = 0; i < nx; i++)
                    buf[i * XLANES + c] = a[i];
            }
            bspline_rows_f(buf, nx, w, XLANES);
            for (int64_t c = 0; c < w; c++) {
                float *a = C + (r0 + c) * nx;
                for (int64_t i = 0; i < nx; i++)
                    a[i] = buf[i * XLANES + c];
            }
        }
    } else if (axis == 1) {
        for (int64_t z = 0; z < nz; z++)
            bspline_rows_f(C + z * ny * nx, ny, nx, nx);
    } else { /* columns of the (y, x) plane in chunks that stay in cache */
        int64_t plane = ny * nx, chunk = 1024;
        for (int64_t c0 = 0; c0 < plane; c0 += chunk)
            bspline_rows_f(C + c0, nz, plane - c0 < chunk ? plane - c0 : chunk, plane);
    }
}

/* Cubic B-spline weights at fraction t in [0, 1) for the samples floor-1 .. floor+2. */
static inline void cubic_weights(double t, double w[4])
{
    double t2 = t * t, t3 = t2 * t, u = 1.0 - t;
    w[0] = u * u * u / 6.0;
    w[1] = (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0;
    w[2] = (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0;
    w[3] = t3 / 6.0;
}

/* scipy's 'mirror' index map into [0, n). */
static inline int64_t mirror_index(int64_t i, int64_t n)
{
    if (i >= 0 && i < n)
        return i;
    if (n == 1)
        return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0)
        i += period;
    return i < n ? i : period - i;
}

/* ---------------------------------------------------------------- spatial step */

void fine_aug_spatial_matrix(int planar, const double angle[3], double scale, double m[3][3])
{
    memset(m, 0, 9 * sizeof(double));
    if (planar) {
        double c = cos(angle[0]), s = sin(angle[0]);
        /* rotate_coords_2d: (p_y, p_x) = (o_y, o_x) [[c, -s], [s, c]] */
        m[0][0] = 1;
        m[1][1] = c * scale, m[1][2] = s * scale;
        m[2][1] = -s * scale, m[2][2] = c * scale;
        return;
    }
    double r[3][3];
    rotation(angle, r);
    for (int j = 0; j < 3; j++) /* p_j = sum_i o_i r[i][j]: m = R^T */
        for (int i = 0; i < 3; i++)
            m[j][i] = r[i][j] * scale;
}

void fine_aug_draw_spatial(const fine_aug_params *p, fine_rng *rng, fine_aug_spatial *s)
{
    memset(s, 0, sizeof *s);
    s->scale = 1.0;
    if (fine_rng_uniform(rng) < p->p_rot) {
        s->rotated = 1;
        for (int d = 0; d < (p->planar ? 1 : 3); d++)
            s->angle[d] = fine_rng_uniform(rng) <= p->p_rot_axis
                              ? fine_rng_range(rng, p->rot[d][0], p->rot[d][1])
                              : 0.0;
    }
    if (fine_rng_uniform(rng) < p->p_scale) {
        s->scaled = 1;
        if (fine_rng_uniform(rng) < 0.5 && p->scale[0] < 1)
            s->scale = fine_rng_range(rng, p->scale[0], 1.0);
        else
            s->scale = fine_rng_range(rng, fmax(p->scale[0], 1.0), p->scale[1]);
    }
    fine_aug_spatial_matrix(p->planar, s->angle, s->scale, s->m);
}

static int check_box(const fine_aug_source *src, const int64_t crop[3], fine_err *e)
{
    for (int d = 0; d < 3; d++) {
        if (crop[d] < 1 || src->size[d] < 1)
            return fine_err_set(e, "empty crop or case (axis %d)", d);
        if (src->box_size[d] < crop[d])
            return fine_err_set(e, "box %lld smaller than the crop %lld on axis %d",
                                (long long)src->box_size[d], (long long)crop[d], d);
    }
    return 0;
}

int fine_aug_crop(const fine_aug_source *src, const int64_t crop[3], float *image, uint8_t *label,
                  fine_err *e)
{
    if (check_box(src, crop, e) < 0)
        return -1;
    int64_t st[3];
    for (int d = 0; d < 3; d++)
        st[d] = src->box_lo[d] + (src->box_size[d] - crop[d]) / 2;
    const int64_t *n = src->size;
    /* the x range of the crop that lies in the case */
    int64_t x0 = st[2] < 0 ? -st[2] : 0;
    int64_t x1 = n[2] - st[2] < crop[2] ? n[2] - st[2] : crop[2];
    for (int64_t i = 0; i < crop[0]; i++)
        for (int64_t j = 0; j < crop[1]; j++) {
            int64_t o = (i * crop[1] + j) * crop[2];
            int64_t z = st[0] + i, y = st[1] + j;
            if (z < 0 || z >= n[0] || y < 0 || y >= n[1] || x1 <= x0) {
                memset(image + o, 0, (size_t)crop[2] * sizeof *image);
                if (label)
                    memset(label + o, 0, (size_t)crop[2]);
                continue;
            }
            int64_t s = (z * n[1] + y) * n[2] + st[2];
            for (int64_t k = 0; k < x0; k++)
                image[o + k] = 0;
            memcpy(image + o + x0, src->image + s + x0, (size_t)(x1 - x0) * sizeof *image);
            for (int64_t k = x1; k < crop[2]; k++)
                image[o + k] = 0;
            if (label) {
                memset(label + o, 0, (size_t)crop[2]);
                if (src->label)
                    memcpy(label + o + x0, src->label + s + x0, (size_t)(x1 - x0));
            }
        }
    return 0;
}

/* The box region [lo, lo + n) (box coordinates) of the padded box: image values, 0 outside. */
static void fill_region(const fine_aug_source *src, const int64_t lo[3], const int64_t n[3], float *c)
{
    const int64_t *sz = src->size;
    int64_t cz = src->box_lo[0] + lo[0], cy = src->box_lo[1] + lo[1], cx = src->box_lo[2] + lo[2];
    int64_t x0 = cx < 0 ? -cx : 0;
    int64_t x1 = sz[2] - cx < n[2] ? sz[2] - cx : n[2];
    for (int64_t i = 0; i < n[0]; i++)
        for (int64_t j = 0; j < n[1]; j++) {
            float *row = c + (i * n[1] + j) * n[2];
            int64_t z = cz + i, y = cy + j;
            if (z < 0 || z >= sz[0] || y < 0 || y >= sz[1] || x1 <= x0) {
                memset(row, 0, (size_t)n[2] * sizeof *row);
                continue;
            }
            const float *s = src->image + (z * sz[1] + y) * sz[2] + cx;
            for (int64_t k = 0; k < x0; k++)
                row[k] = 0;
            memcpy(row + x0, s + x0, (size_t)(x1 - x0) * sizeof *row);
            for (int64_t k = x1; k < n[2]; k++)
                row[k] = 0;
        }
}

/* The label of the padded box at box voxel (z, y, x); 0 outside the case (see augment.h). */
static inline int box_label(const fine_aug_source *src, int64_t z, int64_t y, int64_t x)
{
    z += src->box_lo[0], y += src->box_lo[1], x += src->box_lo[2];
    if (z < 0 || y < 0 || x < 0 || z >= src->size[0] || y >= src->size[1] || x >= src->size[2])
        return 0;
    return src->label[(z * src->size[1] + y) * src->size[2] + x];
}

/* batchgenerators interpolate_img(is_seg, order 1) at box point f + t (f integer, t in
 * [0, 1) per axis, inside the box): each label's indicator interpolated linearly, the largest
 * label whose weight is >= 0.5 wins, else 0. */
static uint8_t label_at(const fine_aug_source *src, const int64_t f[3], const double t[3], int planar)
{
    const int64_t *P = src->box_size, *n = src->size;
    int64_t c[3], g[3];
    for (int d = 0; d < 3; d++) {
        c[d] = f[d] + src->box_lo[d];
        g[d] = (planar && d == 0) || f[d] + 1 >= P[d] ? 0 : 1; /* f + 1 == P only when t == 0 */
    }
    int lab[8], nc = planar ? 4 : 8;
    if (c[0] >= 0 && c[0] + g[0] < n[0] && c[1] >= 0 && c[1] + g[1] < n[1] && c[2] >= 0 &&
        c[2] + g[2] < n[2]) {
        const uint8_t *L = src->label + (c[0] * n[1] + c[1]) * n[2] + c[2];
        int64_t sz = g[0] * n[1] * n[2], sy = g[1] * n[2], sx = g[2];
        lab[0] = L[0], lab[1] = L[sx], lab[2] = L[sy], lab[3] = L[sy + sx];
        if (!planar)
            lab[4] = L[sz], lab[5] = L[sz + sx], lab[6] = L[sz + sy], lab[7] = L[sz + sy + sx];
    } else {
        for (int i = 0; i < nc; i++)
            lab[i] = box_label(src, f[0] + ((i >> 2) & 1) * g[0], f[1] + ((i >> 1) & 1) * g[1],
                               f[2] + (i & 1) * g[2]);
    }
    int same = 1;
    for (int i = 1; i < nc; i++)
        same &= lab[i] == lab[0];
    if (same)
        return (uint8_t)lab[0];
    double wt[8];
    for (int i = 0; i < nc; i++) {
        double wz = planar ? 1.0 : ((i >> 2) & 1 ? t[0] : 1.0 - t[0]);
        wt[i] = wz * ((i >> 1) & 1 ? t[1] : 1.0 - t[1]) * (i & 1 ? t[2] : 1.0 - t[2]);
    }
    int best = 0;
    for (int i = 0; i < nc; i++) {
        if (lab[i] <= best)
            continue;
        double s = 0;
        for (int j = 0; j < nc; j++)
            if (lab[j] == lab[i])
                s += wt[j];
        if (s >= 0.5)
            best = lab[i];
    }
    return (uint8_t)best;
}

/* Four floats as one vector (GCC and Clang vector extensions: SSE on x86-64, NEON on arm64). */
typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void cubic_weights_f(float t, float w[4])
{
    float t2 = t * t, t3 = t2 * t, u = 1.0f - t;
    w[0] = u * u * u * (1.0f / 6.0f);
    w[1] = (3.0f * t3 - 6.0f * t2 + 4.0f) * (1.0f / 6.0f);
    w[2] = (-3.0f * t3 + 3.0f * t2 + 3.0f * t + 1.0f) * (1.0f / 6.0f);
    w[3] = t3 * (1.0f / 6.0f);
}

/* The spline at box point f + t from the coefficients C of region [rlo, rlo + rn): nz = 4
 * taps along z (nz = 1 in planar mode: slice f[0]). */
static float spline_at(const float *C, const int64_t rlo[3], const int64_t rn[3],
                       const int64_t P[3], const int64_t f[3], const double t[3], int planar)
{
    const int64_t sy = rn[2], sz = rn[1] * rn[2];
    float wz[4] = {1, 0, 0, 0}, wy[4], wx[4];
    int nz = planar ? 1 : 4;
    if (!planar)
        cubic_weights_f((float)t[0], wz);
    cubic_weights_f((float)t[1], wy);
    cubic_weights_f((float)t[2], wx);
    int inside = f[1] >= 1 && f[1] + 2 < P[1] && f[2] >= 1 && f[2] + 2 < P[2] &&
                 (planar || (f[0] >= 1 && f[0] + 2 < P[0]));
    if (inside) { /* no mirrored index: 16 (planar 4) rows of 4 neighbouring coefficients */
        const float *b = C + (f[0] - (planar ? 0 : 1) - rlo[0]) * sz + (f[1] - 1 - rlo[1]) * sy +
                         (f[2] - 1 - rlo[2]);
        v4f acc = {0, 0, 0, 0};
        for (int a = 0; a < nz; a++) {
            const float *r = b + a * sz;
            v4f ay = load4(r) * wy[0] + load4(r + sy) * wy[1] + load4(r + 2 * sy) * wy[2] +
                     load4(r + 3 * sy) * wy[3];
            acc += ay * wz[a];
        }
        return acc[0] * wx[0] + acc[1] * wx[1] + acc[2] * wx[2] + acc[3] * wx[3];
    }
    int64_t oz[4], oy[4], ox[4];
    for (int a = 0; a < 4; a++) {
        oz[a] = planar ? (f[0] - rlo[0]) * sz : (mirror_index(f[0] - 1 + a, P[0]) - rlo[0]) * sz;
        oy[a] = (mirror_index(f[1] - 1 + a, P[1]) - rlo[1]) * sy;
        ox[a] = mirror_index(f[2] - 1 + a, P[2]) - rlo[2];
    }
    float acc = 0;
    for (int a = 0; a < nz; a++) {
        float ay = 0;
        for (int b = 0; b < 4; b++) {
            const float *r = C + oz[a] + oy[b];
            ay += (r[ox[0]] * wx[0] + r[ox[1]] * wx[1] + r[ox[2]] * wx[2] + r[ox[3]] * wx[3]) * wy[b];
        }
        acc += ay * wz[a];
    }
    return acc;
}

int fine_aug_resample(const fine_aug_source *src, const double m[3][3], int planar,
                      const int64_t crop[3], float *image, uint8_t *label, fine_aug_work *w,
                      fine_err *e)
{
    if (check_box(src, crop, e) < 0)
        return -1;
    const int64_t *P = src->box_size;
    if (planar && P[0] != crop[0])
        return fine_err_set(e, "dummy-2D needs a box of %lld slices, not %lld", (long long)crop[0],
                            (long long)P[0]);
    double ctr[3], h[3];
    for (int d = 0; d < 3; d++) {
        ctr[d] = (double)P[d] / 2.0 - 0.5;
        h[d] = ((double)crop[d] - 1.0) / 2.0;
    }
    /* the box region the crop touches: the corners' extent, the spline's support, a margin */
    int64_t rlo[3], rn[3];
    int empty = 0;
    for (int d = 0; d < 3; d++) {
        double mn = ctr[d], mx = ctr[d];
        for (int i = 0; i < 3; i++) {
            mn -= fabs(m[d][i]) * h[i];
            mx += fabs(m[d][i]) * h[i];
        }
        int64_t slo = (int64_t)floor(mn) - 1, shi = (int64_t)floor(mx) + 2;
        if (slo < 0)
            slo = 0;
        if (shi > P[d] - 1)
            shi = P[d] - 1;
        if (mx < 0 || mn > (double)(P[d] - 1) || slo > shi)
            empty = 1;
        int margin = planar && d == 0 ? 0 : 16;
        rlo[d] = slo - margin < 0 ? 0 : slo - margin;
        int64_t rhi = shi + margin > P[d] - 1 ? P[d] - 1 : shi + margin;
        rn[d] = rhi - rlo[d] + 1;
    }
    int64_t nout = crop[0] * crop[1] * crop[2];
    if (empty) {
        memset(image, 0, (size_t)nout * sizeof *image);
        if (label)
            memset(label, 0, (size_t)nout);
        return 0;
    }
    if (RESERVE(w, coef, coef_n, (size_t)(rn[0] * rn[1] * rn[2]), e) < 0)
        return -1;
    float *C = w->coef;
    fill_region(src, rlo, rn, C);
    if (RESERVE(w, tmp, tmp_n, (size_t)(rn[2] * XLANES), e) < 0)
        return -1;
    for (int axis = 2; axis >= (planar ? 1 : 0); axis--)
        prefilter_axis(C, rn, axis, w->tmp);

    /* The output is visited in tiles of 8x8x16 voxels: the coefficients and labels a tile
     * reads then stay in cache (a rotated row of the crop otherwise crosses a new set of
     * 16 box rows at every voxel). */
    const double lim[3] = {(double)(P[0] - 1), (double)(P[1] - 1), (double)(P[2] - 1)};
    enum { TZ = 8, TY = 8, TX = 16 };
    for (int64_t i0 = 0; i0 < crop[0]; i0 += TZ)
        for (int64_t j0 = 0; j0 < crop[1]; j0 += TY)
            for (int64_t k0 = 0; k0 < crop[2]; k0 += TX) {
                int64_t i1 = i0 + TZ < crop[0] ? i0 + TZ : crop[0];
                int64_t j1 = j0 + TY < crop[1] ? j0 + TY : crop[1];
                int64_t k1 = k0 + TX < crop[2] ? k0 + TX : crop[2];
                for (int64_t i = i0; i < i1; i++)
                    for (int64_t j = j0; j < j1; j++) {
                        double o0 = (double)i - h[0], o1 = (double)j - h[1];
                        double base[3];
                        for (int d = 0; d < 3; d++)
                            base[d] = ctr[d] + m[d][0] * o0 + m[d][1] * o1;
                        int64_t row = (i * crop[1] + j) * crop[2];
                        for (int64_t k = k0; k < k1; k++) {
                            double o2 = (double)k - h[2];
                            double p[3] = {base[0] + m[0][2] * o2, base[1] + m[1][2] * o2,
                                           base[2] + m[2][2] * o2};
                            if (planar)
                                p[0] = (double)i;
                            if (!(p[0] >= 0 && p[0] <= lim[0] && p[1] >= 0 && p[1] <= lim[1] &&
                                  p[2] >= 0 && p[2] <= lim[2])) { /* outside the box: the constant */
                                image[row + k] = 0;
                                if (label)
                                    label[row + k] = 0;
                                continue;
                            }
                            int64_t f[3] = {(int64_t)p[0], (int64_t)p[1], (int64_t)p[2]};
                            double t[3] = {p[0] - (double)f[0], p[1] - (double)f[1],
                                           p[2] - (double)f[2]};
                            image[row + k] = spline_at(C, rlo, rn, P, f, t, planar);
                            if (label)
                                label[row + k] = src->label ? label_at(src, f, t, planar) : 0;
                        }
                    }
            }
    return 0;
}

/* ---------------------------------------------------------------- intensity steps */

void fine_aug_noise(float *x, int64_t n, double std, fine_rng *rng)
{
    fine_rng_add_normal_f32(rng, x, n, 0.0, std);
}

/* scipy's 'reflect' index map (half-sample symmetric) into [0, n). */
static inline int64_t reflect_index(int64_t i, int64_t n)
{
    int64_t period = 2 * n;
    i %= period;
    if (i < 0)
        i += period;
    return i < n ? i : period - 1 - i;
}

typedef struct kernel {
    int r;
    double w[64];
} kernel;

static void op_correlate_reflect(const double *in, int64_t n, double *out, int64_t n_out, int64_t w,
                                 const void *ctx)
{
    (void)n_out;
    const kernel *k = ctx;
    for (int64_t i = 0; i < n; i++) {
        double *o = out + i * w;
        for (int64_t c = 0; c < w; c++)
            o[c] = 0;
        for (int j = -k->r; j <= k->r; j++) {
            const double *s = in + reflect_index(i + j, n) * w;
            double kw = k->w[j + k->r];
            for (int64_t c = 0; c < w; c++)
                o[c] += kw * s[c];
        }
    }
}

int fine_aug_blur(float *x, const int64_t size[3], double sigma, fine_aug_work *w, fine_err *e)
{
    kernel k;
    /* scipy gaussian_filter1d: radius int(truncate * sigma + 0.5), truncate 4 */
    k.r = (int)(4.0 * sigma + 0.5);
    if (k.r > 31)
        return fine_err_set(e, "blur sigma %g too large", sigma);
    if (k.r < 0 || !(sigma > 0))
        return 0;
    double sum = 0;
    for (int j = -k.r; j <= k.r; j++)
        sum += k.w[j + k.r] = exp(-0.5 / (sigma * sigma) * (double)(j * j));
    for (int j = 0; j <= 2 * k.r; j++)
        k.w[j] /= sum;
    for (int axis = 0; axis < 3; axis++)
        if (along_axis(x, size, axis, x, size[axis], op_correlate_reflect, &k, w, e) < 0)
            return -1;
    return 0;
}

void fine_aug_brightness(float *x, int64_t n, double factor)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)((double)x[i] * factor);
}

static void stats(const float *x, int64_t n, double *mean, double *sd, double *mn, double *mx)
{
    double s = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    double mu = n ? s / (double)n : 0, v = 0;
    if (sd) {
        for (int64_t i = 0; i < n; i++)
            v += ((double)x[i] - mu) * ((double)x[i] - mu);
        *sd = n ? sqrt(v / (double)n) : 0;
    }
    *mean = mu;
    if (mn)
        *mn = lo;
    if (mx)
        *mx = hi;
}

void fine_aug_contrast(float *x, int64_t n, double factor, int preserve_range)
{
    double mu, lo, hi;
    stats(x, n, &mu, NULL, &lo, &hi);
    for (int64_t i = 0; i < n; i++) {
        double v = ((double)x[i] - mu) * factor + mu;
        if (preserve_range)
            v = v < lo ? lo : v > hi ? hi : v;
        x[i] = (float)v;
    }
}

void fine_aug_gamma(float *x, int64_t n, double gamma, int invert, int retain_stats)
{
    if (invert)
        for (int64_t i = 0; i < n; i++)
            x[i] = -x[i];
    double mu = 0, sd = 0, lo, hi;
    stats(x, n, &mu, &sd, &lo, &hi);
    /* numpy evaluates the power on the float32 patch: powf */
    float r = (float)(hi - lo + 1e-7), flo = (float)lo, g = (float)gamma;
    for (int64_t i = 0; i < n; i++)
        x[i] = powf((x[i] - flo) / r, g) * r + flo;
    if (retain_stats) {
        double mu2, sd2;
        stats(x, n, &mu2, &sd2, NULL, NULL);
        double f = sd / (sd2 + 1e-8);
        for (int64_t i = 0; i < n; i++)
            x[i] = (float)(((double)x[i] - mu2) * f + mu);
    }
    if (invert)
        for (int64_t i = 0; i < n; i++)
            x[i] = -x[i];
}

void fine_aug_mirror(float *image, uint8_t *label, const int64_t size[3], int axis)
{
    int64_t nz = size[0], ny = size[1], nx = size[2];
    if (axis == 2) {
        for (int64_t r = 0; r < nz * ny; r++) {
            float *a = image + r * nx;
            uint8_t *l = label ? label + r * nx : NULL;
            for (int64_t i = 0, j = nx - 1; i < j; i++, j--) {
                float t = a[i];
                a[i] = a[j], a[j] = t;
                if (l) {
                    uint8_t u = l[i];
                    l[i] = l[j], l[j] = u;
                }
            }
        }
        return;
    }
    /* axis 0 or 1: swap whole rows of x */
    int64_t outer = axis == 0 ? 1 : nz, n = axis == 0 ? nz : ny, step = axis == 0 ? ny * nx : nx;
    int64_t width = axis == 0 ? ny * nx : nx, group = axis == 0 ? 0 : ny * nx;
    for (int64_t g = 0; g < outer; g++)
        for (int64_t i = 0, j = n - 1; i < j; i++, j--) {
            float *a = image + g * group + i * step, *b = image + g * group + j * step;
            for (int64_t k = 0; k < width; k++) {
                float t = a[k];
                a[k] = b[k], b[k] = t;
            }
            if (label) {
                uint8_t *la = label + g * group + i * step, *lb = label + g * group + j * step;
                for (int64_t k = 0; k < width; k++) {
                    uint8_t u = la[k];
                    la[k] = lb[k], lb[k] = u;
                }
            }
        }
}

/* Order-0 zoom (scipy, grid_mode=True, mode 'nearest'): sample floor(c + 0.5) of
 * c = (o + 0.5) * n_in / n_out - 0.5. */
static void op_nearest(const double *in, int64_t n, double *out, int64_t n_out, int64_t w,
                       const void *ctx)
{
    (void)ctx;
    double zoom = (double)n / (double)n_out;
    for (int64_t o = 0; o < n_out; o++) {
        double c = ((double)o + 0.5) * zoom - 0.5;
        int64_t s = (int64_t)floor(c + 0.5);
        s = s < 0 ? 0 : s > n - 1 ? n - 1 : s;
        memcpy(out + o * w, in + s * w, (size_t)w * sizeof *out);
    }
}

/* Order-3 zoom (scipy, grid_mode=True, mode 'nearest'): the line is padded with 12 copies of
 * its end values, prefiltered with reflect boundaries, and the spline evaluated at
 * c = (o + 0.5) * n_in / n_out - 0.5 (+12), indices clamped to the padded line. */
enum { NEAREST_PAD = 12 };

typedef struct zoom_ctx {
    double *pad; /* (n + 24) * LANES doubles */
} zoom_ctx;

static void op_cubic_nearest(const double *in, int64_t n, double *out, int64_t n_out, int64_t w,
                             const void *ctx)
{
    const zoom_ctx *z = ctx;
    int64_t np = n + 2 * NEAREST_PAD;
    double *b = z->pad;
    for (int64_t i = 0; i < np; i++) {
        int64_t s = i - NEAREST_PAD;
        s = s < 0 ? 0 : s > n - 1 ? n - 1 : s;
        memcpy(b + i * w, in + s * w, (size_t)w * sizeof *b);
    }
    bspline_lanes_reflect(b, np, w);
    double zoom = (double)n / (double)n_out;
    for (int64_t o = 0; o < n_out; o++) {
        double c = ((double)o + 0.5) * zoom - 0.5 + NEAREST_PAD;
        int64_t f = (int64_t)floor(c);
        double wt[4];
        cubic_weights(c - (double)f, wt);
        double *r = out + o * w;
        for (int64_t k = 0; k < w; k++)
            r[k] = 0;
        for (int a = 0; a < 4; a++) {
            int64_t s = f - 1 + a;
            s = s < 0 ? 0 : s > np - 1 ? np - 1 : s;
            const double *src = b + s * w;
            for (int64_t k = 0; k < w; k++)
                r[k] += wt[a] * src[k];
        }
    }
}

int fine_aug_lowres(float *x, const int64_t size[3], const int64_t down[3], fine_aug_work *w,
                    fine_err *e)
{
    int64_t n = size[0] * size[1] * size[2], nd = down[0] * down[1] * down[2];
    for (int d = 0; d < 3; d++)
        if (down[d] < 1)
            return fine_err_set(e, "low-resolution size %lld on axis %d", (long long)down[d], d);
    /* two volumes of at most n voxels (a down-sized one is smaller): coef and tmp */
    if (RESERVE(w, coef, coef_n, (size_t)(n > nd ? n : nd), e) < 0 ||
        RESERVE(w, tmp, tmp_n, (size_t)(n > nd ? n : nd), e) < 0)
        return -1;
    /* down: x -> coef -> tmp -> coef, axis by axis (an axis already of the right size is
     * the identity and skipped) */
    int64_t cur[3] = {size[0], size[1], size[2]};
    const float *src = x;
    float *bufs[2] = {w->coef, w->tmp};
    int which = 0;
    for (int axis = 0; axis < 3; axis++) {
        if (down[axis] == cur[axis])
            continue;
        float *dst = bufs[which];
        if (along_axis(src, cur, axis, dst, down[axis], op_nearest, NULL, w, e) < 0)
            return -1;
        cur[axis] = down[axis];
        src = dst;
        which ^= 1;
    }
    if (src == x) /* nothing to do */
        return 0;
    double lo, hi, mu;
    stats(src, nd, &mu, NULL, &lo, &hi);
    /* up, the last axis written straight into x */
    int64_t nmax = size[0] > size[1] ? size[0] : size[1];
    nmax = nmax > size[2] ? nmax : size[2];
    if (RESERVE(w, pad, pad_n, (size_t)(nmax + 2 * NEAREST_PAD) * LANES, e) < 0)
        return -1;
    zoom_ctx zc = {w->pad};
    int last = 2;
    while (last >= 0 && cur[last] == size[last])
        last--;
    for (int axis = 0; axis <= last; axis++) {
        if (cur[axis] == size[axis])
            continue;
        float *dst = axis == last ? x : bufs[which];
        if (along_axis(src, cur, axis, dst, size[axis], op_cubic_nearest, &zc, w, e) < 0)
            return -1;
        cur[axis] = size[axis];
        src = dst;
        which ^= 1;
    }
    for (int64_t i = 0; i < n; i++) /* skimage resize(clip=True) */
        x[i] = x[i] < lo ? (float)lo : x[i] > hi ? (float)hi : x[i];
    return 0;
}

/* ---------------------------------------------------------------- the per-sample driver */

/* A factor from [lo, hi) split at 1 with probability 1/2 (contrast, gamma, scale). */
static double halves(fine_rng *rng, const double r[2])
{
    if (fine_rng_uniform(rng) < 0.5 && r[0] < 1)
        return fine_rng_range(rng, r[0], 1.0);
    return fine_rng_range(rng, fmax(r[0], 1.0), r[1]);
}

int fine_aug_intensity(const fine_aug_params *p, fine_rng *rng, float *image, uint8_t *label,
                       const int64_t size[3], fine_aug_work *w, fine_aug_applied *a, fine_err *e)
{
    fine_aug_applied dummy;
    if (!a)
        a = &dummy;
    memset(a, 0, sizeof *a);
    int64_t n = size[0] * size[1] * size[2];
    if (fine_rng_uniform(rng) < p->p_noise) {
        a->noise = 1;
        a->noise_std = fine_rng_range(rng, p->noise_std[0], p->noise_std[1]);
        fine_aug_noise(image, n, a->noise_std, rng);
    }
    if (fine_rng_uniform(rng) < p->p_blur && fine_rng_uniform(rng) <= p->p_blur_channel) {
        a->blur_sigma = fine_rng_range(rng, p->blur_sigma[0], p->blur_sigma[1]);
        if (fine_aug_blur(image, size, a->blur_sigma, w, e) < 0)
            return -1;
    }
    if (fine_rng_uniform(rng) < p->p_brightness) {
        a->brightness = fine_rng_range(rng, p->brightness[0], p->brightness[1]);
        fine_aug_brightness(image, n, a->brightness);
    }
    if (fine_rng_uniform(rng) < p->p_contrast) {
        a->contrast = halves(rng, p->contrast);
        fine_aug_contrast(image, n, a->contrast, p->contrast_preserve_range);
    }
    if (fine_rng_uniform(rng) < p->p_lowres && fine_rng_uniform(rng) < p->p_lowres_channel) {
        double zoom = fine_rng_range(rng, p->lowres_zoom[0], p->lowres_zoom[1]);
        for (int d = 0; d < 3; d++) {
            a->lowres[d] = (int64_t)nearbyint((double)size[d] * zoom); /* np.round: half to even */
            if (a->lowres[d] < 1)
                a->lowres[d] = 1;
        }
        if (p->planar) /* ignore_axes=(0,) */
            a->lowres[0] = size[0];
        if (fine_aug_lowres(image, size, a->lowres, w, e) < 0)
            return -1;
    }
    if (fine_rng_uniform(rng) < p->p_gamma_invert) {
        a->gamma_invert = halves(rng, p->gamma);
        fine_aug_gamma(image, n, a->gamma_invert, 1, p->gamma_retain_stats);
    }
    if (fine_rng_uniform(rng) < p->p_gamma) {
        a->gamma = halves(rng, p->gamma);
        fine_aug_gamma(image, n, a->gamma, 0, p->gamma_retain_stats);
    }
    for (int axis = 0; axis < 3; axis++)
        if (fine_rng_uniform(rng) < p->p_mirror) {
            a->mirror[axis] = 1;
            fine_aug_mirror(image, label, size, axis);
        }
    return 0;
}
