/* resample.c: nnU-Net v1 resampling, separable and threaded. See resample.h for the contract.
 *
 * How a data volume is resampled. Cubic B-spline interpolation of scipy's zoom is separable:
 * the prefilter (a recursive filter along each axis) and the 4-tap interpolation along each
 * axis are linear maps on different axes, so they commute, and one "pass" per axis does
 * "prefilter along the axis, then interpolate along it". A pass works on a block of VW = 16
 * lines at a time, laid out lane-interleaved (block[i][lane]): line samples i, one line per
 * lane, so every step of the (sequential) recursive filter is one vector operation over 16
 * independent lines. Lines along the last axis are gathered by a transpose; lines along
 * another axis are 16 neighbouring columns, read as 64-byte rows.
 *
 * scipy's zoom with mode 'nearest' pads the input with 12 edge values on each side before the
 * prefilter (scipy.ndimage._interpolation._prepad_for_spline_filter) and runs the filter with
 * the mirror boundary on the padded line (ni_splines.c, NI_EXTEND_NEAREST); we do the same
 * (the mirror initialisation sum truncated at |z|^24 < 2e-14). The interpolation point of
 * output o is c = (o + 0.5)·n_in/n_out − 0.5 (grid_mode), taps floor(c) − 1 .. floor(c) + 2
 * with scipy's weight formulas. Linear (order 1) has no prefilter; its taps read the padded
 * line, whose edge copies give the 'nearest' clamp. Nearest (order 0, nnU-Net's z) picks
 * floor(c + 0.5), c clamped to [0, n_in − 1] (map_coordinates).
 *
 * The separate-z path with the low-resolution axis first (every CT in practice) resamples one
 * output slice at a time straight into the output: nearest along z only selects input slices,
 * so each selected input slice is resized in-plane once, in a per-thread scratch, and copied
 * to every further output slice that selects it. Other cases run whole-volume passes. */
#include "resample.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAD 12         /* edge values padded on each side of a line (scipy's npad) */
#define VW 16          /* lines per block (lanes) */
#define INIT_TERMS 24  /* terms of the causal initialisation sum */
#define POLE (-0.267949192431122706472553658494127633) /* sqrt(3) - 2: the cubic B-spline pole */

enum { OP_COPY, OP_NEAREST, OP_LINEAR, OP_CUBIC };

/* How one axis goes from n_in to n_out samples: for output o, `taps` input samples starting
 * at start[o] (an index into the padded line: PAD + input index), weighted by w (float, for
 * data) and wd (double, for label decisions). */
typedef struct axis_map {
    int op, taps;
    int64_t n_in, n_out;
    int64_t *start;
    float *w;
    double *wd;
} axis_map;

static void axis_map_free(axis_map *m)
{
    free(m->start);
    free(m->w);
    free(m->wd);
    memset(m, 0, sizeof *m);
}

/* scipy ni_splines.c get_spline_interpolation_weights, order 3, for x in [0, 1). */
static void cubic_weights(double x, double w[4])
{
    double y = x, z = 1.0 - x;
    w[1] = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0;
    w[2] = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0;
    w[0] = z * z * z / 6.0;
    w[3] = 1.0 - w[0] - w[1] - w[2];
}

static int axis_map_init(axis_map *m, int op, int64_t n_in, int64_t n_out, fine_err *e)
{
    memset(m, 0, sizeof *m);
    if (n_in == n_out)
        op = OP_COPY;
    m->op = op;
    m->taps = op == OP_CUBIC ? 4 : op == OP_LINEAR ? 2 : 1;
    m->n_in = n_in;
    m->n_out = n_out;
    size_t n = (size_t)n_out * (size_t)m->taps;
    m->start = malloc((size_t)n_out * sizeof *m->start);
    m->w = malloc(n * sizeof *m->w);
    m->wd = malloc(n * sizeof *m->wd);
    if (!m->start || !m->w || !m->wd) {
        axis_map_free(m);
        return fine_err_set(e, "out of memory");
    }
    const double zoom = (double)n_in / (double)n_out, last = (double)(n_in - 1);
    for (int64_t o = 0; o < n_out; o++) {
        double *wd = m->wd + o * m->taps;
        double c = ((double)o + 0.5) * zoom - 0.5;
        switch (op) {
        case OP_COPY:
            m->start[o] = PAD + o;
            wd[0] = 1.0;
            break;
        case OP_NEAREST:
            c = c < 0 ? 0 : c > last ? last : c;
            m->start[o] = PAD + (int64_t)floor(c + 0.5);
            wd[0] = 1.0;
            break;
        case OP_LINEAR: {
            c = c < 0 ? 0 : c > last ? last : c;
            double f = floor(c);
            m->start[o] = PAD + (int64_t)f;
            wd[0] = 1.0 - (c - f);
            wd[1] = 1.0 - wd[0];
            break;
        }
        default: { /* cubic, in padded coordinates as scipy computes after its prepadding */
            c += PAD;
            double f = floor(c);
            m->start[o] = (int64_t)f - 1;
            cubic_weights(c - f, wd);
            break;
        }
        }
        for (int k = 0; k < m->taps; k++)
            m->w[o * m->taps + k] = (float)wd[k];
    }
    return 0;
}

/* ---------------------------------------------------------------- threads */

typedef void (*unit_fn)(void *ctx, int64_t unit, float *scratch);

typedef struct pool {
    unit_fn fn;
    void *ctx;
    int64_t n;
    size_t scratch_bytes;
    atomic_llong next;
    atomic_int failed;
} pool;

static void *pool_worker(void *arg)
{
    pool *p = arg;
    float *scratch = p->scratch_bytes ? aligned_alloc(64, (p->scratch_bytes + 63) / 64 * 64) : NULL;
    if (p->scratch_bytes && !scratch) {
        atomic_store(&p->failed, 1);
        return NULL;
    }
    for (;;) {
        long long u = atomic_fetch_add(&p->next, 1);
        if (u >= p->n || atomic_load(&p->failed))
            break;
        p->fn(p->ctx, (int64_t)u, scratch);
    }
    free(scratch);
    return NULL;
}

/* Runs fn(ctx, u, scratch) for u in 0..n-1 on up to `threads` threads, each with its own
 * 64-byte aligned scratch of scratch_bytes. */
static int run_units(int64_t n, int threads, size_t scratch_bytes, unit_fn fn, void *ctx, fine_err *e)
{
    if (n <= 0)
        return 0;
    pool p = {.fn = fn, .ctx = ctx, .n = n, .scratch_bytes = scratch_bytes};
    atomic_init(&p.next, 0);
    atomic_init(&p.failed, 0);
    int nt = threads < 1 ? 1 : threads;
    if (nt > n)
        nt = (int)n;
    pthread_t tid[256];
    if (nt > 256)
        nt = 256;
    int started = 0;
    for (int t = 1; t < nt; t++) {
        if (pthread_create(&tid[started], NULL, pool_worker, &p) != 0)
            break; /* fewer threads: the others share the work */
        started++;
    }
    pool_worker(&p);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    if (atomic_load(&p.failed))
        return fine_err_set(e, "out of memory (resampling scratch of %zu bytes)", scratch_bytes);
    return 0;
}

/* ---------------------------------------------------------------- one pass along one axis */

/* The cubic B-spline prefilter of VW lines of n samples, lane-interleaved, in place. The gain
 * (6) was applied when the block was filled. */
static void prefilter(float *c, int64_t n)
{
    const float z = (float)POLE;
    float zk = z;
    for (int64_t k = 1; k < INIT_TERMS && k < n; k++) { /* causal init: sum z^k c[k] (mirror) */
        const float *ck = c + k * VW;
        for (int l = 0; l < VW; l++)
            c[l] += zk * ck[l];
        zk *= z;
    }
    for (int64_t i = 1; i < n; i++) {
        float *ci = c + i * VW;
        const float *cp = ci - VW;
        for (int l = 0; l < VW; l++)
            ci[l] += z * cp[l];
    }
    const float f = (float)(POLE / (POLE * POLE - 1.0));
    float *cl = c + (n - 1) * VW;
    for (int l = 0; l < VW; l++) /* anticausal init (mirror) */
        cl[l] = (z * cl[l - VW] + cl[l]) * f;
    for (int64_t i = n - 2; i >= 0; i--) {
        float *ci = c + i * VW;
        const float *cn = ci + VW;
        for (int l = 0; l < VW; l++)
            ci[l] = z * (cn[l] - ci[l]);
    }
}

/* A pass: the array src viewed as (A, L, B) becomes dst (A, M, B), L = m->n_in, M = m->n_out.
 * Units: for B == 1, VW consecutive lines (rows) each; else VW consecutive columns of one a. */
typedef struct pass {
    const axis_map *m;
    const float *src;
    float *dst;
    int64_t A, B;
    int64_t units_per_a; /* B > 1: ceil(B / VW) */
} pass;

static int64_t pass_units(const pass *p)
{
    return p->B == 1 ? (p->A + VW - 1) / VW : p->A * p->units_per_a;
}

/* Scratch floats a pass needs: the block plus one output row of lanes. */
static size_t pass_scratch(int64_t L)
{
    return (size_t)(L + 2 * PAD + 1) * VW;
}

/* acc = the weighted sum of 4 (or 2) consecutive block rows, one vector op per lane group. */
static inline void taps4(float *restrict acc, const float *restrict r, const float *restrict w)
{
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
    for (int l = 0; l < VW; l++)
        acc[l] = w0 * r[l] + w1 * r[VW + l] + w2 * r[2 * VW + l] + w3 * r[3 * VW + l];
}

static inline void taps2(float *restrict acc, const float *restrict r, const float *restrict w)
{
    const float w0 = w[0], w1 = w[1];
    for (int l = 0; l < VW; l++)
        acc[l] = w0 * r[l] + w1 * r[VW + l];
}

static inline void copy_lanes(float *restrict d, const float *restrict s)
{
    for (int l = 0; l < VW; l++)
        d[l] = s[l];
}

static void pass_unit(const pass *p, int64_t u, float *blk)
{
    const axis_map *m = p->m;
    const int64_t L = m->n_in, M = m->n_out, B = p->B;
    const float gain = m->op == OP_CUBIC ? (float)((1.0 - POLE) * (1.0 - 1.0 / POLE)) : 1.0f;
    int64_t a, b0, wn;
    if (B == 1) {
        a = u * VW;
        b0 = 0;
        wn = p->A - a < VW ? p->A - a : VW;
    } else {
        a = u / p->units_per_a;
        b0 = (u % p->units_per_a) * VW;
        wn = B - b0 < VW ? B - b0 : VW;
    }
    float *rows = blk + PAD * VW;
    if (B == 1) {
        for (int64_t l = 0; l < wn; l++) {
            const float *s = p->src + (a + l) * L;
            for (int64_t i = 0; i < L; i++)
                rows[i * VW + l] = gain * s[i];
        }
    } else {
        const float *s = p->src + a * L * B + b0;
        for (int64_t i = 0; i < L; i++)
            for (int64_t l = 0; l < wn; l++)
                rows[i * VW + l] = gain * s[i * B + l];
    }
    if (wn < VW) /* unused lanes: copies of lane 0, computed and never stored */
        for (int64_t i = 0; i < L; i++)
            for (int64_t l = wn; l < VW; l++)
                rows[i * VW + l] = rows[i * VW];
    for (int64_t i = 0; i < PAD; i++) {
        memcpy(blk + i * VW, rows, VW * sizeof(float));
        memcpy(rows + (L + i) * VW, rows + (L - 1) * VW, VW * sizeof(float));
    }
    if (m->op == OP_CUBIC)
        prefilter(blk, L + 2 * PAD);
    float *acc = blk + (L + 2 * PAD) * VW;
    for (int64_t o = 0; o < M; o++) {
        const float *r = blk + m->start[o] * VW, *w = m->w + o * m->taps;
        if (m->taps == 4)
            taps4(acc, r, w);
        else if (m->taps == 2)
            taps2(acc, r, w);
        else
            memcpy(acc, r, VW * sizeof(float));
        if (B == 1) {
            float *d = p->dst + a * M + o;
            for (int64_t l = 0; l < wn; l++)
                d[l * M] = acc[l];
        } else if (wn == VW) {
            copy_lanes(p->dst + (a * M + o) * B + b0, acc);
        } else {
            memcpy(p->dst + (a * M + o) * B + b0, acc, (size_t)wn * sizeof(float));
        }
    }
}

static void pass_unit_fn(void *ctx, int64_t u, float *scratch)
{
    pass_unit(ctx, u, scratch);
}

static pass pass_make(const axis_map *m, const float *src, float *dst, int64_t A, int64_t B)
{
    pass p = {.m = m, .src = src, .dst = dst, .A = A, .B = B, .units_per_a = (B + VW - 1) / VW};
    return p;
}

/* Runs a whole pass serially with the caller's scratch. */
static void pass_run(const pass *p, float *scratch)
{
    int64_t n = pass_units(p);
    for (int64_t u = 0; u < n; u++)
        pass_unit(p, u, scratch);
}

/* ---------------------------------------------------------------- data volumes */

static void range_of(const float *v, int64_t n, float *lo, float *hi)
{
    float a = v[0], b = v[0];
    for (int64_t i = 1; i < n; i++) {
        a = v[i] < a ? v[i] : a;
        b = v[i] > b ? v[i] : b;
    }
    *lo = a;
    *hi = b;
}

static void clip(float *v, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++)
        v[i] = v[i] < lo ? lo : v[i] > hi ? hi : v[i];
}

/* Separate z with the low-resolution axis 0, one output slice per unit. */
typedef struct zslices {
    const float *src;
    float *dst;
    int64_t in[3], out[3];
    axis_map my, mx; /* in-plane maps */
    const int64_t *sel; /* output slice j <- input slice sel[j] */
    const int64_t *owner; /* units: output slices that compute (first of each selected input) */
} zslices;

static void zslice_unit(void *ctx, int64_t u, float *scratch)
{
    const zslices *z = ctx;
    int64_t j = z->owner[u];
    const int64_t Y = z->in[1], X = z->in[2], Y2 = z->out[1], X2 = z->out[2];
    const float *s = z->src + z->sel[j] * Y * X;
    float *d = z->dst + j * Y2 * X2;
    float *tmp = scratch, *blk = scratch + Y * X2;
    const float *mid = s;
    if (X != X2) { /* along x: Y lines of X -> X2 */
        pass p = pass_make(&z->mx, s, Y2 == Y ? d : tmp, Y, 1);
        pass_run(&p, blk);
        mid = Y2 == Y ? d : tmp;
    }
    if (Y != Y2) { /* along y: one (Y, X2) plane -> (Y2, X2) */
        pass p = pass_make(&z->my, mid, d, 1, X2);
        pass_run(&p, blk);
    } else if (mid == s) {
        memcpy(d, s, (size_t)(Y * X) * sizeof(float));
    }
    if (X != X2 || Y != Y2) {
        float lo, hi;
        range_of(s, Y * X, &lo, &hi);
        clip(d, Y2 * X2, lo, hi);
    }
}

static int resample_zslices(const float *src, const int64_t in[3], float *dst, const int64_t out[3], int op,
                            int threads, fine_err *e)
{
    zslices z = {.src = src, .dst = dst};
    memcpy(z.in, in, sizeof z.in);
    memcpy(z.out, out, sizeof z.out);
    axis_map mz;
    int64_t *sel = malloc((size_t)out[0] * sizeof *sel), *owner = malloc((size_t)out[0] * sizeof *owner);
    int rc = -1;
    if (!sel || !owner) {
        free(sel);
        free(owner);
        return fine_err_set(e, "out of memory");
    }
    if (axis_map_init(&mz, OP_NEAREST, in[0], out[0], e) < 0)
        goto done;
    if (axis_map_init(&z.my, op, in[1], out[1], e) < 0) {
        axis_map_free(&mz);
        goto done;
    }
    if (axis_map_init(&z.mx, op, in[2], out[2], e) < 0) {
        axis_map_free(&mz);
        axis_map_free(&z.my);
        goto done;
    }
    int64_t nown = 0;
    for (int64_t j = 0; j < out[0]; j++) {
        sel[j] = mz.start[j] - PAD;
        if (j == 0 || sel[j] != sel[j - 1]) /* the selection is monotone */
            owner[nown++] = j;
    }
    z.sel = sel;
    z.owner = owner;
    int64_t lmax = in[1] > in[2] ? in[1] : in[2];
    size_t scratch = ((size_t)(in[1] * out[2]) + pass_scratch(lmax)) * sizeof(float);
    rc = run_units(nown, threads, scratch, zslice_unit, &z, e);
    if (rc == 0) { /* the other slices copy their owner's */
        size_t plane = (size_t)(out[1] * out[2]);
        for (int64_t j = 1; j < out[0]; j++)
            if (sel[j] == sel[j - 1])
                memcpy(dst + (size_t)j * plane, dst + (size_t)(j - 1) * plane, plane * sizeof(float));
    }
    axis_map_free(&mz);
    axis_map_free(&z.my);
    axis_map_free(&z.mx);
done:
    free(sel);
    free(owner);
    return rc;
}

/* A threaded whole-volume pass along axis d of an array of shape cur; cur[d] becomes n_out. */
static int volume_pass(const axis_map *m, const float *src, float *dst, int64_t cur[3], int d, int threads,
                       fine_err *e)
{
    int64_t A = 1, B = 1;
    for (int k = 0; k < d; k++)
        A *= cur[k];
    for (int k = d + 1; k < 3; k++)
        B *= cur[k];
    pass p = pass_make(m, src, dst, A, B);
    if (run_units(pass_units(&p), threads, pass_scratch(cur[d]) * sizeof(float), pass_unit_fn, &p, e) < 0)
        return -1;
    cur[d] = m->n_out;
    return 0;
}

/* The general case: whole-volume passes (3-D, or separate z along axis 1 or 2). */
static int resample_passes(const float *src, const int64_t in[3], float *dst, const int64_t out[3], int op,
                           int lowres, int threads, fine_err *e)
{
    axis_map maps[3];
    int nmaps = 0, rc = -1;
    for (int d = 0; d < 3; d++, nmaps++)
        if (axis_map_init(&maps[d], d == lowres ? OP_NEAREST : op, in[d], out[d], e) < 0)
            goto done;
    /* per-slice (across lowres) or global clip bounds of the input */
    int64_t nsl = lowres >= 0 ? in[lowres] : 1;
    float *lo = malloc((size_t)nsl * sizeof *lo), *hi = malloc((size_t)nsl * sizeof *hi);
    if (!lo || !hi) {
        free(lo);
        free(hi);
        fine_err_set(e, "out of memory");
        goto done;
    }
    if (lowres < 0) {
        range_of(src, in[0] * in[1] * in[2], &lo[0], &hi[0]);
    } else {
        for (int64_t s = 0; s < nsl; s++) {
            lo[s] = INFINITY;
            hi[s] = -INFINITY;
        }
        for (int64_t z = 0; z < in[0]; z++)
            for (int64_t y = 0; y < in[1]; y++)
                for (int64_t x = 0; x < in[2]; x++) {
                    int64_t c[3] = {z, y, x};
                    float v = src[(z * in[1] + y) * in[2] + x];
                    int64_t s = c[lowres];
                    lo[s] = v < lo[s] ? v : lo[s];
                    hi[s] = v > hi[s] ? v : hi[s];
                }
    }
    /* order of the passes: the nearest one first when it shrinks and last otherwise, the
     * others most shrinking first (less work for the later passes) */
    int order[3] = {0, 1, 2}, n = 0;
    double key[3];
    for (int d = 0; d < 3; d++) {
        double r = (double)out[d] / (double)in[d];
        key[d] = d != lowres ? r : r <= 1 ? -1.0 : 1e300;
    }
    for (int i = 0; i < 3; i++)
        for (int k = i + 1; k < 3; k++)
            if (key[order[k]] < key[order[i]]) {
                int t = order[i];
                order[i] = order[k];
                order[k] = t;
            }
    int64_t cur[3] = {in[0], in[1], in[2]};
    const float *from = src;
    float *bufs[2] = {NULL, NULL};
    int npass = 0;
    for (int i = 0; i < 3; i++)
        npass += maps[order[i]].op != OP_COPY;
    rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        int d = order[i];
        if (maps[d].op == OP_COPY)
            continue;
        n++;
        float *to;
        if (n == npass) {
            to = dst;
        } else {
            int64_t size = maps[d].n_out;
            for (int k = 0; k < 3; k++)
                if (k != d)
                    size *= cur[k];
            int b = n & 1;
            free(bufs[b]);
            bufs[b] = malloc((size_t)size * sizeof(float));
            if (!bufs[b]) {
                rc = fine_err_set(e, "out of memory (%lld floats)", (long long)size);
                break;
            }
            to = bufs[b];
        }
        rc = volume_pass(&maps[d], from, to, cur, d, threads, e);
        from = to;
    }
    if (rc == 0 && npass == 0)
        memcpy(dst, src, (size_t)(in[0] * in[1] * in[2]) * sizeof(float));
    if (rc == 0 && npass > 0) {
        for (int64_t z = 0; z < out[0]; z++)
            for (int64_t y = 0; y < out[1]; y++) {
                float *row = dst + (z * out[1] + y) * out[2];
                if (lowres < 0) {
                    clip(row, out[2], lo[0], hi[0]);
                } else if (lowres == 0 || lowres == 1) {
                    int64_t s = maps[lowres].start[lowres == 0 ? z : y] - PAD;
                    clip(row, out[2], lo[s], hi[s]);
                } else {
                    for (int64_t x = 0; x < out[2]; x++) {
                        int64_t s = maps[2].start[x] - PAD;
                        row[x] = row[x] < lo[s] ? lo[s] : row[x] > hi[s] ? hi[s] : row[x];
                    }
                }
            }
    }
    free(bufs[0]);
    free(bufs[1]);
    free(lo);
    free(hi);
done:
    for (int d = 0; d < nmaps; d++)
        axis_map_free(&maps[d]);
    return rc;
}

static int check_sizes(const int64_t in[3], const int64_t out[3], fine_err *e)
{
    for (int d = 0; d < 3; d++)
        if (in[d] < 1 || out[d] < 1)
            return fine_err_set(e, "cannot resample %lldx%lldx%lld to %lldx%lldx%lld", (long long)in[0],
                                (long long)in[1], (long long)in[2], (long long)out[0], (long long)out[1],
                                (long long)out[2]);
    return 0;
}

int fine_resample_f32(const float *src, const int64_t in[3], float *dst, const int64_t out[3], fine_interp order,
                      int lowres_axis, int threads, fine_err *e)
{
    if (check_sizes(in, out, e) < 0)
        return -1;
    if (order != FINE_INTERP_CUBIC && order != FINE_INTERP_LINEAR && order != FINE_INTERP_NEAREST)
        return fine_err_set(e, "unsupported interpolation order %d", (int)order);
    int op = order == FINE_INTERP_CUBIC ? OP_CUBIC : order == FINE_INTERP_LINEAR ? OP_LINEAR : OP_NEAREST;
    if (lowres_axis < -1 || lowres_axis > 2)
        return fine_err_set(e, "invalid low-resolution axis %d", lowres_axis);
    if (lowres_axis == 0)
        return resample_zslices(src, in, dst, out, op, threads, e);
    return resample_passes(src, in, dst, out, op, lowres_axis, threads, e);
}

/* ---------------------------------------------------------------- labels */

typedef struct labels_job {
    const uint8_t *src;
    uint8_t *dst;
    int64_t in[3], out[3];
    axis_map m[3];
} labels_job;

/* One output slice z: per-label linear over the linear axes, nearest over the others. The
 * mask of label l at a point is the sum, over the neighbours holding l, of the products of
 * their per-axis weights ((1·w_z)·w_y)·w_x, in scipy's neighbour order (last axis fastest);
 * the label is the largest l whose mask is >= 0.5, else 0 (resize_segmentation). */
static void labels_unit(void *ctx, int64_t z, float *scratch)
{
    (void)scratch;
    const labels_job *j = ctx;
    const int64_t Y = j->in[1], X = j->in[2], Y2 = j->out[1], X2 = j->out[2];
    const axis_map *mz = &j->m[0], *my = &j->m[1], *mx = &j->m[2];
    int64_t iz[2], iy[2], ix[2];
    double wz[2];
    int tz = mz->taps;
    for (int k = 0; k < tz; k++) {
        int64_t i = mz->start[z] - PAD + k;
        iz[k] = i < j->in[0] ? i : j->in[0] - 1;
        wz[k] = mz->wd[z * tz + k];
    }
    uint8_t *d = j->dst + z * Y2 * X2;
    for (int64_t y = 0; y < Y2; y++) {
        int ty = my->taps;
        double wy[2];
        for (int k = 0; k < ty; k++) {
            int64_t i = my->start[y] - PAD + k;
            iy[k] = i < Y ? i : Y - 1;
            wy[k] = my->wd[y * ty + k];
        }
        for (int64_t x = 0; x < X2; x++) {
            int tx = mx->taps;
            double wx[2];
            for (int k = 0; k < tx; k++) {
                int64_t i = mx->start[x] - PAD + k;
                ix[k] = i < X ? i : X - 1;
                wx[k] = mx->wd[x * tx + k];
            }
            uint8_t lab[8];
            double w[8];
            int n = 0, same = 1;
            for (int a = 0; a < tz; a++)
                for (int b = 0; b < ty; b++)
                    for (int c = 0; c < tx; c++) {
                        lab[n] = j->src[(iz[a] * Y + iy[b]) * X + ix[c]];
                        w[n] = ((1.0 * wz[a]) * wy[b]) * wx[c];
                        same &= lab[n] == lab[0];
                        n++;
                    }
            if (same) {
                d[y * X2 + x] = lab[0];
                continue;
            }
            int best = 0;
            for (int a = 0; a < n; a++) {
                int seen = 0;
                for (int b = 0; b < a; b++)
                    seen |= lab[b] == lab[a];
                if (seen || lab[a] <= best)
                    continue;
                double s = 0.0;
                for (int b = a; b < n; b++)
                    if (lab[b] == lab[a])
                        s += w[b];
                if (s >= 0.5)
                    best = lab[a];
            }
            d[y * X2 + x] = (uint8_t)best;
        }
    }
}

int fine_resample_labels_u8(const uint8_t *src, const int64_t in[3], uint8_t *dst, const int64_t out[3],
                            int lowres_axis, int threads, fine_err *e)
{
    if (check_sizes(in, out, e) < 0)
        return -1;
    if (lowres_axis < -1 || lowres_axis > 2)
        return fine_err_set(e, "invalid low-resolution axis %d", lowres_axis);
    labels_job j = {.src = src, .dst = dst};
    memcpy(j.in, in, sizeof j.in);
    memcpy(j.out, out, sizeof j.out);
    int n = 0, rc = 0;
    for (; n < 3 && rc == 0; n++)
        rc = axis_map_init(&j.m[n], n == lowres_axis ? OP_NEAREST : OP_LINEAR, in[n], out[n], e);
    if (rc < 0)
        n--;
    if (rc == 0)
        rc = run_units(out[0], threads, 0, labels_unit, &j, e);
    for (int d = 0; d < n; d++)
        axis_map_free(&j.m[d]);
    return rc;
}

/* ---------------------------------------------------------------- sizes and the separate-z rule */

void fine_resample_size(const int64_t size[3], const double spacing[3], const double new_spacing[3],
                        int64_t out[3])
{
    for (int d = 0; d < 3; d++) { /* np.round((old_spacing / new_spacing) * shape) */
        double v = nearbyint((spacing[d] / new_spacing[d]) * (double)size[d]);
        out[d] = v < 1 ? 1 : (int64_t)v;
    }
}

static double max3(const double v[3])
{
    return v[0] > v[1] ? (v[0] > v[2] ? v[0] : v[2]) : (v[1] > v[2] ? v[1] : v[2]);
}

static double min3(const double v[3])
{
    return v[0] < v[1] ? (v[0] < v[2] ? v[0] : v[2]) : (v[1] < v[2] ? v[1] : v[2]);
}

/* get_lowres_axis: the axes where max(spacing) / spacing == 1; -1 unless exactly one. */
static int lowres_of(const double sp[3])
{
    double mx = max3(sp);
    int axis = -1, count = 0;
    for (int d = 0; d < 3; d++)
        if (mx / sp[d] == 1.0) {
            axis = d;
            count++;
        }
    return count == 1 ? axis : -1;
}

int fine_resample_lowres_axis(const double original_spacing[3], const double target_spacing[3])
{
    if (max3(original_spacing) / min3(original_spacing) > FINE_SEPARATE_Z_THRESHOLD)
        return lowres_of(original_spacing);
    if (max3(target_spacing) / min3(target_spacing) > FINE_SEPARATE_Z_THRESHOLD)
        return lowres_of(target_spacing);
    return -1;
}

/* ---------------------------------------------------------------- volumes */

static int good_spacing(const double s[3])
{
    for (int d = 0; d < 3; d++)
        if (!(s[d] > 0) || !isfinite(s[d]))
            return 0;
    return 1;
}

/* t as u8 labels: a view of t when it is u8, else a converted copy in *tmp. */
static const uint8_t *labels_u8(const fine_tensor *t, fine_tensor *tmp, const char *what, fine_err *e)
{
    memset(tmp, 0, sizeof *tmp);
    if (t->dtype == FINE_U8)
        return t->data;
    if (!fine_dtype_is_int(t->dtype) || !fine_tensor_fits(t, FINE_U8)) {
        fine_err_set(e, "%s values are not integers in 0..255", what);
        return NULL;
    }
    if (fine_tensor_convert(t, FINE_U8, tmp, e) < 0)
        return NULL;
    return tmp->data;
}

/* t as f32: a view of t when it is f32, else a converted copy in *tmp. */
static const float *data_f32(const fine_tensor *t, fine_tensor *tmp, fine_err *e)
{
    memset(tmp, 0, sizeof *tmp);
    if (t->dtype == FINE_F32)
        return t->data;
    if (fine_tensor_convert(t, FINE_F32, tmp, e) < 0)
        return NULL;
    return tmp->data;
}

int fine_volume_resample(const fine_volume *in, const double target_spacing[3], int threads, fine_volume *out,
                         fine_err *e)
{
    memset(out, 0, sizeof *out);
    const fine_geometry *g = &in->geom;
    if (in->data.ndim != 3)
        return fine_err_set(e, "case %s: %s must be 3-D (z, y, x), not %d-D", in->case_id, in->name, in->data.ndim);
    if (!good_spacing(target_spacing))
        return fine_err_set(e, "invalid target spacing %gx%gx%g", target_spacing[0], target_spacing[1],
                            target_spacing[2]);
    if (!good_spacing(g->spacing))
        return fine_err_set(e, "case %s: invalid %s spacing %gx%gx%g", in->case_id, in->name, g->spacing[0],
                            g->spacing[1], g->spacing[2]);
    const int64_t *size = in->data.shape;
    int64_t ns[3];
    fine_resample_size(size, g->spacing, target_spacing, ns);
    int axis = fine_resample_lowres_axis(g->spacing, target_spacing);
    int same = size[0] == ns[0] && size[1] == ns[1] && size[2] == ns[2];
    int labels = fine_volume_name_is_integral(in->name);
    fine_tensor tmp;
    int rc = -1;
    memcpy(out->case_id, in->case_id, sizeof out->case_id);
    memcpy(out->name, in->name, sizeof out->name);
    out->geom = *g;
    for (int d = 0; d < 3; d++) {
        out->geom.size[d] = ns[d];
        out->geom.spacing[d] = target_spacing[d];
    }
    if (labels) {
        const uint8_t *src = labels_u8(&in->data, &tmp, in->name, e);
        if (src && fine_tensor_alloc(&out->data, FINE_U8, 3, ns, e) == 0) {
            if (same) {
                memcpy(out->data.data, src, (size_t)(ns[0] * ns[1] * ns[2]));
                rc = 0;
            } else {
                rc = fine_resample_labels_u8(src, size, out->data.data, ns, axis, threads, e);
            }
        }
    } else {
        const float *src = data_f32(&in->data, &tmp, e);
        if (src && fine_tensor_alloc(&out->data, FINE_F32, 3, ns, e) == 0) {
            if (same) {
                memcpy(out->data.data, src, (size_t)(ns[0] * ns[1] * ns[2]) * sizeof(float));
                rc = 0;
            } else {
                rc = fine_resample_f32(src, size, out->data.data, ns, FINE_INTERP_CUBIC, axis, threads, e);
            }
        }
    }
    fine_tensor_free(&tmp);
    if (rc < 0) {
        char prefix[FINE_CASE_MAX + 8];
        snprintf(prefix, sizeof prefix, "case %s", in->case_id);
        fine_err_prefix(e, prefix);
        fine_volume_free(out);
    }
    return rc;
}

/* ---------------------------------------------------------------- back to the original grid */

/* The output geometry (the original grid) and the crop box extent; checks the geometry. */
static int original_grid(const fine_volume *in, fine_geometry *og, int64_t ext[3], fine_err *e)
{
    const fine_geometry *g = &in->geom;
    *og = *g;
    for (int d = 0; d < 3; d++) {
        ext[d] = g->crop_hi[d] - g->crop_lo[d];
        if (g->original_size[d] < 1 || g->crop_lo[d] < 0 || ext[d] < 1 || g->crop_hi[d] > g->original_size[d])
            return fine_err_set(e, "case %s: %s: crop box [%lld, %lld) on axis %d does not fit the original size %lld",
                                in->case_id, in->name, (long long)g->crop_lo[d], (long long)g->crop_hi[d], d,
                                (long long)g->original_size[d]);
        og->size[d] = g->original_size[d];
        og->spacing[d] = g->original_spacing[d];
        og->crop_lo[d] = 0;
        og->crop_hi[d] = g->original_size[d];
    }
    if (!good_spacing(g->original_spacing) || !good_spacing(g->spacing))
        return fine_err_set(e, "case %s: %s: invalid spacing or original spacing in its geometry", in->case_id,
                            in->name);
    return 0;
}

/* Copies a crop-extent array (elements of es bytes) into the box at lo of an original-grid
 * array of shape osz. */
static void paste(const void *box, const int64_t ext[3], void *full, const int64_t osz[3], const int64_t lo[3],
                  size_t es)
{
    for (int64_t z = 0; z < ext[0]; z++)
        for (int64_t y = 0; y < ext[1]; y++)
            memcpy((char *)full + (size_t)(((z + lo[0]) * osz[1] + y + lo[1]) * osz[2] + lo[2]) * es,
                   (const char *)box + (size_t)((z * ext[1] + y) * ext[2]) * es, (size_t)ext[2] * es);
}

/* One channel of prob (or an image) resampled onto the crop box extent (f32) in box. */
static int channel_to_box(const fine_volume *in, int64_t c, const int64_t ext[3], fine_interp order, float *box,
                          int threads, fine_err *e)
{
    const fine_tensor *t = &in->data;
    const int64_t *sz = t->shape + t->ndim - 3;
    int64_t n = sz[0] * sz[1] * sz[2];
    float *conv = NULL;
    const float *src;
    if (t->dtype == FINE_F32) {
        src = (const float *)t->data + c * n;
    } else if (t->dtype == FINE_F16) {
        conv = malloc((size_t)n * sizeof *conv);
        if (!conv)
            return fine_err_set(e, "out of memory");
        const uint16_t *h = (const uint16_t *)t->data + c * n;
        for (int64_t i = 0; i < n; i++)
            conv[i] = fine_f16_to_f32(h[i]);
        src = conv;
    } else {
        return fine_err_set(e, "case %s: %s must be f32 or f16, not %s", in->case_id, in->name,
                            fine_dtype_name(t->dtype));
    }
    int rc = 0;
    if (sz[0] == ext[0] && sz[1] == ext[1] && sz[2] == ext[2])
        memcpy(box, src, (size_t)n * sizeof(float));
    else
        rc = fine_resample_f32(src, sz, box, ext, order,
                               fine_resample_lowres_axis(in->geom.original_spacing, in->geom.spacing), threads, e);
    free(conv);
    return rc;
}

static int labels_to_box(const fine_volume *in, const int64_t ext[3], uint8_t *box, int threads, fine_err *e)
{
    fine_tensor tmp;
    const uint8_t *src = labels_u8(&in->data, &tmp, in->name, e);
    if (!src)
        return -1;
    const int64_t *sz = in->data.shape;
    int rc = 0;
    if (sz[0] == ext[0] && sz[1] == ext[1] && sz[2] == ext[2])
        memcpy(box, src, (size_t)(ext[0] * ext[1] * ext[2]));
    else
        rc = fine_resample_labels_u8(src, sz, box, ext,
                                     fine_resample_lowres_axis(in->geom.original_spacing, in->geom.spacing), threads,
                                     e);
    fine_tensor_free(&tmp);
    return rc;
}

static int check_shape(const fine_volume *in, int want_ndim, fine_err *e)
{
    const fine_tensor *t = &in->data;
    if (t->ndim != want_ndim)
        return fine_err_set(e, "case %s: %s must be %d-D, not %d-D", in->case_id, in->name, want_ndim, t->ndim);
    for (int d = 0; d < 3; d++)
        if (t->shape[t->ndim - 3 + d] != in->geom.size[d])
            return fine_err_set(e, "case %s: %s shape does not match its geometry's size", in->case_id, in->name);
    return 0;
}

int fine_resample_to_original(const fine_volume *in, int threads, fine_volume *out, fine_err *e)
{
    memset(out, 0, sizeof *out);
    fine_geometry og;
    int64_t ext[3];
    int is_prob = strcmp(in->name, "prob") == 0, is_lab = fine_volume_name_is_integral(in->name);
    if (!is_prob && !is_lab && strcmp(in->name, "image") != 0)
        return fine_err_set(e, "case %s: cannot put a volume named '%s' back on the original grid (prob, seg, "
                            "label or image)", in->case_id, in->name);
    if (check_shape(in, is_prob ? 4 : 3, e) < 0 || original_grid(in, &og, ext, e) < 0)
        return -1;
    memcpy(out->case_id, in->case_id, sizeof out->case_id);
    memcpy(out->name, in->name, sizeof out->name);
    out->geom = og;
    int64_t nbox = ext[0] * ext[1] * ext[2], nfull = og.size[0] * og.size[1] * og.size[2];
    int rc = -1;
    if (is_lab) {
        uint8_t *box = malloc((size_t)nbox);
        if (!box)
            fine_err_set(e, "out of memory");
        else if (labels_to_box(in, ext, box, threads, e) == 0 &&
                 fine_tensor_alloc(&out->data, FINE_U8, 3, og.size, e) == 0) {
            paste(box, ext, out->data.data, og.size, in->geom.crop_lo, 1);
            rc = 0;
        }
        free(box);
    } else {
        int64_t C = is_prob ? in->data.shape[0] : 1;
        fine_dtype dt = is_prob ? in->data.dtype : FINE_F32;
        int64_t shape[4] = {C, og.size[0], og.size[1], og.size[2]};
        float *box = malloc((size_t)nbox * sizeof *box);
        size_t es = fine_dtype_size(dt);
        uint16_t *half = dt == FINE_F16 ? malloc((size_t)nbox * sizeof *half) : NULL;
        if (!box || (dt == FINE_F16 && !half))
            fine_err_set(e, "out of memory");
        else if (dt != FINE_F32 && dt != FINE_F16)
            fine_err_set(e, "case %s: %s must be f32 or f16, not %s", in->case_id, in->name, fine_dtype_name(dt));
        else if (fine_tensor_alloc(&out->data, dt, is_prob ? 4 : 3, is_prob ? shape : shape + 1, e) == 0) {
            rc = 0;
            for (int64_t c = 0; c < C && rc == 0; c++) {
                char *full = (char *)out->data.data + (size_t)(c * nfull) * es;
                if (is_prob && c == 0) { /* background outside the box */
                    for (int64_t i = 0; i < nfull; i++) {
                        if (dt == FINE_F32)
                            ((float *)full)[i] = 1.0f;
                        else
                            ((uint16_t *)full)[i] = 0x3c00;
                    }
                }
                rc = channel_to_box(in, c, ext, is_prob ? FINE_INTERP_LINEAR : FINE_INTERP_CUBIC, box, threads, e);
                if (rc == 0 && dt == FINE_F16) {
                    for (int64_t i = 0; i < nbox; i++)
                        half[i] = fine_f32_to_f16(box[i]);
                    paste(half, ext, full, og.size, in->geom.crop_lo, es);
                } else if (rc == 0) {
                    paste(box, ext, full, og.size, in->geom.crop_lo, es);
                }
            }
        }
        free(box);
        free(half);
    }
    if (rc < 0)
        fine_volume_free(out);
    return rc;
}

int fine_resample_to_original_argmax(const fine_volume *prob, int threads, fine_volume *out, fine_err *e)
{
    memset(out, 0, sizeof *out);
    fine_geometry og;
    int64_t ext[3];
    if (strcmp(prob->name, "prob") != 0)
        return fine_err_set(e, "case %s: argmax needs a prob volume, not '%s'", prob->case_id, prob->name);
    if (check_shape(prob, 4, e) < 0 || original_grid(prob, &og, ext, e) < 0)
        return -1;
    int64_t C = prob->data.shape[0], nbox = ext[0] * ext[1] * ext[2];
    float *box = malloc((size_t)nbox * sizeof *box), *best = malloc((size_t)nbox * sizeof *best);
    uint8_t *arg = malloc((size_t)nbox);
    int rc = -1;
    if (C < 1 || C > 256) {
        fine_err_set(e, "case %s: prob has %lld channels (1 to 256 can be a u8 segmentation)", prob->case_id,
                     (long long)C);
    } else if (!box || !best || !arg) {
        fine_err_set(e, "out of memory");
    } else {
        rc = 0;
        for (int64_t c = 0; c < C && rc == 0; c++) {
            rc = channel_to_box(prob, c, ext, FINE_INTERP_LINEAR, c == 0 ? best : box, threads, e);
            if (rc == 0 && c == 0)
                memset(arg, 0, (size_t)nbox);
            for (int64_t i = 0; rc == 0 && c > 0 && i < nbox; i++)
                if (box[i] > best[i]) { /* the first maximum wins, as numpy's argmax */
                    best[i] = box[i];
                    arg[i] = (uint8_t)c;
                }
        }
        if (rc == 0 && fine_tensor_alloc(&out->data, FINE_U8, 3, og.size, e) == 0) {
            memcpy(out->case_id, prob->case_id, sizeof out->case_id);
            snprintf(out->name, sizeof out->name, "seg");
            out->geom = og;
            paste(arg, ext, out->data.data, og.size, prob->geom.crop_lo, 1);
        } else {
            rc = -1;
        }
    }
    free(box);
    free(best);
    free(arg);
    return rc;
}
