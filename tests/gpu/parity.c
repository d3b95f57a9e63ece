/* parity.c: the CUDA backend against the CPU backend, slot by slot (backend.h).
 *
 *   parity [DEVICE]   DEVICE (default "cuda") against the CPU backend
 *   parity --self     the CPU backend against itself: tests this harness where no GPU is
 *                     present (every check must then report rel 0)
 *
 * Every layer slot of the table runs on both backends with the same deterministic random
 * inputs (one splitmix64 stream, fixed seed, generated on the host and uploaded to both), and
 * every output buffer is compared: max|gpu - cpu| / max(max|cpu|, 1e-6) <= 1e-4 for float
 * outputs, exact equality for integer outputs (labels, Dice counts). Forward outputs start
 * as the same random garbage on both sides (an element the kernel forgets to write shows);
 * gradient outputs start as the same random values, not zero (a backward that overwrites
 * instead of accumulating shows). Backward inputs the forward produced (LayerNorm mean/rstd,
 * attention probabilities, softmax probabilities) are the CPU's, uploaded to both sides, so a
 * backward is compared on identical inputs.
 *
 * Output: TAP, one line per compared output with its measured error, then "1..N" and
 * "parity: N passed, N failed". Exit 0 when all pass, 1 on any failure, 2 when the backend
 * cannot be opened or the arguments are wrong. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/ops.h"
#include "nn/train.h"

#define SEED 0x5eed2024f1e5ull

typedef struct harness {
    const fine_backend *cpu; /* the reference: host memory */
    const fine_backend *gpu; /* the backend under test */
    uint64_t rng;
    int n, failed;
    double tol;   /* float outputs: the precision's tolerance (main) */
    double worst; /* largest float error seen, and its check (0: none yet) */
    int worst_n;
} harness;

/* ------------------------------------------------------------------ random numbers */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [lo, hi) with 24 random bits */
static float urand(harness *h, float lo, float hi)
{
    return lo + (hi - lo) * (float)(splitmix64(&h->rng) >> 40) * (1.0f / 16777216.0f);
}

/* uniform integer in [0, n) */
static int64_t irand(harness *h, int64_t n)
{
    return (int64_t)(splitmix64(&h->rng) % (uint64_t)n);
}

/* ------------------------------------------------------------------ memory on both sides */

static void *host_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        printf("Bail out! parity: cannot allocate %zu bytes of host memory\n", bytes);
        exit(1);
    }
    return p;
}

static void *side_alloc(const fine_backend *be, size_t bytes)
{
    void *p = be->alloc(be->ctx, bytes ? bytes : 1);
    if (!p) {
        printf("Bail out! parity: %s: cannot allocate %zu bytes\n", be->name, bytes);
        exit(1);
    }
    return p;
}

/* A float buffer on both backends: c on the CPU (host memory, readable here), g on the
 * backend under test. */
typedef struct fbuf {
    float *c, *g;
    int64_t n;
} fbuf;

/* n floats on both sides, both set to host[0..n) (zero when host is NULL). */
static fbuf fb_new(harness *h, const float *host, int64_t n)
{
    size_t bytes = (size_t)n * sizeof(float);
    fbuf b = {side_alloc(h->cpu, bytes), side_alloc(h->gpu, bytes), n};
    if (host && n > 0) {
        h->cpu->upload(h->cpu->ctx, b.c, host, bytes);
        h->gpu->upload(h->gpu->ctx, b.g, host, bytes);
    }
    return b;
}

static void fill_uniform(harness *h, float *x, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = urand(h, lo, hi);
}

/* n floats uniform in [lo, hi), the same on both sides. */
static fbuf fb_rand(harness *h, int64_t n, float lo, float hi)
{
    float *x = host_alloc((size_t)n * sizeof(float));
    fill_uniform(h, x, n, lo, hi);
    fbuf b = fb_new(h, x, n);
    free(x);
    return b;
}

/* Work space: each side gets what its own *_scratch function asked for (floats; 0 -> NULL). */
static fbuf fb_scratch(harness *h, size_t cpu_floats, size_t gpu_floats)
{
    fbuf b = {NULL, NULL, 0};
    if (cpu_floats)
        b.c = side_alloc(h->cpu, cpu_floats * sizeof(float));
    if (gpu_floats)
        b.g = side_alloc(h->gpu, gpu_floats * sizeof(float));
    return b;
}

static void fb_free(harness *h, fbuf *b)
{
    if (b->c)
        h->cpu->free(h->cpu->ctx, b->c);
    if (b->g)
        h->gpu->free(h->gpu->ctx, b->g);
    b->c = b->g = NULL;
}

/* Bytes on both sides (class ids, indices). */
typedef struct bbuf {
    void *c, *g;
    size_t bytes;
} bbuf;

static bbuf bb_new(harness *h, const void *host, size_t bytes)
{
    bbuf b = {side_alloc(h->cpu, bytes), side_alloc(h->gpu, bytes), bytes};
    if (host && bytes) {
        h->cpu->upload(h->cpu->ctx, b.c, host, bytes);
        h->gpu->upload(h->gpu->ctx, b.g, host, bytes);
    }
    return b;
}

static void bb_free(harness *h, bbuf *b)
{
    h->cpu->free(h->cpu->ctx, b->c);
    h->gpu->free(h->gpu->ctx, b->g);
    b->c = b->g = NULL;
}

/* ------------------------------------------------------------------ comparing and reporting */

static void tap_line(harness *h, int pass, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void tap_line(harness *h, int pass, const char *label, const char *fmt, ...)
{
    va_list ap;
    h->n++;
    if (!pass)
        h->failed++;
    printf("%sok %d - %s ", pass ? "" : "not ", h->n, label);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* 1 when the backend under test recorded a failure since the last sync (message in msg). */
static int gpu_failed(harness *h, char *msg, size_t cap)
{
    fine_err e;
    memset(&e, 0, sizeof e);
    if (h->gpu->sync(h->gpu->ctx, &e) == 0)
        return 0;
    snprintf(msg, cap, "%s", e.msg[0] ? e.msg : "(no message)");
    return 1;
}

/* max|got - ref| / max(max|ref|, 1e-6); infinite when a NaN or infinity of one side is not
 * matched by the other. */
static double rel_err(const float *ref, const float *got, int64_t n)
{
    double maxref = 0.0, maxdiff = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double r = ref[i], g = got[i];
        if (r == g) { /* also equal infinities */
            if (isfinite(r) && fabs(r) > maxref)
                maxref = fabs(r);
            continue;
        }
        if (isnan(r) && isnan(g))
            continue;
        if (!isfinite(r) || !isfinite(g))
            return INFINITY;
        if (fabs(r) > maxref)
            maxref = fabs(r);
        if (fabs(g - r) > maxdiff)
            maxdiff = fabs(g - r);
    }
    return maxdiff / (maxref > 1e-6 ? maxref : 1e-6);
}

static void note_worst(harness *h, double rel)
{
    if (h->worst_n == 0 || rel > h->worst || (isnan(rel) && !isnan(h->worst))) {
        h->worst = rel;
        h->worst_n = h->n;
    }
}

/* One check: b's two copies within h->tol. */
static void check_f(harness *h, const fbuf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check_f(harness *h, const fbuf *b, const char *fmt, ...)
{
    char label[256], msg[FINE_ERR_MAX + 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(label, sizeof label, fmt, ap);
    va_end(ap);
    if (gpu_failed(h, msg, sizeof msg)) {
        tap_line(h, 0, label, "failed: %s", msg);
        return;
    }
    float *got = host_alloc((size_t)b->n * sizeof(float));
    h->gpu->download(h->gpu->ctx, got, b->g, (size_t)b->n * sizeof(float));
    double rel = rel_err(b->c, got, b->n);
    free(got);
    if (gpu_failed(h, msg, sizeof msg)) {
        tap_line(h, 0, label, "failed: %s", msg);
        return;
    }
    tap_line(h, rel <= h->tol, label, "rel %.1e", rel);
    note_worst(h, rel);
}

/* One check: b's two copies byte for byte. */
static void check_bytes(harness *h, const bbuf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check_bytes(harness *h, const bbuf *b, const char *fmt, ...)
{
    char label[256], msg[FINE_ERR_MAX + 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(label, sizeof label, fmt, ap);
    va_end(ap);
    if (gpu_failed(h, msg, sizeof msg)) {
        tap_line(h, 0, label, "failed: %s", msg);
        return;
    }
    unsigned char *got = host_alloc(b->bytes);
    h->gpu->download(h->gpu->ctx, got, b->g, b->bytes);
    size_t differ = 0;
    for (size_t i = 0; i < b->bytes; i++)
        differ += got[i] != ((const unsigned char *)b->c)[i];
    free(got);
    if (gpu_failed(h, msg, sizeof msg)) {
        tap_line(h, 0, label, "failed: %s", msg);
        return;
    }
    if (differ)
        tap_line(h, 0, label, "%zu of %zu bytes differ", differ, b->bytes);
    else
        tap_line(h, 1, label, "exact");
}

/* One check of a value returned on the host (a loss, a sum of squares). */
static void check_scalar(harness *h, double ref, double got, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void check_scalar(harness *h, double ref, double got, const char *fmt, ...)
{
    char label[256], msg[FINE_ERR_MAX + 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(label, sizeof label, fmt, ap);
    va_end(ap);
    if (gpu_failed(h, msg, sizeof msg)) {
        tap_line(h, 0, label, "failed: %s", msg);
        return;
    }
    double rel;
    if (ref == got)
        rel = 0.0;
    else if (!isfinite(ref) || !isfinite(got))
        rel = INFINITY;
    else
        rel = fabs(got - ref) / (fabs(ref) > 1e-6 ? fabs(ref) : 1e-6);
    tap_line(h, rel <= h->tol, label, "cpu %.9g gpu %.9g rel %.1e", ref, got, rel);
    note_worst(h, rel);
}

/* One check that both sides returned NaN (a class id >= K). */
static void check_nan(harness *h, double ref, double got, const char *label)
{
    char msg[FINE_ERR_MAX + 8];
    if (gpu_failed(h, msg, sizeof msg)) {
        tap_line(h, 0, label, "failed: %s", msg);
        return;
    }
    tap_line(h, isnan(ref) && isnan(got), label, "cpu %g gpu %g (both NaN expected)", ref, got);
}

/* "3" when all three are equal, else "(1,2,2)" */
static const char *triple(char *buf, size_t cap, const int v[3])
{
    if (v[0] == v[1] && v[1] == v[2])
        snprintf(buf, cap, "%d", v[0]);
    else
        snprintf(buf, cap, "(%d,%d,%d)", v[0], v[1], v[2]);
    return buf;
}

/* ------------------------------------------------------------------ row copies, memory tokens */

static void check_rows(harness *h)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    const int64_t rows = 37, W = 48, dst_stride = 64, src_stride = 80;
    fbuf src = fb_rand(h, rows * src_stride, -1, 1);
    /* dst columns >= W start as garbage and must stay untouched */
    fbuf dst = fb_rand(h, rows * dst_stride, -1, 1);
    cb->copy_rows(cb->ctx, dst.c, dst_stride, src.c, src_stride, rows, W);
    gb->copy_rows(gb->ctx, dst.g, dst_stride, src.g, src_stride, rows, W);
    check_f(h, &dst, "copy_rows 37x48 dst_stride 64 src_stride 80");
    fb_free(h, &dst);
    dst = fb_rand(h, rows * dst_stride, -1, 1);
    cb->copy_rows(cb->ctx, dst.c, dst_stride, src.c, 0, rows, W);
    gb->copy_rows(gb->ctx, dst.g, dst_stride, src.g, 0, rows, W);
    check_f(h, &dst, "copy_rows 37x48 src_stride 0 (broadcast)");
    fb_free(h, &dst);
    fb_free(h, &src);

    const int64_t C = 48, out_stride = 64, b_stride = 96;
    fbuf a = fb_rand(h, rows * C, -1, 1), b = fb_rand(h, rows * b_stride, -1, 1);
    fbuf scale = fb_rand(h, rows, -2, 2);
    fbuf out = fb_rand(h, rows * out_stride, -1, 1);
    cb->axpy_rows(cb->ctx, out.c, out_stride, a.c, b.c, b_stride, scale.c, rows, C);
    gb->axpy_rows(gb->ctx, out.g, out_stride, a.g, b.g, b_stride, scale.g, rows, C);
    check_f(h, &out, "axpy_rows 37x48 a out_stride 64 b_stride 96");
    fb_free(h, &out);
    out = fb_rand(h, rows * out_stride, -1, 1);
    cb->axpy_rows(cb->ctx, out.c, out_stride, NULL, b.c, b_stride, scale.c, rows, C);
    gb->axpy_rows(gb->ctx, out.g, out_stride, NULL, b.g, b_stride, scale.g, rows, C);
    check_f(h, &out, "axpy_rows 37x48 a NULL out_stride 64 b_stride 96");
    fb_free(h, &out);
    fb_free(h, &a);
    fb_free(h, &b);
    fb_free(h, &scale);

    const int64_t srows = 1000;
    fbuf s = fb_rand(h, srows * C, -1, 1), acc = fb_rand(h, C, -1, 1);
    cb->sum_rows_acc(cb->ctx, acc.c, s.c, srows, C);
    gb->sum_rows_acc(gb->ctx, acc.g, s.g, srows, C);
    check_f(h, &acc, "sum_rows_acc 1000x48 (+=)");
    fb_free(h, &s);
    fb_free(h, &acc);
}

static void check_memtok(harness *h)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    const int64_t B = 2, nW = 8, C = 48, nV = 16;
    const int nvt = 4;
    const int64_t U = nvt + nW;
    /* repeated indices across samples (3, 5, 7) and within one (5) */
    const int idx_host[8] = {3, 5, 7, 5, 5, 7, 11, 3};
    bbuf idx = bb_new(h, idx_host, sizeof idx_host);
    fbuf table = fb_rand(h, nV * C, -1, 1), g2 = fb_rand(h, B * nW * C, -1, 1);
    fbuf pe = fb_rand(h, nW * C, -1, 1), u = fb_rand(h, B * U * C, -1, 1);
    cb->memtok_gather(cb->ctx, u.c, table.c, idx.c, g2.c, pe.c, B, nW, C, nvt);
    gb->memtok_gather(gb->ctx, u.g, table.g, idx.g, g2.g, pe.g, B, nW, C, nvt);
    check_f(h, &u, "memtok_gather B2 nW8 C48 nvt4 u");

    fbuf du = fb_rand(h, B * U * C, -1, 1);
    fbuf dtable = fb_rand(h, nV * C, -1, 1), dpe = fb_rand(h, nW * C, -1, 1);
    fbuf dg2 = fb_rand(h, B * nW * C, -1, 1); /* overwritten */
    cb->memtok_gather_backward(cb->ctx, dtable.c, dpe.c, dg2.c, du.c, idx.c, B, nW, C, nvt);
    gb->memtok_gather_backward(gb->ctx, dtable.g, dpe.g, dg2.g, du.g, idx.g, B, nW, C, nvt);
    check_f(h, &dtable, "memtok_gather_backward B2 nW8 C48 nvt4 dtable (+=, repeated idx)");
    check_f(h, &dpe, "memtok_gather_backward B2 nW8 C48 nvt4 dpe (+=)");
    check_f(h, &dg2, "memtok_gather_backward B2 nW8 C48 nvt4 dg2 (=)");
    fb_free(h, &du);
    fb_free(h, &dtable);
    fb_free(h, &dpe);
    fb_free(h, &dg2);
    fb_free(h, &table);
    fb_free(h, &g2);
    fb_free(h, &pe);
    fb_free(h, &u);
    bb_free(h, &idx);
}

/* ------------------------------------------------------------------ convolutions */

/* which gradients a backward call leaves out */
enum { NULL_DIN = 1, NULL_DW = 2, NULL_DB = 4 };

static const char *null_note(int nulls)
{
    switch (nulls) {
    case 0: return "";
    case NULL_DIN: return " (din NULL)";
    case NULL_DW | NULL_DB: return " (dw, db NULL)";
    case NULL_DB: return " (db NULL)";
    case NULL_DW: return " (dw NULL)";
    case NULL_DIN | NULL_DB: return " (din, db NULL)";
    default: return " (some NULL)";
    }
}

static void conv3d_backward_case(harness *h, const fine_conv3d_shape *s, const char *tag, int nulls,
                                 const fbuf *in, const fbuf *w, const fbuf *dout, const fbuf *scratch)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    fbuf din = fb_rand(h, in->n, -1, 1), dw = fb_rand(h, w->n, -1, 1), db = fb_rand(h, s->Cout, -1, 1);
    cb->conv3d_backward(cb->ctx, s, nulls & NULL_DIN ? NULL : din.c, nulls & NULL_DW ? NULL : dw.c,
                        nulls & NULL_DB ? NULL : db.c, dout->c, in->c, w->c, scratch->c);
    gb->conv3d_backward(gb->ctx, s, nulls & NULL_DIN ? NULL : din.g, nulls & NULL_DW ? NULL : dw.g,
                        nulls & NULL_DB ? NULL : db.g, dout->g, in->g, w->g, scratch->g);
    if (!(nulls & NULL_DIN))
        check_f(h, &din, "conv3d_backward %s din%s", tag, null_note(nulls));
    if (!(nulls & NULL_DW))
        check_f(h, &dw, "conv3d_backward %s dw%s", tag, null_note(nulls));
    if (!(nulls & NULL_DB))
        check_f(h, &db, "conv3d_backward %s db%s", tag, null_note(nulls));
    fb_free(h, &din);
    fb_free(h, &dw);
    fb_free(h, &db);
}

/* Forward and backward of one shape; extra backward calls with the gradients in extra_nulls
 * (a list ended by -1) left out. */
static void check_conv3d(harness *h, fine_conv3d_shape s, const int *extra_nulls)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    char k[32], st[32], p[32], tag[160];
    snprintf(tag, sizeof tag, "k%s s%s p%s B%d %d->%d %dx%dx%d", triple(k, sizeof k, s.k),
             triple(st, sizeof st, s.stride), triple(p, sizeof p, s.pad), (int)s.B, (int)s.Cin,
             (int)s.Cout, (int)s.D, (int)s.H, (int)s.W);
    int64_t Do, Ho, Wo;
    fine_conv3d_out_size(&s, &Do, &Ho, &Wo);
    int64_t kv = (int64_t)s.k[0] * s.k[1] * s.k[2];
    int64_t nin = s.B * s.Cin * s.D * s.H * s.W, nout = s.B * s.Cout * Do * Ho * Wo;
    fbuf in = fb_rand(h, nin, -1, 1);
    fbuf w = fb_rand(h, s.Cout * s.Cin * kv, -0.5f, 0.5f), b = fb_rand(h, s.Cout, -1, 1);
    fbuf scratch = fb_scratch(h, cb->conv3d_scratch(cb->ctx, &s), gb->conv3d_scratch(gb->ctx, &s));
    fbuf out = fb_rand(h, nout, -1, 1);
    cb->conv3d_forward(cb->ctx, &s, out.c, in.c, w.c, b.c, scratch.c);
    gb->conv3d_forward(gb->ctx, &s, out.g, in.g, w.g, b.g, scratch.g);
    check_f(h, &out, "conv3d_forward %s out", tag);

    fbuf dout = fb_rand(h, nout, -1, 1);
    conv3d_backward_case(h, &s, tag, 0, &in, &w, &dout, &scratch);
    for (int i = 0; extra_nulls && extra_nulls[i] >= 0; i++)
        conv3d_backward_case(h, &s, tag, extra_nulls[i], &in, &w, &dout, &scratch);
    fb_free(h, &dout);
    fb_free(h, &out);
    fb_free(h, &scratch);
    fb_free(h, &in);
    fb_free(h, &w);
    fb_free(h, &b);
}

static void convT3d_backward_case(harness *h, const fine_convT3d_shape *s, const char *tag, int nulls,
                                  const fbuf *in, const fbuf *w, const fbuf *dout, const fbuf *scratch)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    fbuf din = fb_rand(h, in->n, -1, 1), dw = fb_rand(h, w->n, -1, 1), db = fb_rand(h, s->Cout, -1, 1);
    cb->convT3d_backward(cb->ctx, s, nulls & NULL_DIN ? NULL : din.c, nulls & NULL_DW ? NULL : dw.c,
                         nulls & NULL_DB ? NULL : db.c, dout->c, in->c, w->c, scratch->c);
    gb->convT3d_backward(gb->ctx, s, nulls & NULL_DIN ? NULL : din.g, nulls & NULL_DW ? NULL : dw.g,
                         nulls & NULL_DB ? NULL : db.g, dout->g, in->g, w->g, scratch->g);
    if (!(nulls & NULL_DIN))
        check_f(h, &din, "convT3d_backward %s din%s", tag, null_note(nulls));
    if (!(nulls & NULL_DW))
        check_f(h, &dw, "convT3d_backward %s dw%s", tag, null_note(nulls));
    if (!(nulls & NULL_DB))
        check_f(h, &db, "convT3d_backward %s db%s", tag, null_note(nulls));
    fb_free(h, &din);
    fb_free(h, &dw);
    fb_free(h, &db);
}

static void check_convT3d(harness *h, fine_convT3d_shape s, const int *extra_nulls)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    char k[32], tag[160];
    snprintf(tag, sizeof tag, "k%s B%d %d->%d %dx%dx%d out_channels_last %d", triple(k, sizeof k, s.k),
             (int)s.B, (int)s.Cin, (int)s.Cout, (int)s.D, (int)s.H, (int)s.W, s.out_channels_last);
    int64_t kv = (int64_t)s.k[0] * s.k[1] * s.k[2];
    int64_t nin = s.B * s.D * s.H * s.W * s.Cin, nout = nin / s.Cin * kv * s.Cout;
    fbuf in = fb_rand(h, nin, -1, 1); /* tokens (B, DHW, Cin) */
    fbuf w = fb_rand(h, s.Cin * s.Cout * kv, -0.5f, 0.5f), b = fb_rand(h, s.Cout, -1, 1);
    fbuf scratch = fb_scratch(h, cb->convT3d_scratch(cb->ctx, &s), gb->convT3d_scratch(gb->ctx, &s));
    fbuf out = fb_rand(h, nout, -1, 1);
    cb->convT3d_forward(cb->ctx, &s, out.c, in.c, w.c, b.c, scratch.c);
    gb->convT3d_forward(gb->ctx, &s, out.g, in.g, w.g, b.g, scratch.g);
    check_f(h, &out, "convT3d_forward %s out", tag);

    fbuf dout = fb_rand(h, nout, -1, 1);
    convT3d_backward_case(h, &s, tag, 0, &in, &w, &dout, &scratch);
    for (int i = 0; extra_nulls && extra_nulls[i] >= 0; i++)
        convT3d_backward_case(h, &s, tag, extra_nulls[i], &in, &w, &dout, &scratch);
    fb_free(h, &dout);
    fb_free(h, &out);
    fb_free(h, &scratch);
    fb_free(h, &in);
    fb_free(h, &w);
    fb_free(h, &b);
}

static void check_layout(harness *h, int64_t B, int64_t C, int64_t L)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    int64_t n = B * C * L;
    fbuf in = fb_rand(h, n, -1, 1), out = fb_rand(h, n, -1, 1);
    cb->to_channels_last(cb->ctx, out.c, in.c, B, C, L);
    gb->to_channels_last(gb->ctx, out.g, in.g, B, C, L);
    check_f(h, &out, "to_channels_last B%d C%d L%d", (int)B, (int)C, (int)L);
    fb_free(h, &out);
    out = fb_rand(h, n, -1, 1);
    cb->to_channels_first(cb->ctx, out.c, in.c, B, C, L);
    gb->to_channels_first(gb->ctx, out.g, in.g, B, C, L);
    check_f(h, &out, "to_channels_first B%d C%d L%d", (int)B, (int)C, (int)L);
    fb_free(h, &out);
    fbuf din = fb_rand(h, n, -1, 1); /* (B, C, L) += the transpose of in read as (B, L, C) */
    cb->to_channels_last_backward(cb->ctx, din.c, in.c, B, C, L);
    gb->to_channels_last_backward(gb->ctx, din.g, in.g, B, C, L);
    check_f(h, &din, "to_channels_last_backward B%d C%d L%d din (+=)", (int)B, (int)C, (int)L);
    fb_free(h, &din);
    fb_free(h, &in);
}

/* ------------------------------------------------------------------ per-token layers */

/* One LayerNorm backward; nulls: NULL_DIN, or NULL_DW (dweight and dbias). */
static void layernorm_backward_case(harness *h, const char *tag, int nulls, int64_t N, int64_t C,
                                    const fbuf *dout, const fbuf *in, const fbuf *weight, const fbuf *mean,
                                    const fbuf *rstd)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    int no_in = nulls & NULL_DIN, no_w = nulls & NULL_DW;
    const char *note = no_in ? " (din NULL)" : no_w ? " (dweight, dbias NULL)" : "";
    fbuf din = fb_rand(h, N * C, -1, 1), dw = fb_rand(h, C, -1, 1), db = fb_rand(h, C, -1, 1);
    cb->layernorm_backward(cb->ctx, no_in ? NULL : din.c, no_w ? NULL : dw.c, no_w ? NULL : db.c, dout->c,
                           in->c, weight->c, mean->c, rstd->c, N, C);
    gb->layernorm_backward(gb->ctx, no_in ? NULL : din.g, no_w ? NULL : dw.g, no_w ? NULL : db.g, dout->g,
                           in->g, weight->g, mean->g, rstd->g, N, C);
    if (!no_in)
        check_f(h, &din, "layernorm_backward %s din%s", tag, note);
    if (!no_w) {
        check_f(h, &dw, "layernorm_backward %s dweight%s", tag, note);
        check_f(h, &db, "layernorm_backward %s dbias%s", tag, note);
    }
    fb_free(h, &din);
    fb_free(h, &dw);
    fb_free(h, &db);
}

static void check_layernorm(harness *h, int64_t N, int64_t C, const int *extra_nulls)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    char tag[64];
    snprintf(tag, sizeof tag, "N%d C%d", (int)N, (int)C);
    fbuf in = fb_rand(h, N * C, -1.5f, 2.5f); /* mean 0.5: the centring matters */
    fbuf weight = fb_rand(h, C, 0.5f, 1.5f), bias = fb_rand(h, C, -0.5f, 0.5f);
    fbuf out = fb_rand(h, N * C, -1, 1), mean = fb_rand(h, N, -1, 1), rstd = fb_rand(h, N, -1, 1);
    cb->layernorm_forward(cb->ctx, out.c, mean.c, rstd.c, in.c, weight.c, bias.c, N, C);
    gb->layernorm_forward(gb->ctx, out.g, mean.g, rstd.g, in.g, weight.g, bias.g, N, C);
    check_f(h, &out, "layernorm_forward %s out", tag);
    check_f(h, &mean, "layernorm_forward %s mean", tag);
    check_f(h, &rstd, "layernorm_forward %s rstd", tag);

    /* the backward on the CPU's saved statistics */
    fbuf m2 = fb_new(h, mean.c, N), r2 = fb_new(h, rstd.c, N);
    fbuf dout = fb_rand(h, N * C, -1, 1);
    layernorm_backward_case(h, tag, 0, N, C, &dout, &in, &weight, &m2, &r2);
    for (int i = 0; extra_nulls && extra_nulls[i] >= 0; i++)
        layernorm_backward_case(h, tag, extra_nulls[i], N, C, &dout, &in, &weight, &m2, &r2);
    fb_free(h, &dout);
    fb_free(h, &m2);
    fb_free(h, &r2);
    fb_free(h, &in);
    fb_free(h, &weight);
    fb_free(h, &bias);
    fb_free(h, &out);
    fb_free(h, &mean);
    fb_free(h, &rstd);
}

static void check_gelu(harness *h, int64_t n)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    /* |x| <= 3: a wider range would let the tanh approximation pass as erf (1e-4 of max|out|) */
    fbuf in = fb_rand(h, n, -3, 3), out = fb_rand(h, n, -1, 1);
    cb->gelu_forward(cb->ctx, out.c, in.c, n);
    gb->gelu_forward(gb->ctx, out.g, in.g, n);
    check_f(h, &out, "gelu_forward n%d out", (int)n);
    fbuf dout = fb_rand(h, n, -1, 1), din = fb_rand(h, n, -1, 1);
    cb->gelu_backward(cb->ctx, din.c, dout.c, in.c, n);
    gb->gelu_backward(gb->ctx, din.g, dout.g, in.g, n);
    check_f(h, &din, "gelu_backward n%d din (+=)", (int)n);
    fb_free(h, &in);
    fb_free(h, &out);
    fb_free(h, &dout);
    fb_free(h, &din);
}

/* One Linear backward; nulls: NULL_DIN, NULL_DW, NULL_DB (always set without a bias). */
static void linear_backward_case(harness *h, const char *tag, int nulls, int64_t N, int64_t in_f, int64_t out_f,
                                 const fbuf *dout, const fbuf *in, const fbuf *w)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    fbuf din = fb_rand(h, N * in_f, -1, 1), dw = fb_rand(h, out_f * in_f, -1, 1), db = fb_rand(h, out_f, -1, 1);
    cb->linear_backward(cb->ctx, nulls & NULL_DIN ? NULL : din.c, nulls & NULL_DW ? NULL : dw.c,
                        nulls & NULL_DB ? NULL : db.c, dout->c, in->c, w->c, N, in_f, out_f);
    gb->linear_backward(gb->ctx, nulls & NULL_DIN ? NULL : din.g, nulls & NULL_DW ? NULL : dw.g,
                        nulls & NULL_DB ? NULL : db.g, dout->g, in->g, w->g, N, in_f, out_f);
    if (!(nulls & NULL_DIN))
        check_f(h, &din, "linear_backward %s din%s", tag, null_note(nulls));
    if (!(nulls & NULL_DW))
        check_f(h, &dw, "linear_backward %s dw%s", tag, null_note(nulls));
    if (!(nulls & NULL_DB))
        check_f(h, &db, "linear_backward %s db%s", tag, null_note(nulls));
    fb_free(h, &din);
    fb_free(h, &dw);
    fb_free(h, &db);
}

/* has_bias 0: the forward without bias, the backwards with db NULL. */
static void check_linear(harness *h, int64_t N, int64_t in_f, int64_t out_f, int has_bias, const int *extra_nulls)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    char tag[96];
    snprintf(tag, sizeof tag, "N%d %d->%d %s", (int)N, (int)in_f, (int)out_f, has_bias ? "bias" : "no bias");
    fbuf in = fb_rand(h, N * in_f, -1, 1), w = fb_rand(h, out_f * in_f, -0.5f, 0.5f);
    fbuf b = fb_rand(h, out_f, -1, 1), out = fb_rand(h, N * out_f, -1, 1);
    cb->linear_forward(cb->ctx, out.c, in.c, w.c, has_bias ? b.c : NULL, N, in_f, out_f);
    gb->linear_forward(gb->ctx, out.g, in.g, w.g, has_bias ? b.g : NULL, N, in_f, out_f);
    check_f(h, &out, "linear_forward %s out", tag);

    fbuf dout = fb_rand(h, N * out_f, -1, 1);
    int no_b = has_bias ? 0 : NULL_DB;
    linear_backward_case(h, tag, no_b, N, in_f, out_f, &dout, &in, &w);
    for (int i = 0; extra_nulls && extra_nulls[i] >= 0; i++)
        linear_backward_case(h, tag, extra_nulls[i] | no_b, N, in_f, out_f, &dout, &in, &w);
    fb_free(h, &dout);
    fb_free(h, &in);
    fb_free(h, &w);
    fb_free(h, &b);
    fb_free(h, &out);
}

static void check_pointwise(harness *h, int64_t n)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    fbuf a = fb_rand(h, n, -1, 1), b = fb_rand(h, n, -1, 1), out = fb_rand(h, n, -1, 1);
    cb->add(cb->ctx, out.c, a.c, b.c, n);
    gb->add(gb->ctx, out.g, a.g, b.g, n);
    check_f(h, &out, "add n%d out", (int)n);
    cb->accumulate(cb->ctx, a.c, b.c, n);
    gb->accumulate(gb->ctx, a.g, b.g, n);
    check_f(h, &a, "accumulate n%d y (+=)", (int)n);
    fb_free(h, &a);
    fb_free(h, &b);
    fb_free(h, &out);

    /* drop path: dropped (0), kept (1) and kept-and-scaled (1/0.8) samples */
    const int64_t samples = 6, rows = 50, C = 48;
    const float mask_host[6] = {0.0f, 1.0f, 1.0f / 0.8f, 1.0f, 0.0f, 1.0f / 0.8f};
    fbuf mask = fb_new(h, mask_host, samples), x = fb_rand(h, samples * rows * C, -1, 1);
    cb->drop_path(cb->ctx, x.c, mask.c, samples, rows, C);
    gb->drop_path(gb->ctx, x.g, mask.g, samples, rows, C);
    check_f(h, &x, "drop_path samples 6 rows 50 C48 mask {0,1,1/0.8} x (in place)");
    fb_free(h, &mask);
    fb_free(h, &x);
}

/* the inference softmax over channels: logits spread wide so that exp underflows in places */
static void check_softmax_channels(harness *h, int64_t B, int64_t K, int64_t L)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    fbuf in = fb_rand(h, B * K * L, -30, 30), out = fb_rand(h, B * K * L, -1, 1);
    cb->softmax_channels(cb->ctx, out.c, in.c, B, K, L);
    gb->softmax_channels(gb->ctx, out.g, in.g, B, K, L);
    check_f(h, &out, "softmax_channels B%d K%d L%d out", (int)B, (int)K, (int)L);
    fb_free(h, &in);
    fb_free(h, &out);
}

/* ------------------------------------------------------------------ windows */

static void check_window(harness *h, int64_t B, int64_t D, int64_t H, int64_t W, int64_t C, int ws, int shift)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    char tag[96];
    snprintf(tag, sizeof tag, "B%d %dx%dx%d C%d ws%d shift%d", (int)B, (int)D, (int)H, (int)W, (int)C, ws,
             shift);
    int64_t n = B * D * H * W * C;
    fbuf x = fb_rand(h, n, -1, 1), win = fb_rand(h, n, -1, 1);
    cb->window_partition(cb->ctx, win.c, x.c, B, D, H, W, C, ws, shift);
    gb->window_partition(gb->ctx, win.g, x.g, B, D, H, W, C, ws, shift);
    check_f(h, &win, "window_partition %s out", tag);
    fbuf win2 = fb_rand(h, n, -1, 1), x2 = fb_rand(h, n, -1, 1);
    cb->window_reverse(cb->ctx, x2.c, win2.c, B, D, H, W, C, ws, shift);
    gb->window_reverse(gb->ctx, x2.g, win2.g, B, D, H, W, C, ws, shift);
    check_f(h, &x2, "window_reverse %s x", tag);
    fbuf dx = fb_rand(h, n, -1, 1);
    cb->window_partition_acc(cb->ctx, dx.c, win2.c, B, D, H, W, C, ws, shift);
    gb->window_partition_acc(gb->ctx, dx.g, win2.g, B, D, H, W, C, ws, shift);
    check_f(h, &dx, "window_partition_acc %s dx (+=)", tag);
    fb_free(h, &x);
    fb_free(h, &win);
    fb_free(h, &win2);
    fb_free(h, &x2);
    fb_free(h, &dx);
}

static void check_relpos(harness *h, int ws, int heads)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    int N = ws * ws * ws;
    int64_t NN = (int64_t)N * N, rows = 0;
    int64_t *index_host = host_alloc((size_t)NN * sizeof(int64_t));
    fine_relpos_index(index_host, ws);
    for (int64_t k = 0; k < NN; k++)
        rows = index_host[k] + 1 > rows ? index_host[k] + 1 : rows;
    bbuf index = bb_new(h, index_host, (size_t)NN * sizeof(int64_t));
    free(index_host);
    fbuf table = fb_rand(h, rows * heads, -1, 1), bias = fb_rand(h, heads * NN, -1, 1);
    cb->relpos_bias(cb->ctx, bias.c, table.c, index.c, heads, N);
    gb->relpos_bias(gb->ctx, bias.g, table.g, index.g, heads, N);
    check_f(h, &bias, "relpos_bias ws%d heads%d bias", ws, heads);
    fbuf dbias = fb_rand(h, heads * NN, -1, 1), dtable = fb_rand(h, rows * heads, -1, 1);
    cb->relpos_bias_backward(cb->ctx, dtable.c, dbias.c, index.c, heads, N);
    gb->relpos_bias_backward(gb->ctx, dtable.g, dbias.g, index.g, heads, N);
    check_f(h, &dtable, "relpos_bias_backward ws%d heads%d dtable (+=, repeated index)", ws, heads);
    fb_free(h, &table);
    fb_free(h, &bias);
    fb_free(h, &dbias);
    fb_free(h, &dtable);
    bb_free(h, &index);
}

/* ------------------------------------------------------------------ attention */

typedef struct attn_case {
    const char *tag;
    fine_attn_shape s;      /* mask_count is set from the mask */
    int bias;               /* relative position bias (heads, T-G, T-G) */
    int grid, ws, shift;    /* shift > 0: the shift mask of a grid^3 token volume */
    int key_mask;           /* T floats, 0 or -1000 (B 2.5) */
    int extra_null_dqkv;    /* one more backward with dqkv NULL (dbias only) */
    int extra_null_dbias;   /* one more backward with dbias NULL */
} attn_case;

static void attention_backward_case(harness *h, const attn_case *a, const fine_attn_shape *s, int no_dqkv,
                                    int no_dbias, const fbuf *dout, const fbuf *qkv, const fbuf *att)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    int64_t N = s->T - s->G;
    int want_dbias = a->bias && !no_dbias;
    const char *note = no_dqkv ? " (dqkv NULL)" : (a->bias && no_dbias) ? " (dbias NULL)" : "";
    /* gradients start small and random: about 1% of their increments */
    fbuf dqkv = fb_rand(h, s->Bs * s->T * 3 * s->C, -0.01f, 0.01f);
    fbuf dbias = fb_rand(h, (int64_t)s->heads * N * N, -0.01f, 0.01f);
    fbuf scratch = fb_scratch(h, cb->attention_scratch(cb->ctx, s), gb->attention_scratch(gb->ctx, s));
    cb->attention_backward(cb->ctx, s, no_dqkv ? NULL : dqkv.c, want_dbias ? dbias.c : NULL, dout->c, qkv->c,
                           att->c, scratch.c);
    gb->attention_backward(gb->ctx, s, no_dqkv ? NULL : dqkv.g, want_dbias ? dbias.g : NULL, dout->g, qkv->g,
                           att->g, scratch.g);
    if (!no_dqkv)
        check_f(h, &dqkv, "attention_backward %s dqkv (+=)%s", a->tag, note);
    if (want_dbias)
        check_f(h, &dbias, "attention_backward %s dbias (+=)%s", a->tag, note);
    fb_free(h, &dqkv);
    fb_free(h, &dbias);
    fb_free(h, &scratch);
}

static void check_attention(harness *h, const attn_case *a)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    fine_attn_shape s = a->s;
    int64_t N = s.T - s.G;
    fbuf qkv = fb_rand(h, s.Bs * s.T * 3 * s.C, -1, 1);
    fbuf bias = {NULL, NULL, 0}, mask = {NULL, NULL, 0}, key_mask = {NULL, NULL, 0};
    if (a->bias)
        bias = fb_rand(h, (int64_t)s.heads * N * N, -1, 1);
    s.mask_count = 0;
    if (a->shift > 0) {
        int64_t nw = a->grid / a->ws;
        s.mask_count = nw * nw * nw;
        float *m = host_alloc((size_t)(s.mask_count * N * N) * sizeof(float));
        fine_shift_mask(m, a->grid, a->grid, a->grid, a->ws, a->shift);
        mask = fb_new(h, m, s.mask_count * N * N);
        free(m);
    }
    if (a->key_mask) {
        float *km = host_alloc((size_t)s.T * sizeof(float));
        for (int64_t j = 0; j < s.T; j++)
            km[j] = j % 3 == 2 ? -1000.0f : 0.0f; /* column 0 stays visible: no row is all masked */
        key_mask = fb_new(h, km, s.T);
        free(km);
    }
    fbuf out = fb_rand(h, s.Bs * s.T * s.C, -1, 1);
    fbuf att = fb_rand(h, s.Bs * s.heads * s.T * s.T, -1, 1);
    cb->attention_forward(cb->ctx, &s, out.c, att.c, qkv.c, bias.c, mask.c, key_mask.c);
    gb->attention_forward(gb->ctx, &s, out.g, att.g, qkv.g, bias.g, mask.g, key_mask.g);
    check_f(h, &out, "attention_forward %s out", a->tag);
    check_f(h, &att, "attention_forward %s att", a->tag);

    /* the backward on the CPU's probabilities */
    fbuf att2 = fb_new(h, att.c, att.n), dout = fb_rand(h, s.Bs * s.T * s.C, -1, 1);
    attention_backward_case(h, a, &s, 0, 0, &dout, &qkv, &att2);
    if (a->extra_null_dqkv)
        attention_backward_case(h, a, &s, 1, 0, &dout, &qkv, &att2);
    if (a->extra_null_dbias)
        attention_backward_case(h, a, &s, 0, 1, &dout, &qkv, &att2);
    fb_free(h, &att2);
    fb_free(h, &dout);
    fb_free(h, &out);
    fb_free(h, &att);
    fb_free(h, &qkv);
    fb_free(h, &bias);
    fb_free(h, &mask);
    fb_free(h, &key_mask);
}

/* ------------------------------------------------------------------ losses, labels, optimizer */

static void check_losses(harness *h, int64_t B, int64_t K, int64_t L)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    char tag[64];
    snprintf(tag, sizeof tag, "B%d K%d L%d", (int)B, (int)K, (int)L);
    int64_t n = B * K * L;
    /* classes 0..K-2: class K-1 is absent from the target (the Dice smoothing term alone) */
    uint8_t *t_host = host_alloc((size_t)(B * L));
    for (int64_t i = 0; i < B * L; i++)
        t_host[i] = (uint8_t)irand(h, K - 1);
    bbuf target = bb_new(h, t_host, (size_t)(B * L));
    fbuf logits = fb_rand(h, n, -3, 3), probs = fb_rand(h, n, -1, 1);
    /* scales that make the gradient entries of order 1 (the losses are means over B*L voxels) */
    float ce_scale = 0.7f * (float)(B * L), dice_scale = 2e4f;

    fbuf dlog = fb_rand(h, n, -0.01f, 0.01f);
    double lc = cb->softmax_ce(cb->ctx, probs.c, dlog.c, logits.c, target.c, B, K, L, ce_scale);
    double lg = gb->softmax_ce(gb->ctx, probs.g, dlog.g, logits.g, target.g, B, K, L, ce_scale);
    check_scalar(h, lc, lg, "softmax_ce %s loss", tag);
    check_f(h, &probs, "softmax_ce %s probs", tag);
    check_f(h, &dlog, "softmax_ce %s dlogits (+=)", tag);
    fb_free(h, &dlog);

    fbuf probs2 = fb_rand(h, n, -1, 1);
    lc = cb->softmax_ce(cb->ctx, probs2.c, NULL, logits.c, target.c, B, K, L, ce_scale);
    lg = gb->softmax_ce(gb->ctx, probs2.g, NULL, logits.g, target.g, B, K, L, ce_scale);
    check_scalar(h, lc, lg, "softmax_ce %s loss (dlogits NULL)", tag);
    check_f(h, &probs2, "softmax_ce %s probs (dlogits NULL)", tag);
    fb_free(h, &probs2);

    /* the Dice loss on the CPU's probabilities */
    fbuf p = fb_new(h, probs.c, n);
    dlog = fb_rand(h, n, -0.01f, 0.01f);
    lc = cb->soft_dice(cb->ctx, dlog.c, p.c, target.c, B, K, L, dice_scale);
    lg = gb->soft_dice(gb->ctx, dlog.g, p.g, target.g, B, K, L, dice_scale);
    check_scalar(h, lc, lg, "soft_dice %s loss", tag);
    check_f(h, &dlog, "soft_dice %s dlogits (+=)", tag);
    fb_free(h, &dlog);
    lc = cb->soft_dice(cb->ctx, NULL, p.c, target.c, B, K, L, dice_scale);
    lg = gb->soft_dice(gb->ctx, NULL, p.g, target.g, B, K, L, dice_scale);
    check_scalar(h, lc, lg, "soft_dice %s loss (dlogits NULL)", tag);

    /* a class id >= K: both losses NaN on both sides (dlogits may be partly updated: unchecked) */
    t_host[B * L / 2 + 17] = (uint8_t)K;
    bbuf bad = bb_new(h, t_host, (size_t)(B * L));
    dlog = fb_rand(h, n, -0.01f, 0.01f);
    probs2 = fb_rand(h, n, -1, 1);
    lc = cb->softmax_ce(cb->ctx, probs2.c, dlog.c, logits.c, bad.c, B, K, L, ce_scale);
    lg = gb->softmax_ce(gb->ctx, probs2.g, dlog.g, logits.g, bad.g, B, K, L, ce_scale);
    check_nan(h, lc, lg, "softmax_ce target >= K -> NaN");
    lc = cb->soft_dice(cb->ctx, dlog.c, p.c, bad.c, B, K, L, dice_scale);
    lg = gb->soft_dice(gb->ctx, dlog.g, p.g, bad.g, B, K, L, dice_scale);
    check_nan(h, lc, lg, "soft_dice target >= K -> NaN");
    fb_free(h, &dlog);
    fb_free(h, &probs2);
    bb_free(h, &bad);

    fb_free(h, &p);
    fb_free(h, &probs);
    fb_free(h, &logits);
    bb_free(h, &target);
    free(t_host);
}

static void check_downsample(harness *h, int64_t B, int64_t D, int64_t H, int64_t W, const int f[3])
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    int64_t n = B * D * H * W, m = B * (D / f[0]) * (H / f[1]) * (W / f[2]);
    uint8_t *host = host_alloc((size_t)n);
    for (int64_t i = 0; i < n; i++)
        host[i] = (uint8_t)irand(h, 14);
    bbuf in = bb_new(h, host, (size_t)n);
    memset(host, 0xab, (size_t)m); /* garbage the output must overwrite */
    bbuf out = bb_new(h, host, (size_t)m);
    free(host);
    cb->downsample_labels(cb->ctx, out.c, in.c, B, D, H, W, f);
    gb->downsample_labels(gb->ctx, out.g, in.g, B, D, H, W, f);
    char fs[32];
    check_bytes(h, &out, "downsample_labels B%d %dx%dx%d f %s", (int)B, (int)D, (int)H, (int)W,
                triple(fs, sizeof fs, f));
    bb_free(h, &in);
    bb_free(h, &out);
}

/* Dice counts compared exactly; both structs start with the same nonzero counts (it adds). */
static void check_dice_counts(harness *h, const fine_dice_counts *c, const fine_dice_counts *g, const char *label)
{
    char msg[FINE_ERR_MAX + 8];
    if (gpu_failed(h, msg, sizeof msg)) {
        tap_line(h, 0, label, "failed: %s", msg);
        return;
    }
    int differ = 0;
    for (int k = 0; k < 256; k++)
        differ += (c->tp[k] != g->tp[k]) + (c->fp[k] != g->fp[k]) + (c->fn[k] != g->fn[k]);
    if (differ)
        tap_line(h, 0, label, "%d of 768 counts differ", differ);
    else
        tap_line(h, 1, label, "exact");
}

static void check_dice_count(harness *h, int64_t B, int64_t K, int64_t L)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    int64_t n = B * K * L;
    uint8_t *t_host = host_alloc((size_t)(B * L));
    for (int64_t i = 0; i < B * L; i++)
        t_host[i] = (uint8_t)irand(h, K);
    bbuf target = bb_new(h, t_host, (size_t)(B * L));
    free(t_host);
    float *l_host = host_alloc((size_t)n * sizeof(float));
    fill_uniform(h, l_host, n, -3, 3);
    fbuf logits = fb_new(h, l_host, n);
    fine_dice_counts *sc = host_alloc(sizeof *sc), *sg = host_alloc(sizeof *sg);
    for (int k = 0; k < 256; k++) {
        sc->tp[k] = k;
        sc->fp[k] = 2 * k + 1;
        sc->fn[k] = 3 * k + 2;
    }
    *sg = *sc;
    cb->dice_count(cb->ctx, sc, logits.c, target.c, B, K, L);
    gb->dice_count(gb->ctx, sg, logits.g, target.g, B, K, L);
    check_dice_counts(h, sc, sg, "dice_count nb2 K14 L4096 (+=)");
    cb->dice_count(cb->ctx, sc, logits.c, target.c, 1, K, L);
    gb->dice_count(gb->ctx, sg, logits.g, target.g, 1, K, L);
    check_dice_counts(h, sc, sg, "dice_count nb1 of B2 K14 L4096 (+=)");

    /* ties: the first 256 voxels of sample 0 have all K logits equal (the first class wins) */
    for (int64_t k = 0; k < K; k++)
        for (int64_t l = 0; l < 256; l++)
            l_host[k * L + l] = 0.25f;
    fbuf tied = fb_new(h, l_host, n);
    cb->dice_count(cb->ctx, sc, tied.c, target.c, B, K, L);
    gb->dice_count(gb->ctx, sg, tied.g, target.g, B, K, L);
    check_dice_counts(h, sc, sg, "dice_count nb2 K14 L4096 with ties (first maximum wins)");
    fb_free(h, &tied);
    free(l_host);
    free(sc);
    free(sg);
    fb_free(h, &logits);
    bb_free(h, &target);
}

static void check_sumsq(harness *h, size_t n)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    fbuf x = fb_rand(h, (int64_t)n, -1, 1);
    double c = cb->sumsq(cb->ctx, x.c, n), g = gb->sumsq(gb->ctx, x.g, n);
    check_scalar(h, c, g, "sumsq n%zu", n);
    fb_free(h, &x);
}

static void check_sgd(harness *h, size_t n)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    const float gscale = 0.8f, mu = 0.99f, wd = 3e-5f, lr = 0.05f;
    fbuf p = fb_rand(h, (int64_t)n, -1, 1), buf = fb_rand(h, (int64_t)n, -0.1f, 0.1f);
    fbuf g = fb_rand(h, (int64_t)n, -1, 1);
    cb->sgd_step(cb->ctx, p.c, buf.c, g.c, n, gscale, mu, wd, lr);
    gb->sgd_step(gb->ctx, p.g, buf.g, g.g, n, gscale, mu, wd, lr);
    check_f(h, &p, "sgd_step n%zu p", n);
    check_f(h, &buf, "sgd_step n%zu momentum", n);
    fb_free(h, &p);
    fb_free(h, &buf);
    fb_free(h, &g);
}

static void check_adamw(harness *h, size_t n)
{
    const fine_backend *cb = h->cpu, *gb = h->gpu;
    const float gscale = 0.8f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, lr = 1e-3f, wd = 0.01f;
    const float step = (float)(1e-3 / (1 - pow(0.9, 3))), rbc2 = (float)(1 / sqrt(1 - pow(0.999, 3)));
    fbuf p = fb_rand(h, (int64_t)n, -1, 1), m1 = fb_rand(h, (int64_t)n, -0.1f, 0.1f);
    fbuf m2 = fb_rand(h, (int64_t)n, 0, 0.01f), g = fb_rand(h, (int64_t)n, -1, 1);
    cb->adamw_step(cb->ctx, p.c, m1.c, m2.c, g.c, n, gscale, b1, b2, eps, lr, wd, step, rbc2);
    gb->adamw_step(gb->ctx, p.g, m1.g, m2.g, g.g, n, gscale, b1, b2, eps, lr, wd, step, rbc2);
    check_f(h, &p, "adamw_step n%zu p", n);
    check_f(h, &m1, "adamw_step n%zu first moment", n);
    check_f(h, &m2, "adamw_step n%zu second moment", n);
    fb_free(h, &p);
    fb_free(h, &m1);
    fb_free(h, &m2);
    fb_free(h, &g);
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fprintf(f, "usage: parity [--precision P] [--self | DEVICE]\n"
               "  DEVICE          the backend to check against the CPU backend (default cuda; cuda:N)\n"
               "  --self          the CPU backend against itself (tests the harness; every error is 0)\n"
               "  --precision P   the device's precision (default fp32): float outputs within 1e-4 at\n"
               "                  fp32, 5e-3 at tf32 and fp16 (10-bit mantissas), 3e-2 at bf16 (7-bit)\n");
}

int main(int argc, char **argv)
{
    const char *name = "cuda", *precision = "fp32";
    int self = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--self") == 0) {
            self = 1;
        } else if (strcmp(argv[i], "--precision") == 0 && i + 1 < argc) {
            precision = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' || i != argc - 1) {
            usage(stderr);
            return 2;
        } else {
            name = argv[i];
        }
    }

    harness h;
    memset(&h, 0, sizeof h);
    h.rng = SEED;
    if (strcmp(precision, "fp32") == 0)
        h.tol = 1e-4;
    else if (strcmp(precision, "tf32") == 0 || strcmp(precision, "fp16") == 0)
        h.tol = 5e-3;
    else if (strcmp(precision, "bf16") == 0)
        h.tol = 3e-2;
    else {
        usage(stderr);
        return 2;
    }
    h.cpu = fine_backend_cpu();
    fine_backend *opened = NULL;
    if (self) {
        h.gpu = h.cpu;
    } else {
        fine_err e;
        memset(&e, 0, sizeof e);
        opened = fine_backend_open(name, &e);
        if (!opened) {
            fprintf(stderr, "parity: cannot open backend '%s': %s\n", name, e.msg);
            return 2;
        }
        h.gpu = opened;
        if (opened->set_precision(opened->ctx, precision, &e) < 0) {
            fprintf(stderr, "parity: %s\n", e.msg);
            fine_backend_close(opened);
            return 2;
        }
    }
    printf("# parity: %s at precision %s against %s; float outputs pass with max|%s - cpu| / max|cpu| <= %.0e, "
           "integer outputs must be exact\n",
           h.gpu->name, precision, h.cpu->name, h.gpu->name, h.tol);

    check_rows(&h);
    check_memtok(&h);

    /* convolutions: the encoder's shapes, one odd volume, one large layer */
    const int no_din[] = {NULL_DIN, -1}, no_dw_db[] = {NULL_DW | NULL_DB, -1};
    check_conv3d(&h, (fine_conv3d_shape){2, 3, 8, 12, 12, 8, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}}, no_din);
    check_conv3d(&h, (fine_conv3d_shape){2, 8, 8, 12, 12, 16, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}}, no_dw_db);
    check_conv3d(&h, (fine_conv3d_shape){2, 8, 8, 12, 12, 16, {3, 3, 3}, {1, 2, 2}, {1, 1, 1}}, NULL);
    check_conv3d(&h, (fine_conv3d_shape){2, 8, 8, 12, 12, 16, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}}, NULL);
    check_conv3d(&h, (fine_conv3d_shape){2, 3, 7, 9, 11, 8, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}}, NULL);
    check_conv3d(&h, (fine_conv3d_shape){2, 24, 16, 32, 32, 48, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}}, NULL);
    check_convT3d(&h, (fine_convT3d_shape){2, 16, 4, 6, 6, 8, {2, 2, 2}, 1}, no_din);
    check_convT3d(&h, (fine_convT3d_shape){2, 24, 4, 6, 6, 14, {2, 4, 4}, 0}, no_dw_db);
    check_layout(&h, 2, 24, 1007);

    const int ln_din[] = {NULL_DIN, -1}, ln_dw[] = {NULL_DW, -1};
    check_layernorm(&h, 1031, 24, NULL);
    check_layernorm(&h, 1031, 48, ln_din);
    check_layernorm(&h, 1031, 96, ln_dw);
    check_layernorm(&h, 1031, 768, NULL);
    check_gelu(&h, 100003);
    const int lin_nulls[] = {NULL_DIN, NULL_DW, -1};
    check_linear(&h, 1000, 48, 144, 1, lin_nulls);
    check_linear(&h, 333, 96, 48, 0, NULL);
    check_pointwise(&h, 100003);
    check_softmax_channels(&h, 2, 14, 4099);

    check_window(&h, 2, 4, 6, 8, 24, 2, 0);
    check_window(&h, 2, 4, 6, 8, 24, 2, 1);
    check_window(&h, 2, 7, 14, 14, 24, 7, 0);
    check_window(&h, 2, 7, 14, 14, 24, 7, 3);
    check_relpos(&h, 2, 3);
    check_relpos(&h, 4, 3);
    check_relpos(&h, 7, 3);

    const attn_case attn[] = {
        /* tag, {Bs, T, C, heads, G, mask_count}, bias, grid, ws, shift, key_mask, null dqkv, null dbias */
        {"window ws2 T9 G1 bias+mask Bs16 h3 C48", {16, 9, 48, 3, 1, 0}, 1, 4, 2, 1, 0, 1, 0},
        {"window ws4 T65 G1 bias+mask Bs16 h3 C48", {16, 65, 48, 3, 1, 0}, 1, 8, 4, 2, 0, 0, 0},
        {"window ws2 T9 G1 bias Bs16 h3 C48", {16, 9, 48, 3, 1, 0}, 1, 0, 0, 0, 0, 0, 1},
        {"memory T12 G0 Bs2 h3 C48", {2, 12, 48, 3, 0, 0}, 0, 0, 0, 0, 0, 0, 0},
        {"memory T16 G0 key_mask Bs2 h3 C48", {2, 16, 48, 3, 0, 0}, 0, 0, 0, 0, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof attn / sizeof attn[0]; i++)
        check_attention(&h, &attn[i]);

    check_losses(&h, 2, 14, 4096);
    const int f122[3] = {1, 2, 2}, f222[3] = {2, 2, 2};
    check_downsample(&h, 2, 8, 12, 12, f122);
    check_downsample(&h, 2, 8, 12, 12, f222);
    check_dice_count(&h, 2, 14, 4096);
    check_sumsq(&h, 10000000);
    check_sumsq(&h, 1001);
    check_sgd(&h, 1000003);
    check_adamw(&h, 1000003);

    printf("1..%d\n", h.n);
    if (h.worst_n)
        printf("# largest float error %.1e (check %d); tolerance %.0e\n", h.worst, h.worst_n, h.tol);
    printf("parity: %d passed, %d failed\n", h.n - h.failed, h.failed);
    fine_backend_close(opened);
    return h.failed ? 1 : 0;
}
