/* test_ops_norm: LayerNorm, GELU, Linear, add/accumulate and drop path of lib/nn/ops_norm.c
 * against independent double-precision references written here.
 *
 * For each op:
 *   (a) the float forward against the naive double forward (tolerances stated at each check);
 *   (b) the double analytic backward against central finite differences (eps 1e-6) of the
 *       double forward of L = sum(g * out): max |fd - analytic| <= 1e-6 max |analytic|;
 *   (c) the float backward against the double backward: max |f - d| <= 1e-4 max |d|, with the
 *       gradient buffers pre-filled (the backward accumulates), and with NULL pointers;
 *   (d) where a sum runs over rows (LayerNorm affine, Linear bias), the result is bitwise the
 *       same with 1 and 2 threads. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "tap.h"

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static float *frand(int64_t n, double scale, double offset)
{
    float *p = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(offset + scale * urand());
    return p;
}

static double *to_d(const float *f, int64_t n)
{
    double *d = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

static float *fcopy(const float *f, int64_t n)
{
    float *c = malloc((size_t)n * sizeof(float));
    memcpy(c, f, (size_t)n * sizeof(float));
    return c;
}

static double max_abs(const double *d, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabs(d[i]) > m ? fabs(d[i]) : m;
    return m;
}

/* max |f - base - d| / max |d| */
static double rel_f(const float *f, const float *base, const double *d, int64_t n)
{
    double e = 0, m = max_abs(d, n);
    for (int64_t i = 0; i < n; i++) {
        double v = fabs((double)f[i] - (base ? (double)base[i] : 0.0) - d[i]);
        e = v > e ? v : e;
    }
    return m > 0 ? e / m : e;
}

static double rel_d(const double *a, const double *d, int64_t n)
{
    double e = 0, m = max_abs(d, n);
    for (int64_t i = 0; i < n; i++)
        e = fabs(a[i] - d[i]) > e ? fabs(a[i] - d[i]) : e;
    return m > 0 ? e / m : e;
}

/* Central differences of L(x) = sum(g * f(x)) with respect to x[0..n). */
typedef double (*loss_fn)(void *ctx);
static void central_diff(double *fd, double *x, int64_t n, loss_fn L, void *ctx)
{
    const double eps = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double keep = x[i];
        x[i] = keep + eps;
        double lp = L(ctx);
        x[i] = keep - eps;
        double lm = L(ctx);
        x[i] = keep;
        fd[i] = (lp - lm) / (2 * eps);
    }
}

/* ------------------------------------------------------------------ LayerNorm */

static void ln_fwd_d(double *out, double *mean, double *rstd, const double *in, const double *w,
                     const double *b, int64_t N, int64_t C)
{
    for (int64_t r = 0; r < N; r++) {
        double m = 0, v = 0;
        for (int64_t c = 0; c < C; c++)
            m += in[r * C + c];
        m /= C;
        for (int64_t c = 0; c < C; c++)
            v += (in[r * C + c] - m) * (in[r * C + c] - m);
        v /= C;
        double rs = 1.0 / sqrt(v + 1e-5);
        for (int64_t c = 0; c < C; c++)
            out[r * C + c] = (in[r * C + c] - m) * rs * w[c] + b[c];
        mean[r] = m;
        rstd[r] = rs;
    }
}

/* dx = rs (g w - mean(g w) - xhat mean(g w xhat)), dw = sum g xhat, db = sum g */
static void ln_bwd_d(double *din, double *dw, double *db, const double *g, const double *in,
                     const double *w, int64_t N, int64_t C)
{
    double *o = malloc((size_t)(N * C) * sizeof(double)), *m = malloc((size_t)N * sizeof(double)),
           *rs = malloc((size_t)N * sizeof(double));
    double *b0 = calloc((size_t)C, sizeof(double));
    ln_fwd_d(o, m, rs, in, w, b0, N, C);
    for (int64_t r = 0; r < N; r++) {
        double a = 0, bb = 0;
        for (int64_t c = 0; c < C; c++) {
            double xh = (in[r * C + c] - m[r]) * rs[r];
            a += g[r * C + c] * w[c];
            bb += g[r * C + c] * w[c] * xh;
            dw[c] += g[r * C + c] * xh;
            db[c] += g[r * C + c];
        }
        a /= C;
        bb /= C;
        for (int64_t c = 0; c < C; c++) {
            double xh = (in[r * C + c] - m[r]) * rs[r];
            din[r * C + c] = rs[r] * (g[r * C + c] * w[c] - a - xh * bb);
        }
    }
    free(o), free(m), free(rs), free(b0);
}

typedef struct ln_ctx {
    double *in, *w, *b, *g, *out, *mean, *rstd;
    int64_t N, C;
} ln_ctx;

static double ln_loss(void *p)
{
    ln_ctx *c = p;
    ln_fwd_d(c->out, c->mean, c->rstd, c->in, c->w, c->b, c->N, c->C);
    double s = 0;
    for (int64_t i = 0; i < c->N * c->C; i++)
        s += c->g[i] * c->out[i];
    return s;
}

static void test_layernorm(tap *t, int64_t N, int64_t C, double amp, int fd)
{
    int64_t n = N * C;
    float *in = frand(n, amp, 0.7 * amp), *w = frand(C, 1.0, 0.5), *b = frand(C, 0.5, 0.0);
    float *g = frand(n, 1.0, 0.0);
    float *out = malloc((size_t)n * sizeof(float)), *mean = malloc((size_t)N * sizeof(float)),
          *rstd = malloc((size_t)N * sizeof(float));
    fine_layernorm_forward(out, mean, rstd, in, w, b, N, C);

    ln_ctx c = {to_d(in, n), to_d(w, C), to_d(b, C), to_d(g, n), malloc((size_t)n * 8),
                malloc((size_t)N * 8), malloc((size_t)N * 8), N, C};
    ln_loss(&c);
    /* (a) 1e-5 of the largest output: float LN of unit-scale rows is good to a few ulp */
    tap_ok(t, rel_f(out, NULL, c.out, n) < 1e-5,
           "layernorm %lldx%lld: forward matches double (%.2e)",
           (long long)N, (long long)C, rel_f(out, NULL, c.out, n));
    tap_ok(t, rel_f(mean, NULL, c.mean, N) < 1e-6 && rel_f(rstd, NULL, c.rstd, N) < 1e-5,
           "layernorm %lldx%lld: saved mean and rstd", (long long)N, (long long)C);

    double *din = calloc((size_t)n, 8), *dw = calloc((size_t)C, 8), *db = calloc((size_t)C, 8);
    ln_bwd_d(din, dw, db, c.g, c.in, c.w, N, C);
    if (fd) {
        double *f = malloc((size_t)n * 8);
        central_diff(f, c.in, n, ln_loss, &c);
        double e1 = rel_d(f, din, n);
        central_diff(f, c.w, C, ln_loss, &c);
        double e2 = rel_d(f, dw, C);
        central_diff(f, c.b, C, ln_loss, &c);
        double e3 = rel_d(f, db, C);
        tap_ok(t, e1 < 1e-6 && e2 < 1e-6 && e3 < 1e-6,
               "layernorm %lldx%lld: double backward = central differences (%.1e %.1e %.1e)",
               (long long)N, (long long)C, e1, e2, e3);
        free(f);
    }
    /* (c) accumulate onto random contents */
    float *fdin = frand(n, 1.0, 0.0), *fdw = frand(C, 1.0, 0.0), *fdb = frand(C, 1.0, 0.0);
    float *din0 = fcopy(fdin, n), *dw0 = fcopy(fdw, C), *db0 = fcopy(fdb, C);
    fine_layernorm_backward(fdin, fdw, fdb, g, in, w, mean, rstd, N, C);
    double e1 = rel_f(fdin, din0, din, n), e2 = rel_f(fdw, dw0, dw, C), e3 = rel_f(fdb, db0, db, C);
    tap_ok(t, e1 < 1e-4 && e2 < 1e-4 && e3 < 1e-4,
           "layernorm %lldx%lld: float backward accumulates the double one (%.1e %.1e %.1e)",
           (long long)N, (long long)C, e1, e2, e3);
    /* NULL gradients: only din, then only the parameters */
    memcpy(fdin, din0, (size_t)n * 4);
    fine_layernorm_backward(fdin, NULL, NULL, g, in, w, mean, rstd, N, C);
    memcpy(fdw, dw0, (size_t)C * 4);
    fine_layernorm_backward(NULL, fdw, NULL, g, in, w, mean, rstd, N, C);
    tap_ok(t, rel_f(fdin, din0, din, n) < 1e-4 && rel_f(fdw, dw0, dw, C) < 1e-4,
           "layernorm %lldx%lld: NULL gradient pointers", (long long)N, (long long)C);
    /* (d) parameter gradients do not depend on the thread count */
    float *w1 = calloc((size_t)C, 4), *b1 = calloc((size_t)C, 4), *w2 = calloc((size_t)C, 4),
          *b2 = calloc((size_t)C, 4);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    fine_layernorm_backward(NULL, w1, b1, g, in, w, mean, rstd, N, C);
    omp_set_num_threads(threads > 1 ? threads : 2);
    fine_layernorm_backward(NULL, w2, b2, g, in, w, mean, rstd, N, C);
    omp_set_num_threads(threads);
    tap_ok(t, !memcmp(w1, w2, (size_t)C * 4) && !memcmp(b1, b2, (size_t)C * 4),
           "layernorm %lldx%lld: dweight, dbias bitwise equal with 1 and 2 threads", (long long)N,
           (long long)C);

    free(in), free(w), free(b), free(g), free(out), free(mean), free(rstd);
    free(c.in), free(c.w), free(c.b), free(c.g), free(c.out), free(c.mean), free(c.rstd);
    free(din), free(dw), free(db), free(fdin), free(fdw), free(fdb), free(din0), free(dw0),
        free(db0), free(w1), free(b1), free(w2), free(b2);
}

/* ------------------------------------------------------------------ GELU */

static double gelu_d(double x)
{
    return 0.5 * x * erfc(-x / sqrt(2.0));
}

static double gelu_grad_d(double x)
{
    const double inv_sqrt_2pi = 0.398942280401432678;
    return 0.5 * erfc(-x / sqrt(2.0)) + x * exp(-0.5 * x * x) * inv_sqrt_2pi;
}

static void test_gelu(tap *t)
{
    /* a dense grid over [-12, 12], the special values, and random values in bulk */
    int64_t n = 240001 + 5;
    float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    for (int64_t i = 0; i < 240001; i++)
        x[i] = (float)(-12.0 + 1e-4 * (double)i);
    x[n - 5] = 0.0f, x[n - 4] = -0.0f, x[n - 3] = 1e-20f, x[n - 2] = -30.0f, x[n - 1] = 30.0f;
    fine_gelu_forward(y, x, n);
    /* forward: |y - ref| <= 4e-6 |ref| for |x| < 5 and <= 3e-5 |ref| beyond (the float
     * error of the erfc tail is the rounding of x^2/2 inside exp, which grows with x^2),
     * plus 1e-37 absolute for the underflowing tail */
    double worst = 0, worst_tail = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = gelu_d(x[i]), e = fabs((double)y[i] - r);
        if (fabs(x[i]) < 5) {
            double q = e / (4e-6 * fabs(r) + 1e-37);
            worst = q > worst ? q : worst;
        } else {
            double q = e / (3e-5 * fabs(r) + 1e-37);
            worst_tail = q > worst_tail ? q : worst_tail;
        }
    }
    tap_ok(t, worst <= 1.0 && worst_tail <= 1.0,
           "gelu forward within tolerance of erf-exact double on [-12, 12] (%.2f, %.2f of it)",
           worst, worst_tail);
    tap_ok(t, y[n - 5] == 0.0f && y[n - 1] == 30.0f && y[n - 2] == 0.0f && fabsf(y[n - 3]) < 1e-20f,
           "gelu of 0, 30, -30, 1e-20");

    /* (b) the double derivative against central differences */
    double e_fd = 0;
    for (int i = 0; i < 2001; i++) {
        double xv = -8.0 + 0.008 * i + 1e-3;
        double fd = (gelu_d(xv + 1e-6) - gelu_d(xv - 1e-6)) / 2e-6;
        double e = fabs(fd - gelu_grad_d(xv));
        e_fd = e > e_fd ? e : e_fd;
    }
    tap_ok(t, e_fd < 1e-6, "gelu double derivative = central differences (%.1e; |d| <= 1.13)",
           e_fd);
    /* (c) float backward accumulates dout * gelu'(x) */
    float *g = frand(n, 1.0, 0.0), *dx = frand(n, 1.0, 0.0), *dx0 = fcopy(dx, n);
    fine_gelu_backward(dx, g, x, n);
    double eb = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = (double)g[i] * gelu_grad_d(x[i]);
        double e = fabs((double)dx[i] - (double)dx0[i] - r) / (1e-4 * fabs(r) + 2e-7);
        eb = e > eb ? e : eb;
    }
    tap_ok(t, eb <= 1.0, "gelu backward: |f - d| <= 1e-4 |d| + 2e-7 (%.2f of it)", eb);
    free(x), free(y), free(g), free(dx), free(dx0);
}

/* ------------------------------------------------------------------ Linear */

typedef struct lin_ctx {
    double *in, *w, *b, *g;
    int64_t N, I, O;
} lin_ctx;

static double lin_loss(void *p)
{
    lin_ctx *c = p;
    double s = 0;
    for (int64_t r = 0; r < c->N; r++)
        for (int64_t o = 0; o < c->O; o++) {
            double v = c->b ? c->b[o] : 0;
            for (int64_t i = 0; i < c->I; i++)
                v += c->in[r * c->I + i] * c->w[o * c->I + i];
            s += c->g[r * c->O + o] * v;
        }
    return s;
}

static void test_linear(tap *t, int64_t N, int64_t I, int64_t O, int with_bias, int fd)
{
    float *in = frand(N * I, 1.0, 0.0), *w = frand(O * I, 0.5, 0.0), *b = frand(O, 1.0, 0.0);
    float *g = frand(N * O, 1.0, 0.0), *out = malloc((size_t)(N * O) * 4);
    lin_ctx c = {to_d(in, N * I), to_d(w, O * I), with_bias ? to_d(b, O) : NULL,
                 to_d(g, N * O), N, I, O};
    double *ref = malloc((size_t)(N * O) * 8);
    for (int64_t r = 0; r < N; r++)
        for (int64_t o = 0; o < O; o++) {
            double v = with_bias ? c.b[o] : 0;
            for (int64_t i = 0; i < I; i++)
                v += c.in[r * I + i] * c.w[o * I + i];
            ref[r * O + o] = v;
        }
    fine_linear_forward(out, in, w, with_bias ? b : NULL, N, I, O);
    tap_ok(t, rel_f(out, NULL, ref, N * O) < 1e-5,
           "linear %lldx%lld->%lld%s: forward matches double (%.1e)", (long long)N, (long long)I,
           (long long)O, with_bias ? "" : " (no bias)", rel_f(out, NULL, ref, N * O));
    /* double backward */
    double *din = calloc((size_t)(N * I), 8), *dw = calloc((size_t)(O * I), 8),
           *db = calloc((size_t)O, 8);
    for (int64_t r = 0; r < N; r++)
        for (int64_t o = 0; o < O; o++) {
            double gv = c.g[r * O + o];
            db[o] += gv;
            for (int64_t i = 0; i < I; i++) {
                din[r * I + i] += gv * c.w[o * I + i];
                dw[o * I + i] += gv * c.in[r * I + i];
            }
        }
    if (fd) {
        double *f = malloc((size_t)((N * I > O * I ? N * I : O * I) + O) * 8);
        central_diff(f, c.in, N * I, lin_loss, &c);
        double e1 = rel_d(f, din, N * I);
        central_diff(f, c.w, O * I, lin_loss, &c);
        double e2 = rel_d(f, dw, O * I);
        double e3 = 0;
        if (with_bias) {
            central_diff(f, c.b, O, lin_loss, &c);
            e3 = rel_d(f, db, O);
        }
        tap_ok(t, e1 < 1e-6 && e2 < 1e-6 && e3 < 1e-6,
               "linear: double backward = central differences (%.1e %.1e %.1e)", e1, e2, e3);
        free(f);
    }
    float *fdin = frand(N * I, 1.0, 0.0), *fdw = frand(O * I, 1.0, 0.0), *fdb = frand(O, 1.0, 0.0);
    float *din0 = fcopy(fdin, N * I), *dw0 = fcopy(fdw, O * I), *db0 = fcopy(fdb, O);
    fine_linear_backward(fdin, fdw, fdb, g, in, w, N, I, O);
    double e1 = rel_f(fdin, din0, din, N * I), e2 = rel_f(fdw, dw0, dw, O * I),
           e3 = rel_f(fdb, db0, db, O);
    tap_ok(t, e1 < 1e-4 && e2 < 1e-4 && e3 < 1e-4,
           "linear %lldx%lld->%lld: float backward accumulates the double one (%.1e %.1e %.1e)",
           (long long)N, (long long)I, (long long)O, e1, e2, e3);
    memcpy(fdb, db0, (size_t)O * 4);
    fine_linear_backward(NULL, NULL, fdb, g, in, w, N, I, O);
    memcpy(fdin, din0, (size_t)(N * I) * 4);
    fine_linear_backward(fdin, NULL, NULL, g, in, w, N, I, O);
    tap_ok(t, rel_f(fdb, db0, db, O) < 1e-4 && rel_f(fdin, din0, din, N * I) < 1e-4,
           "linear: NULL gradient pointers");
    float *b1 = calloc((size_t)O, 4), *b2 = calloc((size_t)O, 4);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    fine_linear_backward(NULL, NULL, b1, g, in, w, N, I, O);
    omp_set_num_threads(threads > 1 ? threads : 2);
    fine_linear_backward(NULL, NULL, b2, g, in, w, N, I, O);
    omp_set_num_threads(threads);
    tap_ok(t, !memcmp(b1, b2, (size_t)O * 4), "linear: dbias bitwise equal with 1 and 2 threads");
    free(in), free(w), free(b), free(g), free(out), free(ref);
    free(c.in), free(c.w), free(c.b), free(c.g), free(din), free(dw), free(db);
    free(fdin), free(fdw), free(fdb), free(din0), free(dw0), free(db0), free(b1), free(b2);
}

/* ------------------------------------------------------------------ pointwise */

static void test_pointwise(tap *t)
{
    int64_t n = 100003;
    float *a = frand(n, 1.0, 0.0), *b = frand(n, 1.0, 0.0), *o = malloc((size_t)n * 4);
    fine_add(o, a, b, n);
    int ok = 1;
    for (int64_t i = 0; i < n; i++)
        ok &= o[i] == a[i] + b[i];
    fine_accumulate(o, a, n);
    for (int64_t i = 0; i < n; i++)
        ok &= o[i] == (a[i] + b[i]) + a[i];
    tap_ok(t, ok, "add and accumulate, exactly");

    /* drop path: 3 samples of 5 rows of 7; masks 0, 1/0.8, 1 */
    float x[105], x0[105], mask[3] = {0.0f, 1.0f / 0.8f, 1.0f};
    for (int i = 0; i < 105; i++)
        x[i] = x0[i] = (float)urand();
    fine_drop_path(x, mask, 3, 5, 7);
    ok = 1;
    for (int i = 0; i < 105; i++)
        ok &= x[i] == x0[i] * mask[i / 35];
    tap_ok(t, ok, "drop path scales each sample's rows by its mask value");
    free(a), free(b), free(o);
}

int main(void)
{
    tap t = {0};
    test_layernorm(&t, 6, 19, 2.0, 1);    /* finite differences, short rows */
    test_layernorm(&t, 4, 24, 1e-3, 1);   /* variance ~3e-7: eps 1e-5 dominates */
    test_layernorm(&t, 300, 192, 2.0, 0); /* the parallel paths */
    test_layernorm(&t, 1000, 50, 2.0, 0);
    test_layernorm(&t, 5, 8200, 2.0, 0); /* rows wider than the stack partials */
    test_gelu(&t);
    test_linear(&t, 7, 5, 6, 1, 1);
    test_linear(&t, 5, 4, 3, 0, 1);
    test_linear(&t, 600, 96, 70, 1, 0);
    test_pointwise(&t);
    return tap_done(&t);
}
