/* bench/infer: patches per second of fine-infer's work (the predictor of lib/infer.h: a batched
 * forward in evaluation mode, the full-resolution head's softmax, optionally the 8 mirrored
 * passes of --tta) against the PyTorch peer (bench/torch_fine.py infer-bench: the same network
 * under no_grad, softmax, mirroring with torch.flip), in one run, same machine, batch and thread
 * count.
 *
 * Cases: tiny (crop 32x64x64) at batch 1 (fine-infer's default) and 2, tiny with --tta at batch
 * 2, bcv (crop 64x128x128) at batch 2. For each, a child process builds the model (random
 * initialisation), fills the batch with random patches (f32, N(0,1)), pos 0, runs one warm-up
 * and K timed batches, and reports seconds per batch (wall and CPU) and minor page faults; its
 * peak RSS comes from wait4. Then the peer runs the same case in its own process. Stream
 * decoding and encoding (fine-infer's reader and writer) are not included: bench/stream
 * measures them.
 *
 *   infer [THREADS]          (default 2)
 * Environment: FINE_BENCH_PRESETS=tiny,bcv (which cases), FINE_BENCH_QUICK=1 (fewer timed
 * batches), FINE_BENCH_TORCH=0 (no peer), FINE_BENCH_TORCH_MALLOC=glibc (the peer with glibc's
 * malloc defaults, see torch_env), FINE_PYTHON (/usr/bin/python3), FINE_BENCH_SRC (the folder of
 * torch_fine.py, default bench). Exit 0 unless a measurement failed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "cli.h"
#include "infer.h"
#include "nn/fine_model.h"
#include "nn/ops.h"
#include "rng.h"

typedef struct bench_case {
    const char *preset;
    int B, tta, iters, quick_iters;
} bench_case;

/* What one side measured. */
typedef struct result {
    double s_per_batch, cpu_per_batch, faults_per_batch, rss_mb;
} result;

/* In a child: K timed predictor runs of a full batch. Writes the figures to fd. */
static void child(const bench_case *bc, int iters, int threads, int fd)
{
    fine_nn_set_threads(threads);
    fine_config c;
    fine_model m;
    fine_err e = {0};
    fine_config_preset(&c, bc->preset);
    if (fine_model_build(&m, &c, &e) < 0) {
        fprintf(stderr, "bench/infer: %s: %s\n", bc->preset, e.msg);
        _exit(1);
    }
    fine_model_init(&m, 1);
    fine_infer *p = fine_infer_new(&m, bc->B, bc->tta, &e);
    if (!p) {
        fprintf(stderr, "bench/infer: %s batch %d: %s\n", bc->preset, bc->B, e.msg);
        _exit(1);
    }
    fine_rng rng;
    fine_rng_seed(&rng, 7);
    for (int b = 0; b < bc->B; b++) {
        float *x = fine_infer_input(p, b);
        memset(x, 0, (size_t)fine_infer_in_numel(p) * sizeof(float));
        fine_rng_add_normal_f32(&rng, x, fine_infer_in_numel(p), 0.0, 1.0);
        memset(fine_infer_pos(p, b), 0, 3 * sizeof(int64_t));
    }
    double wall = 0, cpu = 0, faults = 0;
    for (int it = 0; it <= iters; it++) { /* iteration 0 warms up */
        double t0 = fine_now(), c0 = cpu_now(), f0 = minflt_now();
        fine_infer_run(p, bc->B, &e);
        if (it > 0) {
            wall += fine_now() - t0;
            cpu += cpu_now() - c0;
            faults += minflt_now() - f0;
        }
    }
    /* the probabilities of the last patch sum to 1 at its first voxel: the run did its work */
    const float *prob = fine_infer_prob(p, bc->B - 1);
    int64_t n = fine_infer_prob_numel(p) / c.num_classes;
    double sum = 0;
    for (int k = 0; k < c.num_classes; k++)
        sum += prob[k * n];
    char line[128];
    int len = snprintf(line, sizeof line, "%.6f %.6f %.1f\n", wall / iters, cpu / iters, faults / iters);
    if (!(fabs(sum - 1.0) < 1e-3) || write(fd, line, (size_t)len) != len)
        _exit(1);
    _exit(0);
}

static int run_fine(const bench_case *bc, int iters, int threads, result *r)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        child(bc, iters, threads, p[1]);
    }
    close(p[1]);
    char buf[128] = {0};
    ssize_t k = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0)
        return -1;
    if (k <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
        sscanf(buf, "%lf %lf %lf", &r->s_per_batch, &r->cpu_per_batch, &r->faults_per_batch) != 3)
        return -1;
    r->rss_mb = (double)ru.ru_maxrss / 1024.0;
    return 0;
}

/* The PyTorch peer in the same run; its stderr passes through. */
static int run_torch(const bench_case *bc, int iters, int threads, result *r)
{
    const char *src = getenv("FINE_BENCH_SRC") ? getenv("FINE_BENCH_SRC") : "bench";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s%s %s/torch_fine.py infer-bench --preset %s --batch %d --threads %d --iters %d%s",
             torch_env(), python(), src, bc->preset, bc->B, threads, iters, bc->tta ? " --tta" : "");
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    char line[512];
    int ok = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "torch_fine infer-bench ", 23) != 0)
            continue;
        r->s_per_batch = field(line, " s_per_batch=");
        r->cpu_per_batch = field(line, " cpu_s_per_batch=");
        r->faults_per_batch = field(line, " faults_per_batch=");
        r->rss_mb = field(line, " peak_rss_mb=");
        ok = isfinite(r->s_per_batch) && r->s_per_batch > 0 && isfinite(r->rss_mb) ? 0 : -1;
    }
    if (pclose(f) != 0)
        ok = -1;
    return ok;
}

static void print_result(const char *who, int B, const result *r)
{
    printf("    %-5s %8.3f s/batch %8.2f patches/s   CPU %7.2f s/batch %7.0fk faults/batch   peak RSS %6.0f MB\n", who,
           r->s_per_batch, B / r->s_per_batch, r->cpu_per_batch, r->faults_per_batch / 1e3, r->rss_mb);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads <= 0)
        threads = 2;
    const char *presets = getenv("FINE_BENCH_PRESETS");
    int quick = getenv("FINE_BENCH_QUICK") && strcmp(getenv("FINE_BENCH_QUICK"), "0") != 0;
    const bench_case cases[] = {
        {"tiny", 1, 0, 20, 3}, {"tiny", 2, 0, 20, 3}, {"tiny", 2, 1, 3, 1}, {"bcv", 2, 0, 2, 1},
    };
    int ran = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ran += selected(presets, cases[i].preset);
    if (!ran) {
        fprintf(stderr, "bench/infer: FINE_BENCH_PRESETS='%s' selects no case (tiny, bcv)\n", presets);
        return 1;
    }
    double load[1];
    if (getloadavg(load, 1) < 1)
        load[0] = NAN;
    int torch = torch_available(), status = 0;
    printf("bench/infer: fine-infer's predictor (evaluation mode, softmax of the full head; tta 8: the mean of\n"
           "  8 mirrored passes), random patches, pos 0; %d threads%s;\n"
           "  load average %.2f at the start (other work on the machine slows both sides)\n",
           threads, quick ? ", FINE_BENCH_QUICK" : "", load[0]);
    if (torch)
        printf("  PyTorch peer: bench/torch_fine.py infer-bench, glibc malloc %s\n",
               *torch_env() ? "keeps freed memory (FINE_BENCH_TORCH_MALLOC=glibc: defaults)" : "defaults");
    else
        printf("  torch: not measured (FINE_BENCH_TORCH=0, or %s cannot import torch: apt-get install "
               "python3-torch)\n", python());
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bench_case *bc = &cases[i];
        if (!selected(presets, bc->preset))
            continue;
        int iters = quick ? bc->quick_iters : bc->iters;
        fine_config c;
        fine_config_preset(&c, bc->preset);
        printf("  %s, batch %d%s, crop %dx%dx%d, %s: 1 warm-up + %d timed batch%s\n", bc->preset, bc->B,
               bc->B == 1 ? " (fine-infer's default)" : "", c.crop[0], c.crop[1], c.crop[2],
               bc->tta ? "tta (8 passes)" : "no tta", iters, iters == 1 ? "" : "es");
        result f, t;
        if (run_fine(bc, iters, threads, &f) < 0) {
            printf("    fine  failed\n");
            status = 1;
            continue;
        }
        print_result("fine", bc->B, &f);
        if (!torch)
            continue;
        if (run_torch(bc, iters, threads, &t) < 0) {
            printf("    torch failed (see its messages above)\n");
            status = 1;
            continue;
        }
        print_result("torch", bc->B, &t);
        printf("    fine is %.2fx as fast as PyTorch (%.2fx per CPU second); peak RSS %.2fx PyTorch's\n",
               t.s_per_batch / f.s_per_batch, t.cpu_per_batch / f.cpu_per_batch, f.rss_mb / t.rss_mb);
    }
    return status;
}
