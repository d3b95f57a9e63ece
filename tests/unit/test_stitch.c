/* test_stitch.c: putting tile predictions back together (lib/stitch.c) and the
 * largest-component postprocessing (lib/components.c). Expected values are hand-derived
 * (weights of overlapping tiles, softmax of logits, argmax ties, pasting) or computed by
 * scipy.ndimage.label and nnU-Net's remove_all_but_the_largest_connected_component in
 * Python (FINE_PYTHON, default /usr/bin/python3). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "components.h"
#include "patch_grid.h"
#include "stitch.h"
#include "tap.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A [K, P] f32 tile whose channel c is vals[c] everywhere. */
static void const_tile(fine_tensor *t, int64_t K, const int64_t P[3], const float *vals)
{
    fine_err e = {0};
    int64_t shape[4] = {K, P[0], P[1], P[2]};
    fine_tensor_alloc(t, FINE_F32, 4, shape, &e);
    int64_t n = P[0] * P[1] * P[2];
    for (int64_t c = 0; c < K; c++)
        for (int64_t i = 0; i < n; i++)
            ((float *)t->data)[c * n + i] = vals[c];
}

static void test_single_tile(tap *t)
{
    /* one 4x4x4 tile with origin [-1, 0, -2] over a 2x4x2 volume; unit weights: the
     * probabilities are the tile's own values at the covered voxels */
    fine_stitch s;
    fine_err e = {0};
    int64_t P[3] = {4, 4, 4};
    fine_tensor tile;
    int64_t shape[4] = {2, 4, 4, 4};
    fine_tensor_alloc(&tile, FINE_F32, 4, shape, &e);
    float *d = tile.data;
    for (int i = 0; i < 128; i++)
        d[i] = (float)i;
    int ok = fine_stitch_begin(&s, (int64_t[]){2, 4, 2}, 0, 1, &e) == 0 &&
             fine_stitch_add(&s, &tile, (int64_t[]){-1, 0, -2}, 0, &e) == 0;
    fine_tensor prob;
    ok = ok && fine_stitch_finish(&s, &prob, &e) == 0;
    int exact = ok && prob.ndim == 4 && prob.shape[0] == 2 && prob.shape[1] == 2 && prob.shape[3] == 2;
    for (int c = 0; exact && c < 2; c++)
        for (int z = 0; z < 2; z++)
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 2; x++)
                    exact = exact && ((float *)prob.data)[((c * 2 + z) * 4 + y) * 2 + x] ==
                                         d[c * 64 + ((z + 1) * 4 + y) * 4 + (x + 2)];
    tap_ok(t, exact, "one tile, padding cropped off: the tile's values at their place");
    fine_tensor_free(&prob);
    (void)P;
    fine_tensor_free(&tile);
}

static void test_overlap_weights(tap *t)
{
    /* two 4x8x8 tiles along x over a 4x8x12 volume, origins x 0 and 4; tile A says class 1,
     * tile B class 2 (one-hot); in the overlap x 4..7 p1 = gA / (gA + gB) with gA = g[x],
     * gB = g[x - 4] of the Gaussian map, elsewhere 1 */
    int64_t P[3] = {4, 8, 8};
    fine_err e = {0};
    fine_tensor A, B;
    const_tile(&A, 3, P, (float[]){0, 1, 0});
    const_tile(&B, 3, P, (float[]){0, 0, 1});
    fine_stitch s;
    fine_tensor prob;
    int ok = fine_stitch_begin(&s, (int64_t[]){4, 8, 12}, 1, 2, &e) == 0 &&
             fine_stitch_add(&s, &A, (int64_t[]){0, 0, 0}, 0, &e) == 0 &&
             fine_stitch_add(&s, &B, (int64_t[]){0, 0, 4}, 0, &e) == 0 &&
             fine_stitch_finish(&s, &prob, &e) == 0;
    float g[256];
    fine_gaussian_map(P, 0.125, g, &e);
    double worst = 0;
    int64_t vn = 4 * 8 * 12;
    for (int z = 0; ok && z < 4; z++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 12; x++) {
                float ga = x < 8 ? g[(z * 8 + y) * 8 + x] : 0, gb = x >= 4 ? g[(z * 8 + y) * 8 + x - 4] : 0;
                float want1 = (1.0f * ga) / (ga + gb), want2 = (1.0f * gb) / (ga + gb);
                int64_t v = (z * 8 + y) * 12 + x;
                const float *p = prob.data;
                worst = fmax(worst, fabs(p[vn + v] - want1));
                worst = fmax(worst, fabs(p[2 * vn + v] - want2));
                worst = fmax(worst, fabs(p[v]));
            }
    tap_ok(t, ok && worst < 1e-6, "two overlapping tiles: sum(p g) / sum(g) with the Gaussian map (err %.2g)",
           worst);
    fine_tensor seg;
    ok = ok && fine_argmax_u8(&prob, &seg, &e) == 0;
    /* at x = 5: gA = g[5] (distance 1 from centre 4), gB = g[1] (distance 3): class 1 wins;
     * x = 7: gA distance 3, gB distance 1 -> class 2 */
    uint8_t *sg = ok ? seg.data : NULL;
    tap_ok(t, ok && sg[5] == 1 && sg[6] == 1 && sg[7] == 2 && sg[11] == 2,
           "argmax follows the nearer tile centre");
    fine_tensor_free(&seg);
    fine_tensor_free(&prob);
    fine_tensor_free(&A);
    fine_tensor_free(&B);
}

static void test_logits_and_errors(tap *t)
{
    int64_t P[3] = {2, 2, 2};
    fine_err e = {0};
    fine_tensor L, prob;
    const_tile(&L, 3, P, (float[]){1, 2, 3});
    fine_stitch s;
    int ok = fine_stitch_begin(&s, (int64_t[]){2, 2, 2}, 1, 1, &e) == 0 &&
             fine_stitch_add(&s, &L, (int64_t[]){0, 0, 0}, 1, &e) == 0 && fine_stitch_finish(&s, &prob, &e) == 0;
    double z = exp(1.0) + exp(2.0) + exp(3.0);
    const float *p = ok ? prob.data : NULL;
    tap_ok(t, ok && fabs(p[0] - exp(1.0) / z) < 1e-6 && fabs(p[8] - exp(2.0) / z) < 1e-6 &&
                  fabs(p[16] - exp(3.0) / z) < 1e-6,
           "logits get a softmax over the channels");
    fine_tensor_free(&prob);

    fine_stitch_begin(&s, (int64_t[]){2, 2, 5}, 1, 1, &e);
    fine_stitch_add(&s, &L, (int64_t[]){0, 0, 0}, 0, &e);
    tap_ok(t, fine_stitch_finish(&s, &prob, &e) < 0 && strstr(e.msg, "[0, 0, 2]"),
           "an uncovered voxel is reported: %s", e.msg);
    fine_tensor K2;
    const_tile(&K2, 2, P, (float[]){0, 1});
    fine_stitch_begin(&s, (int64_t[]){2, 2, 2}, 1, 1, &e);
    fine_stitch_add(&s, &L, (int64_t[]){0, 0, 0}, 0, &e);
    tap_ok(t, fine_stitch_add(&s, &K2, (int64_t[]){0, 0, 0}, 0, &e) < 0 && strstr(e.msg, "classes"),
           "a tile with another class count is refused: %s", e.msg);
    tap_ok(t, fine_stitch_add(&s, &L, (int64_t[]){0, 5, 0}, 0, &e) < 0 && strstr(e.msg, "outside"),
           "a tile outside the volume is refused: %s", e.msg);
    fine_stitch_free(&s);
    ((float *)L.data)[3] = NAN;
    ok = fine_stitch_begin(&s, (int64_t[]){2, 2, 2}, 1, 1, &e) == 0 &&
         fine_stitch_add(&s, &L, (int64_t[]){0, 0, 0}, 0, &e) == 0;
    tap_ok(t, ok && fine_stitch_finish(&s, &prob, &e) < 0 && strstr(e.msg, "finite"),
           "a NaN is refused: %s", e.msg);
    fine_tensor_free(&K2);
    fine_tensor_free(&L);

    /* f16 tiles */
    fine_tensor H;
    int64_t shape[4] = {2, 1, 1, 2};
    fine_tensor_alloc(&H, FINE_F16, 4, shape, &e);
    uint16_t *h = H.data;
    h[0] = fine_f32_to_f16(0.25f), h[1] = fine_f32_to_f16(0.75f), h[2] = fine_f32_to_f16(0.75f),
    h[3] = fine_f32_to_f16(0.25f);
    ok = fine_stitch_begin(&s, (int64_t[]){1, 1, 2}, 0, 1, &e) == 0 &&
         fine_stitch_add(&s, &H, (int64_t[]){0, 0, 0}, 0, &e) == 0 && fine_stitch_finish(&s, &prob, &e) == 0;
    p = ok ? prob.data : NULL;
    tap_ok(t, ok && p[0] == 0.25f && p[1] == 0.75f && p[2] == 0.75f && p[3] == 0.25f, "f16 tiles are read");
    fine_tensor seg;
    fine_tensor_free(&H);
    /* argmax ties: the first class wins */
    p = NULL;
    if (ok) {
        float *q = prob.data;
        q[0] = q[2] = 0.5f;
        ok = fine_argmax_u8(&prob, &seg, &e) == 0;
        tap_ok(t, ok && ((uint8_t *)seg.data)[0] == 0 && ((uint8_t *)seg.data)[1] == 0,
               "argmax: a tie goes to the first class, as numpy");
        fine_tensor_free(&seg);
    }
    fine_tensor_free(&prob);
}

static void test_paste(tap *t)
{
    fine_geometry g;
    memset(&g, 0, sizeof g);
    int64_t os[3] = {4, 5, 6}, lo[3] = {1, 2, 3}, hi[3] = {3, 5, 5};
    for (int d = 0; d < 3; d++) {
        g.original_size[d] = os[d];
        g.crop_lo[d] = lo[d];
        g.crop_hi[d] = hi[d];
        g.size[d] = hi[d] - lo[d];
    }
    fine_err e = {0};
    fine_tensor crop, out;
    fine_tensor_alloc(&crop, FINE_U8, 3, (int64_t[]){2, 3, 2}, &e);
    for (int i = 0; i < 12; i++)
        ((uint8_t *)crop.data)[i] = (uint8_t)(i + 1);
    int ok = fine_paste_crop(&crop, &g, 0, &out, &e) == 0;
    int good = ok && out.shape[0] == 4 && out.shape[1] == 5 && out.shape[2] == 6;
    for (int z = 0; good && z < 4; z++)
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 6; x++) {
                int in = z >= 1 && z < 3 && y >= 2 && y < 5 && x >= 3 && x < 5;
                int want = in ? ((z - 1) * 3 + (y - 2)) * 2 + (x - 3) + 1 : 0;
                good = good && ((uint8_t *)out.data)[(z * 5 + y) * 6 + x] == want;
            }
    tap_ok(t, good, "paste: the crop at crop_lo, zeros elsewhere");
    fine_tensor_free(&out);
    fine_tensor_free(&crop);
    /* probabilities: channel 0 is 1 outside the box */
    fine_tensor_alloc(&crop, FINE_F32, 4, (int64_t[]){2, 2, 3, 2}, &e);
    for (int i = 0; i < 24; i++)
        ((float *)crop.data)[i] = 0.5f;
    ok = fine_paste_crop(&crop, &g, 1.0, &out, &e) == 0;
    const float *p = ok ? out.data : NULL;
    tap_ok(t, ok && p[0] == 1.0f && p[120] == 0.0f && p[(1 * 5 + 2) * 6 + 3] == 0.5f &&
                  p[120 + (1 * 5 + 2) * 6 + 3] == 0.5f,
           "paste probabilities: background 1 outside the box");
    fine_tensor_free(&out);
    fine_tensor_free(&crop);
    g.size[0] = 3;
    tap_ok(t, fine_stitch_is_unresampled(&g) == 0, "a size other than the box extent is resampled");
}

/* Python: scipy labels and nnU-Net's postprocessing of a volume, printed as numbers. */
static int64_t py_on_bytes(const char *src, const uint8_t *v, int64_t n, double *out, int64_t cap)
{
    char data[] = "/tmp/fine_test_data_XXXXXX", script[] = "/tmp/fine_test_py_XXXXXX";
    int fd = mkstemp(data), fs = mkstemp(script);
    if (fd < 0 || fs < 0)
        return -1;
    FILE *f = fdopen(fd, "wb");
    fwrite(v, 1, (size_t)n, f);
    fclose(f);
    f = fdopen(fs, "w");
    fputs(src, f);
    fclose(f);
    const char *py = getenv("FINE_PYTHON") ? getenv("FINE_PYTHON") : "/usr/bin/python3";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s %s", py, script, data);
    FILE *p = popen(cmd, "r");
    int64_t k = 0;
    if (p) {
        while (k < cap && fscanf(p, "%lf", &out[k]) == 1)
            k++;
        if (pclose(p) != 0)
            k = -1;
    } else {
        k = -1;
    }
    unlink(data);
    unlink(script);
    return k;
}

static void test_components_vs_scipy(tap *t)
{
    /* a 9x11x13 volume of classes 0..3, blobs made by thresholding noise so components vary */
    enum { Z = 9, Y = 11, X = 13, N = Z * Y * X };
    int64_t dims[3] = {Z, Y, X};
    uint8_t seg[N];
    for (int i = 0; i < N; i++) {
        uint64_t r = rnd() % 100;
        seg[i] = r < 45 ? 0 : r < 70 ? 1 : r < 90 ? 2 : 3;
    }
    static const char *src =
        "import sys, numpy as np\n"
        "from scipy.ndimage import label\n"
        "s = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(9, 11, 13)\n"
        "out = []\n"
        "for c in (1, 2, 3):\n"
        "    lm, n = label((s == c).astype(int))\n"
        "    out += [n] + list(np.bincount(lm.ravel(), minlength=n + 1)[1:])\n"
        "lm, n = label((s > 0).astype(int))\n"
        "out += [n] + list(lm.ravel())\n"
        "def keep_largest(image, classes):\n"
        "    image = image.copy()\n"
        "    for c in classes:\n"
        "        mask = np.isin(image, c)\n"
        "        lmap, num = label(mask.astype(int))\n"
        "        if num > 0:\n"
        "            sizes = {i: (lmap == i).sum() for i in range(1, num + 1)}\n"
        "            mx = max(sizes.values())\n"
        "            for i in range(1, num + 1):\n"
        "                if sizes[i] != mx:\n"
        "                    image[(lmap == i) & mask] = 0\n"
        "    return image\n"
        "out += list(keep_largest(s, [1, 2, 3]).ravel())\n"
        "out += list(keep_largest(s, [(1, 2, 3)]).ravel())\n"
        "out += list(keep_largest(s, [2]).ravel())\n"
        "print(*out)\n";
    int64_t cap = 4 * N + 4 * N;
    double *ref = malloc((size_t)cap * sizeof *ref);
    int64_t k = py_on_bytes(src, seg, N, ref, cap);
    if (!tap_ok(t, k > 0, "scipy reference ran")) {
        free(ref);
        return;
    }
    fine_err e = {0};
    int32_t *lab = malloc(N * sizeof *lab);
    int64_t *sizes, count, at = 0;
    /* per class: count and sizes, against scipy's labelling of seg == c */
    int ok = fine_cc_label(seg, dims, FINE_CC_BY_VALUE, lab, &count, &sizes, &e) == 0;
    int64_t total = 0;
    for (int c = 1; ok && c <= 3; c++) {
        int64_t n = (int64_t)ref[at++];
        /* sizes of this class's components in first-voxel order */
        int64_t m = 0, match = 1;
        for (int64_t l = 1; l <= count; l++) {
            int64_t first = -1;
            for (int i = 0; i < N && first < 0; i++)
                if (lab[i] == l)
                    first = i;
            if (seg[first] != c)
                continue;
            match = match && m < n && sizes[l] == (int64_t)ref[at + m];
            m++;
        }
        ok = ok && match && m == n;
        at += n;
        total += n;
    }
    tap_ok(t, ok && total == count, "by value: %lld components, per class the counts and sizes of scipy's label",
           (long long)count);
    free(sizes);
    ok = fine_cc_label(seg, dims, FINE_CC_FOREGROUND, lab, &count, &sizes, &e) == 0 && count == (int64_t)ref[at];
    at++;
    for (int i = 0; ok && i < N; i++)
        ok = lab[i] == (int32_t)ref[at + i];
    at += N;
    tap_ok(t, ok, "foreground: the same label image as scipy.ndimage.label (%lld components)", (long long)count);
    free(sizes);
    uint8_t work[N];
    memcpy(work, seg, N);
    int64_t removed;
    ok = fine_cc_keep_largest_per_class(work, dims, NULL, &removed, &e) == 0;
    int64_t diff = 0;
    for (int i = 0; i < N; i++)
        diff += work[i] != (uint8_t)ref[at + i];
    at += N;
    tap_ok(t, ok && diff == 0 && removed > 0, "largest component per class equals nnU-Net's (%lld removed)",
           (long long)removed);
    memcpy(work, seg, N);
    ok = fine_cc_keep_largest_foreground(work, dims, &removed, &e) == 0;
    diff = 0;
    for (int i = 0; i < N; i++)
        diff += work[i] != (uint8_t)ref[at + i];
    at += N;
    tap_ok(t, ok && diff == 0, "largest foreground component equals nnU-Net's joint-class mode (%lld removed)",
           (long long)removed);
    memcpy(work, seg, N);
    uint8_t keep[256] = {0};
    keep[2] = 1;
    ok = fine_cc_keep_largest_per_class(work, dims, keep, &removed, &e) == 0;
    diff = 0;
    for (int i = 0; i < N; i++)
        diff += work[i] != (uint8_t)ref[at + i];
    tap_ok(t, ok && diff == 0, "only class 2 postprocessed (%lld removed)", (long long)removed);
    free(lab);
    free(ref);
}

static void test_components_by_hand(tap *t)
{
    /* 1x3x5: class 1 at x 0,1 (size 2) and x 3,4 (size 2): a tie keeps both (nnU-Net removes
     * only components whose size differs from the largest); class 2 at row 2: one component */
    uint8_t s[15] = {1, 1, 0, 1, 1, /**/ 0, 0, 0, 0, 0, /**/ 2, 2, 2, 0, 2};
    int64_t dims[3] = {1, 3, 5}, removed;
    fine_err e = {0};
    uint8_t w[15];
    memcpy(w, s, 15);
    int ok = fine_cc_keep_largest_per_class(w, dims, NULL, &removed, &e) == 0;
    tap_ok(t, ok && memcmp(w, s, 10) == 0 && w[14] == 0 && removed == 1,
           "ties are all kept; the smaller class-2 piece goes");
    /* diagonal neighbours are not 6-connected */
    uint8_t d[8] = {1, 0, 0, 1, 0, 0, 0, 0};
    int64_t dd[3] = {2, 2, 2}, count, *sizes;
    int32_t lab[8];
    ok = fine_cc_label(d, dd, FINE_CC_BY_VALUE, lab, &count, &sizes, &e) == 0;
    tap_ok(t, ok && count == 2 && lab[0] == 1 && lab[3] == 2, "diagonal voxels are two components");
    free(sizes);
    /* different classes touching are separate by value, one in foreground mode */
    uint8_t f[2] = {1, 2};
    int64_t fd[3] = {1, 1, 2};
    ok = fine_cc_label(f, fd, FINE_CC_BY_VALUE, lab, &count, &sizes, &e) == 0 && count == 2;
    free(sizes);
    ok = ok && fine_cc_label(f, fd, FINE_CC_FOREGROUND, lab, &count, &sizes, &e) == 0 && count == 1;
    free(sizes);
    tap_ok(t, ok, "touching classes: 2 components by value, 1 as foreground");
}

int main(void)
{
    tap t = {0};
    test_single_tile(&t);
    test_overlap_weights(&t);
    test_logits_and_errors(&t);
    test_paste(&t);
    test_components_by_hand(&t);
    test_components_vs_scipy(&t);
    return tap_done(&t);
}
