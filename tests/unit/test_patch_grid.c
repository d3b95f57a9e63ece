/* test_patch_grid.c: the sliding-window tiling and the Gaussian importance map (lib/patch_grid.c)
 * against hand-checked cases and against independent Python: a re-implementation of nnU-Net
 * v1's `_compute_steps_for_sliding_window` for every (L, P) of a sweep, and nnU-Net's
 * `_get_gaussian` computed with scipy.ndimage.gaussian_filter (FINE_PYTHON, default
 * /usr/bin/python3, with numpy and scipy). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "patch_grid.h"
#include "tap.h"

/* Runs the Python script src with FINE_PYTHON and reads the whitespace-separated numbers it
 * prints into out (at most cap). Returns the count, or -1 when Python fails. */
static int64_t py_numbers(const char *src, double *out, int64_t cap)
{
    char path[] = "/tmp/fine_test_py_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    fputs(src, f);
    fclose(f);
    const char *py = getenv("FINE_PYTHON") ? getenv("FINE_PYTHON") : "/usr/bin/python3";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s", py, path);
    FILE *p = popen(cmd, "r");
    int64_t n = 0;
    if (p) {
        while (n < cap && fscanf(p, "%lf", &out[n]) == 1)
            n++;
        if (pclose(p) != 0)
            n = -1;
    } else {
        n = -1;
    }
    unlink(path);
    return n;
}

static int steps_equal(int64_t L, int64_t P, double step, const int64_t *want, int64_t nwant)
{
    int64_t got[64];
    fine_err e = {0};
    int64_t n = fine_grid_steps(L, P, step, got, 64, &e);
    if (n != nwant)
        return 0;
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i])
            return 0;
    return 1;
}

static void test_steps_by_hand(tap *t)
{
    /* nnU-Net's own comment: image 110, patch 64, step 0.5 -> 3 steps at 0, 23, 46 */
    tap_ok(t, steps_equal(110, 64, 0.5, (int64_t[]){0, 23, 46}, 3), "steps 110/64: 0 23 46");
    tap_ok(t, steps_equal(64, 64, 0.5, (int64_t[]){0}, 1), "steps 64/64: one at 0");
    /* (65 - 64) / 32 -> ceil 1 -> 2 steps, 0 and 1 */
    tap_ok(t, steps_equal(65, 64, 0.5, (int64_t[]){0, 1}, 2), "steps 65/64: 0 1");
    /* L 97, P 64: ceil(33 / 32) + 1 = 3 steps of 16.5: 0, 16 (16.5 rounds half to even), 33 */
    tap_ok(t, steps_equal(97, 64, 0.5, (int64_t[]){0, 16, 33}, 3), "steps 97/64: 0 16 33 (half to even)");
    tap_ok(t, steps_equal(130, 64, 0.5, (int64_t[]){0, 22, 44, 66}, 4), "steps 130/64: 0 22 44 66");
    tap_ok(t, steps_equal(130, 64, 1.0, (int64_t[]){0, 33, 66}, 3), "steps 130/64 step 1: 0 33 66");
    fine_err e = {0};
    tap_ok(t, fine_grid_steps(10, 64, 0.5, NULL, 0, &e) < 0 && strstr(e.msg, "smaller"),
           "a length smaller than the patch is refused: %s", e.msg);
    tap_ok(t, fine_grid_steps(64, 64, 0.0, NULL, 0, &e) < 0, "step 0 is refused");
}

/* Sweep: P in a list, L = P .. P + 150, steps 0.5 and 1 and 0.3, against Python. */
static void test_steps_vs_python(tap *t)
{
    static const char *src =
        "import numpy as np\n"
        "def steps(patch_size, image_size, step_size):\n"
        "    target = [i * step_size for i in patch_size]\n"
        "    num = [int(np.ceil((i - k) / j)) + 1 for i, j, k in zip(image_size, target, patch_size)]\n"
        "    out = []\n"
        "    for d in range(len(patch_size)):\n"
        "        mx = image_size[d] - patch_size[d]\n"
        "        a = mx / (num[d] - 1) if num[d] > 1 else 99999999999\n"
        "        out.append([int(np.round(a * i)) for i in range(num[d])])\n"
        "    return out\n"
        "for s in (0.5, 1.0, 0.3):\n"
        "    for P in (1, 2, 3, 5, 8, 16, 30, 64, 128):\n"
        "        for L in range(P, P + 151):\n"
        "            st = steps((P,), (L,), s)[0]\n"
        "            print(len(st), *st)\n";
    static const double S[] = {0.5, 1.0, 0.3};
    static const int64_t PS[] = {1, 2, 3, 5, 8, 16, 30, 64, 128};
    int64_t cap = 3 * 9 * 151 * 400;
    double *ref = malloc((size_t)cap * sizeof *ref);
    int64_t n = py_numbers(src, ref, cap);
    if (!tap_ok(t, n > 0, "python steps reference ran (%lld numbers)", (long long)n)) {
        free(ref);
        return;
    }
    int64_t k = 0, cases = 0, bad = 0;
    for (int si = 0; si < 3; si++)
        for (int pi = 0; pi < 9; pi++)
            for (int64_t L = PS[pi]; L <= PS[pi] + 150; L++) {
                int64_t got[1024];
                fine_err e = {0};
                int64_t m = fine_grid_steps(L, PS[pi], S[si], got, 1024, &e);
                if (k >= n) {
                    bad++;
                    continue;
                }
                int64_t want = (int64_t)ref[k++];
                int ok = m == want;
                for (int64_t i = 0; i < want; i++)
                    ok = ok && i < m && got[i] == (int64_t)ref[k + i];
                if (!ok && bad++ < 3)
                    printf("# L %lld P %lld step %g: %lld steps, python %lld\n", (long long)L,
                           (long long)PS[pi], S[si], (long long)m, (long long)want);
                k += want;
                cases++;
            }
    tap_ok(t, bad == 0 && k == n, "steps equal nnU-Net's formula in Python for %lld (L, P, step)",
           (long long)cases);
    free(ref);
}

static void test_grid_plan(tap *t)
{
    fine_grid g;
    fine_err e = {0};
    /* z 5 < patch 8: padded to 8, pad_lo 1 (3 // 2); y 20 = 16 + 4 -> 2 steps 0, 4; x 16 exact */
    int ok = fine_grid_plan(&g, (int64_t[]){5, 20, 16}, (int64_t[]){8, 16, 16}, 0.5, &e) == 0;
    tap_ok(t, ok, "plan 5x20x16 with 8x16x16");
    if (!ok)
        return;
    tap_ok(t, g.pad_lo[0] == 1 && g.padded[0] == 8 && g.pad_lo[1] == 0 && g.padded[1] == 20,
           "padding: z 1 before, padded 8 (pad_nd_image)");
    tap_ok(t, g.n[0] == 1 && g.n[1] == 2 && g.n[2] == 1 && g.count == 2, "two tiles");
    int64_t lb[3], origin[3], pos[3];
    fine_grid_tile(&g, 1, lb, origin, pos);
    tap_ok(t, lb[0] == 0 && lb[1] == 4 && lb[2] == 0, "tile 1 starts at [0, 4, 0] padded");
    tap_ok(t, origin[0] == -1 && origin[1] == 4 && origin[2] == 0, "tile 1 origin [-1, 4, 0]");
    /* pos = lb + P//2 - padded//2: z 0 + 4 - 4 = 0, y 4 + 8 - 10 = 2, x 0 + 8 - 8 = 0 */
    tap_ok(t, pos[0] == 0 && pos[1] == 2 && pos[2] == 0, "tile 1 pos [0, 2, 0]");
    fine_grid_free(&g);

    /* order: z outermost, x innermost */
    ok = fine_grid_plan(&g, (int64_t[]){12, 12, 12}, (int64_t[]){8, 8, 8}, 0.5, &e) == 0;
    tap_ok(t, ok && g.count == 8, "12^3 with 8^3: 2x2x2 tiles");
    if (ok) {
        fine_grid_tile(&g, 1, lb, NULL, NULL);
        int first_x = lb[0] == 0 && lb[1] == 0 && lb[2] == 4;
        fine_grid_tile(&g, 4, lb, NULL, NULL);
        tap_ok(t, first_x && lb[0] == 4 && lb[1] == 0 && lb[2] == 0, "tile order: x fastest, z slowest");
        fine_grid_free(&g);
    }
    tap_ok(t, fine_grid_plan(&g, (int64_t[]){0, 4, 4}, (int64_t[]){2, 2, 2}, 0.5, &e) < 0,
           "an empty axis is refused: %s", e.msg);
}

static void test_extract(tap *t)
{
    /* a 3x4x5 i16 volume with value = index; a 4x4x4 box at [-1, 1, 2] */
    fine_tensor v;
    fine_err e = {0};
    fine_tensor_alloc(&v, FINE_I16, 3, (int64_t[]){3, 4, 5}, &e);
    int16_t *d = v.data;
    for (int i = 0; i < 60; i++)
        d[i] = (int16_t)(i + 1);
    int16_t box[64];
    memset(box, 0x55, sizeof box);
    fine_grid_extract(&v, (int64_t[]){-1, 1, 2}, (int64_t[]){4, 4, 4}, box);
    int ok = 1;
    for (int z = 0; z < 4; z++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) {
                int vz = z - 1, vy = y + 1, vx = x + 2;
                int want = (vz >= 0 && vz < 3 && vy < 4 && vx < 5) ? (vz * 4 + vy) * 5 + vx + 1 : 0;
                ok = ok && box[(z * 4 + y) * 4 + x] == want;
            }
    tap_ok(t, ok, "extract copies the inside and zero-fills outside the volume");
    fine_tensor_free(&v);
}

static void test_gaussian_by_hand(tap *t)
{
    fine_err e = {0};
    float one;
    tap_ok(t, fine_gaussian_map((int64_t[]){1, 1, 1}, 0.125, &one, &e) == 0 && one == 1.0f,
           "1x1x1 map is 1");
    /* 1-D closed form: P = 16, sigma 2, centre 8: exp(-(i-8)^2 / 8) (the kernel's
     * normalisation cancels in the division by the maximum) */
    float m[16];
    fine_gaussian_map((int64_t[]){1, 1, 16}, 0.125, m, &e);
    double worst = 0;
    for (int i = 0; i < 16; i++)
        worst = fmax(worst, fabs(m[i] - exp(-(i - 8.0) * (i - 8.0) / 8.0)));
    tap_ok(t, worst < 1e-7 && m[8] == 1.0f, "1-D map is exp(-(i-8)^2/8), max 1 at P/2 (err %.2g)", worst);
    /* separable: the 3-D map is the product of its axes */
    float *g = malloc(4 * 8 * 6 * sizeof *g);
    fine_gaussian_map((int64_t[]){4, 8, 6}, 0.125, g, &e);
    float a[4], b[8], c[6];
    fine_gaussian_map((int64_t[]){4, 1, 1}, 0.125, a, &e);
    fine_gaussian_map((int64_t[]){1, 8, 1}, 0.125, b, &e);
    fine_gaussian_map((int64_t[]){1, 1, 6}, 0.125, c, &e);
    worst = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++)
            for (int k = 0; k < 6; k++)
                worst = fmax(worst, fabs(g[(i * 8 + j) * 6 + k] - (double)a[i] * b[j] * c[k]));
    tap_ok(t, worst < 1e-6, "3-D map is the product of the 1-D maps (err %.2g)", worst);
    free(g);
    /* zeros are replaced by the smallest non-zero value: sigma 1/64 of 64 = 1 voxel, truncate 4
     * leaves 4 voxels each side; beyond that gaussian_filter gives 0 */
    float z[64];
    fine_gaussian_map((int64_t[]){1, 1, 64}, 1.0 / 64, z, &e);
    tap_ok(t, z[0] == z[27] && z[27] == z[28] && z[28] < z[29] && z[63] == z[0] && z[0] > 0,
           "zeros beyond the truncation become the smallest non-zero value");
}

/* Runs the Python script src with FINE_PYTHON and reads exactly n bytes of its stdout into out.
 * Returns 0, or -1 when Python fails or prints another amount. */
static int py_bytes(const char *src, void *out, size_t n)
{
    char path[] = "/tmp/fine_test_py_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    fputs(src, f);
    fclose(f);
    const char *py = getenv("FINE_PYTHON") ? getenv("FINE_PYTHON") : "/usr/bin/python3";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s", py, path);
    FILE *p = popen(cmd, "r");
    int rc = -1;
    if (p) {
        size_t got = fread(out, 1, n, p);
        char extra;
        int more = fread(&extra, 1, 1, p) == 1;
        rc = pclose(p) == 0 && got == n && !more ? 0 : -1;
    }
    unlink(path);
    return rc;
}

/* nnU-Net's _get_gaussian, in one Python run for every case, as raw f32. */
static void test_gaussian_vs_scipy(tap *t)
{
    enum { NC = 5 };
    static const int64_t P[NC][3] = {{8, 16, 16}, {5, 7, 9}, {2, 3, 1}, {64, 128, 128}, {3, 3, 40}};
    static const double scale[NC] = {0.125, 0.125, 0.125, 0.125, 0.02};
    char src[4096];
    int len = snprintf(src, sizeof src,
                       "import sys\n"
                       "import numpy as np\n"
                       "from scipy.ndimage import gaussian_filter\n"
                       "def get_gaussian(patch_size, sigma_scale):\n"
                       "    tmp = np.zeros(patch_size)\n"
                       "    center_coords = [i // 2 for i in patch_size]\n"
                       "    sigmas = [i * sigma_scale for i in patch_size]\n"
                       "    tmp[tuple(center_coords)] = 1\n"
                       "    g = gaussian_filter(tmp, sigmas, 0, mode='constant', cval=0)\n"
                       "    g = g / np.max(g) * 1\n"
                       "    g = g.astype(np.float32)\n"
                       "    g[g == 0] = np.min(g[g != 0])\n"
                       "    return g\n"
                       "for p, s in [");
    int64_t total = 0;
    for (int c = 0; c < NC; c++) {
        len += snprintf(src + len, sizeof src - (size_t)len, "((%lld, %lld, %lld), %.17g), ",
                        (long long)P[c][0], (long long)P[c][1], (long long)P[c][2], scale[c]);
        total += P[c][0] * P[c][1] * P[c][2];
    }
    snprintf(src + len, sizeof src - (size_t)len,
             "]:\n    sys.stdout.buffer.write(get_gaussian(p, s).astype('<f4').tobytes())\n");
    float *ref = malloc((size_t)total * sizeof *ref), *got = malloc((size_t)total * sizeof *got);
    int ran = py_bytes(src, ref, (size_t)total * sizeof *ref) == 0;
    tap_ok(t, ran, "python gaussian reference ran");
    float *r = ref;
    for (int c = 0; ran && c < NC; c++) {
        int64_t n = P[c][0] * P[c][1] * P[c][2], differ = 0;
        fine_err e = {0};
        int ok = fine_gaussian_map(P[c], scale[c], got, &e) == 0;
        double worst = 0;
        for (int64_t i = 0; ok && i < n; i++) {
            worst = fmax(worst, fabs((double)got[i] - r[i]) / r[i]);
            differ += r[i] != got[i];
        }
        tap_ok(t, ok && worst <= 1.2e-7, "map %lldx%lldx%lld (sigma %g P) vs scipy: max rel diff %.2g, "
               "%lld of %lld floats not bit-equal",
               (long long)P[c][0], (long long)P[c][1], (long long)P[c][2], scale[c], worst,
               (long long)differ, (long long)n);
        r += n;
    }
    free(ref);
    free(got);
}

int main(void)
{
    tap t = {0};
    test_steps_by_hand(&t);
    test_steps_vs_python(&t);
    test_grid_plan(&t);
    test_extract(&t);
    test_gaussian_by_hand(&t);
    test_gaussian_vs_scipy(&t);
    return tap_done(&t);
}
