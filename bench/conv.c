/* bench/conv: GFLOP/s of the CPU convolutions (lib/nn/ops_conv.c) on the shapes of the `bcv`
 * model at batch 2 (fine-reference B 1.2), against OpenBLAS sgemm on a large square matrix,
 * the practical peak of this machine at the current thread count.
 *
 *   conv [threads]      threads <= 0 or absent: all cores
 *
 * For each shape: forward (the better of two runs), and forward + backward (din, dw, db; no din
 * for the first conv, whose input is the image), counted as 2 FLOPs per multiply-add of the
 * GEMMs (forward 1x, backward 2x, or 1x without din). The ratio column is to the sgemm peak
 * measured at the start of the run (the best of 5); it is measured again at the end: on a
 * shared machine, where other processes take cores for a while, the two differ and so do the
 * ratios. The last line checks the target: the three large k3 convolutions of the patch
 * embedding (most of the model's convolution FLOPs) at >= 50% of the peak, forward + backward. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "nn/ops.h"

static float *alloc_fill(int64_t n, uint64_t seed)
{
    float *p = malloc((size_t)n * sizeof(float));
    if (!p)
        return NULL;
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
    return p;
}

/* Writes every page so that page faults are not timed. */
static void touch(float *p, int64_t n)
{
    memset(p, 0, (size_t)n * sizeof(float));
}

/* Best time of reps runs of a square sgemm of size n. */
static double sgemm_peak(int n, int reps)
{
    float *a = alloc_fill((int64_t)n * n, 1), *b = alloc_fill((int64_t)n * n, 2);
    float *c = calloc((size_t)n * n, sizeof(float));
    double best = 1e30;
    if (a && b && c) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        for (int r = 0; r < reps; r++) {
            double t0 = fine_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
            double t = fine_now() - t0;
            best = t < best ? t : best;
        }
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * n * n * (double)n / best / 1e9;
}

typedef struct conv_case {
    const char *name;
    int64_t Cin, Cout, D, H, W;
    int k[3], stride[3], pad[3];
    int need_din;
} conv_case;

typedef struct convT_case {
    const char *name;
    int64_t Cin, Cout, D, H, W;
    int k[3];
    int out_channels_last;
} convT_case;

static void report(const char *name, double gflop, double tf, double gflop_b, double tfb,
                   double peak)
{
    printf("  %-40s fwd %6.1f GFLOP/s (%3.0f%%) %6.3f s   fwd+bwd %6.1f GFLOP/s (%3.0f%%) %6.3f s\n",
           name, gflop / tf, 100 * gflop / tf / peak, tf, gflop_b / tfb,
           100 * gflop_b / tfb / peak, tfb);
    fflush(stdout);
}

static int run_conv(const conv_case *c, int64_t B, double peak, double *total, double *ratio)
{
    fine_conv3d_shape s = {B, c->Cin, c->D, c->H, c->W, c->Cout, {0}, {0}, {0}};
    memcpy(s.k, c->k, sizeof s.k);
    memcpy(s.stride, c->stride, sizeof s.stride);
    memcpy(s.pad, c->pad, sizeof s.pad);
    int64_t Do, Ho, Wo;
    fine_conv3d_out_size(&s, &Do, &Ho, &Wo);
    int64_t nin = B * c->Cin * c->D * c->H * c->W, nout = B * c->Cout * Do * Ho * Wo;
    int64_t nw = c->Cout * c->Cin * c->k[0] * c->k[1] * c->k[2];
    float *in = alloc_fill(nin, 3), *w = alloc_fill(nw, 4), *b = alloc_fill(c->Cout, 5);
    float *out = malloc((size_t)nout * sizeof(float)), *dout = alloc_fill(nout, 6);
    float *din = calloc((size_t)nin, sizeof(float)), *dw = calloc((size_t)nw, sizeof(float));
    float *db = calloc((size_t)c->Cout, sizeof(float));
    float *scratch = malloc(fine_conv3d_scratch(&s) * sizeof(float));
    int ok = in && w && b && out && dout && din && dw && db && scratch;
    if (ok) {
        double macs = (double)nout * (double)(c->Cin * c->k[0] * c->k[1] * c->k[2]);
        touch(out, nout), touch(din, nin), touch(dw, nw), touch(scratch, (int64_t)fine_conv3d_scratch(&s));
        double tf = 1e30;
        for (int r = 0; r < 2; r++) {
            double t0 = fine_now();
            fine_conv3d_forward(&s, out, in, w, b, scratch);
            double t = fine_now() - t0;
            tf = t < tf ? t : tf;
        }
        double t0 = fine_now();
        fine_conv3d_backward(&s, c->need_din ? din : NULL, dw, db, dout, in, w, scratch);
        double tfb = tf + fine_now() - t0;
        char name[96];
        snprintf(name, sizeof name, "%s (%.0f MB scratch)", c->name,
                 (double)fine_conv3d_scratch(&s) * 4 / 1e6);
        report(name, 2 * macs / 1e9, tf, 2 * macs * (c->need_din ? 3 : 2) / 1e9, tfb, peak);
        *total += tfb;
        *ratio = 2 * macs * (c->need_din ? 3 : 2) / 1e9 / tfb / peak;
    }
    free(in), free(w), free(b), free(out), free(dout), free(din), free(dw), free(db), free(scratch);
    return ok ? 0 : -1;
}

static int run_convT(const convT_case *c, int64_t B, double peak, double *total)
{
    fine_convT3d_shape s = {B, c->Cin, c->D, c->H, c->W, c->Cout, {0}, c->out_channels_last};
    memcpy(s.k, c->k, sizeof s.k);
    int64_t kv = (int64_t)c->k[0] * c->k[1] * c->k[2];
    int64_t nin = B * c->Cin * c->D * c->H * c->W, nout = B * c->Cout * c->D * c->H * c->W * kv;
    int64_t nw = c->Cin * c->Cout * kv;
    float *in = alloc_fill(nin, 3), *w = alloc_fill(nw, 4), *b = alloc_fill(c->Cout, 5);
    float *out = malloc((size_t)nout * sizeof(float)), *dout = alloc_fill(nout, 6);
    float *din = calloc((size_t)nin, sizeof(float)), *dw = calloc((size_t)nw, sizeof(float));
    float *db = calloc((size_t)c->Cout, sizeof(float));
    float *scratch = malloc(fine_convT3d_scratch(&s) * sizeof(float));
    int ok = in && w && b && out && dout && din && dw && db && scratch;
    if (ok) {
        double macs = (double)nout * (double)c->Cin;
        touch(out, nout), touch(din, nin), touch(dw, nw), touch(scratch, (int64_t)fine_convT3d_scratch(&s));
        double tf = 1e30;
        for (int r = 0; r < 2; r++) {
            double t0 = fine_now();
            fine_convT3d_forward(&s, out, in, w, b, scratch);
            double t = fine_now() - t0;
            tf = t < tf ? t : tf;
        }
        double t0 = fine_now();
        fine_convT3d_backward(&s, din, dw, db, dout, in, w, scratch);
        double tfb = tf + fine_now() - t0;
        report(c->name, 2 * macs / 1e9, tf, 2 * macs * 3 / 1e9, tfb, peak);
        *total += tfb;
    }
    free(in), free(w), free(b), free(out), free(dout), free(din), free(dw), free(db), free(scratch);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    fine_nn_set_threads(threads);
    const int64_t B = 2;
    static const conv_case convs[] = {
        {"embed proj1.conv1 1->96 k3 s2 64x128x128", 1, 96, 64, 128, 128, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, 0},
        {"embed proj1.conv2 96->96 k3 s1 32x64x64", 96, 96, 32, 64, 64, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1},
        {"embed proj2.conv1 96->192 k3 s122 32x64x64", 96, 192, 32, 64, 64, {3, 3, 3}, {1, 2, 2}, {1, 1, 1}, 1},
        {"embed proj2.conv2 192->192 k3 s1 32^3", 192, 192, 32, 32, 32, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1},
        {"merge0 192->384 k2 s2 32^3", 192, 384, 32, 32, 32, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, 1},
        {"merge1 384->768 k2 s2 16^3", 384, 768, 16, 16, 16, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, 1},
        {"merge2 768->1536 k2 s2 8^3", 768, 1536, 8, 8, 8, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}, 1},
    };
    static const convT_case convTs[] = {
        {"up2 convT 1536->768 k2 4^3 (tokens out)", 1536, 768, 4, 4, 4, {2, 2, 2}, 1},
        {"up1 convT 768->384 k2 8^3 (tokens out)", 768, 384, 8, 8, 8, {2, 2, 2}, 1},
        {"up0 convT 384->192 k2 16^3 (tokens out)", 384, 192, 16, 16, 16, {2, 2, 2}, 1},
        {"final.1 convT 384->14 k4 16^3", 384, 14, 16, 16, 16, {4, 4, 4}, 0},
        {"final.0 convT 192->14 k244 32^3", 192, 14, 32, 32, 32, {2, 4, 4}, 0},
    };
    double peak = sgemm_peak(2048, 5);
    printf("bench/conv: batch %lld, %d threads (OpenMP), %d (OpenBLAS %s)\n", (long long)B,
           omp_get_max_threads(), openblas_get_num_threads(), openblas_get_corename());
    printf("  %-40s %6.1f GFLOP/s (the peak the ratios refer to)\n", "sgemm 2048^3", peak);
    double total = 0;
    int rc = 0;
    double ratio[sizeof convs / sizeof convs[0]] = {0};
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
        rc |= run_conv(&convs[i], B, peak, &total, &ratio[i]);
    for (size_t i = 0; i < sizeof convTs / sizeof convTs[0]; i++)
        rc |= run_convT(&convTs[i], B, peak, &total);
    double peak2 = sgemm_peak(2048, 5);
    printf("  %-40s %6.1f GFLOP/s (again, after the convolutions)\n", "sgemm 2048^3", peak2);
    printf("  all shapes, forward + backward: %.2f s per training step's convolutions\n", total);
    double low = ratio[1] < ratio[2] ? ratio[1] : ratio[2];
    low = low < ratio[3] ? low : ratio[3];
    printf("  large k3 convolutions, forward + backward: >= %.0f%% of the sgemm peak (target >= 50%%): %s\n",
           100 * low, low >= 0.5 ? "met" : "NOT met");
    if (strcmp(openblas_get_corename(), "Haswell") == 0 && __builtin_cpu_supports("avx512f"))
        printf("  note: this CPU has AVX-512 but OpenBLAS runs its Haswell (AVX2) kernels; "
               "OPENBLAS_CORETYPE=SkylakeX may double the peak\n");
    if (rc)
        fprintf(stderr, "bench/conv: out of memory\n");
    return rc ? 1 : 0;
}
