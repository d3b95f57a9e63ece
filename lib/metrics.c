/* metrics.c: Dice, HD95 and ASSD per label (metrics.h). */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- distance transform */

/* The lower envelope of the parabolas y = f[q] + (s*(x - q))^2 over the sites q with a finite
 * f[q], sampled at x = 0..n-1 into d (Felzenszwalb & Huttenlocher 2012, with the positions in
 * mm). v (n) and z (n + 1) are scratch. All of d is +INFINITY when no f is finite. */
static void edt_line(const double *f, double *d, int64_t n, double s, int64_t *v, double *z)
{
    int64_t k = -1;
    for (int64_t q = 0; q < n; q++) {
        if (!(f[q] < INFINITY))
            continue;
        double xq = s * (double)q, hq = f[q] + xq * xq;
        if (k < 0) {
            k = 0;
            v[0] = q;
            z[0] = -INFINITY;
            z[1] = INFINITY;
            continue;
        }
        /* z[0] = -inf stops the loop at k = 0: equal-curvature parabolas always cross */
        double xp = s * (double)v[k];
        double cut = (hq - (f[v[k]] + xp * xp)) / (2.0 * (xq - xp));
        while (cut <= z[k]) {
            k--;
            xp = s * (double)v[k];
            cut = (hq - (f[v[k]] + xp * xp)) / (2.0 * (xq - xp));
        }
        k++;
        v[k] = q;
        z[k] = cut;
        z[k + 1] = INFINITY;
    }
    if (k < 0) {
        for (int64_t x = 0; x < n; x++)
            d[x] = INFINITY;
        return;
    }
    int64_t j = 0;
    for (int64_t x = 0; x < n; x++) {
        double xs = s * (double)x;
        while (z[j + 1] < xs)
            j++;
        double dx = s * (double)(x - v[j]);
        d[x] = f[v[j]] + dx * dx;
    }
}

int fine_edt_sq(const uint8_t *feature, const int64_t shape[3], const double spacing[3], double *out,
                fine_err *e)
{
    int64_t nz = shape[0], ny = shape[1], nx = shape[2];
    if (nz <= 0 || ny <= 0 || nx <= 0)
        return 0;
    int64_t nmax = nx > ny ? nx : ny;
    if (nz > nmax)
        nmax = nz;
    double *f = malloc((size_t)nmax * sizeof *f), *d = malloc((size_t)nmax * sizeof *d);
    double *zb = malloc((size_t)(nmax + 1) * sizeof *zb);
    int64_t *v = malloc((size_t)nmax * sizeof *v);
    if (!f || !d || !zb || !v) {
        free(f), free(d), free(zb), free(v);
        return fine_err_set(e, "distance transform: out of memory (%lldx%lldx%lld)", (long long)nz,
                            (long long)ny, (long long)nx);
    }
    /* x: the distance to the nearest feature of the row, by a scan each way. */
    double sx = spacing[2];
    for (int64_t row = 0; row < nz * ny; row++) {
        const uint8_t *m = feature + row * nx;
        double *o = out + row * nx;
        int64_t last = -1;
        for (int64_t x = 0; x < nx; x++) {
            if (m[x])
                last = x;
            o[x] = last < 0 ? INFINITY : sx * (double)(x - last);
        }
        last = -1;
        for (int64_t x = nx - 1; x >= 0; x--) {
            if (m[x])
                last = x;
            if (last >= 0 && sx * (double)(last - x) < o[x])
                o[x] = sx * (double)(last - x);
            o[x] *= o[x];
        }
    }
    /* y, then z: the envelope along each column. */
    for (int axis = 1; axis >= 0; axis--) {
        int64_t n = axis == 1 ? ny : nz, stride = axis == 1 ? nx : ny * nx;
        int64_t outer = axis == 1 ? nz : 1, inner = axis == 1 ? nx : ny * nx;
        double s = spacing[axis];
        for (int64_t o = 0; o < outer; o++) {
            for (int64_t i = 0; i < inner; i++) {
                double *base = out + o * ny * nx + i;
                int any = 0;
                for (int64_t q = 0; q < n; q++) {
                    f[q] = base[q * stride];
                    any |= f[q] < INFINITY;
                }
                if (!any)
                    continue;
                edt_line(f, d, n, s, v, zb);
                for (int64_t q = 0; q < n; q++)
                    base[q * stride] = d[q];
            }
        }
    }
    free(f), free(d), free(zb), free(v);
    return 0;
}

/* ---------------------------------------------------------------- borders */

int64_t fine_mask_border(const uint8_t *mask, const int64_t shape[3], uint8_t *border)
{
    int64_t nz = shape[0], ny = shape[1], nx = shape[2], sy = nx, sz = ny * nx, count = 0;
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++) {
            int64_t i0 = z * sz + y * sy;
            for (int64_t x = 0; x < nx; x++) {
                int64_t i = i0 + x;
                uint8_t b = 0;
                if (mask[i]) {
                    int inner = x > 0 && x < nx - 1 && y > 0 && y < ny - 1 && z > 0 && z < nz - 1 &&
                                mask[i - 1] && mask[i + 1] && mask[i - sy] && mask[i + sy] &&
                                mask[i - sz] && mask[i + sz];
                    b = !inner;
                }
                border[i] = b;
                count += b;
            }
        }
    return count;
}

/* ---------------------------------------------------------------- percentile */

static void swap_d(double *a, double *b)
{
    double t = *a;
    *a = *b;
    *b = t;
}

/* Moves the k-th smallest value of v[0..n) to v[k], smaller ones before it, larger after
 * (quickselect with a median-of-three pivot; NaN-free input). */
static void select_kth(double *v, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo])
            swap_d(&v[mid], &v[lo]);
        if (v[hi] < v[lo])
            swap_d(&v[hi], &v[lo]);
        if (v[hi] < v[mid])
            swap_d(&v[hi], &v[mid]);
        double pivot = v[mid];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                swap_d(&v[i], &v[j]);
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

double fine_percentile(double *v, int64_t n, double q)
{
    if (n <= 0)
        return NAN;
    double rank = (q / 100.0) * (double)(n - 1);
    int64_t lo = (int64_t)floor(rank);
    if (lo < 0)
        lo = 0;
    if (lo > n - 1)
        lo = n - 1;
    double t = rank - (double)lo;
    select_kth(v, n, lo);
    double a = v[lo];
    if (lo + 1 >= n)
        return a;
    double b = v[lo + 1];
    for (int64_t i = lo + 2; i < n; i++)
        if (v[i] < b)
            b = v[i];
    /* numpy's _lerp: from the nearer end, so that t = 1 gives b exactly. */
    double diff = b - a;
    return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

/* ---------------------------------------------------------------- surface distances */

/* The distances (mm) from each border voxel of `from` to the nearest border voxel of `to`,
 * appended to dist; dt is scratch of n doubles. Returns the count appended, or -1. */
static int64_t directed(const uint8_t *from_border, const uint8_t *to_border, const int64_t shape[3],
                        const double spacing[3], double *dt, double *dist, fine_err *e)
{
    if (fine_edt_sq(to_border, shape, spacing, dt, e) < 0)
        return -1;
    int64_t n = shape[0] * shape[1] * shape[2], c = 0;
    for (int64_t i = 0; i < n; i++)
        if (from_border[i])
            dist[c++] = sqrt(dt[i]);
    return c;
}

/* Mean with Neumaier's compensated sum. */
static double mean_of(const double *v, int64_t n)
{
    double s = 0, c = 0;
    for (int64_t i = 0; i < n; i++) {
        double t = s + v[i];
        c += fabs(s) >= fabs(v[i]) ? (s - t) + v[i] : (v[i] - t) + s;
        s = t;
    }
    return (s + c) / (double)n;
}

int fine_surface_distances(const uint8_t *a, const uint8_t *b, const int64_t shape[3],
                           const double spacing[3], fine_surface_dist *out, fine_err *e)
{
    out->hd95 = out->assd = out->asd_ab = out->asd_ba = out->hd = NAN;
    out->border_a = out->border_b = 0;
    int64_t n = shape[0] * shape[1] * shape[2];
    if (n <= 0)
        return 0;
    uint8_t *ba = malloc((size_t)n), *bb = malloc((size_t)n);
    double *dt = malloc((size_t)n * sizeof *dt);
    double *dist = NULL;
    int rc = -1;
    if (!ba || !bb || !dt) {
        fine_err_set(e, "surface distances: out of memory");
        goto done;
    }
    out->border_a = fine_mask_border(a, shape, ba);
    out->border_b = fine_mask_border(b, shape, bb);
    if (out->border_a == 0 || out->border_b == 0) { /* an empty mask (a non-empty one has a border) */
        rc = 0;
        goto done;
    }
    dist = malloc((size_t)(out->border_a + out->border_b) * sizeof *dist);
    if (!dist) {
        fine_err_set(e, "surface distances: out of memory");
        goto done;
    }
    int64_t na = directed(ba, bb, shape, spacing, dt, dist, e);
    if (na < 0)
        goto done;
    int64_t nb = directed(bb, ba, shape, spacing, dt, dist + na, e);
    if (nb < 0)
        goto done;
    out->asd_ab = mean_of(dist, na);
    out->asd_ba = mean_of(dist + na, nb);
    out->assd = (out->asd_ab + out->asd_ba) / 2.0;
    double hd = 0;
    for (int64_t i = 0; i < na + nb; i++)
        if (dist[i] > hd)
            hd = dist[i];
    out->hd = hd;
    out->hd95 = fine_percentile(dist, na + nb, 95.0);
    rc = 0;
done:
    free(ba), free(bb), free(dt), free(dist);
    return rc;
}

/* ---------------------------------------------------------------- per label */

/* slot[i] = k + 1 where t's value i equals labels[k], 0 for any other value. */
static int label_slots(const fine_tensor *t, const int64_t *labels, int nlabels, uint8_t *slot, fine_err *e)
{
    int64_t n = fine_tensor_numel(t);
    if (t->dtype == FINE_U8 || t->dtype == FINE_I8 || t->dtype == FINE_U16 || t->dtype == FINE_I16) {
        /* a table over the dtype's whole range */
        int wide = t->dtype == FINE_U16 || t->dtype == FINE_I16;
        int64_t lo = t->dtype == FINE_I8 ? -128 : t->dtype == FINE_I16 ? -32768 : 0;
        int64_t size = wide ? 65536 : 256;
        uint8_t *lut = calloc((size_t)size, 1);
        if (!lut)
            return fine_err_set(e, "out of memory");
        for (int k = 0; k < nlabels; k++)
            if (labels[k] >= lo && labels[k] < lo + size)
                lut[labels[k] - lo] = (uint8_t)(k + 1);
        switch (t->dtype) {
        case FINE_U8: { const uint8_t *p = t->data; for (int64_t i = 0; i < n; i++) slot[i] = lut[p[i]]; break; }
        case FINE_I8: { const int8_t *p = t->data; for (int64_t i = 0; i < n; i++) slot[i] = lut[p[i] + 128]; break; }
        case FINE_U16: { const uint16_t *p = t->data; for (int64_t i = 0; i < n; i++) slot[i] = lut[p[i]]; break; }
        default: { const int16_t *p = t->data; for (int64_t i = 0; i < n; i++) slot[i] = lut[p[i] + 32768]; break; }
        }
        free(lut);
        return 0;
    }
    /* wider or float dtypes: compare with each label (few labels; NaN matches none) */
    for (int64_t i = 0; i < n; i++) {
        uint8_t s = 0;
        if (t->dtype == FINE_I32 || t->dtype == FINE_I64) {
            int64_t v = t->dtype == FINE_I32 ? ((const int32_t *)t->data)[i] : ((const int64_t *)t->data)[i];
            for (int k = 0; k < nlabels && !s; k++)
                if (v == labels[k])
                    s = (uint8_t)(k + 1);
        } else {
            double v = fine_tensor_get(t, i);
            for (int k = 0; k < nlabels && !s; k++)
                if (v == (double)labels[k])
                    s = (uint8_t)(k + 1);
        }
        slot[i] = s;
    }
    return 0;
}

typedef struct box {
    int64_t lo[3], hi[3]; /* hi exclusive; lo > hi when empty */
} box;

static void box_add(box *b, int64_t z, int64_t y, int64_t x)
{
    int64_t c[3] = {z, y, x};
    for (int d = 0; d < 3; d++) {
        if (c[d] < b->lo[d])
            b->lo[d] = c[d];
        if (c[d] + 1 > b->hi[d])
            b->hi[d] = c[d] + 1;
    }
}

/* HD95 and ASSD of slot s in the box: both masks cut out of the slot volumes. */
static int label_surface(const uint8_t *ps, const uint8_t *rs, const int64_t shape[3], const box *bx,
                         uint8_t s, const double spacing[3], fine_label_metrics *m, fine_err *e)
{
    int64_t bs[3] = {bx->hi[0] - bx->lo[0], bx->hi[1] - bx->lo[1], bx->hi[2] - bx->lo[2]};
    int64_t n = bs[0] * bs[1] * bs[2];
    uint8_t *a = malloc((size_t)n), *b = malloc((size_t)n);
    if (!a || !b) {
        free(a), free(b);
        return fine_err_set(e, "label %lld: out of memory for a %lldx%lldx%lld box", (long long)m->label,
                            (long long)bs[0], (long long)bs[1], (long long)bs[2]);
    }
    int64_t j = 0;
    for (int64_t z = bx->lo[0]; z < bx->hi[0]; z++)
        for (int64_t y = bx->lo[1]; y < bx->hi[1]; y++) {
            int64_t i0 = (z * shape[1] + y) * shape[2];
            for (int64_t x = bx->lo[2]; x < bx->hi[2]; x++, j++) {
                a[j] = ps[i0 + x] == s;
                b[j] = rs[i0 + x] == s;
            }
        }
    fine_surface_dist sd;
    int rc = fine_surface_distances(a, b, bs, spacing, &sd, e);
    free(a), free(b);
    if (rc < 0)
        return -1;
    m->hd95 = sd.hd95;
    m->assd = sd.assd;
    return 0;
}

int fine_label_metrics_compute(const fine_tensor *pred, const fine_tensor *ref, const double spacing[3],
                               const int64_t *labels, int nlabels, fine_label_metrics *out, fine_err *e)
{
    if (pred->ndim != 3 || ref->ndim != 3)
        return fine_err_set(e, "label volumes must be 3-D (got %d-D and %d-D)", pred->ndim, ref->ndim);
    for (int d = 0; d < 3; d++)
        if (pred->shape[d] != ref->shape[d])
            return fine_err_set(e, "shapes differ: %lldx%lldx%lld and %lldx%lldx%lld",
                                (long long)pred->shape[0], (long long)pred->shape[1], (long long)pred->shape[2],
                                (long long)ref->shape[0], (long long)ref->shape[1], (long long)ref->shape[2]);
    if (nlabels < 1 || nlabels > FINE_METRICS_MAX_LABELS)
        return fine_err_set(e, "%d labels (1 to %d)", nlabels, FINE_METRICS_MAX_LABELS);
    for (int k = 0; k < nlabels; k++)
        for (int j = 0; j < k; j++)
            if (labels[j] == labels[k])
                return fine_err_set(e, "label %lld is listed twice", (long long)labels[k]);
    for (int d = 0; d < 3; d++)
        if (!(spacing[d] > 0) || !isfinite(spacing[d]))
            return fine_err_set(e, "spacing %g along axis %d is not a positive number", spacing[d], d);

    const int64_t *shape = pred->shape;
    int64_t n = shape[0] * shape[1] * shape[2];
    uint8_t *ps = malloc((size_t)(n > 0 ? n : 1)), *rs = malloc((size_t)(n > 0 ? n : 1));
    if (!ps || !rs) {
        free(ps), free(rs);
        return fine_err_set(e, "out of memory for %lld voxels", (long long)n);
    }
    int rc = -1;
    if (label_slots(pred, labels, nlabels, ps, e) < 0 || label_slots(ref, labels, nlabels, rs, e) < 0)
        goto done;

    int64_t tp[FINE_METRICS_MAX_LABELS + 1] = {0}, np_[FINE_METRICS_MAX_LABELS + 1] = {0},
            nr[FINE_METRICS_MAX_LABELS + 1] = {0};
    box bx[FINE_METRICS_MAX_LABELS + 1];
    for (int k = 0; k <= nlabels; k++)
        for (int d = 0; d < 3; d++)
            bx[k].lo[d] = INT64_MAX, bx[k].hi[d] = INT64_MIN;
    for (int64_t z = 0; z < shape[0]; z++)
        for (int64_t y = 0; y < shape[1]; y++) {
            int64_t i0 = (z * shape[1] + y) * shape[2];
            for (int64_t x = 0; x < shape[2]; x++) {
                uint8_t p = ps[i0 + x], r = rs[i0 + x];
                if (!(p | r))
                    continue;
                np_[p]++;
                nr[r]++;
                if (p == r) {
                    tp[p]++;
                    box_add(&bx[p], z, y, x);
                } else {
                    if (p)
                        box_add(&bx[p], z, y, x);
                    if (r)
                        box_add(&bx[r], z, y, x);
                }
            }
        }
    for (int k = 0; k < nlabels; k++) {
        int s = k + 1;
        fine_label_metrics *m = &out[k];
        m->label = labels[k];
        m->tp = tp[s];
        m->n_pred = np_[s];
        m->n_ref = nr[s];
        m->fp = np_[s] - tp[s];
        m->fn = nr[s] - tp[s];
        m->dice = (m->n_pred == 0 && m->n_ref == 0)
                      ? NAN
                      : 2.0 * (double)m->tp / (double)(2 * m->tp + m->fp + m->fn);
        m->hd95 = m->assd = NAN;
        if (m->n_pred == 0 || m->n_ref == 0 || m->n_pred == n || m->n_ref == n)
            continue; /* nnU-Net: NaN when either mask is empty or full */
        if (label_surface(ps, rs, shape, &bx[s], (uint8_t)s, spacing, m, e) < 0)
            goto done;
    }
    rc = 0;
done:
    free(ps), free(rs);
    return rc;
}
