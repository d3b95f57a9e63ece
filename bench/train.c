/* bench/train: full training iterations per second of fine-train's step (fine_train_step:
 * forward in training mode, Dice + CE on both heads, backward, gradient clipping, Nesterov
 * SGD) against the PyTorch peer (bench/torch_fine.py train-bench: the same network, loss,
 * optimizer and clipping), in one run, same machine, batch and thread count.
 *
 * For each case (tiny: batch 2, crop 32x64x64; bcv: batch 2, crop 64x128x128) a child process
 * builds the model (random initialisation), makes one batch of random images (f32, N(0,1))
 * and block-structured labels (classes 0..13, every class present), pos 0, runs one warm-up
 * and K timed iterations, and reports seconds per iteration (wall and CPU) and minor page
 * faults; its peak RSS comes from wait4. Then the peer runs the same case in its own process.
 *
 *   train [THREADS]          (default 2)
 * Environment: FINE_BENCH_PRESETS=tiny,bcv (which cases), FINE_BENCH_QUICK=1 (fewer timed
 * iterations), FINE_BENCH_TORCH=0 (no peer), FINE_BENCH_TORCH_MALLOC=glibc (the peer with
 * glibc's malloc defaults, see torch_env), FINE_PYTHON (/usr/bin/python3), FINE_BENCH_SRC (the
 * folder of torch_fine.py, default bench). Exit 0 unless a measurement failed. */
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
#include "nn/fine_model.h"
#include "nn/ops.h"
#include "nn/train.h"
#include "rng.h"

typedef struct bench_case {
    const char *preset;
    int B, iters, quick_iters;
} bench_case;

/* What one side measured. */
typedef struct result {
    double s_per_it, cpu_per_it, faults_per_it, loss_first, loss_last, rss_mb;
} result;

/* In a child: K timed training iterations of preset at batch B. Writes the figures to fd. */
static void child(const char *preset, int B, int iters, int threads, int fd)
{
    fine_nn_set_threads(threads);
    fine_config c;
    fine_model m;
    fine_trainer t;
    fine_err e = {0};
    fine_config_preset(&c, preset);
    if (fine_model_build(&m, &c, &e) < 0) {
        fprintf(stderr, "bench/train: %s: %s\n", preset, e.msg);
        _exit(1);
    }
    fine_model_init(&m, 1);
    if (fine_trainer_init(&t, &m, B, &e) < 0) {
        fprintf(stderr, "bench/train: %s batch %d: %s\n", preset, B, e.msg);
        _exit(1);
    }
    int64_t L = (int64_t)c.crop[0] * c.crop[1] * c.crop[2];
    float *x = aligned_alloc(64, (size_t)(L * c.in_chans * B) * sizeof(float));
    uint8_t *labels = malloc((size_t)(L * B));
    int64_t *pos = calloc((size_t)B * 3, sizeof(int64_t));
    if (!x || !labels || !pos) {
        fprintf(stderr, "bench/train: %s: out of memory for the batch\n", preset);
        _exit(1);
    }
    fine_rng rng;
    fine_rng_seed(&rng, 7);
    memset(x, 0, (size_t)(L * c.in_chans * B) * sizeof(float));
    fine_rng_add_normal_f32(&rng, x, L * c.in_chans * B, 0.0, 1.0);
    block_labels(labels, B, c.crop[0], c.crop[1], c.crop[2], c.num_classes);
    fine_train_opts o;
    fine_train_opts_init(&o);
    double wall = 0, cpu = 0, faults = 0, first = NAN, last = NAN;
    for (int it = 0; it <= iters; it++) { /* iteration 0 warms up */
        double t0 = fine_now(), c0 = cpu_now(), f0 = minflt_now(), gnorm;
        double loss = fine_train_step(&t, &m, &o, x, labels, pos, o.lr, &gnorm);
        if (it > 0) {
            wall += fine_now() - t0;
            cpu += cpu_now() - c0;
            faults += minflt_now() - f0;
        }
        if (it == 0)
            first = loss;
        last = loss;
    }
    char line[160];
    int len = snprintf(line, sizeof line, "%.6f %.6f %.1f %.6f %.6f\n", wall / iters, cpu / iters, faults / iters,
                       first, last);
    if (!isfinite(first) || !isfinite(last) || write(fd, line, (size_t)len) != len)
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
        child(bc->preset, bc->B, iters, threads, p[1]);
    }
    close(p[1]);
    char buf[160] = {0};
    ssize_t k = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0)
        return -1;
    if (k <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
        sscanf(buf, "%lf %lf %lf %lf %lf", &r->s_per_it, &r->cpu_per_it, &r->faults_per_it, &r->loss_first,
               &r->loss_last) != 5)
        return -1;
    r->rss_mb = (double)ru.ru_maxrss / 1024.0;
    return 0;
}

/* The PyTorch peer in the same run; its stderr passes through. */
static int run_torch(const bench_case *bc, int iters, int threads, result *r)
{
    const char *src = getenv("FINE_BENCH_SRC") ? getenv("FINE_BENCH_SRC") : "bench";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s%s %s/torch_fine.py train-bench --preset %s --batch %d --threads %d --iters %d",
             torch_env(), python(), src, bc->preset, bc->B, threads, iters);
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    char line[512];
    int ok = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "torch_fine train-bench ", 23) != 0)
            continue;
        r->s_per_it = field(line, " s_per_it=");
        r->cpu_per_it = field(line, " cpu_s_per_it=");
        r->faults_per_it = field(line, " faults_per_it=");
        r->loss_first = field(line, " loss_first=");
        r->loss_last = field(line, " loss_last=");
        r->rss_mb = field(line, " peak_rss_mb=");
        ok = isfinite(r->s_per_it) && r->s_per_it > 0 && isfinite(r->rss_mb) ? 0 : -1;
    }
    if (pclose(f) != 0)
        ok = -1;
    return ok;
}

static void print_result(const char *who, int B, const result *r)
{
    printf("    %-5s %8.3f s/it %7.3f it/s %7.2f patches/s   CPU %7.2f s/it %7.0fk faults/it   peak RSS %6.0f MB"
           "   loss %.3f -> %.3f\n",
           who, r->s_per_it, 1.0 / r->s_per_it, B / r->s_per_it, r->cpu_per_it, r->faults_per_it / 1e3, r->rss_mb,
           r->loss_first, r->loss_last);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads <= 0)
        threads = 2;
    const char *presets = getenv("FINE_BENCH_PRESETS");
    int quick = getenv("FINE_BENCH_QUICK") && strcmp(getenv("FINE_BENCH_QUICK"), "0") != 0;
    const bench_case cases[] = {{"tiny", 2, 10, 3}, {"bcv", 2, 2, 1}};
    int ran = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ran += selected(presets, cases[i].preset);
    if (!ran) {
        fprintf(stderr, "bench/train: FINE_BENCH_PRESETS='%s' selects no case (tiny, bcv)\n", presets);
        return 1;
    }
    double load[1];
    if (getloadavg(load, 1) < 1)
        load[0] = NAN;
    int torch = torch_available(), status = 0;
    printf("bench/train: full training iterations as fine-train runs them (forward in training mode, Dice+CE on\n"
           "  both heads, backward, clipping at 12, Nesterov SGD), one batch of random images and block labels,\n"
           "  pos 0; %d threads%s; load average %.2f at the start (other work on the machine slows both sides)\n",
           threads, quick ? ", FINE_BENCH_QUICK" : "", load[0]);
    if (torch)
        printf("  PyTorch peer: bench/torch_fine.py train-bench, glibc malloc %s\n",
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
        printf("  %s, batch %d, crop %dx%dx%d: 1 warm-up + %d timed iteration%s\n", bc->preset, bc->B, c.crop[0],
               c.crop[1], c.crop[2], iters, iters == 1 ? "" : "s");
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
               t.s_per_it / f.s_per_it, t.cpu_per_it / f.cpu_per_it, f.rss_mb / t.rss_mb);
    }
    return status;
}
