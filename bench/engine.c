/* bench/engine: the CPU engine against the practical peak (OpenBLAS sgemm) and against the
 * PyTorch peer (bench/torch_fine.py), in one run, same machine and thread count.
 *
 * For each case (tiny at batch 2, forward and forward+backward; bcv at batch 1, forward and
 * forward+backward) a child process builds the model, runs one warm-up and K timed iterations,
 * and reports ms per iteration; its peak RSS comes from wait4. GFLOP/s use the model's own FLOP
 * count (fine_net_forward_flops; backward counted as twice the forward). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "nn/fine_model.h"
#include "nn/fine_net.h"
#include "nn/ops.h"

static double sgemm_gflops(int n)
{
    float *a = malloc((size_t)n * n * 4), *b = malloc((size_t)n * n * 4), *c = malloc((size_t)n * n * 4);
    for (int i = 0; i < n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    int reps = 5;
    double t0 = fine_now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double dt = (fine_now() - t0) / reps;
    free(a);
    free(b);
    free(c);
    return 2.0 * n * n * n / dt / 1e9;
}

typedef struct engine_case {
    const char *preset;
    int B, backward, iters;
} engine_case;

/* In a child: time forward (and backward) of preset at batch B. Writes "fwd_ms fwdbwd_ms" to fd. */
static void time_case(const void *ctx, int fd)
{
    const engine_case *ec = ctx;
    const char *preset = ec->preset;
    int B = ec->B, backward = ec->backward, iters = ec->iters;
    fine_config c;
    fine_model m;
    fine_err e = {0};
    fine_config_preset(&c, preset);
    if (fine_model_build(&m, &c, &e) < 0)
        _exit(1);
    fine_model_init(&m, 1);
    fine_net *n = fine_net_plan(&m, B, &e);
    if (!n) {
        fprintf(stderr, "bench/engine: %s\n", e.msg);
        _exit(1);
    }
    int64_t vox = (int64_t)c.crop[0] * c.crop[1] * c.crop[2] * c.in_chans;
    float *x = malloc((size_t)(vox * B) * 4);
    for (int64_t i = 0; i < vox * B; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    int64_t pos[3 * 8] = {0};
    float *g = backward ? calloc(m.nfloats, 4) : NULL;
    int64_t n0 = fine_net_logits_numel(n, 0), n1 = fine_net_logits_numel(n, 1);
    float *d0 = malloc((size_t)n0 * 4), *d1 = malloc((size_t)n1 * 4);
    for (int64_t i = 0; i < n0; i++)
        d0[i] = 1e-6f;
    for (int64_t i = 0; i < n1; i++)
        d1[i] = 1e-6f;
    double fwd = 0, both = 0;
    for (int it = 0; it <= iters; it++) { /* iteration 0 warms up */
        double t0 = fine_now();
        fine_net_forward(n, &m, x, pos, backward, (uint64_t)it);
        double t1 = fine_now();
        if (backward) {
            memset(g, 0, m.nfloats * 4);
            fine_net_backward(n, &m, g, d0, d1, NULL);
        }
        double t2 = fine_now();
        if (it > 0) {
            fwd += t1 - t0;
            both += t2 - t0;
        }
    }
    char line[128];
    int len = snprintf(line, sizeof line, "%.3f %.3f\n", 1e3 * fwd / iters, backward ? 1e3 * both / iters : -1.0);
    if (write(fd, line, (size_t)len) != len)
        _exit(1);
    _exit(0);
}

/* In a child: sgemm GFLOP/s at n x n x n. Writes it to fd. */
static void time_sgemm(const void *ctx, int fd)
{
    char line[64];
    int len = snprintf(line, sizeof line, "%.6f\n", sgemm_gflops(*(const int *)ctx));
    _exit(write(fd, line, (size_t)len) == len ? 0 : 1);
}

/* Runs fn(ctx, fd) in a forked child, which writes one line to fd and exits: each measurement
 * gets a fresh process, so its peak RSS is its own and no OpenMP team crosses a fork (libgomp
 * does not survive one). Reads the line into buf and the child's usage into ru; 0, or -1 when
 * the child failed. */
static int in_child(void (*fn)(const void *ctx, int fd), const void *ctx, char *buf, size_t cap, struct rusage *ru)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        fn(ctx, p[1]);
        _exit(1);
    }
    close(p[1]);
    memset(buf, 0, cap);
    ssize_t k = pid > 0 ? read(p[0], buf, cap - 1) : -1;
    close(p[0]);
    int st = 0;
    if (pid > 0)
        wait4(pid, &st, 0, ru);
    return pid > 0 && k > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int run_case(const char *preset, int B, int backward, int iters, double *fwd_ms, double *both_ms, double *rss_mb)
{
    engine_case ec = {preset, B, backward, iters};
    char buf[128];
    struct rusage ru;
    if (in_child(time_case, &ec, buf, sizeof buf, &ru) < 0 || sscanf(buf, "%lf %lf", fwd_ms, both_ms) != 2)
        return -1;
    *rss_mb = (double)ru.ru_maxrss / 1024.0;
    return 0;
}

static int sgemm_in_child(int n, double *gflops)
{
    char buf[64];
    struct rusage ru;
    return in_child(time_sgemm, &n, buf, sizeof buf, &ru) == 0 && sscanf(buf, "%lf", gflops) == 1 ? 0 : -1;
}

/* The PyTorch peer in the same run, when python3-torch is installed. */
static int run_torch(const char *preset, int B, int backward, int iters, int threads, double *fwd_ms, double *both_ms,
                     double *rss_mb)
{
    const char *py = getenv("FINE_PYTHON") ? getenv("FINE_PYTHON") : "/usr/bin/python3";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' 2>/dev/null && %s %s/torch_fine.py bench --preset %s --batch %d "
             "--threads %d --iters %d %s 2>/dev/null", py, py, getenv("FINE_BENCH_SRC") ? getenv("FINE_BENCH_SRC") : "bench",
             preset, B, threads, iters, backward ? "--backward" : "");
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    char line[512];
    int ok = -1;
    while (fgets(line, sizeof line, f)) {
        char *a = strstr(line, "fwd_ms="), *b = strstr(line, "fwdbwd_ms="), *r = strstr(line, "peak_rss_mb=");
        if (a && b && r) {
            *fwd_ms = atof(a + 7);
            *both_ms = atof(b + 10);
            *rss_mb = atof(r + 12);
            ok = 0;
        }
    }
    pclose(f);
    return ok;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    if (threads <= 0)
        threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    fine_nn_set_threads(threads);
    /* sgemm in a child too: with OpenMP's OpenBLAS, a parallel region in this process would
     * leave the forked children's OpenMP runtime spinning (libgomp does not survive fork) */
    double peak;
    if (sgemm_in_child(2048, &peak) < 0) {
        printf("bench/engine: the sgemm child failed\n");
        return 1;
    }
    printf("bench/engine: %d threads; OpenBLAS sgemm 2048^3: %.1f GFLOP/s (the practical peak)\n", threads, peak);
    struct {
        const char *preset;
        int B, backward, iters;
    } cases[] = {{"tiny", 2, 1, 3}, {"bcv", 1, 0, 1}, {"bcv", 1, 1, 1}};
    int status = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fine_config c;
        fine_model m;
        fine_err e;
        fine_config_preset(&c, cases[i].preset);
        fine_model_build(&m, &c, &e);
        double flops = fine_net_forward_flops(&m, cases[i].B);
        fine_model_free(&m);
        double fwd, both, rss;
        if (run_case(cases[i].preset, cases[i].B, cases[i].backward, cases[i].iters, &fwd, &both, &rss) < 0) {
            printf("  %s batch %d: failed\n", cases[i].preset, cases[i].B);
            status = 1;
            continue;
        }
        double ms = cases[i].backward ? both : fwd;
        double f = cases[i].backward ? 3 * flops : flops;
        printf("  fine  %-4s batch %d %-16s %9.1f ms  %6.1f GFLOP/s (%4.0f%% of sgemm)  peak RSS %6.0f MB\n",
               cases[i].preset, cases[i].B, cases[i].backward ? "forward+backward" : "forward", ms, f / ms / 1e6,
               100 * f / ms / 1e6 / peak, rss);
        double tf, tb, tr;
        if (run_torch(cases[i].preset, cases[i].B, cases[i].backward, cases[i].iters, threads, &tf, &tb, &tr) == 0) {
            double tms = cases[i].backward ? tb : tf;
            printf("  torch %-4s batch %d %-16s %9.1f ms  %6.1f GFLOP/s                    peak RSS %6.0f MB"
                   "  -> fine is %.2fx as fast\n",
                   cases[i].preset, cases[i].B, cases[i].backward ? "forward+backward" : "forward", tms,
                   f / tms / 1e6, tr, tms / ms);
        } else {
            printf("  torch: not measured (python3-torch not installed, or the peer failed)\n");
        }
    }
    return status;
}
