/* test_augment.c: the augmentation (lib/augment.c) and the training sampler's rules
 * (lib/train_patch.c) against their specifications (fine-reference B §3.1, §5.4, §5.5):
 *
 * - the enlarged box rule (nnU-Net get_patch_size): 140,205,168 and 64,150,150;
 * - rotation by 0 with scale 1 is the plain centre crop; a 90-degree rotation about z is
 *   numpy's rot90 over (y, x) (index arithmetic written here, away from the borders);
 * - an independent cross-check with scipy/numpy (one Python run, skipped without them): the
 *   resampled crop against map_coordinates(order 3, mode constant) of nnU-Net's padded box
 *   and the labels against batchgenerators' per-label linear rule, in 3-D and dummy-2D; blur
 *   against gaussian_filter; low resolution against zoom(order 0) + zoom(order 3, nearest,
 *   grid_mode) + clip; gamma and contrast against the batchgenerators formulas;
 * - statistics: gamma keeps mean and std (retain_stats), contrast keeps the mean and the range,
 *   brightness multiplies, noise has the drawn std, mirroring twice is the identity, and the
 *   per-sample probabilities and ranges of every draw;
 * - the sampler: pos on hand-made boxes (inside, overhanging, larger than the case), the box
 *   bounds, which samples are forced to foreground, the class locations' counts, and a batch
 *   that is the same bytes when made twice. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "augment.h"
#include "tap.h"
#include "train_patch.h"

static const double PI = 3.14159265358979323846;

static void fill_smooth(float *x, const int64_t n[3], fine_rng *r)
{
    for (int64_t z = 0; z < n[0]; z++)
        for (int64_t y = 0; y < n[1]; y++)
            for (int64_t k = 0; k < n[2]; k++)
                x[(z * n[1] + y) * n[2] + k] =
                    (float)(sin(0.4 * (double)z + 0.3 * (double)y) * cos(0.25 * (double)k) +
                            0.3 * fine_rng_normal(r));
}

static void fill_labels(uint8_t *l, const int64_t n[3])
{
    static const uint8_t vals[4] = {0, 2, 5, 9};
    for (int64_t z = 0; z < n[0]; z++)
        for (int64_t y = 0; y < n[1]; y++)
            for (int64_t k = 0; k < n[2]; k++)
                l[(z * n[1] + y) * n[2] + k] = vals[(z / 4 + y / 5 + k / 3) % 4];
}

static int write_raw(const char *dir, const char *name, const void *p, size_t bytes)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(p, 1, bytes, f);
    fclose(f);
    return w == bytes ? 0 : -1;
}

/* ---------------------------------------------------------------- the Python cross-check */

static const char *PY =
    "import json, sys\n"
    "import numpy as np\n"
    "from scipy.ndimage import map_coordinates, gaussian_filter, zoom\n"
    "d = sys.argv[1]; S = json.load(open(d + '/spec.json'))\n"
    "def rd(name, shape, dt=np.float32): return np.fromfile(d + '/' + name, dt).reshape(shape)\n"
    "def rot3(a):\n"
    "    def rx(t): c, s = np.cos(t), np.sin(t); return np.array([[1,0,0],[0,c,-s],[0,s,c]])\n"
    "    def ry(t): c, s = np.cos(t), np.sin(t); return np.array([[c,0,s],[0,1,0],[-s,0,c]])\n"
    "    def rz(t): c, s = np.cos(t), np.sin(t); return np.array([[c,-s,0],[s,c,0],[0,0,1]])\n"
    "    return np.eye(3) @ rx(a[0]) @ ry(a[1]) @ rz(a[2])\n"
    "def padded(img, lab, lo, P):\n"
    "    box = np.zeros(P, np.float32); seg = -np.ones(P, np.float32)\n"
    "    vlo = np.maximum(lo, 0); vhi = np.minimum(np.array(lo) + P, img.shape)\n"
    "    sc = tuple(slice(a, b) for a, b in zip(vlo, vhi))\n"
    "    sb = tuple(slice(a - l, b - l) for a, b, l in zip(vlo, vhi, lo))\n"
    "    box[sb] = img[sc]; seg[sb] = lab[sc]; return box, seg\n"
    "def seg_interp(seg, coords):\n"
    "    out = np.zeros(coords.shape[1:], np.float32)\n"
    "    for c in np.unique(seg):\n"
    "        r = map_coordinates((seg == c).astype(float), coords, order=1, mode='constant', cval=-1)\n"
    "        out[r >= 0.5] = c\n"
    "    out[out == -1] = 0; return out\n"
    "def mesh(F):\n"
    "    c = np.array(np.meshgrid(*[np.arange(i) for i in F], indexing='ij')).astype(float)\n"
    "    for k in range(len(F)): c[k] -= (F[k] - 1) / 2.\n"
    "    return c\n"
    "# 3-D resampling\n"
    "for key in ('r3', 'r3b', 'r3t'):\n"
    "    s = S[key]; img = rd(key + '_img', s['size']); lab = rd(key + '_lab', s['size'], np.uint8)\n"
    "    box, seg = padded(img, lab, s['lo'], s['box']); F = s['crop']\n"
    "    c = mesh(F); c = np.dot(c.reshape(3, -1).T, rot3(s['angle'])).T.reshape(c.shape) * s['scale']\n"
    "    for k in range(3): c[k] += s['box'][k] / 2. - 0.5\n"
    "    ei = map_coordinates(box.astype(float), c, order=3, mode='constant', cval=0)\n"
    "    print(key + '_image', np.abs(rd(key + '_out', F) - ei).max())\n"
    "    print(key + '_label', int((rd(key + '_outl', F, np.uint8) != seg_interp(seg, c)).sum()))\n"
    "# dummy-2D resampling\n"
    "s = S['r2']; img = rd('r2_img', s['size']); lab = rd('r2_lab', s['size'], np.uint8)\n"
    "box, seg = padded(img, lab, s['lo'], s['box']); F = s['crop']\n"
    "c = mesh(F[1:]); t = s['angle']; R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])\n"
    "c = np.dot(c.reshape(2, -1).T, R).T.reshape(c.shape) * s['scale']\n"
    "for k in range(2): c[k] += s['box'][k + 1] / 2. - 0.5\n"
    "ei = np.stack([map_coordinates(box[z].astype(float), c, order=3, mode='constant', cval=0) for z in range(F[0])])\n"
    "el = np.stack([seg_interp(seg[z], c) for z in range(F[0])])\n"
    "print('r2_image', np.abs(rd('r2_out', F) - ei).max())\n"
    "print('r2_label', int((rd('r2_outl', F, np.uint8) != el).sum()))\n"
    "# blur\n"
    "s = S['blur']; x = rd('blur_in', s['size'])\n"
    "print('blur', np.abs(rd('blur_out', s['size']) - gaussian_filter(x, s['sigma'])).max())\n"
    "# low resolution (skimage resize = zoom with grid_mode, mode nearest, clip)\n"
    "for key in ('low', 'low2'):\n"
    "    s = S[key]; x = rd(key + '_in', s['size']).astype(float); shp = np.array(s['size']); dn = np.array(s['down'])\n"
    "    lo = zoom(x, dn / shp, order=0, mode='nearest', grid_mode=True)\n"
    "    assert lo.shape == tuple(dn), lo.shape\n"
    "    up = np.clip(zoom(lo, shp / dn, order=3, mode='nearest', grid_mode=True), lo.min(), lo.max())\n"
    "    print(key, np.abs(rd(key + '_out', s['size']) - up).max())\n"
    "# gamma (batchgenerators augment_gamma, per channel, float32 patch)\n"
    "s = S['gamma']; x = -rd('gamma_in', s['size'])\n"
    "mn, sd = x.mean(), x.std(); minm = x.min(); rnge = x.max() - minm\n"
    "x = np.power((x - minm) / float(rnge + 1e-7), s['gamma']) * float(rnge + 1e-7) + minm\n"
    "x = x - x.mean(); x = x / (x.std() + 1e-8) * sd; x = -(x + mn)\n"
    "print('gamma', np.abs(rd('gamma_out', s['size']) - x).max())\n"
    "s = S['contrast']; x = rd('contrast_in', s['size']); mn = x.mean(); a, b = x.min(), x.max()\n"
    "x = np.clip((x - mn) * s['factor'] + mn, a, b)\n"
    "print('contrast', np.abs(rd('contrast_out', s['size']) - x).max())\n";

typedef struct check {
    const char *name;
    double tol;
    double got;
    int seen;
} check;

static void python_crosscheck(tap *t)
{
    check checks[] = {{"r3_image", 2e-5, 0, 0}, {"r3_label", 0, 0, 0}, {"r3b_image", 2e-5, 0, 0},
                      {"r3b_label", 0, 0, 0},   {"r3t_image", 2e-5, 0, 0}, {"r3t_label", 0, 0, 0},
                      {"r2_image", 2e-5, 0, 0},
                      {"r2_label", 0, 0, 0},    {"blur", 2e-6, 0, 0},    {"low", 2e-5, 0, 0},
                      {"low2", 2e-5, 0, 0},     {"gamma", 2e-5, 0, 0},   {"contrast", 2e-6, 0, 0}};
    int nchecks = (int)(sizeof checks / sizeof *checks);
    const char *py = getenv("FINE_PYTHON");
    if (!py || !*py)
        py = "/usr/bin/python3";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -c 'import scipy, numpy' >/dev/null 2>&1", py);
    if (system(cmd) != 0) {
        for (int i = 0; i < nchecks; i++)
            tap_ok(t, 1, "%s against scipy # skip no %s with numpy and scipy", checks[i].name, py);
        return;
    }
    char dir[] = "/tmp/fine-test-augment.XXXXXX";
    if (!mkdtemp(dir)) {
        tap_ok(t, 0, "a temporary folder");
        return;
    }
    fine_rng r;
    fine_rng_seed(&r, 99);
    fine_aug_work *w = fine_aug_work_new();
    fine_err e = {0};
    int ok = 1;

    /* 3-D: a box overhanging the case on two axes, a crop touching the box faces */
    int64_t n3[3] = {20, 23, 26}, crop3[3] = {9, 11, 12};
    double ang3[3] = {0.3, -0.5, 0.8}, sc3 = 1.25, m[3][3];
    int64_t v3 = n3[0] * n3[1] * n3[2], c3 = crop3[0] * crop3[1] * crop3[2];
    float *img3 = malloc((size_t)v3 * 4), *out3 = malloc((size_t)c3 * 4);
    uint8_t *lab3 = malloc((size_t)v3), *outl3 = malloc((size_t)c3);
    fill_smooth(img3, n3, &r);
    fill_labels(lab3, n3);
    fine_aug_source s3 = {img3, lab3, {20, 23, 26}, {-3, 4, -5}, {17, 19, 21}};
    fine_aug_spatial_matrix(0, ang3, sc3, m);
    ok &= fine_aug_resample(&s3, m, 0, crop3, out3, outl3, w, &e) == 0;
    ok &= write_raw(dir, "r3_img", img3, (size_t)v3 * 4) == 0 && write_raw(dir, "r3_lab", lab3, (size_t)v3) == 0 &&
          write_raw(dir, "r3_out", out3, (size_t)c3 * 4) == 0 && write_raw(dir, "r3_outl", outl3, (size_t)c3) == 0;

    /* 3-D, a box much larger than the part the crop touches: only that part and its margin
     * are filtered */
    int64_t n3b[3] = {40, 60, 60}, crop3b[3] = {8, 9, 10}, v3b = 40 * 60 * 60, c3b = 8 * 9 * 10;
    double ang3b[3] = {-0.6, 0.2, 1.1};
    float *img3b = malloc((size_t)v3b * 4), *out3b = malloc((size_t)c3b * 4);
    uint8_t *lab3b = malloc((size_t)v3b), *outl3b = malloc((size_t)c3b);
    fill_smooth(img3b, n3b, &r);
    fill_labels(lab3b, n3b);
    fine_aug_source s3b = {img3b, lab3b, {40, 60, 60}, {-6, 3, 12}, {50, 54, 52}};
    fine_aug_spatial_matrix(0, ang3b, 0.8, m);
    ok &= fine_aug_resample(&s3b, m, 0, crop3b, out3b, outl3b, w, &e) == 0;
    ok &= write_raw(dir, "r3b_img", img3b, (size_t)v3b * 4) == 0 && write_raw(dir, "r3b_lab", lab3b, (size_t)v3b) == 0 &&
          write_raw(dir, "r3b_out", out3b, (size_t)c3b * 4) == 0 && write_raw(dir, "r3b_outl", outl3b, (size_t)c3b) == 0;
    free(img3b), free(out3b), free(lab3b), free(outl3b);

    /* no rotation, scale 1, box - crop odd along x: every voxel lies half-way between two
     * case voxels along x, so labels tie at weight 0.5 (the larger label wins) */
    {
        int64_t ct[3] = {6, 8, 8}, cv = 6 * 8 * 8;
        double a0[3] = {0, 0, 0};
        float *o = malloc((size_t)cv * 4);
        uint8_t *ol = malloc((size_t)cv);
        fine_aug_source st = {img3, lab3, {20, 23, 26}, {2, 1, 3}, {10, 12, 15}};
        fine_aug_spatial_matrix(0, a0, 1.0, m);
        ok &= fine_aug_resample(&st, m, 0, ct, o, ol, w, &e) == 0;
        ok &= write_raw(dir, "r3t_img", img3, (size_t)v3 * 4) == 0 &&
              write_raw(dir, "r3t_lab", lab3, (size_t)v3) == 0 &&
              write_raw(dir, "r3t_out", o, (size_t)cv * 4) == 0 && write_raw(dir, "r3t_outl", ol, (size_t)cv) == 0;
        free(o);
        free(ol);
    }

    /* dummy-2D: slices of the case, box overhanging in y and x */
    int64_t crop2[3] = {5, 12, 13};
    double ang2[3] = {2.5, 0, 0};
    fine_aug_source s2 = {img3, lab3, {20, 23, 26}, {14, -4, 15}, {5, 18, 17}};
    int64_t c2 = crop2[0] * crop2[1] * crop2[2];
    float *out2 = malloc((size_t)c2 * 4);
    uint8_t *outl2 = malloc((size_t)c2);
    fine_aug_spatial_matrix(1, ang2, 0.8, m);
    ok &= fine_aug_resample(&s2, m, 1, crop2, out2, outl2, w, &e) == 0;
    ok &= write_raw(dir, "r2_img", img3, (size_t)v3 * 4) == 0 && write_raw(dir, "r2_lab", lab3, (size_t)v3) == 0 &&
          write_raw(dir, "r2_out", out2, (size_t)c2 * 4) == 0 && write_raw(dir, "r2_outl", outl2, (size_t)c2) == 0;

    /* blur, low resolution, gamma, contrast on small volumes */
    int64_t nb[3] = {7, 9, 11}, vb = 7 * 9 * 11;
    float *x = malloc((size_t)v3 * 4), *y = malloc((size_t)v3 * 4);
    fill_smooth(x, nb, &r);
    memcpy(y, x, (size_t)vb * 4);
    ok &= fine_aug_blur(y, nb, 0.73, w, &e) == 0;
    ok &= write_raw(dir, "blur_in", x, (size_t)vb * 4) == 0 && write_raw(dir, "blur_out", y, (size_t)vb * 4) == 0;
    int64_t nl[3] = {9, 10, 13}, dl[3] = {5, 7, 6}, vl = 9 * 10 * 13;
    fill_smooth(x, nl, &r);
    memcpy(y, x, (size_t)vl * 4);
    ok &= fine_aug_lowres(y, nl, dl, w, &e) == 0;
    ok &= write_raw(dir, "low_in", x, (size_t)vl * 4) == 0 && write_raw(dir, "low_out", y, (size_t)vl * 4) == 0;
    int64_t dl2[3] = {9, 4, 8}; /* dummy-2D keeps z */
    memcpy(y, x, (size_t)vl * 4);
    ok &= fine_aug_lowres(y, nl, dl2, w, &e) == 0;
    ok &= write_raw(dir, "low2_in", x, (size_t)vl * 4) == 0 && write_raw(dir, "low2_out", y, (size_t)vl * 4) == 0;
    fill_smooth(x, nb, &r);
    memcpy(y, x, (size_t)vb * 4);
    fine_aug_gamma(y, vb, 1.3, 1, 1);
    ok &= write_raw(dir, "gamma_in", x, (size_t)vb * 4) == 0 && write_raw(dir, "gamma_out", y, (size_t)vb * 4) == 0;
    memcpy(y, x, (size_t)vb * 4);
    fine_aug_contrast(y, vb, 1.2, 1);
    ok &= write_raw(dir, "contrast_in", x, (size_t)vb * 4) == 0 &&
          write_raw(dir, "contrast_out", y, (size_t)vb * 4) == 0;

    char path[512];
    snprintf(path, sizeof path, "%s/spec.json", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f,
                "{\"r3\": {\"size\": [20, 23, 26], \"lo\": [-3, 4, -5], \"box\": [17, 19, 21], "
                "\"crop\": [9, 11, 12], \"angle\": [%.17g, %.17g, %.17g], \"scale\": %.17g},\n"
                " \"r3b\": {\"size\": [40, 60, 60], \"lo\": [-6, 3, 12], \"box\": [50, 54, 52], "
                "\"crop\": [8, 9, 10], \"angle\": [%.17g, %.17g, %.17g], \"scale\": 0.8},\n"
                " \"r3t\": {\"size\": [20, 23, 26], \"lo\": [2, 1, 3], \"box\": [10, 12, 15], "
                "\"crop\": [6, 8, 8], \"angle\": [0, 0, 0], \"scale\": 1.0},\n"
                " \"r2\": {\"size\": [20, 23, 26], \"lo\": [14, -4, 15], \"box\": [5, 18, 17], "
                "\"crop\": [5, 12, 13], \"angle\": %.17g, \"scale\": 0.8},\n"
                " \"blur\": {\"size\": [7, 9, 11], \"sigma\": 0.73},\n"
                " \"low\": {\"size\": [9, 10, 13], \"down\": [5, 7, 6]},\n"
                " \"low2\": {\"size\": [9, 10, 13], \"down\": [9, 4, 8]},\n"
                " \"gamma\": {\"size\": [7, 9, 11], \"gamma\": 1.3},\n"
                " \"contrast\": {\"size\": [7, 9, 11], \"factor\": 1.2}}\n",
                ang3[0], ang3[1], ang3[2], sc3, ang3b[0], ang3b[1], ang3b[2], ang2[0]);
        fclose(f);
    } else {
        ok = 0;
    }
    snprintf(path, sizeof path, "%s/check.py", dir);
    f = fopen(path, "w");
    if (f) {
        fputs(PY, f);
        fclose(f);
    } else {
        ok = 0;
    }
    tap_ok(t, ok, "inputs and outputs for the cross-check written (%s)", ok ? "ok" : e.msg);
    snprintf(cmd, sizeof cmd, "%s %s/check.py %s 2>&1", py, dir, dir);
    FILE *p = popen(cmd, "r");
    char line[512];
    while (p && fgets(line, sizeof line, p)) {
        char name[64];
        double v;
        if (sscanf(line, "%63s %lf", name, &v) == 2) {
            for (int i = 0; i < nchecks; i++)
                if (strcmp(name, checks[i].name) == 0) {
                    checks[i].got = v;
                    checks[i].seen = 1;
                }
        } else {
            printf("# python: %s", line);
        }
    }
    if (p)
        pclose(p);
    for (int i = 0; i < nchecks; i++)
        tap_ok(t, checks[i].seen && checks[i].got <= checks[i].tol,
               "%s matches scipy/numpy: max |difference| %g (tolerance %g)", checks[i].name,
               checks[i].got, checks[i].tol);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    free(img3), free(out3), free(lab3), free(outl3), free(out2), free(outl2), free(x), free(y);
    fine_aug_work_free(w);
}

/* ---------------------------------------------------------------- exact identities */

static void identities(tap *t)
{
    fine_aug_params p;
    fine_aug_params_default(&p, 0);
    int64_t crop[3] = {64, 128, 128}, box[3];
    fine_aug_basic_patch(&p, crop, box);
    tap_ok(t, box[0] == 140 && box[1] == 205 && box[2] == 168,
           "enlarged box of 64,128,128 with +-30 degrees and scale 0.85: %lld,%lld,%lld (140,205,168)",
           (long long)box[0], (long long)box[1], (long long)box[2]);
    fine_aug_params_default(&p, 1);
    fine_aug_basic_patch(&p, crop, box);
    tap_ok(t, box[0] == 64 && box[1] == 150 && box[2] == 150,
           "dummy-2D enlarged box: %lld,%lld,%lld (64,150,150)", (long long)box[0], (long long)box[1],
           (long long)box[2]);
    fine_aug_params_off(&p);
    fine_aug_basic_patch(&p, crop, box);
    tap_ok(t, box[1] == 150, "--augment none keeps the box of the default ranges");

    fine_rng r;
    fine_rng_seed(&r, 5);
    fine_aug_work *w = fine_aug_work_new();
    fine_err e = {0};
    int64_t n[3] = {21, 24, 27}, v = 21 * 24 * 27;
    float *img = malloc((size_t)v * 4);
    uint8_t *lab = malloc((size_t)v);
    fill_smooth(img, n, &r);
    fill_labels(lab, n);
    int64_t c[3] = {10, 12, 14}, cv = 10 * 12 * 14;
    float *a = malloc((size_t)cv * 4), *b = malloc((size_t)cv * 4);
    uint8_t *la = malloc((size_t)cv), *lb = malloc((size_t)cv);
    /* boxes with (box - crop) even, so that the centre maps to whole voxels; one inside, one
     * overhanging the case on every axis */
    int64_t los[2][3] = {{3, 4, 5}, {-4, 15, -6}};
    for (int k = 0; k < 2; k++) {
        fine_aug_source s = {img, lab, {21, 24, 27}, {los[k][0], los[k][1], los[k][2]}, {14, 18, 20}};
        double ang[3] = {0, 0, 0}, m[3][3];
        fine_aug_spatial_matrix(0, ang, 1.0, m);
        int rc = fine_aug_resample(&s, m, 0, c, a, la, w, &e);
        rc |= fine_aug_crop(&s, c, b, lb, &e);
        double worst = 0;
        int labdiff = 0;
        for (int64_t i = 0; i < cv; i++) {
            worst = fmax(worst, fabs((double)a[i] - b[i]));
            labdiff += la[i] != lb[i];
        }
        tap_ok(t, rc == 0 && worst < 2e-6 && labdiff == 0,
               "rotation 0, scale 1 is the plain crop (box %s): max |diff| %g, %d labels differ",
               k ? "overhanging" : "inside", worst, labdiff);
    }
    /* the plain crop is the box's centre: check one voxel by hand, and zeros outside */
    {
        fine_aug_source s = {img, lab, {21, 24, 27}, {-4, 15, -6}, {14, 18, 20}};
        fine_aug_crop(&s, c, b, lb, &e);
        /* start = lo + (box - crop)/2 = (-2, 18, -3) */
        int ok = b[0] == 0 && lb[0] == 0;                            /* z = -2: outside */
        ok &= b[(2 * 12 + 0) * 14 + 3] == img[(0 * 24 + 18) * 27 + 0]; /* (0, 18, 0) */
        ok &= lb[(2 * 12 + 0) * 14 + 3] == lab[(0 * 24 + 18) * 27 + 0];
        ok &= b[(2 * 12 + 6) * 14 + 3] == 0; /* y = 24: outside */
        tap_ok(t, ok, "the plain crop starts at lo + (box - crop)/2, zeros outside the case");
    }
    /* 90 degrees about z (axis 0): np.rot90(x, 1, axes=(1, 2)), i.e. out[z][j][k] = in[z][k][N-1-j] */
    {
        int64_t q[3] = {6, 16, 16}, qv = 6 * 16 * 16;
        float *o = malloc((size_t)qv * 4);
        uint8_t *ol = malloc((size_t)qv);
        fine_aug_source s = {img, lab, {21, 24, 27}, {2, 3, 4}, {6, 16, 16}};
        double ang[3] = {90.0 / 360.0 * 2.0 * PI, 0, 0}, m[3][3];
        fine_aug_spatial_matrix(0, ang, 1.0, m);
        int rc = fine_aug_resample(&s, m, 0, q, o, ol, w, &e);
        double worst = 0;
        int labdiff = 0, cmp = 0;
        for (int64_t z = 2; z < 4; z++) /* away from the box faces */
            for (int64_t j = 2; j < 14; j++)
                for (int64_t k = 2; k < 14; k++) {
                    int64_t src = ((2 + z) * 24 + (3 + k)) * 27 + (4 + 15 - j);
                    worst = fmax(worst, fabs((double)o[(z * 16 + j) * 16 + k] - img[src]));
                    labdiff += ol[(z * 16 + j) * 16 + k] != lab[src];
                    cmp++;
                }
        tap_ok(t, rc == 0 && worst < 1e-4 && labdiff == 0,
               "90 degrees about z is rot90 over (y, x): %d voxels, max |diff| %g, %d labels differ",
               cmp, worst, labdiff);
        free(o);
        free(ol);
    }
    /* mirroring */
    {
        memcpy(a, img, (size_t)cv * 4);
        memcpy(la, lab, (size_t)cv);
        fine_aug_mirror(a, la, c, 1);
        int ok = a[(3 * 12 + 2) * 14 + 5] == img[(3 * 12 + 9) * 14 + 5] &&
                 la[(3 * 12 + 2) * 14 + 5] == lab[(3 * 12 + 9) * 14 + 5];
        fine_aug_mirror(a, la, c, 0);
        ok &= a[(6 * 12 + 2) * 14 + 5] == img[(3 * 12 + 9) * 14 + 5];
        fine_aug_mirror(a, la, c, 2);
        ok &= a[(6 * 12 + 2) * 14 + 8] == img[(3 * 12 + 9) * 14 + 5];
        fine_aug_mirror(a, la, c, 2);
        fine_aug_mirror(a, la, c, 0);
        fine_aug_mirror(a, la, c, 1);
        ok &= memcmp(a, img, (size_t)cv * 4) == 0 && memcmp(la, lab, (size_t)cv) == 0;
        tap_ok(t, ok, "mirroring reverses one axis of image and label; twice is the identity");
    }
    free(img), free(lab), free(a), free(b), free(la), free(lb);
    fine_aug_work_free(w);
}

/* ---------------------------------------------------------------- statistics */

static void mean_sd(const float *x, int64_t n, double *mu, double *sd, double *lo, double *hi)
{
    double s = 0, s2 = 0;
    *lo = INFINITY, *hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        *lo = fmin(*lo, x[i]);
        *hi = fmax(*hi, x[i]);
    }
    *mu = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        s2 += ((double)x[i] - *mu) * ((double)x[i] - *mu);
    *sd = sqrt(s2 / (double)n);
}

static void statistics(tap *t)
{
    fine_rng r;
    fine_rng_seed(&r, 11);
    int64_t n = 40000;
    float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(fine_rng_normal(&r) * 1.5 + 0.3 + (i % 7 == 0 ? 3 : 0));
    double mu, sd, lo, hi, mu2, sd2, lo2, hi2;
    mean_sd(x, n, &mu, &sd, &lo, &hi);
    int ok = 1;
    for (int inv = 0; inv < 2; inv++)
        for (double g = 0.7; g < 1.6; g += 0.8) {
            memcpy(y, x, (size_t)n * 4);
            fine_aug_gamma(y, n, g, inv, 1);
            mean_sd(y, n, &mu2, &sd2, &lo2, &hi2);
            ok &= fabs(mu2 - mu) < 1e-4 && fabs(sd2 - sd) < 1e-4;
            double moved = 0;
            for (int64_t i = 0; i < n; i++)
                moved = fmax(moved, fabs((double)y[i] - x[i]));
            ok &= moved > 0.05; /* it did change the values */
        }
    tap_ok(t, ok, "gamma with retain_stats keeps mean and std (gamma 0.7 and 1.5, inverted or not)");
    memcpy(y, x, (size_t)n * 4);
    fine_aug_gamma(y, n, 1.4, 0, 0);
    mean_sd(y, n, &mu2, &sd2, &lo2, &hi2);
    tap_ok(t, fabs(lo2 - lo) < 1e-5 && fabs(hi2 - hi) < 1e-4 && mu2 < mu,
           "gamma 1.4 without retain_stats keeps [min, max] and lowers the mean (%.3f -> %.3f)", mu, mu2);

    memcpy(y, x, (size_t)n * 4);
    fine_aug_contrast(y, n, 0.8, 1);
    mean_sd(y, n, &mu2, &sd2, &lo2, &hi2);
    tap_ok(t, fabs(mu2 - mu) < 1e-5 && fabs(sd2 - 0.8 * sd) < 1e-4,
           "contrast 0.8 keeps the mean and scales the std by 0.8");
    memcpy(y, x, (size_t)n * 4);
    fine_aug_contrast(y, n, 1.25, 1);
    mean_sd(y, n, &mu2, &sd2, &lo2, &hi2);
    tap_ok(t, lo2 >= lo && hi2 <= hi && sd2 > sd, "contrast 1.25 with preserve_range stays in [min, max]");
    memcpy(y, x, (size_t)n * 4);
    fine_aug_brightness(y, n, 1.2);
    ok = 1;
    for (int64_t i = 0; i < n; i++)
        ok &= y[i] == (float)((double)x[i] * 1.2);
    tap_ok(t, ok, "brightness multiplies every voxel");
    memcpy(y, x, (size_t)n * 4);
    fine_aug_noise(y, n, 0.07, &r);
    for (int64_t i = 0; i < n; i++)
        y[i] -= x[i];
    mean_sd(y, n, &mu2, &sd2, &lo2, &hi2);
    tap_ok(t, fabs(mu2) < 0.002 && fabs(sd2 - 0.07) < 0.002, "noise of std 0.07: mean %.4f std %.4f", mu2, sd2);
    free(x);
    free(y);
}

/* The draws: how often each step happens and the ranges of its parameter. */
static void draws(tap *t)
{
    fine_aug_params p;
    fine_aug_params_default(&p, 0);
    fine_rng r;
    fine_rng_seed(&r, 17);
    int N = 20000, rot = 0, sca = 0, low = 0, ok = 1;
    double amax = 0;
    for (int i = 0; i < N; i++) {
        fine_aug_spatial s;
        fine_aug_draw_spatial(&p, &r, &s);
        rot += s.rotated;
        sca += s.scaled;
        low += s.scaled && s.scale < 1;
        for (int d = 0; d < 3; d++) {
            amax = fmax(amax, fabs(s.angle[d]));
            ok &= s.rotated || s.angle[d] == 0;
        }
        ok &= s.scaled ? (s.scale >= 0.7 && s.scale < 1.4) : s.scale == 1;
    }
    double pr = (double)rot / N, ps = (double)sca / N, pl = sca ? (double)low / sca : 0;
    tap_ok(t, ok && fabs(pr - 0.2) < 0.015 && fabs(ps - 0.2) < 0.015 && fabs(pl - 0.5) < 0.04 &&
                  amax <= 30.0 / 180.0 * PI && amax > 29.0 / 180.0 * PI,
           "spatial draws: rotated %.3f (0.2), scaled %.3f (0.2), half of the scales below 1 (%.3f), "
           "angles within +-30 degrees (max %.2f)",
           pr, ps, pl, amax * 180 / PI);

    int64_t sz[3] = {4, 4, 4};
    float img[64];
    uint8_t lab[64];
    fine_aug_work *w = fine_aug_work_new();
    fine_err e = {0};
    int cnt[10] = {0};
    ok = 1;
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 64; k++)
            img[k] = (float)k / 10.0f, lab[k] = (uint8_t)(k % 3);
        fine_aug_applied a;
        if (fine_aug_intensity(&p, &r, img, lab, sz, w, &a, &e) < 0)
            ok = 0;
        cnt[0] += a.noise;
        cnt[1] += a.blur_sigma > 0;
        cnt[2] += a.brightness > 0;
        cnt[3] += a.contrast > 0;
        cnt[4] += a.lowres[0] > 0;
        cnt[5] += a.gamma_invert > 0;
        cnt[6] += a.gamma > 0;
        cnt[7] += a.mirror[0], cnt[8] += a.mirror[1], cnt[9] += a.mirror[2];
        ok &= !a.noise || (a.noise_std >= 0 && a.noise_std < 0.1);
        ok &= !(a.blur_sigma > 0) || (a.blur_sigma >= 0.5 && a.blur_sigma < 1);
        ok &= !(a.brightness > 0) || (a.brightness >= 0.75 && a.brightness < 1.25);
        ok &= !(a.contrast > 0) || (a.contrast >= 0.75 && a.contrast < 1.25);
        ok &= !(a.gamma > 0) || (a.gamma >= 0.7 && a.gamma < 1.5);
        ok &= !(a.lowres[0] > 0) || (a.lowres[0] >= 2 && a.lowres[0] <= 4);
    }
    const double want[10] = {0.1, 0.1, 0.15, 0.15, 0.125, 0.1, 0.3, 0.5, 0.5, 0.5};
    const char *names[10] = {"noise", "blur", "brightness", "contrast", "low resolution",
                             "inverted gamma", "gamma", "mirror z", "mirror y", "mirror x"};
    for (int k = 0; k < 10; k++) {
        double f = (double)cnt[k] / N;
        ok &= fabs(f - want[k]) < 0.015;
        printf("# %s: %.4f (%.3f)\n", names[k], f, want[k]);
    }
    tap_ok(t, ok, "intensity draws: each step with its probability (p_per_sample x p_per_channel) and "
                  "its parameter in range");
    fine_aug_params_off(&p);
    float ref[64];
    for (int k = 0; k < 64; k++)
        ref[k] = img[k] = (float)k;
    fine_aug_spatial s;
    fine_aug_draw_spatial(&p, &r, &s);
    ok = fine_aug_intensity(&p, &r, img, lab, sz, w, NULL, &e) == 0 && memcmp(img, ref, sizeof ref) == 0 &&
         !s.rotated && !s.scaled;
    tap_ok(t, ok, "with every probability 0 nothing changes");
    fine_aug_work_free(w);
}

/* ---------------------------------------------------------------- the sampler's rules */

static void sampler(tap *t)
{
    /* pos = valid_lo + (valid_hi - valid_lo)//2 - size//2, by hand */
    struct {
        int64_t lo, box, size, pos;
    } cases[] = {
        {10, 20, 100, 10 + 10 - 50},  /* inside: the box centre */
        {-7, 20, 100, 0 + 6 - 50},    /* overhanging low: valid [0, 13) */
        {90, 20, 100, 90 + 5 - 50},   /* overhanging high: valid [90, 100) */
        {-39, 205, 128, 0 + 64 - 64}, /* box larger than the case: valid = the case */
        {-3, 20, 9, 0 + 4 - 4},       /* tiny odd case */
        {3, 5, 9, 3 + 2 - 4},
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int64_t lo[3] = {cases[i].lo, 0, 0}, box[3] = {cases[i].box, 4, 4}, size[3] = {cases[i].size, 4, 5}, pos[3];
        fine_train_pos(lo, box, size, pos);
        ok &= pos[0] == cases[i].pos && pos[1] == 0 && pos[2] == 0;
        if (pos[0] != cases[i].pos)
            printf("# lo %lld box %lld size %lld: pos %lld, expected %lld\n", (long long)cases[i].lo,
                   (long long)cases[i].box, (long long)cases[i].size, (long long)pos[0],
                   (long long)cases[i].pos);
    }
    tap_ok(t, ok, "pos on hand-made boxes (inside, overhanging either side, larger than the case)");

    int64_t size[3] = {100, 300, 90}, box[3] = {140, 205, 168}, crop[3] = {64, 128, 128}, lb[3], ub[3];
    fine_train_box_bounds(size, box, crop, lb, ub);
    /* z: need 76: [-38, 100 + 38 - 140]; y: need 77: [-39, 300 + 38 + 1 - 205];
     * x: need 40 -> 78 (case smaller than the box): [-39, -39] */
    tap_ok(t, lb[0] == -38 && ub[0] == -2 && lb[1] == -39 && ub[1] == 134 && lb[2] == -39 && ub[2] == -39,
           "box bounds: [%lld, %lld] [%lld, %lld] [%lld, %lld]", (long long)lb[0], (long long)ub[0],
           (long long)lb[1], (long long)ub[1], (long long)lb[2], (long long)ub[2]);

    ok = !fine_train_forced_fg(0, 2, 0.33) && fine_train_forced_fg(1, 2, 0.33) &&
         !fine_train_forced_fg(0, 1, 0.33) && !fine_train_forced_fg(1, 3, 0.33) &&
         fine_train_forced_fg(2, 3, 0.33) && !fine_train_forced_fg(2, 4, 0.33) &&
         fine_train_forced_fg(3, 4, 0.33) && !fine_train_forced_fg(2, 5, 0.33) &&
         fine_train_forced_fg(3, 5, 0.33);
    tap_ok(t, ok, "forced foreground iff k >= round(B * 0.67): B=2 {1}, B=1 {}, B=3 {2}, B=4 {3}, B=5 {3,4}");

    /* class locations: max(min(10000, n), ceil(n / 100)) distinct voxels of the class */
    fine_train_case c;
    memset(&c, 0, sizeof c);
    snprintf(c.id, sizeof c.id, "t");
    int64_t shape[3] = {40, 250, 250};
    fine_err e = {0};
    fine_tensor_alloc(&c.label, FINE_U8, 3, shape, &e);
    fine_tensor_alloc(&c.image, FINE_F32, 3, shape, &e);
    memcpy(c.size, shape, sizeof shape);
    uint8_t *L = c.label.data;
    int64_t n = 40 * 250 * 250;
    for (int64_t i = 0; i < n; i++)
        L[i] = i < 50 ? 1 : i < 20050 ? 2 : i < 1520050 ? 3 : 0; /* 50, 20000, 1.5M voxels */
    L[n - 1] = 200;
    int rc = fine_train_case_locations(&c, 1234, &e);
    ok = rc == 0 && c.nclasses == 4 && c.classes[0] == 1 && c.classes[1] == 2 && c.classes[2] == 3 &&
         c.classes[3] == 200 && c.nlocs[0] == 50 && c.nlocs[1] == 10000 && c.nlocs[2] == 15000 &&
         c.nlocs[3] == 1;
    for (int s = 0; ok && s < c.nclasses; s++)
        for (int64_t k = 0; k < c.nlocs[s]; k++) {
            ok &= L[c.locs[s][k]] == c.classes[s];
            ok &= k == 0 || c.locs[s][k] > c.locs[s][k - 1]; /* distinct (raster order) */
        }
    tap_ok(t, ok, "class locations: 50 of 50, 10000 of 20000, 15000 of 1.5M (1%%), 1 of 1; distinct, in class");
    int64_t third = 0; /* spread: the class-2 sample covers its range evenly */
    for (int64_t k = 0; k < c.nlocs[1]; k++)
        third += c.locs[1][k] < 50 + 20000 / 3;
    tap_ok(t, third > 3100 && third < 3570, "class locations are spread uniformly (%lld of 10000 in the first third)",
           (long long)third);

    /* a forced-foreground box is centred on a stored voxel (clamped at lb) */
    fine_rng r;
    fine_rng_seed(&r, 3);
    int64_t lo[3];
    int cls;
    ok = 1;
    int64_t bx[3] = {20, 50, 50}, cr[3] = {10, 30, 30};
    for (int i = 0; i < 200; i++) {
        fine_train_draw_box(&c, 1, bx, cr, &r, lo, &cls);
        int64_t cb[3];
        fine_train_box_bounds(c.size, bx, cr, lb, cb);
        int found = 0;
        for (int s = 0; s < c.nclasses && !found; s++)
            for (int64_t k = 0; k < c.nlocs[s] && !found; k++) {
                int64_t v = c.locs[s][k];
                int64_t at[3] = {v / (250 * 250), (v / 250) % 250, v % 250};
                found = c.classes[s] == cls;
                for (int d = 0; d < 3; d++) {
                    int64_t want = at[d] - bx[d] / 2;
                    found &= lo[d] == (want > lb[d] ? want : lb[d]);
                }
            }
        ok &= found;
    }
    tap_ok(t, ok, "a forced box starts at max(lb, v - box//2) for a stored voxel v of the drawn class");

    /* a batch is the same bytes when made again, and differs for another batch number */
    fine_train_config cfg;
    fine_train_config_default(&cfg);
    int64_t cc[3] = {8, 16, 16};
    memcpy(cfg.crop, cc, sizeof cc);
    fine_aug_params_default(&cfg.aug, 0);
    cfg.aug.p_rot = cfg.aug.p_scale = 1; /* exercise the resampling */
    fine_aug_basic_patch(&cfg.aug, cfg.crop, cfg.box);
    float *im = c.image.data;
    for (int64_t i = 0; i < n; i++)
        im[i] = (float)sin(0.001 * (double)i);
    fine_train_patch p1[2], p2[2], p3[2];
    int64_t pv = 8 * 16 * 16;
    fine_train_patch *all[3] = {p1, p2, p3};
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 2; j++) {
            memset(&all[k][j], 0, sizeof all[k][j]);
            all[k][j].image = malloc((size_t)pv * 4);
            all[k][j].label = malloc((size_t)pv);
        }
    fine_aug_work *w = fine_aug_work_new();
    rc = fine_train_make_batch(&cfg, &c, 1, 7, p1, w, &e);
    rc |= fine_train_make_batch(&cfg, &c, 1, 8, p3, w, &e);
    rc |= fine_train_make_batch(&cfg, &c, 1, 7, p2, w, &e);
    ok = rc == 0;
    for (int j = 0; j < 2; j++)
        ok &= memcmp(p1[j].image, p2[j].image, (size_t)pv * 4) == 0 &&
              memcmp(p1[j].label, p2[j].label, (size_t)pv) == 0 &&
              memcmp(p1[j].pos, p2[j].pos, sizeof p1[j].pos) == 0 && p1[j].spatial.angle[1] == p2[j].spatial.angle[1];
    tap_ok(t, ok && memcmp(p1[0].image, p3[0].image, (size_t)pv * 4) != 0,
           "a batch is the same bytes when made again (batch 7 after batch 8), batch 8 differs");
    tap_ok(t, !p1[0].forced_fg && p1[1].forced_fg && p1[1].fg_class > 0, "sample 1 of 2 is forced to foreground");
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 2; j++)
            free(all[k][j].image), free(all[k][j].label);
    fine_aug_work_free(w);
    fine_train_case_free(&c);
}

int main(void)
{
    tap t = {0};
    identities(&t);
    statistics(&t);
    draws(&t);
    sampler(&t);
    python_crosscheck(&t);
    return tap_done(&t);
}
