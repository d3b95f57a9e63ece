/* test_ops_conv: the 3-D convolutions and layout changes of lib/nn/ops_conv.c against
 * independent double-precision references written here with direct loops.
 *
 * For every case:
 *   (a) the float forward against the naive double forward: max |f - d| <= 1e-5 max |d|;
 *   (b) the naive double backward against central finite differences of the naive double
 *       forward (eps 1e-6) of L = sum(g * out), every element of din, dw, db:
 *       max |fd - analytic| <= 1e-6 max |analytic| (the op is linear in each argument, so the
 *       difference quotient is exact up to rounding);
 *   (c) the float backward against the double backward: max |f - d| <= 1e-4 max |d|, with the
 *       gradient buffers pre-filled (the backward accumulates), then called again to see the
 *       gradient counted twice, then with NULL gradient pointers.
 * Shapes: k3 pad 1 strides 1, 2, (1,2,2) on odd sizes, k2 s2 (also on odd sizes), a general
 * case k (3,1,2) s (1,2,1) p (1,0,0), the same kernel with stride 1 (where the data gradient
 * is computed as a convolution with the flipped kernel) and pads (1,0,0), (2,0,1), a pad larger
 * than the kernel (k (2,1,3) p (2,1,0)), Cin = 1, transposed k (2,2,2), (4,4,4), (2,4,4) in both
 * output layouts, batch 2 throughout, and shapes larger than one scratch tile whose sizes do
 * not divide the tile (checked through the *_scratch() sizes). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "tap.h"

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static float urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *frand(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = urand();
    return p;
}

static double *to_double(const float *f, int64_t n)
{
    double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

static double *dzeros(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static double max_abs(const double *d, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabs(d[i]) > m ? fabs(d[i]) : m;
    return m;
}

/* max |f - base - times*d| / max |d| (f holds base + times * gradient). */
static double rel_err_f(const float *f, const float *base, const double *d, double times, int64_t n)
{
    double e = 0, m = max_abs(d, n);
    for (int64_t i = 0; i < n; i++) {
        double v = (double)f[i] - (base ? (double)base[i] : 0.0) - times * d[i];
        e = fabs(v) > e ? fabs(v) : e;
    }
    return m > 0 ? e / m : e;
}

static double rel_err_d(const double *a, const double *d, int64_t n)
{
    double e = 0, m = max_abs(d, n);
    for (int64_t i = 0; i < n; i++)
        e = fabs(a[i] - d[i]) > e ? fabs(a[i] - d[i]) : e;
    return m > 0 ? e / m : e;
}

static int all_equal(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

/* ------------------------------------------------------------------ naive double references */

static void conv_ref_forward(const fine_conv3d_shape *s, double *out, const double *in,
                             const double *w, const double *b)
{
    int64_t Do, Ho, Wo;
    fine_conv3d_out_size(s, &Do, &Ho, &Wo);
    const int k0 = s->k[0], k1 = s->k[1], k2 = s->k[2];
    for (int64_t bi = 0; bi < s->B; bi++)
        for (int64_t o = 0; o < s->Cout; o++)
            for (int64_t z = 0; z < Do; z++)
                for (int64_t y = 0; y < Ho; y++)
                    for (int64_t x = 0; x < Wo; x++) {
                        double acc = b ? b[o] : 0.0;
                        for (int64_t c = 0; c < s->Cin; c++)
                            for (int i = 0; i < k0; i++)
                                for (int j = 0; j < k1; j++)
                                    for (int l = 0; l < k2; l++) {
                                        int64_t iz = z * s->stride[0] - s->pad[0] + i;
                                        int64_t iy = y * s->stride[1] - s->pad[1] + j;
                                        int64_t ix = x * s->stride[2] - s->pad[2] + l;
                                        if (iz < 0 || iz >= s->D || iy < 0 || iy >= s->H ||
                                            ix < 0 || ix >= s->W)
                                            continue;
                                        acc += w[(((o * s->Cin + c) * k0 + i) * k1 + j) * k2 + l] *
                                               in[(((bi * s->Cin + c) * s->D + iz) * s->H + iy) * s->W + ix];
                                    }
                        out[(((bi * s->Cout + o) * Do + z) * Ho + y) * Wo + x] = acc;
                    }
}

static void conv_ref_backward(const fine_conv3d_shape *s, double *din, double *dw, double *db,
                              const double *dout, const double *in, const double *w)
{
    int64_t Do, Ho, Wo;
    fine_conv3d_out_size(s, &Do, &Ho, &Wo);
    const int k0 = s->k[0], k1 = s->k[1], k2 = s->k[2];
    for (int64_t bi = 0; bi < s->B; bi++)
        for (int64_t o = 0; o < s->Cout; o++)
            for (int64_t z = 0; z < Do; z++)
                for (int64_t y = 0; y < Ho; y++)
                    for (int64_t x = 0; x < Wo; x++) {
                        double g = dout[(((bi * s->Cout + o) * Do + z) * Ho + y) * Wo + x];
                        db[o] += g;
                        for (int64_t c = 0; c < s->Cin; c++)
                            for (int i = 0; i < k0; i++)
                                for (int j = 0; j < k1; j++)
                                    for (int l = 0; l < k2; l++) {
                                        int64_t iz = z * s->stride[0] - s->pad[0] + i;
                                        int64_t iy = y * s->stride[1] - s->pad[1] + j;
                                        int64_t ix = x * s->stride[2] - s->pad[2] + l;
                                        if (iz < 0 || iz >= s->D || iy < 0 || iy >= s->H ||
                                            ix < 0 || ix >= s->W)
                                            continue;
                                        int64_t wi = (((o * s->Cin + c) * k0 + i) * k1 + j) * k2 + l;
                                        int64_t xi = (((bi * s->Cin + c) * s->D + iz) * s->H + iy) * s->W + ix;
                                        din[xi] += w[wi] * g;
                                        dw[wi] += in[xi] * g;
                                    }
                    }
}

/* Index of output (b, o, Z, Y, X) of a transposed convolution in its layout. */
static int64_t convT_index(const fine_convT3d_shape *s, int64_t b, int64_t o, int64_t Z, int64_t Y,
                           int64_t X)
{
    int64_t Do = s->D * s->k[0], Ho = s->H * s->k[1], Wo = s->W * s->k[2];
    if (s->out_channels_last)
        return (((b * Do + Z) * Ho + Y) * Wo + X) * s->Cout + o;
    return (((b * s->Cout + o) * Do + Z) * Ho + Y) * Wo + X;
}

static void convT_ref_forward(const fine_convT3d_shape *s, double *out, const double *in,
                              const double *w, const double *b)
{
    const int k0 = s->k[0], k1 = s->k[1], k2 = s->k[2];
    for (int64_t bi = 0; bi < s->B; bi++)
        for (int64_t z = 0; z < s->D; z++)
            for (int64_t y = 0; y < s->H; y++)
                for (int64_t x = 0; x < s->W; x++) {
                    const double *tok = in + (((bi * s->D + z) * s->H + y) * s->W + x) * s->Cin;
                    for (int64_t o = 0; o < s->Cout; o++)
                        for (int i = 0; i < k0; i++)
                            for (int j = 0; j < k1; j++)
                                for (int l = 0; l < k2; l++) {
                                    double acc = b ? b[o] : 0.0;
                                    for (int64_t c = 0; c < s->Cin; c++)
                                        acc += tok[c] * w[(((c * s->Cout + o) * k0 + i) * k1 + j) * k2 + l];
                                    out[convT_index(s, bi, o, z * k0 + i, y * k1 + j, x * k2 + l)] = acc;
                                }
                }
}

static void convT_ref_backward(const fine_convT3d_shape *s, double *din, double *dw, double *db,
                               const double *dout, const double *in, const double *w)
{
    const int k0 = s->k[0], k1 = s->k[1], k2 = s->k[2];
    for (int64_t bi = 0; bi < s->B; bi++)
        for (int64_t z = 0; z < s->D; z++)
            for (int64_t y = 0; y < s->H; y++)
                for (int64_t x = 0; x < s->W; x++) {
                    int64_t t = ((bi * s->D + z) * s->H + y) * s->W + x;
                    for (int64_t o = 0; o < s->Cout; o++)
                        for (int i = 0; i < k0; i++)
                            for (int j = 0; j < k1; j++)
                                for (int l = 0; l < k2; l++) {
                                    double g = dout[convT_index(s, bi, o, z * k0 + i, y * k1 + j, x * k2 + l)];
                                    db[o] += g;
                                    for (int64_t c = 0; c < s->Cin; c++) {
                                        int64_t wi = (((c * s->Cout + o) * k0 + i) * k1 + j) * k2 + l;
                                        din[t * s->Cin + c] += w[wi] * g;
                                        dw[wi] += in[t * s->Cin + c] * g;
                                    }
                                }
                }
}

/* ------------------------------------------------------------------ one op under test */

/* What a case needs, for the conv and the transposed conv alike. */
typedef struct op_case {
    const char *name;
    int transposed;
    fine_conv3d_shape c;
    fine_convT3d_shape t;
    int64_t nin, nw, nb, nout;
    int fd; /* run the finite-difference check (b) */
} op_case;

static op_case conv_case(const char *name, int64_t B, int64_t Cin, int64_t Cout, int64_t D,
                         int64_t H, int64_t W, const int k[3], const int st[3], const int pad[3],
                         int fd)
{
    op_case q = {0};
    q.name = name;
    q.c = (fine_conv3d_shape){B, Cin, D, H, W, Cout, {k[0], k[1], k[2]},
                              {st[0], st[1], st[2]}, {pad[0], pad[1], pad[2]}};
    int64_t Do, Ho, Wo;
    fine_conv3d_out_size(&q.c, &Do, &Ho, &Wo);
    q.nin = B * Cin * D * H * W;
    q.nw = Cout * Cin * k[0] * k[1] * k[2];
    q.nb = Cout;
    q.nout = B * Cout * Do * Ho * Wo;
    q.fd = fd;
    return q;
}

static op_case convT_case(const char *name, int64_t B, int64_t Cin, int64_t Cout, int64_t D,
                          int64_t H, int64_t W, const int k[3], int channels_last, int fd)
{
    op_case q = {0};
    q.name = name;
    q.transposed = 1;
    q.t = (fine_convT3d_shape){B, Cin, D, H, W, Cout, {k[0], k[1], k[2]}, channels_last};
    int64_t kv = (int64_t)k[0] * k[1] * k[2];
    q.nin = B * D * H * W * Cin;
    q.nw = Cin * Cout * kv;
    q.nb = Cout;
    q.nout = B * D * H * W * kv * Cout;
    q.fd = fd;
    return q;
}

static size_t op_scratch(const op_case *q)
{
    return q->transposed ? fine_convT3d_scratch(&q->t) : fine_conv3d_scratch(&q->c);
}

static void op_forward(const op_case *q, float *out, const float *in, const float *w,
                       const float *b, float *scratch)
{
    if (q->transposed)
        fine_convT3d_forward(&q->t, out, in, w, b, scratch);
    else
        fine_conv3d_forward(&q->c, out, in, w, b, scratch);
}

static void op_backward(const op_case *q, float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *w, float *scratch)
{
    if (q->transposed)
        fine_convT3d_backward(&q->t, din, dw, db, dout, in, w, scratch);
    else
        fine_conv3d_backward(&q->c, din, dw, db, dout, in, w, scratch);
}

static void ref_forward(const op_case *q, double *out, const double *in, const double *w,
                        const double *b)
{
    if (q->transposed)
        convT_ref_forward(&q->t, out, in, w, b);
    else
        conv_ref_forward(&q->c, out, in, w, b);
}

static void ref_backward(const op_case *q, double *din, double *dw, double *db, const double *dout,
                         const double *in, const double *w)
{
    if (q->transposed)
        convT_ref_backward(&q->t, din, dw, db, dout, in, w);
    else
        conv_ref_backward(&q->c, din, dw, db, dout, in, w);
}

/* L = sum(g * forward(in, w, b)) in double. */
static double ref_loss(const op_case *q, double *tmp, const double *in, const double *w,
                       const double *b, const double *g)
{
    ref_forward(q, tmp, in, w, b);
    double L = 0;
    for (int64_t i = 0; i < q->nout; i++)
        L += g[i] * tmp[i];
    return L;
}

/* max |central difference - analytic| / max |analytic| over every element of p. */
static double fd_check(const op_case *q, double *p, int64_t n, const double *analytic,
                       double *tmp, const double *in, const double *w, const double *b,
                       const double *g)
{
    const double eps = 1e-6;
    double *fd = dzeros(n);
    for (int64_t i = 0; i < n; i++) {
        double keep = p[i];
        p[i] = keep + eps;
        double lp = ref_loss(q, tmp, in, w, b, g);
        p[i] = keep - eps;
        double lm = ref_loss(q, tmp, in, w, b, g);
        p[i] = keep;
        fd[i] = (lp - lm) / (2 * eps);
    }
    double e = rel_err_d(fd, analytic, n);
    free(fd);
    return e;
}

/* max |f - d| / max |d| over n values. */
static double fwd_err(const float *f, const double *d, int64_t n)
{
    double e = 0, m = max_abs(d, n);
    for (int64_t i = 0; i < n; i++)
        e = fabs(f[i] - d[i]) > e ? fabs(f[i] - d[i]) : e;
    return m > 0 ? e / m : e;
}

/* (a) and (c) of the float op against the double references, at the current thread count. */
static void check_float(tap *t, const op_case *q, const char *name, const float *in,
                        const float *w, const float *b, const float *g, const double *ref_b,
                        const double *ref_nb, const double *gin, const double *gw,
                        const double *gb)
{
    size_t ns = op_scratch(q);
    float *scratch = malloc((ns ? ns : 1) * sizeof(float));
    float *out = malloc((size_t)q->nout * sizeof(float));
    op_forward(q, out, in, w, b, scratch);
    double e = fwd_err(out, ref_b, q->nout);
    tap_ok(t, e <= 1e-5, "%s: forward = double reference (rel err %.2g <= 1e-5)", name, e);
    op_forward(q, out, in, w, NULL, scratch);
    e = fwd_err(out, ref_nb, q->nout);
    tap_ok(t, e <= 1e-5, "%s: forward without bias (rel err %.2g)", name, e);

    /* backward, accumulating into pre-filled buffers */
    float *fin0 = frand(q->nin), *fw0 = frand(q->nw), *fb0 = frand(q->nb);
    float *fin = malloc((size_t)q->nin * sizeof(float)), *fw = malloc((size_t)q->nw * sizeof(float));
    float *fb = malloc((size_t)q->nb * sizeof(float));
    memcpy(fin, fin0, (size_t)q->nin * sizeof(float));
    memcpy(fw, fw0, (size_t)q->nw * sizeof(float));
    memcpy(fb, fb0, (size_t)q->nb * sizeof(float));
    op_backward(q, fin, fw, fb, g, in, w, scratch);
    double ei = rel_err_f(fin, fin0, gin, 1, q->nin), ew = rel_err_f(fw, fw0, gw, 1, q->nw);
    double eb = rel_err_f(fb, fb0, gb, 1, q->nb);
    tap_ok(t, ei <= 1e-4 && ew <= 1e-4 && eb <= 1e-4,
           "%s: float backward += double backward (rel din %.2g, dw %.2g, db %.2g <= 1e-4)",
           name, ei, ew, eb);
    op_backward(q, fin, fw, fb, g, in, w, scratch);
    ei = rel_err_f(fin, fin0, gin, 2, q->nin), ew = rel_err_f(fw, fw0, gw, 2, q->nw);
    eb = rel_err_f(fb, fb0, gb, 2, q->nb);
    tap_ok(t, ei <= 1e-4 && ew <= 1e-4 && eb <= 1e-4,
           "%s: backward twice accumulates twice (rel din %.2g, dw %.2g, db %.2g)", name, ei, ew,
           eb);

    /* NULL gradients: each alone, the others untouched */
    memcpy(fin, fin0, (size_t)q->nin * sizeof(float));
    op_backward(q, fin, NULL, NULL, g, in, w, scratch);
    ei = rel_err_f(fin, fin0, gin, 1, q->nin);
    memcpy(fw, fw0, (size_t)q->nw * sizeof(float));
    op_backward(q, NULL, fw, NULL, g, in, w, scratch);
    ew = rel_err_f(fw, fw0, gw, 1, q->nw);
    memcpy(fb, fb0, (size_t)q->nb * sizeof(float));
    op_backward(q, NULL, NULL, fb, g, in, w, scratch);
    eb = rel_err_f(fb, fb0, gb, 1, q->nb);
    op_backward(q, NULL, NULL, NULL, g, in, w, scratch);
    tap_ok(t, ei <= 1e-4 && ew <= 1e-4 && eb <= 1e-4,
           "%s: din only, dw only, db only (the other pointers NULL) (rel %.2g, %.2g, %.2g)",
           name, ei, ew, eb);
    free(scratch), free(out), free(fin0), free(fw0), free(fb0), free(fin), free(fw), free(fb);
}

/* All checks of one case; with also_4_threads the float checks run again with 4 threads (at
 * 2 the loops between sgemm calls run on the calling thread alone, at 4 on 3 threads whose
 * parts must add up to the same results). */
static void check_op(tap *t, const op_case *q, int also_4_threads)
{
    float *in = frand(q->nin), *w = frand(q->nw), *b = frand(q->nb), *g = frand(q->nout);
    double *din_ = to_double(in, q->nin), *dw_ = to_double(w, q->nw), *db_ = to_double(b, q->nb);
    double *dg = to_double(g, q->nout);
    double *ref_b = dzeros(q->nout), *ref_nb = dzeros(q->nout);
    ref_forward(q, ref_b, din_, dw_, db_);
    ref_forward(q, ref_nb, din_, dw_, NULL);

    /* (b) double analytic backward against finite differences */
    double *gin = dzeros(q->nin), *gw = dzeros(q->nw), *gb = dzeros(q->nb);
    ref_backward(q, gin, gw, gb, dg, din_, dw_);
    if (q->fd) {
        double *tmp = dzeros(q->nout);
        double ei = fd_check(q, din_, q->nin, gin, tmp, din_, dw_, db_, dg);
        double ew = fd_check(q, dw_, q->nw, gw, tmp, din_, dw_, db_, dg);
        double eb = fd_check(q, db_, q->nb, gb, tmp, din_, dw_, db_, dg);
        tap_ok(t, ei <= 1e-6 && ew <= 1e-6 && eb <= 1e-6,
               "%s: double backward = finite differences (rel din %.2g, dw %.2g, db %.2g <= 1e-6)",
               q->name, ei, ew, eb);
        free(tmp);
    }

    check_float(t, q, q->name, in, w, b, g, ref_b, ref_nb, gin, gw, gb);
    if (also_4_threads) {
        char name[200];
        snprintf(name, sizeof name, "4 threads: %s", q->name);
        fine_nn_set_threads(4);
        check_float(t, q, name, in, w, b, g, ref_b, ref_nb, gin, gw, gb);
        fine_nn_set_threads(2);
    }
    free(in), free(w), free(b), free(g), free(din_), free(dw_), free(db_), free(dg);
    free(ref_b), free(ref_nb), free(gin), free(gw), free(gb);
}

/* ------------------------------------------------------------------ layout changes */

/* C and L are not multiples of the 32-wide transpose blocks. */
static void check_layout(tap *t, int64_t B, int64_t C, int64_t L)
{
    int64_t n = B * C * L;
    float *cf = frand(n), *cl = malloc((size_t)n * sizeof(float)), *back = malloc((size_t)n * sizeof(float));
    fine_to_channels_last(cl, cf, B, C, L);
    int ok = 1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t l = 0; l < L; l++)
                ok &= cl[(b * L + l) * C + c] == cf[(b * C + c) * L + l];
    tap_ok(t, ok, "to_channels_last: out[b, l, c] = in[b, c, l] (B %lld, C %lld, L %lld)",
           (long long)B, (long long)C, (long long)L);
    fine_to_channels_first(back, cl, B, C, L);
    tap_ok(t, all_equal(back, cf, n), "to_channels_first undoes to_channels_last");

    /* backward of to_channels_last: din (B, C, L) += dout (B, L, C) transposed */
    float *base = frand(n), *din = malloc((size_t)n * sizeof(float));
    memcpy(din, base, (size_t)n * sizeof(float));
    fine_to_channels_last_backward(din, cl, B, C, L);
    ok = 1;
    for (int64_t i = 0; i < n; i++)
        ok &= din[i] == base[i] + cf[i];
    tap_ok(t, ok, "to_channels_last_backward accumulates the transposed gradient");
    memcpy(din, base, (size_t)n * sizeof(float));
    fine_to_channels_first_backward(din, cf, B, C, L);
    ok = 1;
    for (int64_t i = 0; i < n; i++)
        ok &= din[i] == base[i] + cl[i];
    tap_ok(t, ok, "to_channels_first_backward accumulates the transposed gradient");
    free(cf), free(cl), free(back), free(base), free(din);
}

int main(void)
{
    tap t = {0};
    fine_nn_set_threads(2);

    const int k3[3] = {3, 3, 3}, k2[3] = {2, 2, 2}, k4[3] = {4, 4, 4}, k244[3] = {2, 4, 4};
    const int s1[3] = {1, 1, 1}, s2[3] = {2, 2, 2}, s122[3] = {1, 2, 2};
    const int p1[3] = {1, 1, 1}, p0[3] = {0, 0, 0};
    const int kg[3] = {3, 1, 2}, sg[3] = {1, 2, 1}, pg[3] = {1, 0, 0}, pg2[3] = {2, 0, 1};
    const int kb[3] = {2, 1, 3}, pb[3] = {2, 1, 0};

    fine_conv3d_shape sh = {1, 1, 64, 128, 128, 96, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}};
    int64_t Do, Ho, Wo;
    fine_conv3d_out_size(&sh, &Do, &Ho, &Wo);
    tap_ok(&t, Do == 32 && Ho == 64 && Wo == 64, "out size: 64x128x128 k3 s2 p1 -> 32x64x64");
    sh = (fine_conv3d_shape){1, 1, 5, 7, 9, 1, {3, 1, 2}, {1, 2, 1}, {1, 0, 0}};
    fine_conv3d_out_size(&sh, &Do, &Ho, &Wo);
    tap_ok(&t, Do == 5 && Ho == 4 && Wo == 8, "out size: 5x7x9 k(3,1,2) s(1,2,1) p(1,0,0) -> 5x4x8");

    op_case cases[] = {
        conv_case("conv k3 s1 p1 2x3x4x5x6", 2, 3, 4, 4, 5, 6, k3, s1, p1, 1),
        conv_case("conv k3 s1 p1 odd 2x2x3x3x5x7", 2, 2, 3, 3, 5, 7, k3, s1, p1, 1),
        conv_case("conv k3 s2 p1 odd 2x2x3x5x7x9", 2, 2, 3, 5, 7, 9, k3, s2, p1, 1),
        conv_case("conv k3 s2 p1 even 2x2x2x4x6x8", 2, 2, 2, 4, 6, 8, k3, s2, p1, 1),
        conv_case("conv k3 s(1,2,2) p1 odd 2x2x3x3x5x7", 2, 2, 3, 3, 5, 7, k3, s122, p1, 1),
        conv_case("conv k3 s2 p1 Cin 1 2x1x4x5x6x7", 2, 1, 4, 5, 6, 7, k3, s2, p1, 1),
        conv_case("conv k2 s2 p0 2x3x4x4x6x8", 2, 3, 4, 4, 6, 8, k2, s2, p0, 1),
        conv_case("conv k2 s2 p0 odd 2x3x2x5x5x7", 2, 3, 2, 5, 5, 7, k2, s2, p0, 1),
        conv_case("conv k(3,1,2) s(1,2,1) p(1,0,0) 2x2x3x4x5x6", 2, 2, 3, 4, 5, 6, kg, sg, pg, 1),
        conv_case("conv k(3,1,2) s1 p(1,0,0) 2x2x3x4x5x6", 2, 2, 3, 4, 5, 6, kg, s1, pg, 1),
        conv_case("conv k(3,1,2) s1 p(2,0,1) 2x3x2x3x4x5", 2, 3, 2, 3, 4, 5, kg, s1, pg2, 1),
        conv_case("conv k(2,1,3) s1 p(2,1,0) (pad > k-1) 2x2x3x3x4x5", 2, 2, 3, 3, 4, 5, kb, s1, pb, 1),
        convT_case("convT k2 channels-first 2x3x2x2x3x2", 2, 3, 2, 2, 3, 2, k2, 0, 1),
        convT_case("convT k2 channels-last 2x3x2x2x3x2", 2, 3, 2, 2, 3, 2, k2, 1, 1),
        convT_case("convT k4 channels-first 2x2x2x2x1x2", 2, 2, 2, 2, 1, 2, k4, 0, 1),
        convT_case("convT k4 channels-last 2x2x2x2x1x2", 2, 2, 2, 2, 1, 2, k4, 1, 1),
        convT_case("convT k(2,4,4) channels-first 2x3x2x3x2x1", 2, 3, 2, 3, 2, 1, k244, 0, 1),
        convT_case("convT k(2,4,4) channels-last 2x3x2x3x2x1", 2, 3, 2, 3, 2, 1, k244, 1, 1),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_op(&t, &cases[i], 0);

    /* Larger than one scratch tile, sizes that do not divide it (no finite differences: (c)
     * compares the tiled float path with the double reference). */
    op_case big[] = {
        conv_case("conv k3 s1 p1 tiled 2x64x3x10x20x13", 2, 64, 3, 10, 20, 13, k3, s1, p1, 0),
        conv_case("conv k3 s1 p1 tiled data gradient 2x3x64x10x20x13", 2, 3, 64, 10, 20, 13, k3, s1, p1, 0),
        conv_case("conv k3 s(1,2,2) p1 tiled 2x64x3x9x40x27", 2, 64, 3, 9, 40, 27, k3, s122, p1, 0),
        conv_case("conv k2 s2 p0 tiled 2x256x3x10x31x61", 2, 256, 3, 10, 31, 61, k2, s2, p0, 0),
        convT_case("convT k4 channels-first tiled 2x8x64x11x10x5", 2, 8, 64, 11, 10, 5, k4, 0, 0),
        convT_case("convT k(2,4,4) channels-last tiled 2x8x64x7x19x9", 2, 8, 64, 7, 19, 9, k244, 1, 0),
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        op_case *q = &big[i];
        /* positions (or tokens) per tile from the scratch size; the whole op needs more */
        int64_t per, total;
        if (q->transposed) {
            per = (int64_t)op_scratch(q) / (q->nw / q->t.Cin);
            total = q->t.B * q->t.D * q->t.H * q->t.W;
        } else if (q->c.Cout > q->c.Cin) {
            /* stride 1: the data gradient is a convolution of dout (Cout channels) onto the
             * input grid, tiled in the scratch after the flipped kernel */
            per = ((int64_t)op_scratch(q) - q->nw) / (q->nw / q->c.Cin);
            total = q->nin / q->c.B / q->c.Cin;
        } else {
            per = (int64_t)op_scratch(q) / (q->nw / q->c.Cout);
            total = q->nout / q->c.B / q->c.Cout;
        }
        tap_ok(&t, per < total && total % per != 0,
               "%s: %lld positions in tiles of %lld (several, the last one partial)", q->name,
               (long long)total, (long long)per);
        check_op(&t, q, 1);
    }
    check_layout(&t, 2, 37, 70);
    fine_nn_set_threads(4);
    check_layout(&t, 2, 97, 1037);
    return tap_done(&t);
}
