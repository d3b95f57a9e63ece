/* test_backend: the host-side logic of the backends that needs no GPU: the convolution
 * algorithm cache, choosing a backend by name, and the CPU AdamW step. (Every layer of the CPU table against the
 * CUDA one is tests/gpu/parity; `parity --self` runs here from tests/bats/backend.bats.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/conv_cache.h"
#include "tap.h"

static fine_conv3d_shape shape(int64_t B, int64_t Cin, int k, int stride)
{
    fine_conv3d_shape s;
    memset(&s, 0xab, sizeof s); /* padding bytes must not matter */
    s.B = B, s.Cin = Cin, s.D = 8, s.H = 12, s.W = 12, s.Cout = 16;
    for (int d = 0; d < 3; d++)
        s.k[d] = k, s.stride[d] = stride, s.pad[d] = k == 3;
    return s;
}

static void cache_tests(tap *t)
{
    fine_conv_cache *c = calloc(1, sizeof *c);
    fine_conv3d_shape a = shape(2, 8, 3, 1), b = shape(2, 8, 3, 2), a2;
    memset(&a2, 0, sizeof a2);
    a2.B = a.B, a2.Cin = a.Cin, a2.D = a.D, a2.H = a.H, a2.W = a.W, a2.Cout = a.Cout;
    for (int d = 0; d < 3; d++)
        a2.k[d] = a.k[d], a2.stride[d] = a.stride[d], a2.pad[d] = a.pad[d];
    tap_ok(t, fine_conv_cache_find(c, &a) == NULL && c->misses == 1, "an empty cache misses");
    fine_conv_choice ch[3] = {{1, 100}, {0, 200}, {3, 300}};
    tap_ok(t, fine_conv_cache_put(c, &a, ch) == 0 && c->n == 1, "put stores one entry");
    const fine_conv_cache_entry *e = fine_conv_cache_find(c, &a2);
    tap_ok(t, e && e->dir[FINE_CONV_BWD_FILTER].algo == 3 && e->dir[FINE_CONV_BWD_DATA].workspace == 200,
           "the same shape with other padding bytes finds it, with its three choices");
    tap_ok(t, fine_conv_cache_find(c, &b) == NULL, "another stride misses");
    fine_conv_choice ch2[3] = {{2, 1}, {2, 1}, {2, 1}};
    tap_ok(t, fine_conv_cache_put(c, &a, ch2) == 0 && c->n == 1 && fine_conv_cache_find(c, &a)->dir[0].algo == 2,
           "put on a known shape replaces, not appends");
    int full = 0;
    for (int i = 0; i < FINE_CONV_CACHE_MAX + 5; i++) {
        fine_conv3d_shape s = shape(1 + i, 8, 2, 2);
        if (fine_conv_cache_put(c, &s, ch) < 0)
            full++;
    }
    tap_ok(t, c->n == FINE_CONV_CACHE_MAX && full == 6, "the cache holds %d shapes and refuses more (%d refused)",
           FINE_CONV_CACHE_MAX, full);
    free(c);
}

static void open_tests(tap *t)
{
    fine_err e = {0};
    fine_backend *be = fine_backend_open("cpu", &e);
    tap_ok(t, be == fine_backend_cpu() && strcmp(be->name, "cpu") == 0 && !be->is_device, "cpu opens the CPU table");
    fine_backend_close(be);
    const char *bad[] = {"gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&e, 0, sizeof e);
        be = fine_backend_open(bad[i], &e);
        tap_ok(t, !be && strstr(e.msg, "unknown device") && strstr(e.msg, bad[i]), "'%s' is refused: %s", bad[i], e.msg);
    }
    /* "cuda" fails cleanly on a machine without a GPU or a CUDA build; with one it opens */
    memset(&e, 0, sizeof e);
    be = fine_backend_open("cuda:0", &e);
    if (be) {
        tap_ok(t, be->is_device && strncmp(be->name, "cuda:0", 6) == 0, "cuda:0 opens: %s", be->name);
        fine_backend_close(be);
    } else {
        tap_ok(t, strstr(e.msg, "no CUDA backend") || strstr(e.msg, "no usable GPU") || strstr(e.msg, "no such GPU") ||
                      strstr(e.msg, "cannot load the CUDA backend"),
               "cuda:0 without a GPU: %s", e.msg);
    }
    /* every slot of the CPU table is filled */
    const fine_backend *cpu = fine_backend_cpu();
    const void *const *slot = (const void *const *)&cpu->alloc;
    size_t n = (sizeof *cpu - offsetof(fine_backend, alloc)) / sizeof(void *), empty = 0;
    for (size_t i = 0; i < n; i++)
        empty += slot[i] == NULL;
    tap_ok(t, empty == 0, "the CPU table has all %zu functions", n);
}

/* The CPU AdamW step against PyTorch's AdamW written out in double from its documentation
 * (decoupled decay first, then the bias-corrected moments), over three steps. Tolerance 1e-4 of
 * lr (1e-7): a few float roundings of |p| <= 0.1 per step (ulp 7.5e-9); a missing bias correction
 * or decay term is off by 5e-3 of lr or more. */
static void adamw_tests(tap *t)
{
    const fine_backend *be = fine_backend_cpu();
    enum { N = 257 };
    float p[N], m1[N] = {0}, m2[N] = {0}, g[N];
    double rp[N], rm1[N] = {0}, rm2[N] = {0};
    const double lr = 1e-3, wd = 0.05, b1 = 0.9, b2 = 0.999, eps = 1e-8, gscale = 0.5;
    for (int i = 0; i < N; i++)
        p[i] = (float)(0.01 * (i % 17) - 0.08), rp[i] = p[i];
    double worst = 0;
    for (int step = 1; step <= 3; step++) {
        for (int i = 0; i < N; i++)
            g[i] = (float)(sin(0.37 * i + step) * (i % 5 == 0 ? 1e-6 : 1.0));
        double c1 = 1 - pow(b1, step), c2 = 1 - pow(b2, step);
        be->adamw_step(be->ctx, p, m1, m2, g, N, (float)gscale, (float)b1, (float)b2, (float)eps, (float)lr,
                       (float)wd, (float)(lr / c1), (float)(1 / sqrt(c2)));
        for (int i = 0; i < N; i++) {
            double d = (double)g[i] * gscale;
            rp[i] *= 1 - lr * wd;
            rm1[i] = b1 * rm1[i] + (1 - b1) * d;
            rm2[i] = b2 * rm2[i] + (1 - b2) * d * d;
            rp[i] -= lr * (rm1[i] / c1) / (sqrt(rm2[i] / c2) + eps);
            double err = fabs(p[i] - rp[i]) / lr;
            worst = err > worst ? err : worst;
        }
    }
    tap_ok(t, worst < 1e-4, "adamw_step: 3 steps match PyTorch's AdamW in double (worst %.2e of lr)", worst);
    /* step 1 with no decay moves every parameter by lr * sign(g) (for |g| >> eps) */
    float q[4] = {0.5f, -0.5f, 0.25f, 0}, a[4] = {0}, v[4] = {0}, h[4] = {3.0f, -1e-3f, 0.2f, -40.0f};
    be->adamw_step(be->ctx, q, a, v, h, 4, 1.0f, 0.9f, 0.999f, 1e-8f, 1e-3f, 0.0f, (float)(1e-3 / 0.1),
                   (float)(1 / sqrt(1e-3)));
    int ok = fabsf(q[0] - 0.499f) < 1e-6f && fabsf(q[1] + 0.499f) < 1e-6f && fabsf(q[2] - 0.249f) < 1e-6f &&
             fabsf(q[3] - 0.001f) < 1e-6f;
    tap_ok(t, ok, "adamw_step: the first step is lr * sign(g) (%g %g %g %g)", q[0], q[1], q[2], q[3]);
}

int main(void)
{
    tap t = {0};
    cache_tests(&t);
    open_tests(&t);
    adamw_tests(&t);
    return tap_done(&t);
}
