/* Unit tests of lib/resample.c, lib/crop.c and lib/dataset.c against values computed
 * independently: analytic functions the cubic B-spline reproduces, hand-checked label cases,
 * the nnU-Net rules written out by hand, and scipy.ndimage.binary_fill_holes (through
 * /usr/bin/python3, skipped when it is missing). The comparison with scipy's zoom on random
 * volumes is in tests/bats/resample.bats (through fine-resample). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crop.h"
#include "dataset.h"
#include "resample.h"
#include "tap.h"

static uint64_t rng_state = 0x12345678abcdefull;
static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* the input coordinate of output o (pixel centres) */
static double coord(int64_t o, int64_t n_in, int64_t n_out)
{
    return ((double)o + 0.5) * (double)n_in / (double)n_out - 0.5;
}

static double quad3(double z, double y, double x)
{
    return 0.02 * y * y - 0.015 * x * y + 0.01 * x * x + 0.3 * x - 0.2 * y + 0.05 * z * z - 0.04 * z * x + 1.0;
}

/* Max |error| / value range of a resampled quadratic, over the voxels at least `margin` input
 * voxels from the border on the resampled axes. */
static double quad_error(const int64_t in[3], const int64_t out[3], int lowres, int margin, int threads)
{
    float *src = malloc((size_t)(in[0] * in[1] * in[2]) * sizeof(float));
    float *dst = malloc((size_t)(out[0] * out[1] * out[2]) * sizeof(float));
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t z = 0; z < in[0]; z++)
        for (int64_t y = 0; y < in[1]; y++)
            for (int64_t x = 0; x < in[2]; x++) {
                double v = quad3(lowres == 0 ? 0 : (double)z, (double)y, (double)x);
                src[(z * in[1] + y) * in[2] + x] = (float)v;
                lo = fmin(lo, v);
                hi = fmax(hi, v);
            }
    fine_err e;
    double err = INFINITY;
    if (fine_resample_f32(src, in, dst, out, FINE_INTERP_CUBIC, lowres, threads, &e) == 0) {
        err = 0;
        for (int64_t z = 0; z < out[0]; z++)
            for (int64_t y = 0; y < out[1]; y++)
                for (int64_t x = 0; x < out[2]; x++) {
                    double cz = coord(z, in[0], out[0]), cy = coord(y, in[1], out[1]), cx = coord(x, in[2], out[2]);
                    if (cy < margin || cy > (double)(in[1] - 1 - margin) || cx < margin ||
                        cx > (double)(in[2] - 1 - margin))
                        continue;
                    if (lowres != 0 && (cz < margin || cz > (double)(in[0] - 1 - margin)))
                        continue;
                    double want = quad3(lowres == 0 ? 0 : cz, cy, cx);
                    err = fmax(err, fabs(dst[(z * out[1] + y) * out[2] + x] - want));
                }
        err /= hi - lo;
    }
    free(src);
    free(dst);
    return err;
}

static void test_analytic(tap *t)
{
    /* separate z: each slice a quadratic of (y, x) */
    int64_t in[3] = {5, 60, 70}, out[3] = {4, 47, 93};
    double err = quad_error(in, out, 0, 12, 1);
    tap_ok(t, err < 1e-5, "order 3 reproduces a quadratic in-plane away from the border (12 voxels): %.2e of range",
           err);
    /* 3-D: a quadratic of (z, y, x) */
    int64_t in3[3] = {40, 44, 36}, out3[3] = {53, 31, 45};
    err = quad_error(in3, out3, -1, 12, 2);
    tap_ok(t, err < 1e-5, "order 3 reproduces a quadratic in 3-D away from the border: %.2e of range", err);

    /* linear reproduces a linear ramp everywhere inside the outermost half voxel */
    int64_t li[3] = {3, 20, 30}, lo[3] = {3, 33, 17};
    float *a = malloc(3 * 20 * 30 * sizeof(float)), *b = malloc(3 * 33 * 17 * sizeof(float));
    for (int z = 0; z < 3; z++)
        for (int y = 0; y < 20; y++)
            for (int x = 0; x < 30; x++)
                a[(z * 20 + y) * 30 + x] = (float)(2.0 * y - 0.5 * x + z);
    fine_err e;
    double lerr = 0;
    int rc = fine_resample_f32(a, li, b, lo, FINE_INTERP_LINEAR, 0, 1, &e);
    for (int z = 0; z < 3 && rc == 0; z++)
        for (int y = 0; y < 33; y++)
            for (int x = 0; x < 17; x++) {
                double cy = coord(y, 20, 33), cx = coord(x, 30, 17);
                if (cy < 0 || cy > 19 || cx < 0 || cx > 29)
                    continue;
                lerr = fmax(lerr, fabs(b[(z * 33 + y) * 17 + x] - (2.0 * cy - 0.5 * cx + z)));
            }
    tap_ok(t, rc == 0 && lerr < 1e-4, "order 1 reproduces a linear ramp (max error %.2e)", lerr);
    free(a);
    free(b);
}

static void test_identity_and_constant(tap *t)
{
    int64_t n[3] = {6, 17, 23}, m[3] = {9, 13, 29};
    size_t cnt = 6 * 17 * 23;
    float *a = malloc(cnt * sizeof(float)), *b = malloc(cnt * sizeof(float)), *c = malloc(9 * 13 * 29 * sizeof(float));
    for (size_t i = 0; i < cnt; i++)
        a[i] = (float)(urand() * 2000 - 1000);
    fine_err e;
    int ok = 1;
    for (int ax = -1; ax < 3; ax++)
        ok &= fine_resample_f32(a, n, b, n, FINE_INTERP_CUBIC, ax, 2, &e) == 0 && memcmp(a, b, cnt * 4) == 0;
    tap_ok(t, ok, "the same size returns the input exactly (every low-resolution axis choice)");

    fine_volume v = {0}, r;
    snprintf(v.case_id, sizeof v.case_id, "X");
    snprintf(v.name, sizeof v.name, "image");
    double sp[3] = {2.5, 0.7, 0.7};
    fine_geometry_init(&v.geom, n, sp);
    fine_tensor_alloc(&v.data, FINE_F32, 3, n, &e);
    memcpy(v.data.data, a, cnt * 4);
    ok = fine_volume_resample(&v, sp, 1, &r, &e) == 0 && r.data.dtype == FINE_F32 &&
         memcmp(r.data.data, a, cnt * 4) == 0 && r.geom.size[0] == 6 && r.geom.spacing[1] == 0.7;
    tap_ok(t, ok, "fine_volume_resample to its own spacing copies the image exactly");
    fine_volume_free(&r);
    fine_volume_free(&v);

    for (size_t i = 0; i < cnt; i++)
        a[i] = -1024.0f;
    ok = 1;
    for (int ax = -1; ax < 3; ax++) {
        ok &= fine_resample_f32(a, n, c, m, FINE_INTERP_CUBIC, ax, 1, &e) == 0;
        for (int i = 0; i < 9 * 13 * 29; i++)
            ok &= c[i] == -1024.0f;
    }
    tap_ok(t, ok, "a constant volume stays exactly constant (the clip to the slice range)");

    /* clipping: an in-plane step overshoots without the clip; every output slice stays within
     * the range of the input slice it came from */
    for (int z = 0; z < 6; z++)
        for (int y = 0; y < 17; y++)
            for (int x = 0; x < 23; x++)
                a[(z * 17 + y) * 23 + x] = x < 11 ? (float)(10 * z) : (float)(10 * z + 100);
    ok = fine_resample_f32(a, n, c, m, FINE_INTERP_CUBIC, 0, 1, &e) == 0;
    int touched = 0;
    for (int z = 0; z < 9 && ok; z++) {
        int s = (int)floor(coord(z, 6, 9) + 0.5);
        s = s < 0 ? 0 : s > 5 ? 5 : s;
        for (int i = 0; i < 13 * 29; i++) {
            float v = c[z * 13 * 29 + i];
            ok &= v >= (float)(10 * s) && v <= (float)(10 * s + 100);
            touched += v == (float)(10 * s + 100);
        }
    }
    tap_ok(t, ok && touched > 0, "each slice is clipped to the range of its nearest input slice");
    free(a);
    free(b);
    free(c);
}

static void test_nearest_z(tap *t)
{
    /* along z only: output slice j = input slice floor((j + 0.5) * n / m - 0.5 + 0.5), clamped */
    int64_t sizes[][2] = {{150, 125}, {85, 213}, {7, 3}, {3, 8}, {10, 10}};
    int ok = 1;
    fine_err e;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int64_t in[3] = {sizes[k][0], 2, 3}, out[3] = {sizes[k][1], 2, 3};
        float *a = malloc((size_t)in[0] * 6 * 4), *b = malloc((size_t)out[0] * 6 * 4);
        for (int64_t i = 0; i < in[0] * 6; i++)
            a[i] = (float)(i / 6);
        ok &= fine_resample_f32(a, in, b, out, FINE_INTERP_CUBIC, 0, 2, &e) == 0;
        for (int64_t j = 0; j < out[0]; j++) {
            double c = (double)in[0] / (double)out[0] * ((double)j + 0.5) - 0.5;
            c = c < 0 ? 0 : c > (double)(in[0] - 1) ? (double)(in[0] - 1) : c;
            ok &= b[j * 6] == (float)floor(c + 0.5);
        }
        free(a);
        free(b);
    }
    tap_ok(t, ok, "nearest along the low-resolution axis picks map_coordinates' slices (order 0, mode nearest)");
}

static int lab_run(const uint8_t *src, int64_t z, int64_t y, int64_t x, uint8_t *dst, int64_t oz, int64_t oy,
                   int64_t ox, int axis)
{
    int64_t in[3] = {z, y, x}, out[3] = {oz, oy, ox};
    fine_err e;
    return fine_resample_labels_u8(src, in, dst, out, axis, 1, &e);
}

static void test_labels(tap *t)
{
    uint8_t out[16];
    uint8_t a[2] = {1, 2};
    /* 2 -> 4: coordinates -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped 1): masks of 1 are
     * 1, .75, .25, 0 */
    int ok = lab_run(a, 1, 1, 2, out, 1, 1, 4, 0) == 0 && out[0] == 1 && out[1] == 1 && out[2] == 2 && out[3] == 2;
    tap_ok(t, ok, "per-label linear, 2 -> 4: 1 1 2 2");
    /* 4 -> 2: coordinates 0.5 and 2.5: both labels reach exactly 0.5, the larger one wins */
    uint8_t b[4] = {3, 1, 1, 3}, c[4] = {1, 3, 3, 1};
    ok = lab_run(b, 1, 1, 4, out, 1, 1, 2, 0) == 0 && out[0] == 3 && out[1] == 3;
    ok &= lab_run(c, 1, 1, 4, out, 1, 1, 2, 0) == 0 && out[0] == 3 && out[1] == 3;
    tap_ok(t, ok, "a tie at 0.5 goes to the larger label (later labels overwrite)");
    /* four labels around the centre: each 0.25, none reaches 0.5 -> 0 */
    uint8_t d[4] = {1, 2, 3, 4};
    ok = lab_run(d, 1, 2, 2, out, 1, 1, 1, 0) == 0 && out[0] == 0;
    tap_ok(t, ok, "no label reaching 0.5 gives background");
    /* the same in 3-D (no separate z): 8 labels -> 0; and z nearest with axis 0 */
    uint8_t f[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ok = lab_run(f, 2, 2, 2, out, 1, 1, 1, -1) == 0 && out[0] == 0;
    ok &= lab_run(f, 2, 2, 2, out, 1, 2, 2, 0) == 0 && out[0] == 5 && out[3] == 8; /* slice 1 of 2 */
    tap_ok(t, ok, "trilinear per label in 3-D; nearest slice with separate z");
    /* a uniform region keeps its label at any size, threads do not change the result */
    int64_t in[3] = {8, 30, 40}, o1[3] = {5, 47, 23};
    uint8_t *src = malloc(8 * 30 * 40), *r1 = malloc(5 * 47 * 23), *r2 = malloc(5 * 47 * 23);
    for (int i = 0; i < 8 * 30 * 40; i++)
        src[i] = (uint8_t)((i / 40 % 30) / 10 * 3 + (i % 40) / 14);
    fine_err e;
    ok = fine_resample_labels_u8(src, in, r1, o1, 0, 1, &e) == 0 && fine_resample_labels_u8(src, in, r2, o1, 0, 3, &e) == 0 &&
         memcmp(r1, r2, 5 * 47 * 23) == 0;
    int inside = 1;
    for (int z = 0; z < 5; z++)
        for (int y = 0; y < 47; y++)
            for (int x = 0; x < 23; x++) {
                double cy = coord(y, 30, 47), cx = coord(x, 40, 23);
                int ly = (int)floor(cy), lx = (int)floor(cx);
                if (ly < 0 || lx < 0 || ly + 1 > 29 || lx + 1 > 39)
                    continue;
                uint8_t want = src[ly * 40 + lx];
                if (src[(ly + 1) * 40 + lx] == want && src[ly * 40 + lx + 1] == want &&
                    src[(ly + 1) * 40 + lx + 1] == want)
                    inside &= r1[(z * 47 + y) * 23 + x] == want;
            }
    tap_ok(t, ok && inside, "labels: uniform neighbourhoods keep their label; 1 and 3 threads agree");
    free(src);
    free(r1);
    free(r2);
}

static void test_rules(tap *t)
{
    double a[3] = {2.5, 0.7, 0.7}, b[3] = {3, 0.76, 0.76}, c[3] = {1.5, 0.7, 0.7}, iso[3] = {1, 1, 1},
           two[3] = {3, 3, 0.5}, side[3] = {0.7, 2.5, 0.7}, mild[3] = {2, 0.8, 0.8};
    tap_ok(t, fine_resample_lowres_axis(a, b) == 0, "separate z: 2.5/0.7 > 3, axis 0");
    tap_ok(t, fine_resample_lowres_axis(c, b) == 0, "separate z from the target when the original is not anisotropic");
    tap_ok(t, fine_resample_lowres_axis(mild, iso) == -1 && fine_resample_lowres_axis(iso, iso) == -1,
           "no separate z when neither spacing is anisotropic (ratio 2.5)");
    tap_ok(t, fine_resample_lowres_axis(two, iso) == -1, "no separate z when two axes share the largest spacing");
    tap_ok(t, fine_resample_lowres_axis(side, side) == 1, "the low-resolution axis may be y");
    int64_t s[3] = {150, 512, 512}, o[3];
    fine_resample_size(s, a, b, o);
    tap_ok(t, o[0] == 125 && o[1] == 472 && o[2] == 472, "sizes: 150x512x512 at 2.5x0.7x0.7 -> 3x0.76x0.76: %lldx%lldx%lld",
           (long long)o[0], (long long)o[1], (long long)o[2]);

    /* the planner: 5 cases, z spacings 5, 3, 2.5, 2.5, 3 (median 3 > 3 x 0.75) and median z size
     * 40 x 3 < 512: the 10th percentile of the z spacings (2.5) replaces the median */
    double sp[15] = {5, 0.8, 0.8, 3, 0.7, 0.7, 2.5, 0.75, 0.75, 2.5, 0.6, 0.6, 3, 0.9, 0.9};
    int64_t sz[15] = {40, 512, 512, 50, 512, 512, 30, 512, 512, 60, 512, 512, 20, 512, 512};
    double tg[3];
    fine_plan_target_spacing(sp, sz, 5, tg);
    tap_ok(t, tg[0] == 2.5 && tg[1] == 0.75 && tg[2] == 0.75, "planner: anisotropic -> 10th percentile z: %g %g %g",
           tg[0], tg[1], tg[2]);
    int64_t big[15] = {400, 512, 512, 500, 512, 512, 300, 512, 512, 600, 512, 512, 200, 512, 512};
    fine_plan_target_spacing(sp, big, 5, tg);
    tap_ok(t, tg[0] == 3 && tg[1] == 0.75, "planner: many slices -> the median stays (%g)", tg[0]);
    /* 10th percentile below the other axes' spacing: raised to their max + 1e-5 */
    double sp2[9] = {4, 2, 2, 0.5, 1, 1, 5, 1, 1}; /* z median 4 > 3 x 1; p10 of (0.5, 4, 5) = 1.2 */
    int64_t sz2[9] = {10, 200, 200, 10, 200, 200, 10, 200, 200};
    fine_plan_target_spacing(sp2, sz2, 3, tg);
    tap_ok(t, fabs(tg[0] - 1.2) < 1e-12, "planner: linear 10th percentile (%.17g)", tg[0]);
    double sp3[9] = {4, 1.25, 1.25, 0.5, 1.25, 1.25, 5, 1.25, 1.25}; /* p10 1.2 < 1.25 */
    fine_plan_target_spacing(sp3, sz2, 3, tg);
    tap_ok(t, tg[0] == 1.25 + 1e-5, "planner: raised to the largest other spacing + 1e-5 (%.17g)", tg[0]);

    fine_plan p;
    char ids[2][FINE_CASE_MAX] = {"ABD_001", "ABD_002"};
    double sp4[6] = {2.5, 0.7, 0.7, 3, 0.8, 0.8};
    int64_t cs[6] = {150, 512, 512, 100, 400, 400}, crop[3] = {64, 128, 128};
    fine_err e;
    double target[3] = {3, 0.76, 0.76};
    int ok = fine_plan_make(&p, 2, (const char (*)[FINE_CASE_MAX])ids, sp4, cs, crop, target, &e) == 0;
    /* sizes: 125x472x472 and 100x421x421 */
    ok = ok && p.max_size[0] == 125 && p.max_size[1] == 472 && p.median_size[0] == 112.5 && p.median_size[2] == 446.5 &&
         p.vt_map[0] == 2 && p.vt_map[1] == 3 && p.max_imsize[2] == 472;
    tap_ok(t, ok, "plan: sizes after resampling, median, max_imsize = max, vt_map = max(2, floor(max/crop))");
    fine_plan_free(&p);
}

/* ---------------------------------------------------------------- crop */

static const char *python(void)
{
    const char *p = getenv("FINE_PYTHON");
    return p && p[0] ? p : "/usr/bin/python3";
}

static void test_fill_holes(tap *t)
{
    /* a hollow cube: the inside is a hole; a tunnel to the border keeps it open; a cavity
     * touching the outside only diagonally is still a hole (6-connectivity) */
    int64_t size[3] = {7, 7, 7};
    uint8_t m[343];
    for (int z = 0; z < 7; z++)
        for (int y = 0; y < 7; y++)
            for (int x = 0; x < 7; x++)
                m[(z * 7 + y) * 7 + x] = z >= 1 && z <= 5 && y >= 1 && y <= 5 && x >= 1 && x <= 5 &&
                                         !(z >= 2 && z <= 4 && y >= 2 && y <= 4 && x >= 2 && x <= 4);
    fine_err e;
    int ok = fine_fill_holes(m, size, &e) == 0 && m[(3 * 7 + 3) * 7 + 3] == 1 && m[0] == 0;
    tap_ok(t, ok, "fill holes: a closed cavity is filled, the outside is not");
    for (int i = 0; i < 343; i++)
        m[i] = 0;
    for (int z = 1; z <= 5; z++)
        for (int y = 1; y <= 5; y++)
            for (int x = 1; x <= 5; x++)
                m[(z * 7 + y) * 7 + x] = !(z == 3 && y == 3 && x >= 3); /* tunnel along x to the face */
    for (int x = 5; x <= 6; x++)
        m[(3 * 7 + 3) * 7 + x] = 0;
    ok = fine_fill_holes(m, size, &e) == 0 && m[(3 * 7 + 3) * 7 + 3] == 0;
    tap_ok(t, ok, "fill holes: a cavity with a tunnel to the border stays open");

    /* random masks against scipy.ndimage.binary_fill_holes */
    char dir[] = "/tmp/fine_test_fillXXXXXX", path[64], out_path[64], cmd[640];
    if (!mkdtemp(dir)) {
        tap_ok(t, 0, "mkdtemp");
        return;
    }
    snprintf(path, sizeof path, "%s/in.bin", dir);
    snprintf(out_path, sizeof out_path, "%s/out.bin", dir);
    int64_t rs[3] = {9, 23, 31};
    int n = 9 * 23 * 31, trials = 20, same = 1, ran = 1;
    uint8_t *a = malloc((size_t)n * trials), *b = malloc((size_t)n * trials);
    for (int k = 0; k < trials; k++)
        for (int i = 0; i < n; i++)
            a[k * n + i] = urand() < 0.35 + 0.02 * k;
    FILE *f = fopen(path, "wb");
    fwrite(a, 1, (size_t)n * trials, f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s -c \"import numpy as np, scipy.ndimage as ndi; a=np.fromfile('%s',np.uint8).reshape(%d,9,23,31); "
             "np.stack([ndi.binary_fill_holes(m) for m in a]).astype(np.uint8).tofile('%s')\" 2>/dev/null",
             python(), path, trials, out_path);
    if (system(cmd) != 0 || !(f = fopen(out_path, "rb"))) {
        ran = 0;
    } else {
        size_t got = fread(b, 1, (size_t)n * trials, f);
        fclose(f);
        ran = got == (size_t)n * trials;
    }
    for (int k = 0; k < trials && ran; k++) {
        same &= fine_fill_holes(a + k * n, rs, &e) == 0 && memcmp(a + k * n, b + k * n, (size_t)n) == 0;
        int64_t lo[3], hi[3], lo2[3], hi2[3];
        /* the box of the filled mask is the box of the raw non-zero voxels (crop.h) */
        fine_tensor img = {.dtype = FINE_U8, .ndim = 3, .shape = {9, 23, 31}, .data = b + k * n};
        same &= fine_mask_box(a + k * n, rs, lo, hi) == 1 && fine_crop_box(&img, lo2, hi2, &e) == 0 &&
                memcmp(lo, lo2, sizeof lo) == 0 && memcmp(hi, hi2, sizeof hi) == 0;
    }
    if (ran)
        tap_ok(t, same, "fill holes and crop box equal scipy.ndimage.binary_fill_holes on 20 random masks");
    else
        printf("ok %d - fill holes vs scipy # skip %s with scipy not available\n", ++t->n, python());
    unlink(path);
    unlink(out_path);
    rmdir(dir);
    free(a);
    free(b);
}

static void test_crop(tap *t)
{
    int64_t sh[3] = {6, 8, 10};
    fine_tensor img;
    fine_err e;
    fine_tensor_alloc(&img, FINE_I16, 3, sh, &e);
    int16_t *p = img.data;
    p[(1 * 8 + 2) * 10 + 3] = -1024;
    p[(4 * 8 + 6) * 10 + 7] = 5;
    p[(3 * 8 + 1) * 10 + 8] = 1;
    int64_t lo[3], hi[3];
    int ok = fine_crop_box(&img, lo, hi, &e) == 0 && lo[0] == 1 && hi[0] == 5 && lo[1] == 1 && hi[1] == 7 &&
             lo[2] == 3 && hi[2] == 9;
    tap_ok(t, ok, "crop box: the bounding box of the non-zero voxels, hi exclusive");

    fine_volume v = {0};
    snprintf(v.case_id, sizeof v.case_id, "ABD_009");
    snprintf(v.name, sizeof v.name, "image");
    double sp[3] = {3, 1, 1};
    fine_geometry_init(&v.geom, sh, sp);
    v.data = img;
    ok = fine_volume_crop(&v, lo, hi, FINE_F32, &e) == 0 && v.data.dtype == FINE_F32 && v.geom.size[0] == 4 &&
         v.geom.crop_lo[1] == 1 && v.geom.crop_hi[2] == 9 && ((float *)v.data.data)[(0 * 6 + 1) * 6 + 0] == -1024.0f;
    int64_t lo2[3] = {1, 1, 1}, hi2[3] = {3, 6, 5};
    ok &= fine_volume_crop(&v, lo2, hi2, -1, &e) == 0 && v.geom.crop_lo[0] == 2 && v.geom.crop_hi[0] == 4 &&
          v.geom.crop_lo[2] == 4 && v.geom.size[2] == 4;
    tap_ok(t, ok, "cropping a volume converts and composes crop boxes in the original grid");
    fine_volume_free(&v);

    fine_tensor z;
    fine_tensor_alloc(&z, FINE_F32, 3, sh, &e);
    ok = fine_crop_box(&z, lo, hi, &e) < 0 && strstr(e.msg, "empty") != NULL;
    ((float *)z.data)[17] = NAN;
    ok &= fine_crop_box(&z, lo, hi, &e) < 0 && strstr(e.msg, "NaN") != NULL;
    ((float *)z.data)[17] = -INFINITY;
    ok &= fine_crop_box(&z, lo, hi, &e) < 0 && strstr(e.msg, "inf") != NULL;
    tap_ok(t, ok, "an all-zero image and NaN or infinite intensities are refused (%s)", e.msg);
    fine_tensor_free(&z);
}

/* ---------------------------------------------------------------- back to the original grid */

static void test_to_original(tap *t)
{
    /* a label on a 20x50x60 original grid, cropped to a box, resampled, and back */
    int64_t osz[3] = {20, 50, 60};
    double osp[3] = {2.5, 0.7, 0.7}, tsp[3] = {3, 0.9, 0.9};
    fine_err e;
    fine_volume lab = {0}, r, back;
    snprintf(lab.case_id, sizeof lab.case_id, "C");
    snprintf(lab.name, sizeof lab.name, "label");
    fine_geometry_init(&lab.geom, osz, osp);
    fine_tensor_alloc(&lab.data, FINE_U8, 3, osz, &e);
    uint8_t *l = lab.data.data;
    for (int z = 0; z < 20; z++)
        for (int y = 0; y < 50; y++)
            for (int x = 0; x < 60; x++) {
                double dz = (z - 10) / 6.0, dy = (y - 25) / 14.0, dx = (x - 30) / 18.0;
                l[(z * 50 + y) * 60 + x] = dz * dz + dy * dy + dx * dx < 1 ? (x < 30 ? 1 : 2) : 0;
            }
    int64_t lo[3] = {2, 5, 4}, hi[3] = {19, 47, 57};
    int ok = fine_volume_crop(&lab, lo, hi, -1, &e) == 0 && fine_volume_resample(&lab, tsp, 2, &r, &e) == 0;
    ok = ok && r.geom.size[0] == 14 && r.geom.size[1] == 33 && r.geom.crop_lo[1] == 5;
    ok = ok && fine_resample_to_original(&r, 2, &back, &e) == 0;
    int same_geom = ok && back.geom.size[0] == 20 && back.geom.size[2] == 60 && back.geom.crop_lo[0] == 0 &&
                    back.geom.crop_hi[1] == 50 && back.geom.spacing[0] == 2.5 && back.data.dtype == FINE_U8;
    tap_ok(t, same_geom, "to original: the original size, spacing and a whole-grid crop box");
    /* Dice of each label with the original (rebuilt) */
    double inter[3] = {0}, sa[3] = {0}, sb[3] = {0};
    int outside = 1;
    for (int z = 0; z < 20 && same_geom; z++)
        for (int y = 0; y < 50; y++)
            for (int x = 0; x < 60; x++) {
                double dz = (z - 10) / 6.0, dy = (y - 25) / 14.0, dx = (x - 30) / 18.0;
                int a = dz * dz + dy * dy + dx * dx < 1 ? (x < 30 ? 1 : 2) : 0;
                int b = ((uint8_t *)back.data.data)[(z * 50 + y) * 60 + x];
                int in = z >= 2 && z < 19 && y >= 5 && y < 47 && x >= 4 && x < 57;
                outside &= in || b == 0;
                inter[a] += a == b;
                sa[a]++;
                sb[b]++;
            }
    double d1 = 2 * inter[1] / (sa[1] + sb[1]), d2 = 2 * inter[2] / (sa[2] + sb[2]);
    tap_ok(t, same_geom && d1 > 0.93 && d2 > 0.93 && outside, "label there and back: Dice %.3f %.3f, 0 outside the box",
           d1, d2);
    fine_volume_free(&back);

    /* prob: one-hot of the resampled label, f16; back on the grid it is a distribution, its
     * argmax the label above, background outside the box */
    fine_volume pv = {0}, pb, sb2;
    snprintf(pv.case_id, sizeof pv.case_id, "C");
    snprintf(pv.name, sizeof pv.name, "prob");
    pv.geom = r.geom;
    int64_t n = r.geom.size[0] * r.geom.size[1] * r.geom.size[2], psh[4] = {3, r.geom.size[0], r.geom.size[1], r.geom.size[2]};
    fine_tensor_alloc(&pv.data, FINE_F16, 4, psh, &e);
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            ((uint16_t *)pv.data.data)[c * n + i] = fine_f32_to_f16(((uint8_t *)r.data.data)[i] == c ? 1.0f : 0.0f);
    ok = fine_resample_to_original(&pv, 1, &pb, &e) == 0 && pb.data.dtype == FINE_F16 && pb.data.ndim == 4 &&
         pb.data.shape[0] == 3 && pb.data.shape[1] == 20;
    int64_t N = 20 * 50 * 60;
    int dist = 1;
    for (int64_t i = 0; ok && i < N; i++) {
        float s = 0;
        for (int c = 0; c < 3; c++)
            s += fine_f16_to_f32(((uint16_t *)pb.data.data)[c * N + i]);
        dist &= fabsf(s - 1) < 2e-3f;
    }
    float corner = ok ? fine_f16_to_f32(((uint16_t *)pb.data.data)[0]) : 0;
    tap_ok(t, ok && dist && corner == 1.0f, "prob back: f16 kept, a distribution everywhere, class 0 = 1 outside");
    ok = fine_resample_to_original_argmax(&pv, 2, &sb2, &e) == 0 && strcmp(sb2.name, "seg") == 0 &&
         sb2.data.dtype == FINE_U8 && sb2.geom.size[1] == 50;
    ok = ok && fine_resample_to_original(&r, 1, &back, &e) == 0; /* the label back, as above */
    int64_t agree = 0;
    for (int64_t i = 0; ok && i < N; i++)
        agree += ((uint8_t *)sb2.data.data)[i] == ((uint8_t *)back.data.data)[i];
    tap_ok(t, ok && agree > N * 0.97, "argmax of the prob back agrees with the label back at %.2f%% of voxels",
           100.0 * agree / (double)N);
    fine_volume_free(&back);
    fine_volume_free(&pb);
    fine_volume_free(&sb2);
    fine_volume_free(&pv);
    fine_volume_free(&r);
    fine_volume_free(&lab);
}

/* ---------------------------------------------------------------- dataset */

static void touch(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
}

static void test_dataset(tap *t)
{
    char id[FINE_CASE_MAX];
    int ok = 1;
    fine_case_id_from_file("data/img0001.nii.gz", id, sizeof id);
    ok &= strcmp(id, "ABD_001") == 0;
    fine_case_id_from_file("label0040.nii.gz", id, sizeof id);
    ok &= strcmp(id, "ABD_040") == 0;
    fine_case_id_from_file("/x/imagesTr/ABD_007_0000.nii.gz", id, sizeof id);
    ok &= strcmp(id, "ABD_007") == 0;
    fine_case_id_from_file("ct_scan.nii", id, sizeof id);
    ok &= strcmp(id, "ct_scan") == 0;
    fine_case_id_normalize("5", id, sizeof id);
    ok &= strcmp(id, "ABD_005") == 0;
    fine_case_id_normalize("img0021", id, sizeof id);
    ok &= strcmp(id, "ABD_021") == 0;
    tap_ok(t, ok, "case ids: imgXXXX/labelXXXX -> ABD_%%03d, NAME_0000 -> NAME");

    char root[] = "/tmp/fine_test_dsXXXXXX", p[512];
    if (!mkdtemp(root)) {
        tap_ok(t, 0, "mkdtemp");
        return;
    }
    snprintf(p, sizeof p, "%s/RawData", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/RawData/Training", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/RawData/Training/img", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/RawData/Training/label", root);
    mkdir(p, 0755);
    const int serials[] = {21, 2, 10};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/RawData/Training/img/img%04d.nii.gz", root, serials[i]);
        touch(p);
        if (i < 2) {
            snprintf(p, sizeof p, "%s/RawData/Training/label/label%04d.nii.gz", root, serials[i]);
            touch(p);
        }
    }
    snprintf(p, sizeof p, "%s/RawData/Training/img/notes.txt", root);
    touch(p);
    fine_dataset ds;
    fine_err e;
    ok = fine_dataset_scan(root, &ds, &e) == 0 && ds.n == 3 && strcmp(ds.layout, "bcv") == 0 &&
         strcmp(ds.cases[0].id, "ABD_002") == 0 && strcmp(ds.cases[2].id, "ABD_021") == 0 && ds.cases[0].label &&
         strstr(ds.cases[0].label, "label0002.nii.gz") && !ds.cases[1].label;
    ok = ok && fine_dataset_require_labels(&ds, &e) < 0 && strstr(e.msg, "ABD_010");
    tap_ok(t, ok, "BCV layout under RawData/Training: sorted ids, labels paired, a missing label found");

    snprintf(p, sizeof p, "%s/split.txt", root);
    FILE *f = fopen(p, "w");
    fprintf(f, "# fold 0 training\nABD_021\n\n  2   # serial only\n");
    fclose(f);
    fine_case_list list;
    ok = fine_case_list_read(p, &list, &e) == 0 && list.n == 2 && strcmp(list.ids[1], "ABD_002") == 0 &&
         fine_dataset_select(&ds, &list, p, &e) == 0 && ds.n == 2 && strcmp(ds.cases[0].id, "ABD_021") == 0 &&
         fine_dataset_require_labels(&ds, &e) == 0;
    fine_case_list_free(&list);
    f = fopen(p, "w");
    fprintf(f, "ABD_099\n");
    fclose(f);
    ok = ok && fine_case_list_read(p, &list, &e) == 0 && fine_dataset_select(&ds, &list, p, &e) < 0 &&
         strstr(e.msg, "ABD_099");
    fine_case_list_free(&list);
    f = fopen(p, "w");
    fprintf(f, "ABD_001\nimg0001\n");
    fclose(f);
    ok = ok && fine_case_list_read(p, &list, &e) < 0 && strstr(e.msg, "twice");
    tap_ok(t, ok, "selection file: comments, blank lines, serials; unknown and repeated ids refused");
    fine_dataset_free(&ds);

    snprintf(p, sizeof p, "%s/imagesTr", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/labelsTr", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/imagesTr/ABD_005_0000.nii.gz", root);
    touch(p);
    snprintf(p, sizeof p, "%s/labelsTr/ABD_005.nii.gz", root);
    touch(p);
    ok = fine_dataset_scan(root, &ds, &e) == 0 && ds.n == 1 && strcmp(ds.layout, "nnunet") == 0 &&
         strcmp(ds.cases[0].id, "ABD_005") == 0 && ds.cases[0].label != NULL;
    fine_dataset_free(&ds);
    snprintf(p, sizeof p, "%s/imagesTr/ABD_005_0001.nii.gz", root);
    touch(p);
    ok = ok && fine_dataset_scan(root, &ds, &e) < 0 && strstr(e.msg, "modality");
    tap_ok(t, ok, "nnU-Net layout: NAME_0000 with labelsTr/NAME; a second modality refused");
    snprintf(p, sizeof p, "rm -rf '%s'", root);
    if (system(p) != 0)
        fprintf(stderr, "could not remove %s\n", root);
}

int main(void)
{
    tap t = {0};
    test_analytic(&t);
    test_identity_and_constant(&t);
    test_nearest_z(&t);
    test_labels(&t);
    test_rules(&t);
    test_fill_holes(&t);
    test_crop(&t);
    test_to_original(&t);
    test_dataset(&t);
    return tap_done(&t);
}
