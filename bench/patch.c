/* bench/patch: augmented 64x128x128 training patches per second (fine-patch --train's work,
 * without the stream writer), at 1 and 2 threads, and the cost of each step.
 *
 * Three synthetic preprocessed cases of 160x250x250 (z-scored CT-like f32 body with noise,
 * 13 spherical organs in a u8 label) are made in memory; batches of 2 are made exactly as the
 * tool makes them (fine_train_make_batch: foreground oversampling, the 140x205x168 box, the
 * default 3-D augmentation), batch b on thread b % T. The baseline is 1 thread; the target is
 * 20 patches/s with 2 threads on the 2-core development machine. Then, one thread, the mean
 * CPU time of a rotated and scaled resampling, a plain crop and the intensity chain. Rates are
 * also given per CPU second, which does not depend on what else runs on the machine. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "train_patch.h"

enum { NCASES = 3, Z = 160, Y = 250, X = 250 };

static int make_case(fine_train_case *c, int serial, fine_err *e)
{
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "bench%d", serial);
    int64_t shape[3] = {Z, Y, X};
    if (fine_tensor_alloc(&c->image, FINE_F32, 3, shape, e) < 0 ||
        fine_tensor_alloc(&c->label, FINE_U8, 3, shape, e) < 0)
        return -1;
    memcpy(c->size, shape, sizeof shape);
    float *im = c->image.data;
    uint8_t *lb = c->label.data;
    fine_rng r;
    fine_rng_seed(&r, 100 + (uint64_t)serial);
    double org[14][4];
    for (int k = 1; k < 14; k++) {
        for (int d = 0; d < 3; d++)
            org[k][d] = fine_rng_range(&r, -0.6, 0.6);
        org[k][3] = fine_rng_range(&r, 0.08, 0.25);
    }
    for (int64_t z = 0; z < Z; z++)
        for (int64_t y = 0; y < Y; y++)
            for (int64_t x = 0; x < X; x++) {
                double pz = 2.0 * (double)z / (Z - 1) - 1, py = 2.0 * (double)y / (Y - 1) - 1,
                       px = 2.0 * (double)x / (X - 1) - 1;
                int64_t i = (z * Y + y) * X + x;
                int body = py * py / 0.8 + px * px / 0.9 < 1;
                im[i] = (float)(body ? 0.3 + 0.5 * sin(3 * pz + 4 * px) * cos(5 * py) : -3.0) +
                        (float)(0.2 * (fine_rng_uniform(&r) - 0.5));
                lb[i] = 0;
                for (int k = 1; k < 14; k++) {
                    double dz = pz - org[k][0], dy = py - org[k][1], dx = px - org[k][2];
                    if (dz * dz + dy * dy + dx * dx < org[k][3] * org[k][3])
                        lb[i] = (uint8_t)k;
                }
            }
    return fine_train_case_locations(c, 1234, e);
}

typedef struct job {
    const fine_train_config *cfg;
    const fine_train_case *cases;
    int thread, threads, batches;
    int failed;
    fine_err e;
} job;

static void *run(void *arg)
{
    job *j = arg;
    fine_aug_work *w = fine_aug_work_new();
    int64_t n = j->cfg->crop[0] * j->cfg->crop[1] * j->cfg->crop[2];
    fine_train_patch p[2];
    memset(p, 0, sizeof p);
    for (int k = 0; k < 2; k++) {
        p[k].image = malloc((size_t)n * sizeof(float));
        p[k].label = malloc((size_t)n);
        if (!p[k].image || !p[k].label)
            j->failed = 1;
    }
    for (int b = j->thread; !j->failed && b < j->batches; b += j->threads)
        if (fine_train_make_batch(j->cfg, j->cases, NCASES, (uint64_t)b, p, w, &j->e) < 0)
            j->failed = 1;
    for (int k = 0; k < 2; k++) {
        free(p[k].image);
        free(p[k].label);
    }
    fine_aug_work_free(w);
    return NULL;
}

static double thread_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double cpu_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Patches per second with T threads over `batches` batches; *per_cpu: patches per CPU second
 * (what one idle core would give; the machine is often shared). */
static double rate(const fine_train_config *cfg, const fine_train_case *cases, int threads, int batches,
                   double *per_cpu)
{
    double c0 = cpu_seconds();
    job jobs[8];
    pthread_t tid[8];
    double t0 = fine_now();
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job){cfg, cases, t, threads, batches, 0, {0}};
        pthread_create(&tid[t], NULL, run, &jobs[t]);
    }
    int failed = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        if (jobs[t].failed) {
            printf("bench/patch: %s\n", jobs[t].e.msg);
            failed = 1;
        }
    }
    double dt = fine_now() - t0;
    if (per_cpu)
        *per_cpu = (double)batches * cfg->batch / (cpu_seconds() - c0);
    return failed ? NAN : (double)batches * cfg->batch / dt;
}

int main(void)
{
    fine_err e = {0};
    static fine_train_case cases[NCASES];
    double t0 = fine_now();
    for (int i = 0; i < NCASES; i++)
        if (make_case(&cases[i], i, &e) < 0) {
            printf("bench/patch: %s\n", e.msg);
            return 1;
        }
    fine_train_config cfg;
    fine_train_config_default(&cfg);
    printf("bench/patch: %d synthetic cases %dx%dx%d made in %.1f s; crop %lldx%lldx%lld, box "
           "%lldx%lldx%lld, batch %d, default 3-D augmentation\n",
           NCASES, Z, Y, X, fine_now() - t0, (long long)cfg.crop[0], (long long)cfg.crop[1],
           (long long)cfg.crop[2], (long long)cfg.box[0], (long long)cfg.box[1],
           (long long)cfg.box[2], cfg.batch);

    rate(&cfg, cases, 2, 4, NULL); /* warm up: scratch buffers, page faults */
    int batches = 40;
    double c1, c2;
    double r1 = rate(&cfg, cases, 1, batches, &c1);
    double r2 = rate(&cfg, cases, 2, batches, &c2);
    double load[3] = {0, 0, 0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = 0;
        fclose(la);
    }
    printf("  1 thread : %6.1f patches/s (baseline), %5.1f patches per CPU second\n", r1, c1);
    printf("  2 threads: %6.1f patches/s (%.2fx), %5.1f patches per CPU second   target >= 20 "
           "patches/s: %s\n",
           r2, r2 / r1, c2, r2 >= 20 ? "met" : "NOT met");
    printf("  (load average %.1f during the run: other processes share the cores)\n", load[0]);

    /* the steps, one thread */
    fine_aug_work *w = fine_aug_work_new();
    int64_t n = cfg.crop[0] * cfg.crop[1] * cfg.crop[2];
    float *im = malloc((size_t)n * sizeof *im);
    uint8_t *lb = malloc((size_t)n);
    if (!w || !im || !lb)
        return 1;
    const fine_train_case *c = &cases[0];
    fine_aug_source src = {c->image.data, c->label.data, {Z, Y, X}, {10, 20, 40},
                           {cfg.box[0], cfg.box[1], cfg.box[2]}};
    double ang[3] = {0.4, -0.3, 0.5}, m[3][3];
    fine_aug_spatial_matrix(0, ang, 1.2, m);
    int reps = 6;
    double ta = thread_cpu();
    for (int i = 0; i < reps; i++)
        fine_aug_resample(&src, m, 0, cfg.crop, im, lb, w, &e);
    double t_rs = (thread_cpu() - ta) / reps;
    ta = thread_cpu();
    for (int i = 0; i < reps; i++)
        fine_aug_crop(&src, cfg.crop, im, lb, &e);
    double t_crop = (thread_cpu() - ta) / reps;
    fine_aug_params all;
    fine_aug_params_default(&all, 0);
    all.p_noise = all.p_blur = all.p_blur_channel = all.p_brightness = all.p_contrast = 1;
    all.p_lowres = all.p_lowres_channel = all.p_gamma_invert = all.p_gamma = 1;
    fine_rng r;
    fine_rng_seed(&r, 1);
    ta = thread_cpu();
    for (int i = 0; i < reps; i++)
        fine_aug_intensity(&all, &r, im, lb, cfg.crop, w, NULL, &e);
    double t_int = (thread_cpu() - ta) / reps;
    printf("  CPU time, one thread: rotated+scaled resampling %.0f ms, plain crop %.1f ms, every "
           "intensity step at once %.0f ms\n",
           1e3 * t_rs, 1e3 * t_crop, 1e3 * t_int);
    free(im);
    free(lb);
    fine_aug_work_free(w);
    for (int i = 0; i < NCASES; i++)
        fine_train_case_free(&cases[i]);
    if (!(c2 >= 10)) { /* a regression guard in CPU time (the machine is shared) */
        printf("bench/patch: FAIL: under 10 patches per CPU second\n");
        return 1;
    }
    return 0;
}
