/* bench/gpu: training iterations and inference patches per second of the engine on a GPU
 * (--device cuda), with the peak device memory the engine allocated and the fraction of the
 * GPU's fp32 peak the training iteration reaches. The PyTorch peer's figures on the same GPU
 * come from bench/gpu_torch.sh; tests/gpu/run.sh runs both and prints the ratios.
 *
 *   gpu [DEVICE [PRESET [BATCH [TRAIN_ITERS [INFER_BATCHES [PEAK_TFLOPS [PRECISION [RECOMPUTE [PROFILE]]]]]]]]]
 *   defaults: cuda bcv 2 10 10 67 fp32 all 0 (67: the H100/H200 SXM datasheet's fp32 rate; all:
 *   the training net's recompute level, fine_net.h). PROFILE 1: after the timed training
 *   iterations and after the timed forwards, 3 more of each through the profiling backend
 *   (backend_profile.h), whose tables say where the time goes; the timed figures are taken
 *   with the profiler off.
 *
 * Without a GPU (or a CUDA build) it prints why and exits 0, so `make bench` stays usable. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "cli.h"
#include "infer.h"
#include "nn/backend.h"
#include "nn/backend_profile.h"
#include "nn/fine_model.h"
#include "nn/fine_net.h"
#include "nn/train.h"
#include "rng.h"

int main(int argc, char **argv)
{
    const char *device = argc > 1 ? argv[1] : "cuda";
    const char *preset = argc > 2 ? argv[2] : "bcv";
    int B = argc > 3 ? atoi(argv[3]) : 2;
    int iters = argc > 4 ? atoi(argv[4]) : 10;
    int ibatches = argc > 5 ? atoi(argv[5]) : 10;
    double peak = argc > 6 ? atof(argv[6]) : 67.0;
    const char *precision = argc > 7 ? argv[7] : "fp32";
    int recompute = argc > 8 ? fine_recompute_parse(argv[8]) : FINE_RECOMPUTE_ALL;
    int profile = argc > 9 ? atoi(argv[9]) : 0;
    if (recompute < 0) {
        fprintf(stderr, "bench/gpu: unknown recompute level '%s' (none, gelu, mlp, all)\n", argv[8]);
        return 2;
    }
    fine_err e = {0};
    fine_backend *be = fine_backend_open(device, &e);
    if (!be) {
        printf("bench/gpu: skipped: %s\n", e.msg);
        return 0;
    }
    if (be->set_precision(be->ctx, precision, &e) < 0) {
        fprintf(stderr, "bench/gpu: %s\n", e.msg);
        return 1;
    }
    if (profile) {
        fine_backend *p = fine_backend_profile_open(be, &e);
        if (!p) {
            fprintf(stderr, "bench/gpu: %s\n", e.msg);
            return 1;
        }
        be = p;
        fine_profile_enable(be, 0);
    }
    fine_config c;
    fine_model m;
    if (fine_config_preset(&c, preset) < 0 || fine_model_build(&m, &c, &e) < 0) {
        fprintf(stderr, "bench/gpu: preset %s: %s\n", preset, e.msg[0] ? e.msg : "unknown");
        return 1;
    }
    fine_model_init(&m, 1);
    int64_t L = (int64_t)c.crop[0] * c.crop[1] * c.crop[2];
    float *x = malloc((size_t)(L * c.in_chans * B) * sizeof(float));
    uint8_t *y = malloc((size_t)(L * B));
    int64_t *pos = calloc((size_t)B * 3, sizeof(int64_t));
    if (!x || !y || !pos)
        return 1;
    fine_rng rng;
    fine_rng_seed(&rng, 7);
    memset(x, 0, (size_t)(L * c.in_chans * B) * sizeof(float));
    fine_rng_add_normal_f32(&rng, x, L * c.in_chans * B, 0.0, 1.0);
    block_labels(y, B, c.crop[0], c.crop[1], c.crop[2], c.num_classes);

    /* training */
    fine_trainer t;
    fine_train_opts o;
    fine_train_opts_init(&o);
    if (fine_trainer_init_ex(&t, be, &m, B, recompute, &e) < 0 || fine_trainer_push(&t, &m, &e) < 0) {
        fprintf(stderr, "bench/gpu: %s: %s\n", be->name, e.msg);
        return 1;
    }
    double wall = 0, first = NAN, last = NAN, gnorm;
    for (int it = 0; it < iters + 2; it++) { /* two warm-up iterations (cuDNN, cuBLAS) */
        double t0 = fine_now();
        double loss = fine_train_step(&t, &m, &o, x, y, pos, o.lr, &gnorm);
        if (fine_trainer_check(&t, &e) < 0) {
            fprintf(stderr, "bench/gpu: %s\n", e.msg);
            return 1;
        }
        if (it >= 2)
            wall += fine_now() - t0;
        if (it == 0)
            first = loss;
        last = loss;
    }
    double s_it = wall / iters, flops = 3.0 * fine_net_forward_flops(&m, B);
    size_t train_peak = be->peak_bytes(be->ctx);
    printf("bench/gpu: %s preset %s batch %d crop %dx%dx%d %s+recompute-%s\n", be->name, preset, B, c.crop[0],
           c.crop[1], c.crop[2], be->precision(be->ctx), fine_recompute_name(recompute));
    printf("train: %.4f s/it  %.2f it/s  loss %.4f -> %.4f  %.1f TFLOP/s (%.1f%% of %.0f)  peak %.2f GB\n", s_it,
           1.0 / s_it, first, last, flops / s_it / 1e12, 100.0 * flops / s_it / 1e12 / peak, peak,
           (double)train_peak / 1e9);
    if (profile) {
        fine_profile_reset(be);
        fine_profile_enable(be, 1);
        for (int it = 0; it < 3; it++)
            fine_train_step(&t, &m, &o, x, y, pos, o.lr, &gnorm);
        fine_profile_enable(be, 0);
        if (fine_trainer_check(&t, &e) < 0) {
            fprintf(stderr, "bench/gpu: %s\n", e.msg);
            return 1;
        }
        fine_profile_print(be, stdout, "training, 3 iterations");
    }
    fine_trainer_free(&t);

    /* inference: the forward alone, then fine_infer (forward, softmax, probabilities to the host) */
    fine_net *n = fine_net_plan_eval_on(be, &m, B, &e);
    if (!n || fine_net_load_params(n, &m, &e) < 0) {
        fprintf(stderr, "bench/gpu: %s\n", e.msg);
        return 1;
    }
    double fw = 0;
    for (int i = 0; i < ibatches + 1; i++) {
        double t0 = fine_now();
        fine_net_forward(n, &m, x, pos, 0, 0);
        if (be->sync(be->ctx, &e) < 0) {
            fprintf(stderr, "bench/gpu: %s\n", e.msg);
            return 1;
        }
        if (i > 0)
            fw += fine_now() - t0;
    }
    if (profile) {
        fine_profile_reset(be);
        fine_profile_enable(be, 1);
        for (int i = 0; i < 3; i++)
            fine_net_forward(n, &m, x, pos, 0, 0);
        fine_profile_enable(be, 0);
        if (be->sync(be->ctx, &e) < 0) {
            fprintf(stderr, "bench/gpu: %s\n", e.msg);
            return 1;
        }
        fine_profile_print(be, stdout, "inference forward, 3 batches");
    }
    fine_net_free(n);
    fine_infer *p = fine_infer_new_on(be, &m, B, 0, &e);
    if (!p) {
        fprintf(stderr, "bench/gpu: %s\n", e.msg);
        return 1;
    }
    for (int b = 0; b < B; b++)
        memcpy(fine_infer_input(p, b), x + b * L * c.in_chans, (size_t)(L * c.in_chans) * sizeof(float));
    double inf = 0;
    for (int i = 0; i < ibatches + 1; i++) {
        double t0 = fine_now();
        if (fine_infer_run(p, B, &e) < 0) {
            fprintf(stderr, "bench/gpu: %s\n", e.msg);
            return 1;
        }
        if (i > 0)
            inf += fine_now() - t0;
    }
    fine_infer_free(p);
    printf("infer: forward %.2f patches/s  with softmax, to the host %.2f patches/s  peak %.2f GB\n",
           B * ibatches / fw, B * ibatches / inf, (double)be->peak_bytes(be->ctx) / 1e9);
    free(x);
    free(y);
    free(pos);
    fine_model_free(&m);
    fine_backend_close(be);
    return 0;
}
