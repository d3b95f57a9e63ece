/* test_synth.c: the synthetic case generator (lib/synth.c) against its specification:
 * determinism (same seed and serial, same bytes; another seed or serial, other bytes), every
 * organ 1..13 present with a non-trivial voxel count at scale 0.25, plausible intensities,
 * the left/right convention of synth.h (right-sided organs at small x), the spacing and grid
 * ranges at scale 1, the physical extent kept across scales, and a geometry whose qform and
 * sform agree. The expected values come from the specification (BCV-like ranges), not from
 * running the generator. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "synth.h"
#include "tap.h"

typedef struct stats {
    int64_t count[FINE_SYNTH_LABELS];
    double mean_hu[FINE_SYNTH_LABELS];
    double cx[FINE_SYNTH_LABELS], cy[FINE_SYNTH_LABELS],
        cz[FINE_SYNTH_LABELS]; /* voxel centroids */
    int64_t n[3];
} stats;

static int render(uint64_t seed, int serial, double scale, fine_dtype dt, fine_tensor *im,
                  fine_tensor *lb, fine_geometry *g)
{
    fine_synth_opts o;
    fine_synth_opts_init(&o);
    o.seed = seed;
    o.scale = scale;
    o.image_dtype = dt;
    fine_err e = {0};
    if (fine_synth_case(&o, serial, im, lb, g, &e) < 0) {
        printf("# fine_synth_case: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static void measure(const fine_tensor *im, const fine_tensor *lb, stats *s)
{
    memset(s, 0, sizeof *s);
    for (int d = 0; d < 3; d++)
        s->n[d] = lb->shape[d];
    const uint8_t *L = lb->data;
    int64_t nx = s->n[2], ny = s->n[1], nz = s->n[0];
    for (int64_t k = 0; k < nz; k++)
        for (int64_t j = 0; j < ny; j++)
            for (int64_t i = 0; i < nx; i++) {
                int64_t idx = (k * ny + j) * nx + i;
                int l = L[idx] < FINE_SYNTH_LABELS ? L[idx] : 0;
                s->count[l]++;
                s->mean_hu[l] += fine_tensor_get(im, idx);
                s->cx[l] += (double)i;
                s->cy[l] += (double)j;
                s->cz[l] += (double)k;
            }
    for (int l = 0; l < FINE_SYNTH_LABELS; l++)
        if (s->count[l]) {
            double c = (double)s->count[l];
            s->mean_hu[l] /= c;
            s->cx[l] /= c;
            s->cy[l] /= c;
            s->cz[l] /= c;
        }
}

static void test_determinism(tap *t)
{
    fine_tensor a, b, c, d, x, y, p, q;
    fine_geometry ga, gb, gc, gp;
    if (render(7, 3, 0.15, FINE_I16, &a, &b, &ga) < 0 ||
        render(7, 3, 0.15, FINE_I16, &c, &d, &gb) < 0 ||
        render(8, 3, 0.15, FINE_I16, &x, &y, &gc) < 0 ||
        render(7, 4, 0.15, FINE_I16, &p, &q, &gp) < 0) {
        tap_ok(t, 0, "render four small cases");
        return;
    }
    tap_ok(t, a.dtype == FINE_I16 && b.dtype == FINE_U8 && a.ndim == 3 && b.ndim == 3,
           "image is i16, label is u8, both 3-D");
    tap_ok(t, memcmp(a.shape, b.shape, sizeof a.shape) == 0, "image and label shapes agree");
    tap_ok(t,
           memcmp(a.data, c.data, fine_tensor_nbytes(&a)) == 0 &&
               memcmp(b.data, d.data, fine_tensor_nbytes(&b)) == 0 &&
               memcmp(&ga, &gb, sizeof ga) == 0,
           "same seed and serial: same image, label and geometry bytes");
    int differs = fine_tensor_nbytes(&a) != fine_tensor_nbytes(&x) ||
                  memcmp(a.data, x.data, fine_tensor_nbytes(&a)) != 0;
    tap_ok(t, differs, "another seed gives another image");
    differs = fine_tensor_nbytes(&a) != fine_tensor_nbytes(&p) ||
              memcmp(a.data, p.data, fine_tensor_nbytes(&a)) != 0;
    tap_ok(t, differs, "another serial gives another image");
    fine_tensor *all[] = {&a, &b, &c, &d, &x, &y, &p, &q};
    for (int i = 0; i < 8; i++)
        fine_tensor_free(all[i]);

    /* f32 output is the same picture before rounding: rounding it gives the i16 image */
    fine_tensor f, fl;
    fine_geometry gf;
    if (render(7, 3, 0.15, FINE_F32, &f, &fl, &gf) == 0 &&
        render(7, 3, 0.15, FINE_I16, &a, &b, &ga) == 0) {
        int64_t n = fine_tensor_numel(&a), bad = 0;
        for (int64_t i = 0; i < n; i++) {
            double v = fine_tensor_get(&f, i);
            v = v < -1024 ? -1024 : v > 3071 ? 3071 : v;
            if (fabs(v - fine_tensor_get(&a, i)) > 0.5 + 1e-3)
                bad++;
        }
        tap_ok(t,
               f.dtype == FINE_F32 && bad == 0 &&
                   memcmp(fl.data, b.data, fine_tensor_nbytes(&b)) == 0,
               "f32 image rounds to the i16 image (%lld voxels off), same labels", (long long)bad);
        fine_tensor_free(&a);
        fine_tensor_free(&b);
        fine_tensor_free(&f);
        fine_tensor_free(&fl);
    } else {
        tap_ok(t, 0, "f32 image rounds to the i16 image");
    }
}

/* Every organ present, on its documented side, at scale 0.25, over several seeds and serials. */
static void test_organs_and_sides(tap *t)
{
    const uint64_t seeds[] = {0, 1, 12345};
    const int serials[] = {1, 2, 9, 21, 33, 40};
    int64_t min_count[FINE_SYNTH_LABELS];
    for (int l = 0; l < FINE_SYNTH_LABELS; l++)
        min_count[l] = INT64_MAX;
    int side_ok = 1, cranial_ok = 1, posterior_ok = 1, ncase = 0;
    for (size_t a = 0; a < sizeof seeds / sizeof *seeds; a++)
        for (size_t b = 0; b < sizeof serials / sizeof *serials; b++) {
            fine_tensor im, lb;
            fine_geometry g;
            if (render(seeds[a], serials[b], 0.25, FINE_I16, &im, &lb, &g) < 0) {
                tap_ok(t, 0, "render seed %llu case %d", (unsigned long long)seeds[a], serials[b]);
                return;
            }
            stats s;
            measure(&im, &lb, &s);
            ncase++;
            for (int l = 1; l < FINE_SYNTH_LABELS; l++)
                if (s.count[l] < min_count[l])
                    min_count[l] = s.count[l];
            double mid = (double)(s.n[2] - 1) / 2;
            /* x grows toward the patient's left: right-sided organs at small x */
            const int right[] = {2, 4, 6, 9, 12}, left[] = {1, 3, 7, 13};
            for (int i = 0; i < 5; i++)
                if (!(s.cx[right[i]] < mid)) {
                    side_ok = 0;
                    printf("# seed %llu case %d: label %d at x %.1f, not right (< %.1f)\n",
                           (unsigned long long)seeds[a], serials[b], right[i], s.cx[right[i]], mid);
                }
            for (int i = 0; i < 4; i++)
                if (!(s.cx[left[i]] > mid)) {
                    side_ok = 0;
                    printf("# seed %llu case %d: label %d at x %.1f, not left (> %.1f)\n",
                           (unsigned long long)seeds[a], serials[b], left[i], s.cx[left[i]], mid);
                }
            if (!(s.cx[2] < s.cx[8] && s.cx[8] < s.cx[3]))
                side_ok = 0;
            /* z grows toward superior: liver above the kidneys; the adrenals above their kidney */
            if (!(s.cz[6] > s.cz[2] && s.cz[6] > s.cz[3] && s.cz[12] > s.cz[2] &&
                  s.cz[13] > s.cz[3]))
                cranial_ok = 0;
            /* y grows toward posterior: kidneys behind the liver's centre, pancreas in front of
             * the aorta, bone (> 500 HU) behind the aorta */
            double by = 0, bn = 0;
            int64_t nx = s.n[2], ny = s.n[1], nv = fine_tensor_numel(&im);
            for (int64_t i = 0; i < nv; i++)
                if (fine_tensor_get(&im, i) > 500) {
                    by += (double)((i / nx) % ny);
                    bn++;
                }
            if (!(s.cy[2] > s.cy[6] && s.cy[3] > s.cy[7] && s.cy[11] < s.cy[8] && bn > 0 &&
                  by / bn > s.cy[8]))
                posterior_ok = 0;
            fine_tensor_free(&im);
            fine_tensor_free(&lb);
        }
    int all = 1;
    for (int l = 1; l < FINE_SYNTH_LABELS; l++) {
        if (min_count[l] < 15)
            all = 0;
        printf("# label %2d %-28s at least %lld voxels in %d cases at scale 0.25\n", l,
               fine_synth_label_name(l), (long long)min_count[l], ncase);
    }
    tap_ok(t, all, "every label 1..13 has at least 15 voxels in each of %d cases at scale 0.25",
           ncase);
    tap_ok(t, side_ok,
           "right kidney, liver, gallbladder, IVC, right adrenal at small x; left "
           "kidney, spleen, stomach, left adrenal at large x; aorta between kidneys");
    tap_ok(t, cranial_ok, "z grows toward the head (liver above kidneys, adrenals above kidneys)");
    tap_ok(t, posterior_ok,
           "y grows toward the back (kidneys and spine behind, pancreas in front "
           "of the aorta)");
}

/* Intensities at scale 0.5, where partial volume is small for the large organs. */
static void test_intensities(tap *t)
{
    fine_tensor im, lb;
    fine_geometry g;
    int ok_range = 1, ok_means = 1;
    for (int serial = 1; serial <= 2; serial++) {
        if (render(3, serial, 0.5, FINE_I16, &im, &lb, &g) < 0) {
            tap_ok(t, 0, "render at scale 0.5");
            return;
        }
        stats s;
        measure(&im, &lb, &s);
        double lo, hi;
        fine_tensor_range(&im, &lo, &hi);
        if (!(lo >= -1024 && lo < -900 && hi > 400 && hi <= 3071))
            ok_range = 0;
        printf("# case %d: range [%g, %g]", serial, lo, hi);
        for (int l = 1; l < FINE_SYNTH_LABELS; l++)
            printf("%s %d:%.0f", l == 1 ? "; means" : "", l, s.mean_hu[l]);
        printf("\n");
        /* expected HU (portal venous phase CT), with room for partial volume and noise */
        static const double want[FINE_SYNTH_LABELS][2] = {
            [1] = {35, 75},  [2] = {100, 190}, [3] = {100, 190}, [4] = {-20, 35}, [5] = {15, 60},
            [6] = {45, 75},  [7] = {-400, 60}, [8] = {120, 230}, [9] = {75, 160}, [10] = {70, 180},
            [11] = {20, 60}, [12] = {-40, 60}, [13] = {-40, 60},
        };
        for (int l = 1; l < FINE_SYNTH_LABELS; l++)
            if (!(s.mean_hu[l] >= want[l][0] && s.mean_hu[l] <= want[l][1])) {
                ok_means = 0;
                printf("# case %d label %d mean %.1f outside [%g, %g]\n", serial, l, s.mean_hu[l],
                       want[l][0], want[l][1]);
            }
        /* the task needs context: paired organs look alike, spleen and liver overlap */
        if (fabs(s.mean_hu[2] - s.mean_hu[3]) > 15 || fabs(s.mean_hu[12] - s.mean_hu[13]) > 25 ||
            fabs(s.mean_hu[1] - s.mean_hu[6]) > 20) {
            ok_means = 0;
            printf("# case %d: kidneys %.0f/%.0f adrenals %.0f/%.0f spleen/liver %.0f/%.0f\n",
                   serial, s.mean_hu[2], s.mean_hu[3], s.mean_hu[12], s.mean_hu[13], s.mean_hu[1],
                   s.mean_hu[6]);
        }
        /* air outside the body: about -1000 with noise of 10-20 HU */
        const int16_t *I = im.data;
        double sum = 0, sum2 = 0;
        int64_t nx = s.n[2], m = 0;
        for (int64_t k = 0; k < s.n[0]; k++)
            for (int64_t j = 0; j < 8; j++)
                for (int64_t i = 0; i < 8; i++) {
                    double v = I[(k * s.n[1] + j) * nx + i];
                    if (v > -1024) { /* clamped voxels would bias the estimate */
                        sum += v;
                        sum2 += v * v;
                        m++;
                    }
                }
        double mean = sum / (double)m, sd = sqrt(sum2 / (double)m - mean * mean);
        if (!(fabs(mean + 1000) < 15 && sd > 4 && sd < 25)) {
            ok_means = 0;
            printf("# case %d: corner air mean %.1f sd %.1f\n", serial, mean, sd);
        }
        fine_tensor_free(&im);
        fine_tensor_free(&lb);
    }
    tap_ok(t, ok_range, "image values within [-1024, 3071], air near -1000, bone above 400 HU");
    tap_ok(t, ok_means,
           "organ means in BCV-like ranges; kidneys alike, adrenals alike, spleen "
           "close to liver; air noise 4-25 HU");
}

static void test_geometry(tap *t)
{
    fine_synth_opts o;
    fine_synth_opts_init(&o);
    fine_err e = {0};
    int ok = 1, ok_scale = 1, ok_aff = 1;
    for (uint64_t seed = 0; seed < 10; seed++)
        for (int i = 0; i < 30; i++) {
            int serial = fine_synth_serial(i);
            fine_geometry g1, g4;
            o.seed = seed;
            o.scale = 1;
            if (fine_synth_geometry(&o, serial, &g1, &e) < 0) {
                tap_ok(t, 0, "fine_synth_geometry: %s", e.msg);
                return;
            }
            o.scale = 0.25;
            fine_synth_geometry(&o, serial, &g4, &e);
            if (!(g1.size[1] == 512 && g1.size[2] == 512 && g1.size[0] >= 85 && g1.size[0] <= 198 &&
                  g1.spacing[0] >= 2.5 && g1.spacing[0] <= 5 && g1.spacing[1] >= 0.6 &&
                  g1.spacing[1] <= 1.0 && g1.spacing[2] == g1.spacing[1])) {
                ok = 0;
                printf("# seed %llu case %d: %lldx%lldx%lld at %g,%g,%g mm\n",
                       (unsigned long long)seed, serial, (long long)g1.size[0],
                       (long long)g1.size[1], (long long)g1.size[2], g1.spacing[0], g1.spacing[1],
                       g1.spacing[2]);
            }
            for (int d = 0; d < 3; d++)
                if (fabs((double)g1.size[d] * g1.spacing[d] - (double)g4.size[d] * g4.spacing[d]) >
                    1e-6)
                    ok_scale = 0;
            if (g4.size[1] != 128 || g4.size[2] != 128 || g4.size[0] < 21 || g4.size[0] > 50)
                ok_scale = 0;
            /* the qform (quaternion) and the sform are the same affine, diag(-sx, -sy, sz),
             * and voxel centres of the two grids cover the same box in the world */
            for (int v = 0; v < 2; v++) {
                fine_geometry *g = v ? &g4 : &g1;
                double s[4][4], q[4][4];
                fine_geometry_original_affine(g, s);
                int code = g->sform_code;
                g->sform_code = 0;
                fine_geometry_original_affine(g, q);
                g->sform_code = code;
                for (int r = 0; r < 3; r++)
                    for (int c = 0; c < 4; c++)
                        if (fabs(s[r][c] - q[r][c]) > 1e-6)
                            ok_aff = 0;
                if (!(g->qform_code == 1 && g->sform_code == 1 && s[0][0] < 0 && s[1][1] < 0 &&
                      s[2][2] > 0 && fabs(s[0][0] + g->spacing[2]) < 1e-9 &&
                      fabs(s[2][2] - g->spacing[0]) < 1e-9 && s[0][1] == 0 && s[0][2] == 0 &&
                      s[1][2] == 0 && s[2][0] == 0 && g->xyz_units == 2))
                    ok_aff = 0;
            }
            double a1[4][4], a4[4][4];
            fine_geometry_original_affine(&g1, a1);
            fine_geometry_original_affine(&g4, a4);
            for (int r = 0; r < 3; r++) { /* outer corner = first centre - half a voxel */
                double c1 = a1[r][3] - 0.5 * a1[r][r], c4 = a4[r][3] - 0.5 * a4[r][r];
                if (fabs(c1 - c4) > 1e-6)
                    ok_aff = 0;
            }
        }
    tap_ok(t, ok, "scale 1: 512x512 in-plane at 0.6-1.0 mm, 85-198 slices of 2.5-5 mm (300 cases)");
    tap_ok(t, ok_scale, "scale 0.25: 128x128, 21-50 slices, same physical extent as scale 1");
    tap_ok(t, ok_aff,
           "qform equals sform, diag(-sx, -sy, sz) in mm, same world box at both scales");

    /* fine_synth_case returns the geometry fine_synth_geometry promises */
    fine_tensor im, lb;
    fine_geometry gc, gg;
    o.seed = 5;
    o.scale = 0.1;
    int rc = fine_synth_case(&o, 22, &im, &lb, &gc, &e);
    fine_synth_geometry(&o, 22, &gg, &e);
    tap_ok(t,
           rc == 0 && memcmp(&gc, &gg, sizeof gc) == 0 && im.shape[0] == gc.size[0] &&
               im.shape[1] == gc.size[1] && im.shape[2] == gc.size[2],
           "fine_synth_case's geometry equals fine_synth_geometry's, and fits the arrays");
    if (rc == 0) {
        fine_tensor_free(&im);
        fine_tensor_free(&lb);
    }
}

/* The same anatomy in millimetres at two scales: organ centroids agree within a few mm. */
static void test_scale_consistency(tap *t)
{
    fine_tensor a, b, c, d;
    fine_geometry ga, gb;
    if (render(11, 5, 0.25, FINE_I16, &a, &b, &ga) < 0 ||
        render(11, 5, 0.5, FINE_I16, &c, &d, &gb) < 0) {
        tap_ok(t, 0, "render at two scales");
        return;
    }
    stats s1, s2;
    measure(&a, &b, &s1);
    measure(&c, &d, &s2);
    double worst = 0;
    const int big[] = {1, 2, 3, 6, 7, 8, 9};
    for (int i = 0; i < 7; i++) {
        int l = big[i];
        double d1[3] = {(s1.cz[l] + 0.5) * ga.spacing[0], (s1.cy[l] + 0.5) * ga.spacing[1],
                        (s1.cx[l] + 0.5) * ga.spacing[2]};
        double d2[3] = {(s2.cz[l] + 0.5) * gb.spacing[0], (s2.cy[l] + 0.5) * gb.spacing[1],
                        (s2.cx[l] + 0.5) * gb.spacing[2]};
        double dist = sqrt((d1[0] - d2[0]) * (d1[0] - d2[0]) + (d1[1] - d2[1]) * (d1[1] - d2[1]) +
                           (d1[2] - d2[2]) * (d1[2] - d2[2]));
        if (dist > worst)
            worst = dist;
    }
    tap_ok(t, worst < 8, "organ centroids at scale 0.25 and 0.5 agree within 8 mm (worst %.1f mm)",
           worst);
    fine_tensor_free(&a);
    fine_tensor_free(&b);
    fine_tensor_free(&c);
    fine_tensor_free(&d);
}

static void test_misc(tap *t)
{
    static const int want[30] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 21, 22, 23, 24, 25,
                                 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40};
    int ok = 1;
    for (int i = 0; i < 30; i++)
        ok &= fine_synth_serial(i) == want[i];
    tap_ok(t, ok && fine_synth_serial(30) == 41, "default serials: 1-10, 21-40, then 41");
    tap_ok(t,
           strcmp(fine_synth_label_name(0), "background") == 0 &&
               strcmp(fine_synth_label_name(2), "right kidney") == 0 &&
               strcmp(fine_synth_label_name(10), "portal vein and splenic vein") == 0 &&
               strcmp(fine_synth_label_name(13), "left adrenal gland") == 0 &&
               fine_synth_label_name(14) == NULL && fine_synth_label_name(-1) == NULL,
           "label names follow the BCV label map");
    fine_synth_opts o;
    fine_synth_opts_init(&o);
    fine_tensor im, lb;
    fine_geometry g;
    fine_err e = {0};
    o.scale = 0;
    int r1 = fine_synth_case(&o, 1, &im, &lb, &g, &e);
    int m1 = strstr(e.msg, "scale") != NULL;
    o.scale = 0.25;
    int r2 = fine_synth_case(&o, 0, &im, &lb, &g, &e);
    o.image_dtype = FINE_U8;
    int r3 = fine_synth_geometry(&o, 1, &g, &e);
    tap_ok(t, r1 < 0 && m1 && r2 < 0 && r3 < 0 && im.data == NULL && lb.data == NULL,
           "bad scale, serial or dtype: -1 with a message, nothing allocated");
}

int main(void)
{
    tap t = {0, 0};
    test_determinism(&t);
    test_organs_and_sides(&t);
    test_intensities(&t);
    test_geometry(&t);
    test_scale_consistency(&t);
    test_misc(&t);
    return tap_done(&t);
}
