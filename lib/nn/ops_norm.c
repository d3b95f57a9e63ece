/* ops_norm.c: the per-token and pointwise layers of ops.h: LayerNorm, exact GELU, Linear
 * (OpenBLAS sgemm), residual adds and drop path.
 *
 * Parallelism: OpenMP over rows or fixed-size chunks. Sums over rows (LayerNorm affine
 * gradients, Linear bias gradient) go over fixed blocks of rows in float and across blocks
 * in double in a fixed order, so no result depends on the thread count. The hot loops are
 * compiled twice, for the baseline ISA and for AVX2 (with FMA), and the variant is chosen once
 * per call from the CPU. */
#include "nn/ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "nn/ops_vec.h"

/* Work below this many floats runs on the calling thread only. */
#define SERIAL_FLOATS 32768
/* Pointwise loops work on chunks of this many values. */
#define CHUNK 16384

/* ------------------------------------------------------------------ vectorisable exp and Phi */



/* Standard normal CDF Phi(x) = erfc(-x/sqrt2)/2, with erfc(z) for z >= 0 from the
 * Chebyshev fit of Numerical Recipes (erfcc: fractional error < 1.2e-7 for all z >= 0).
 * Overall relative error of x*Phi(x) in float: < 3e-6 for |x| < 5 (the rounding of z^2). */
FINE_INLINE float vphi_cdf(float x)
{
    float z = fabsf(x) * 0.70710678118654752f;
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    float half_erfc = 0.5f * t * vexpf(p - z * z);
    return select_f(x < 0.0f, half_erfc, 1.0f - half_erfc);
}

/* ------------------------------------------------------------------ LayerNorm */

FINE_INLINE void layernorm_rows(float *out, float *mean, float *rstd, const float *in,
                                const float *weight, const float *bias, int64_t r0, int64_t r1,
                                int64_t C)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *x = in + r * C;
        float *o = out + r * C;
        double s = 0.0, v = 0.0; /* double sums: exact enough for any row width */
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; c++)
            s += (double)x[c];
        float m = (float)(s / (double)C);
#pragma omp simd reduction(+ : v)
        for (int64_t c = 0; c < C; c++) {
            float d = x[c] - m;
            v += (double)(d * d);
        }
        float rs = (float)(1.0 / sqrt(v / (double)C + 1e-5));
#pragma omp simd
        for (int64_t c = 0; c < C; c++)
            o[c] = (x[c] - m) * rs * weight[c] + bias[c];
        mean[r] = m;
        rstd[r] = rs;
    }
}

static void layernorm_rows_base(float *out, float *mean, float *rstd, const float *in,
                                const float *weight, const float *bias, int64_t r0, int64_t r1,
                                int64_t C)
{
    layernorm_rows(out, mean, rstd, in, weight, bias, r0, r1, C);
}
#ifdef FINE_HAVE_AVX2
FINE_AVX2 static void layernorm_rows_avx2(float *out, float *mean, float *rstd, const float *in,
                                          const float *weight, const float *bias, int64_t r0,
                                          int64_t r1, int64_t C)
{
    layernorm_rows(out, mean, rstd, in, weight, bias, r0, r1, C);
}
#endif

void fine_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                            const float *weight, const float *bias, int64_t N, int64_t C)
{
    void (*rows)(float *, float *, float *, const float *, const float *, const float *, int64_t,
                 int64_t, int64_t) = layernorm_rows_base;
#ifdef FINE_HAVE_AVX2
    if (have_avx2())
        rows = layernorm_rows_avx2;
#endif
    int64_t block = C >= CHUNK ? 1 : CHUNK / C;
    int64_t nblocks = (N + block - 1) / block;
#pragma omp parallel for schedule(static) if (N * C > SERIAL_FLOATS)
    for (int64_t i = 0; i < nblocks; i++) {
        int64_t r1 = (i + 1) * block < N ? (i + 1) * block : N;
        rows(out, mean, rstd, in, weight, bias, i * block, r1, C);
    }
}

/* din rows [r0, r1) (+=, when din is not NULL); pw[c] += sum dout * xhat and pb[c] += sum
 * dout over the rows when they are not NULL. */
FINE_INLINE void layernorm_back_rows(float *din, float *pw, float *pb, const float *dout,
                                     const float *in, const float *weight, const float *mean,
                                     const float *rstd, int64_t r0, int64_t r1, int64_t C)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *x = in + r * C, *g = dout + r * C;
        float m = mean[r], rs = rstd[r];
        if (pw) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++)
                pw[c] += g[c] * ((x[c] - m) * rs);
        }
        if (pb) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++)
                pb[c] += g[c];
        }
        if (!din)
            continue;
        float *dx = din + r * C;
        float a = 0.0f, b = 0.0f; /* sums of dnorm and dnorm * xhat */
#pragma omp simd reduction(+ : a, b)
        for (int64_t c = 0; c < C; c++) {
            float dn = g[c] * weight[c];
            a += dn;
            b += dn * ((x[c] - m) * rs);
        }
        a /= (float)C;
        b /= (float)C;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) {
            float xh = (x[c] - m) * rs;
            dx[c] += (g[c] * weight[c] - a - xh * b) * rs;
        }
    }
}

static void layernorm_back_rows_base(float *din, float *pw, float *pb, const float *dout,
                                     const float *in, const float *weight, const float *mean,
                                     const float *rstd, int64_t r0, int64_t r1, int64_t C)
{
    layernorm_back_rows(din, pw, pb, dout, in, weight, mean, rstd, r0, r1, C);
}
#ifdef FINE_HAVE_AVX2
FINE_AVX2 static void layernorm_back_rows_avx2(float *din, float *pw, float *pb,
                                               const float *dout, const float *in,
                                               const float *weight, const float *mean,
                                               const float *rstd, int64_t r0, int64_t r1,
                                               int64_t C)
{
    layernorm_back_rows(din, pw, pb, dout, in, weight, mean, rstd, r0, r1, C);
}
#endif

/* Column sums of a (N, C) matrix for channels [c0, c0 + cn), cn <= 16: db[c] += sum_r g[r,c],
 * in float over fixed blocks of ROWS_F rows and in double across blocks, rows in order. */
#define COLS 16
#define ROWS_F 256
FINE_INLINE void column_sums(float *db, const float *dout, int64_t N, int64_t C, int64_t c0,
                             int64_t cn)
{
    double sb[COLS] = {0};
    for (int64_t r0 = 0; r0 < N; r0 += ROWS_F) {
        int64_t r1 = r0 + ROWS_F < N ? r0 + ROWS_F : N;
        float fb[COLS] = {0};
        if (cn == COLS) {
            for (int64_t r = r0; r < r1; r++) {
                const float *g = dout + r * C + c0;
#pragma omp simd
                for (int c = 0; c < COLS; c++)
                    fb[c] += g[c];
            }
        } else {
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = 0; c < cn; c++)
                    fb[c] += dout[r * C + c0 + c];
        }
        for (int c = 0; c < COLS; c++)
            sb[c] += fb[c];
    }
    for (int64_t c = 0; c < cn; c++)
        db[c0 + c] += (float)sb[c];
}

static void column_sums_base(float *db, const float *dout, int64_t N, int64_t C, int64_t c0,
                             int64_t cn)
{
    column_sums(db, dout, N, C, c0, cn);
}
#ifdef FINE_HAVE_AVX2
FINE_AVX2 static void column_sums_avx2(float *db, const float *dout, int64_t N, int64_t C,
                                       int64_t c0, int64_t cn)
{
    column_sums(db, dout, N, C, c0, cn);
}
#endif

/* db[c] += sum over the N rows of dout[:, c], OpenMP over 16-channel slices. */
static void column_sums_all(float *db, const float *dout, int64_t N, int64_t C)
{
    void (*sums)(float *, const float *, int64_t, int64_t, int64_t, int64_t) = column_sums_base;
#ifdef FINE_HAVE_AVX2
    if (have_avx2())
        sums = column_sums_avx2;
#endif
    int64_t slices = (C + COLS - 1) / COLS;
#pragma omp parallel for schedule(dynamic, 1) if (N * C > SERIAL_FLOATS)
    for (int64_t s = 0; s < slices; s++) {
        int64_t c0 = s * COLS;
        sums(db, dout, N, C, c0, C - c0 < COLS ? C - c0 : COLS);
    }
}

/* The affine gradients are summed over a fixed number of row slices (set by C, not by the
 * thread count): each slice sums blocks of ROWS_F rows in float and the blocks in double, into
 * its own row of `part` on the caller's stack; the slices are then added in order. */
#define LN_PART 16384 /* doubles of slice partials */
#define LN_SLICES 64

void fine_layernorm_backward(float *din, float *dweight, float *dbias, const float *dout,
                             const float *in, const float *weight, const float *mean,
                             const float *rstd, int64_t N, int64_t C)
{
    void (*rows)(float *, float *, float *, const float *, const float *, const float *,
                 const float *, const float *, int64_t, int64_t, int64_t) =
        layernorm_back_rows_base;
#ifdef FINE_HAVE_AVX2
    if (have_avx2())
        rows = layernorm_back_rows_avx2;
#endif
    if (!dweight && !dbias) {
        if (!din)
            return;
        int64_t block = C >= CHUNK ? 1 : CHUNK / C;
        int64_t nblocks = (N + block - 1) / block;
#pragma omp parallel for schedule(static) if (N * C > SERIAL_FLOATS)
        for (int64_t i = 0; i < nblocks; i++) {
            int64_t r1 = (i + 1) * block < N ? (i + 1) * block : N;
            rows(din, NULL, NULL, dout, in, weight, mean, rstd, i * block, r1, C);
        }
        return;
    }
    if (2 * C > LN_PART) { /* very wide rows: serially, summing straight into the gradients */
        rows(din, dweight, dbias, dout, in, weight, mean, rstd, 0, N, C);
        return;
    }
    int64_t slices = LN_PART / (2 * C) < LN_SLICES ? LN_PART / (2 * C) : LN_SLICES;
    slices = slices < N ? slices : (N > 0 ? N : 1);
    double part[LN_PART];
#pragma omp parallel for schedule(dynamic, 1) if (N * C > SERIAL_FLOATS)
    for (int64_t sl = 0; sl < slices; sl++) {
        double *ps = part + sl * 2 * C;
        float pw[LN_PART / 2]; /* 2C floats */
        memset(ps, 0, (size_t)(2 * C) * sizeof(double));
        int64_t r0 = N * sl / slices, r1 = N * (sl + 1) / slices;
        for (int64_t b0 = r0; b0 < r1; b0 += ROWS_F) {
            int64_t b1 = b0 + ROWS_F < r1 ? b0 + ROWS_F : r1;
            memset(pw, 0, (size_t)(2 * C) * sizeof(float));
            rows(din, pw, pw + C, dout, in, weight, mean, rstd, b0, b1, C);
            for (int64_t c = 0; c < 2 * C; c++)
                ps[c] += (double)pw[c];
        }
    }
    for (int64_t c = 0; c < C; c++) {
        double w = 0.0, b = 0.0;
        for (int64_t sl = 0; sl < slices; sl++) {
            w += part[sl * 2 * C + c];
            b += part[sl * 2 * C + C + c];
        }
        if (dweight)
            dweight[c] += (float)w;
        if (dbias)
            dbias[c] += (float)b;
    }
}

/* ------------------------------------------------------------------ GELU */

FINE_INLINE void gelu_span(float *out, const float *in, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float x = in[i];
        out[i] = x * vphi_cdf(x);
    }
}

FINE_INLINE void gelu_back_span(float *din, const float *dout, const float *in, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float x = in[i];
        float pdf = 0.398942280401432678f * vexpf(-0.5f * x * x);
        din[i] += dout[i] * (vphi_cdf(x) + x * pdf);
    }
}

static void gelu_span_base(float *out, const float *in, int64_t n)
{
    gelu_span(out, in, n);
}
static void gelu_back_span_base(float *din, const float *dout, const float *in, int64_t n)
{
    gelu_back_span(din, dout, in, n);
}
#ifdef FINE_HAVE_AVX2
FINE_AVX2 static void gelu_span_avx2(float *out, const float *in, int64_t n)
{
    gelu_span(out, in, n);
}
FINE_AVX2 static void gelu_back_span_avx2(float *din, const float *dout, const float *in,
                                          int64_t n)
{
    gelu_back_span(din, dout, in, n);
}
#endif

void fine_gelu_forward(float *out, const float *in, int64_t n)
{
    void (*span)(float *, const float *, int64_t) = gelu_span_base;
#ifdef FINE_HAVE_AVX2
    if (have_avx2())
        span = gelu_span_avx2;
#endif
    int64_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n > SERIAL_FLOATS)
    for (int64_t i = 0; i < chunks; i++)
        span(out + i * CHUNK, in + i * CHUNK, n - i * CHUNK < CHUNK ? n - i * CHUNK : CHUNK);
}

void fine_gelu_backward(float *din, const float *dout, const float *in, int64_t n)
{
    void (*span)(float *, const float *, const float *, int64_t) = gelu_back_span_base;
#ifdef FINE_HAVE_AVX2
    if (have_avx2())
        span = gelu_back_span_avx2;
#endif
    int64_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n > SERIAL_FLOATS)
    for (int64_t i = 0; i < chunks; i++)
        span(din + i * CHUNK, dout + i * CHUNK, in + i * CHUNK,
             n - i * CHUNK < CHUNK ? n - i * CHUNK : CHUNK);
}

/* ------------------------------------------------------------------ Linear */

/* cblas takes int sizes: rows go in slices of at most this many. */
#define BLAS_ROWS ((int64_t)1 << 24)

void fine_linear_forward(float *out, const float *in, const float *w, const float *b, int64_t N,
                         int64_t in_features, int64_t out_features)
{
    if (b) {
#pragma omp parallel for schedule(static) if (N * out_features > SERIAL_FLOATS)
        for (int64_t r = 0; r < N; r++)
            memcpy(out + r * out_features, b, (size_t)out_features * sizeof(float));
    }
    for (int64_t r0 = 0; r0 < N; r0 += BLAS_ROWS) {
        int64_t rn = N - r0 < BLAS_ROWS ? N - r0 : BLAS_ROWS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rn, (int)out_features,
                    (int)in_features, 1.0f, in + r0 * in_features, (int)in_features, w,
                    (int)in_features, b ? 1.0f : 0.0f, out + r0 * out_features,
                    (int)out_features);
    }
}

void fine_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                          const float *w, int64_t N, int64_t in_features, int64_t out_features)
{
    for (int64_t r0 = 0; r0 < N; r0 += BLAS_ROWS) {
        int64_t rn = N - r0 < BLAS_ROWS ? N - r0 : BLAS_ROWS;
        const float *g = dout + r0 * out_features;
        if (din) /* din (rn, in) += dout (rn, out) @ w (out, in) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rn, (int)in_features,
                        (int)out_features, 1.0f, g, (int)out_features, w, (int)in_features,
                        1.0f, din + r0 * in_features, (int)in_features);
        if (dw) /* dw (out, in) += dout^T (out, rn) @ in (rn, in) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out_features,
                        (int)in_features, (int)rn, 1.0f, g, (int)out_features,
                        in + r0 * in_features, (int)in_features, 1.0f, dw, (int)in_features);
    }
    if (db)
        column_sums_all(db, dout, N, out_features);
}

/* ------------------------------------------------------------------ residuals, drop path */

void fine_add(float *out, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > SERIAL_FLOATS)
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void fine_accumulate(float *y, const float *x, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > SERIAL_FLOATS)
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void fine_drop_path(float *x, const float *mask, int64_t samples, int64_t rows_per_sample,
                    int64_t C)
{
    int64_t per = rows_per_sample * C;
    for (int64_t s = 0; s < samples; s++) {
        float k = mask[s];
        if (k == 1.0f)
            continue;
        float *xs = x + s * per;
#pragma omp parallel for simd schedule(static) if (per > SERIAL_FLOATS)
        for (int64_t i = 0; i < per; i++)
            xs[i] *= k;
    }
}
