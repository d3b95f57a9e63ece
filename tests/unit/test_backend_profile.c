/* test_backend_profile: the profiling backend (backend_profile.h) changes no result, bit for bit,
 * and books what the network calls: a forward calls no backward slot, two forwards book twice
 * one forward's calls, and the products' FLOPs it books from each call's shape add up to
 * fine_net_forward_flops, which the network computes from the configuration instead. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/backend_profile.h"
#include "nn/fine_model.h"
#include "nn/fine_net.h"
#include "nn/ops.h"
#include "rng.h"
#include "tap.h"

static const char *const forward_slots[] = {
    "conv3d_forward", "convT3d_forward", "linear_forward", "attention_forward", "layernorm_forward",
    "gelu_forward", "window_partition", "window_reverse", "to_channels_last", "to_channels_first",
    "memtok_gather", "copy_rows", "add"};
/* not memtok_gather_backward: deep stages' forwards write memory tokens back into their bank
 * with it (a scatter-add) */
static const char *const backward_slots[] = {
    "conv3d_backward", "convT3d_backward", "linear_backward", "attention_backward", "layernorm_backward",
    "gelu_backward", "window_partition_acc", "relpos_bias_backward", "to_channels_last_backward"};
static const char *const product_forward[] = {"conv3d_forward", "convT3d_forward", "linear_forward",
                                              "attention_forward"};
static const char *const product_backward[] = {"conv3d_backward", "convT3d_backward", "linear_backward",
                                               "attention_backward"};
#define COUNT(a) ((int)(sizeof(a) / sizeof(a[0])))

static double flops_of(const fine_backend *p, const char *const *slots, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double f = 0;
        fine_profile_calls(p, slots[i], NULL, &f);
        sum += f;
    }
    return sum;
}

static void run(tap *t, const char *name, int B)
{
    fine_config c;
    fine_model m;
    fine_err e = {0};
    fine_config_preset(&c, "tiny");
    if (strcmp(name, "tiny-deep") == 0) { /* the memory-token bank paths too */
        int d[FINE_STAGES] = {3, 4, 3, 3}, dd[FINE_STAGES - 1] = {3, 2, 3};
        memcpy(c.depths, d, sizeof d);
        memcpy(c.dec_depths, dd, sizeof dd);
        c.gt_num = 2;
    }
    c.drop_path = 0.1;
    if (!tap_ok(t, fine_model_build(&m, &c, &e) == 0, "%s: build (%s)", name, e.msg))
        return;
    fine_model_init(&m, 5);
    fine_backend *p = fine_backend_profile_open((fine_backend *)fine_backend_cpu(), &e);
    const fine_backend *cpu = fine_backend_cpu();
    fine_net *a = fine_net_plan_train_on(cpu, &m, B, FINE_RECOMPUTE_NONE, &e);
    fine_net *b = p ? fine_net_plan_train_on(p, &m, B, FINE_RECOMPUTE_NONE, &e) : NULL;
    if (!tap_ok(t, p && a && b, "%s: plans on the CPU and on the profiled CPU (%s)", name, e.msg)) {
        fine_net_free(a);
        fine_net_free(b);
        fine_backend_close(p);
        fine_model_free(&m);
        return;
    }
    int64_t L = (int64_t)c.crop[0] * c.crop[1] * c.crop[2];
    float *x = calloc((size_t)(B * c.in_chans * L), sizeof(float));
    int64_t *pos = calloc((size_t)B * 3, sizeof(int64_t));
    float *ga = calloc(m.nfloats, sizeof(float)), *gb = calloc(m.nfloats, sizeof(float));
    float *dl[2];
    fine_rng rng;
    fine_rng_seed(&rng, 3);
    fine_rng_add_normal_f32(&rng, x, B * c.in_chans * L, 0.0, 1.0);
    for (int i = 0; i < B; i++)
        pos[i * 3 + 1] = 37 * i, pos[i * 3 + 2] = -20 * i;

    fine_net_forward(a, &m, x, pos, 1, 77);
    fine_net_forward(b, &m, x, pos, 1, 77);
    int same = 1;
    for (int h = 0; h < 2; h++) {
        int64_t k = fine_net_logits_numel(a, h);
        same &= memcmp(fine_net_logits(a, h), fine_net_logits(b, h), (size_t)k * sizeof(float)) == 0;
        dl[h] = calloc((size_t)k, sizeof(float));
        fine_rng_add_normal_f32(&rng, dl[h], k, 0.0, 1e-3);
    }
    tap_ok(t, same, "%s: logits through the profiler equal the CPU's, bit for bit (drop path on)", name);

    int64_t once[COUNT(forward_slots)];
    const char *wrong = "none";
    for (int i = 0; i < COUNT(forward_slots); i++) {
        once[i] = fine_profile_calls(p, forward_slots[i], NULL, NULL);
        if (once[i] <= 0)
            wrong = forward_slots[i];
    }
    for (int i = 0; i < COUNT(backward_slots); i++)
        if (fine_profile_calls(p, backward_slots[i], NULL, NULL) != 0)
            wrong = backward_slots[i];
    tap_ok(t, strcmp(wrong, "none") == 0,
           "%s: a forward calls each forward slot (linear_forward %lld times) and no backward slot (wrong: %s)",
           name, (long long)once[2], wrong);
    double booked = flops_of(p, product_forward, COUNT(product_forward)), model = fine_net_forward_flops(&m, B);
    tap_ok(t, fabs(booked - model) <= 1e-9 * model,
           "%s batch %d: the products' FLOPs booked from the calls, %.6g, are fine_net_forward_flops' %.6g", name, B,
           booked, model);

    fine_net_forward(b, &m, x, pos, 1, 77);
    int twice = 1;
    for (int i = 0; i < COUNT(forward_slots); i++)
        twice &= fine_profile_calls(p, forward_slots[i], NULL, NULL) == 2 * once[i];
    tap_ok(t, twice, "%s: a second forward books the same calls again", name);

    fine_profile_reset(p);
    fine_net_backward(a, &m, ga, dl[0], dl[1], NULL);
    fine_net_backward(b, &m, gb, dl[0], dl[1], NULL);
    double s = 0;
    for (size_t i = 0; i < m.nfloats; i++)
        s += (double)ga[i] * ga[i];
    tap_ok(t, s > 0 && memcmp(ga, gb, m.nfloats * sizeof(float)) == 0,
           "%s: gradients through the profiler equal the CPU's, bit for bit (norm %.3g)", name, sqrt(s));
    /* each product's backward is two products (data and weights) but for the first layer's
     * input, which needs no gradient: just under twice the forward */
    double back = flops_of(p, product_backward, COUNT(product_backward));
    tap_ok(t, back > 1.8 * model && back <= 2 * model + 1e-9 * model,
           "%s: backward products %.6g FLOPs, %.4f x the forward's", name, back, back / model);

    fine_profile_reset(p);
    fine_profile_enable(p, 0);
    fine_net_forward(b, &m, x, pos, 0, 0);
    int64_t off = fine_profile_calls(p, "linear_forward", NULL, NULL);
    fine_profile_enable(p, 1);
    fine_net_forward(b, &m, x, pos, 0, 0);
    double sec = 0;
    int64_t on = fine_profile_calls(p, "linear_forward", &sec, NULL);
    tap_ok(t, off == 0 && on == once[2] && sec > 0,
           "%s: disabled, nothing is booked; enabled again, %lld calls in %.4f s", name, (long long)on, sec);

    free(x);
    free(pos);
    free(ga);
    free(gb);
    free(dl[0]);
    free(dl[1]);
    fine_net_free(a);
    fine_net_free(b);
    fine_backend_close(p);
    fine_model_free(&m);
}

int main(void)
{
    tap t = {0};
    fine_nn_set_threads(2);
    run(&t, "tiny", 2);
    run(&t, "tiny-deep", 1);
    fine_err e = {0};
    fine_backend *p = fine_backend_profile_open((fine_backend *)fine_backend_cpu(), &e);
    tap_ok(&t, p && fine_backend_is_profile(p) && !fine_backend_is_profile(fine_backend_cpu()) &&
               fine_profile_calls(p, "no_such_slot", NULL, NULL) == -1 &&
               strcmp(p->name, "cpu") == 0 && strcmp(p->precision(p->ctx), "fp32") == 0,
           "a profiled CPU is named cpu, runs fp32, and knows its slots");
    fine_backend_close(p);
    return tap_done(&t);
}
