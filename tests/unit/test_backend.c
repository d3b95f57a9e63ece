/* test_backend: the host-side logic of the backends that needs no GPU: the convolution
 * algorithm cache and choosing a backend by name. (Every layer of the CPU table against the
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
        tap_ok(t, strstr(e.msg, "no CUDA backend") || strstr(e.msg, "no usable GPU") || strstr(e.msg, "no such GPU"),
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

int main(void)
{
    tap t = {0};
    cache_tests(&t);
    open_tests(&t);
    return tap_done(&t);
}
