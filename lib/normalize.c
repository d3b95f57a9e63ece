#include "normalize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const SCHEME_NAMES[] = {"none", "ct", "zscore"};

int fine_norm_scheme_parse(const char *name, fine_norm_scheme *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, SCHEME_NAMES[i]) == 0) {
            *out = (fine_norm_scheme)i;
            return 0;
        }
    return -1;
}

const char *fine_norm_scheme_name(fine_norm_scheme s)
{
    return (unsigned)s < 3 ? SCHEME_NAMES[s] : "?";
}

/* ---------------------------------------------------------------- fitting */

void fine_fg_sample_free(fine_fg_sample *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int same_shape(const fine_tensor *a, const fine_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

int64_t fine_fg_sample_add(fine_fg_sample *s, const fine_tensor *image, const fine_tensor *label,
                           fine_err *e)
{
    if (!same_shape(image, label))
        return fine_err_set(e, "image and label shapes differ");
    int64_t numel = fine_tensor_numel(image), nfg = 0;
    for (int64_t i = 0; i < numel; i++) {
        if (!(fine_tensor_get(label, i) > 0))
            continue;
        if (nfg++ % 10 != 0)
            continue;
        double v = fine_tensor_get(image, i);
        if (isnan(v))
            return fine_err_set(e, "image value at index %lld is NaN", (long long)i);
        if (s->n == s->cap) {
            int64_t cap = s->cap ? s->cap * 2 : 4096;
            double *nv = realloc(s->v, (size_t)cap * sizeof *nv);
            if (!nv)
                return fine_err_set(e, "out of memory (%lld foreground samples)", (long long)cap);
            s->v = nv;
            s->cap = cap;
        }
        s->v[s->n++] = v;
    }
    return nfg;
}

static void swap(double *a, double *b)
{
    double t = *a;
    *a = *b;
    *b = t;
}

/* Reorders v so that v[k] is the k-th smallest, everything before it <= v[k] and everything
 * after it >= v[k] (Hoare partitioning with a median-of-three pivot; equal keys split evenly). */
static void select_kth(double *v, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (hi > lo + 1) {
        int64_t mid = lo + (hi - lo) / 2;
        swap(&v[mid], &v[lo + 1]);
        if (v[lo] > v[hi])
            swap(&v[lo], &v[hi]);
        if (v[lo + 1] > v[hi])
            swap(&v[lo + 1], &v[hi]);
        if (v[lo] > v[lo + 1])
            swap(&v[lo], &v[lo + 1]);
        /* v[lo] <= v[lo+1] = pivot <= v[hi] */
        int64_t i = lo + 1, j = hi;
        double pivot = v[lo + 1];
        for (;;) {
            do
                i++;
            while (v[i] < pivot);
            do
                j--;
            while (v[j] > pivot);
            if (j < i)
                break;
            swap(&v[i], &v[j]);
        }
        v[lo + 1] = v[j];
        v[j] = pivot;
        if (j >= k)
            hi = j - 1;
        if (j <= k)
            lo = i;
    }
    if (hi == lo + 1 && v[hi] < v[lo])
        swap(&v[lo], &v[hi]);
}

/* The smallest of v[from..n). */
static double min_from(const double *v, int64_t from, int64_t n)
{
    double m = v[from];
    for (int64_t i = from + 1; i < n; i++)
        if (v[i] < m)
            m = v[i];
    return m;
}

double fine_norm_percentile(double *v, int64_t n, double q)
{
    /* numpy 1.22+ 'linear': virtual index (n - 1) * (q / 100), lerp between its neighbours;
     * _lerp: a + (b - a) * t, or b - (b - a) * (1 - t) when t >= 0.5. */
    double vi = (double)(n - 1) * (q / 100.0);
    if (vi <= 0) {
        select_kth(v, n, 0);
        return v[0];
    }
    if (vi >= (double)(n - 1)) {
        select_kth(v, n, n - 1);
        return v[n - 1];
    }
    int64_t k = (int64_t)floor(vi);
    double t = vi - (double)k;
    select_kth(v, n, k);
    double a = v[k], b = min_from(v, k + 1, n);
    double d = b - a;
    return t >= 0.5 ? b - d * (1 - t) : a + d * t;
}

void fine_norm_mean_std(const double *v, int64_t n, double *mean, double *std)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += v[i];
    double m = n > 0 ? s / (double)n : NAN, ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += (v[i] - m) * (v[i] - m);
    *mean = m;
    *std = n > 0 ? sqrt(ss / (double)n) : NAN;
}

int fine_fg_sample_stats(fine_fg_sample *s, fine_norm_stats *st, fine_err *e)
{
    memset(st, 0, sizeof *st);
    st->scheme = FINE_NORM_CT;
    if (s->n == 0)
        return fine_err_set(e, "no foreground voxels (label > 0) in the training cases");
    int64_t n = s->n;
    fine_norm_mean_std(s->v, n, &st->mean, &st->std);
    st->min = s->v[0];
    st->max = s->v[0];
    for (int64_t i = 1; i < n; i++) {
        if (s->v[i] < st->min)
            st->min = s->v[i];
        if (s->v[i] > st->max)
            st->max = s->v[i];
    }
    st->lower = fine_norm_percentile(s->v, n, 0.5);
    st->upper = fine_norm_percentile(s->v, n, 99.5);
    /* np.median: the middle element, or the mean of the two middle ones */
    select_kth(s->v, n, (n - 1) / 2);
    double a = s->v[(n - 1) / 2];
    st->median = n % 2 ? a : (a + min_from(s->v, n / 2, n)) / 2;
    st->count = n;
    return 0;
}

/* ---------------------------------------------------------------- applying */

int fine_norm_apply(const fine_tensor *in, const fine_norm_stats *st, fine_tensor *out,
                    double *mean, double *std, fine_err *e)
{
    memset(out, 0, sizeof *out);
    int64_t numel = fine_tensor_numel(in);
    double m = 0, sd = 1;
    if (st->scheme == FINE_NORM_CT) {
        if (!(st->std > 0) || !isfinite(st->mean) || !(st->lower <= st->upper))
            return fine_err_set(e, "ct statistics are invalid (lower %g, upper %g, mean %g, std %g)",
                                st->lower, st->upper, st->mean, st->std);
        m = st->mean;
        sd = st->std;
    } else if (st->scheme == FINE_NORM_ZSCORE) {
        double s = 0, ss = 0;
        for (int64_t i = 0; i < numel; i++)
            s += fine_tensor_get(in, i);
        m = numel > 0 ? s / (double)numel : 0;
        for (int64_t i = 0; i < numel; i++) {
            double d = fine_tensor_get(in, i) - m;
            ss += d * d;
        }
        sd = numel > 0 ? sqrt(ss / (double)numel) : 0;
    }
    if (fine_tensor_alloc(out, FINE_F32, in->ndim, in->shape, e) < 0)
        return -1;
    float *o = out->data;
    if (st->scheme == FINE_NORM_CT) {
        float lo = (float)st->lower, hi = (float)st->upper, fm = (float)m, fs = (float)sd;
        for (int64_t i = 0; i < numel; i++) {
            float x = (float)fine_tensor_get(in, i);
            x = x < lo ? lo : x > hi ? hi : x; /* np.clip */
            o[i] = (x - fm) / fs;
        }
    } else if (st->scheme == FINE_NORM_ZSCORE) {
        float fm = (float)m, fs = (float)(sd + 1e-8);
        for (int64_t i = 0; i < numel; i++)
            o[i] = ((float)fine_tensor_get(in, i) - fm) / fs;
    } else {
        for (int64_t i = 0; i < numel; i++)
            o[i] = (float)fine_tensor_get(in, i);
    }
    if (mean)
        *mean = m;
    if (std)
        *std = sd;
    return 0;
}
