/* test_metrics: the exact distance transform against brute force; borders, percentiles and
 * surface distances against direct definitions and numpy's values; per-label metrics (counts,
 * NaN conventions, the bounding-box shortcut, every dtype); case keys, label lists, means and
 * grid checks of evaluate.h. The Python cross-checks against scipy/medpy semantics are in
 * tests/bats/dice.bats. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "metrics.h"
#include "tap.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_u64(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static double uniform(void)
{
    return (double)(next_u64() >> 11) / 9007199254740992.0;
}

static int close_rel(double a, double b, double rel)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    return fabs(a - b) <= rel * fmax(fabs(b), 1e-300) || a == b;
}

/* Random mask with about a fraction p of voxels set. */
static void random_mask(uint8_t *m, int64_t n, double p)
{
    for (int64_t i = 0; i < n; i++)
        m[i] = uniform() < p;
}

/* Ellipsoid blob(s) plus noise: masks with real surfaces. */
static void blob_mask(uint8_t *m, const int64_t s[3], double noise)
{
    double c[3], r[3];
    for (int d = 0; d < 3; d++) {
        c[d] = uniform() * (double)s[d];
        r[d] = 1 + uniform() * (double)s[d] / 2;
    }
    for (int64_t z = 0; z < s[0]; z++)
        for (int64_t y = 0; y < s[1]; y++)
            for (int64_t x = 0; x < s[2]; x++) {
                double dz = (z - c[0]) / r[0], dy = (y - c[1]) / r[1], dx = (x - c[2]) / r[2];
                int64_t i = (z * s[1] + y) * s[2] + x;
                m[i] = dz * dz + dy * dy + dx * dx <= 1;
                if (uniform() < noise)
                    m[i] ^= 1;
            }
}

static double brute_sq(const uint8_t *f, const int64_t s[3], const double sp[3], int64_t z, int64_t y, int64_t x)
{
    double best = INFINITY;
    for (int64_t k = 0; k < s[0]; k++)
        for (int64_t j = 0; j < s[1]; j++)
            for (int64_t i = 0; i < s[2]; i++)
                if (f[(k * s[1] + j) * s[2] + i]) {
                    double dz = (double)(k - z) * sp[0], dy = (double)(j - y) * sp[1], dx = (double)(i - x) * sp[2];
                    double d = dz * dz + dy * dy + dx * dx;
                    if (d < best)
                        best = d;
                }
    return best;
}

static void test_edt(tap *t)
{
    fine_err e = {0};
    int ok_all = 1, trials = 0;
    for (int trial = 0; trial < 60; trial++) {
        int64_t s[3] = {1 + (int64_t)(uniform() * 9), 1 + (int64_t)(uniform() * 11), 1 + (int64_t)(uniform() * 13)};
        double sp[3] = {0.3 + uniform() * 4, 0.3 + uniform() * 2, 0.3 + uniform() * 2};
        if (trial % 5 == 0)
            sp[0] = sp[1] = sp[2] = 1;
        int64_t n = s[0] * s[1] * s[2];
        uint8_t *f = malloc((size_t)n);
        double *out = malloc((size_t)n * sizeof *out);
        double p = trial % 4 == 0 ? 0.01 : trial % 4 == 1 ? 0.1 : trial % 4 == 2 ? 0.5 : 0.9;
        random_mask(f, n, p);
        if (trial == 7)
            memset(f, 0, (size_t)n); /* no feature: all infinite */
        if (trial == 8) {
            memset(f, 0, (size_t)n);
            f[n / 2] = 1; /* one feature */
        }
        if (fine_edt_sq(f, s, sp, out, &e) < 0)
            ok_all = 0;
        for (int64_t z = 0; z < s[0] && ok_all; z++)
            for (int64_t y = 0; y < s[1]; y++)
                for (int64_t x = 0; x < s[2]; x++) {
                    double want = brute_sq(f, s, sp, z, y, x), got = out[(z * s[1] + y) * s[2] + x];
                    if (!close_rel(got, want, 1e-12)) {
                        printf("# edt %lldx%lldx%lld at (%lld,%lld,%lld): %.17g, brute force %.17g\n",
                               (long long)s[0], (long long)s[1], (long long)s[2], (long long)z, (long long)y,
                               (long long)x, got, want);
                        ok_all = 0;
                    }
                }
        free(f), free(out);
        trials++;
    }
    tap_ok(t, ok_all, "EDT equals brute force on %d random volumes (anisotropic, empty, one feature)", trials);

    /* a hand case: features at the two ends of a 1x1x5 row, spacing 2 -> 0 4 16 4 0 */
    int64_t s[3] = {1, 1, 5};
    double sp[3] = {1, 1, 2}, out[5];
    uint8_t f[5] = {1, 0, 0, 0, 1};
    fine_edt_sq(f, s, sp, out, &e);
    tap_ok(t, out[0] == 0 && out[1] == 4 && out[2] == 16 && out[3] == 4 && out[4] == 0,
           "EDT row by hand: %g %g %g %g %g", out[0], out[1], out[2], out[3], out[4]);
}

static void test_border(tap *t)
{
    int ok = 1;
    for (int trial = 0; trial < 20 && ok; trial++) {
        int64_t s[3] = {1 + (int64_t)(uniform() * 7), 1 + (int64_t)(uniform() * 8), 1 + (int64_t)(uniform() * 9)};
        int64_t n = s[0] * s[1] * s[2];
        uint8_t *m = malloc((size_t)n), *b = malloc((size_t)n);
        random_mask(m, n, 0.3 + 0.6 * uniform());
        int64_t count = fine_mask_border(m, s, b), want_count = 0;
        for (int64_t z = 0; z < s[0]; z++)
            for (int64_t y = 0; y < s[1]; y++)
                for (int64_t x = 0; x < s[2]; x++) {
                    int64_t i = (z * s[1] + y) * s[2] + x;
                    /* eroded: the voxel and its 6 neighbours set, outside counting as unset */
                    int64_t c[3] = {z, y, x}, eroded = m[i];
                    for (int d = 0; d < 3; d++)
                        for (int sgn = -1; sgn <= 1; sgn += 2) {
                            int64_t q[3] = {c[0], c[1], c[2]};
                            q[d] += sgn;
                            if (q[d] < 0 || q[d] >= s[d] || !m[(q[0] * s[1] + q[1]) * s[2] + q[2]])
                                eroded = 0;
                        }
                    uint8_t want = m[i] && !eroded;
                    want_count += want;
                    if (b[i] != want)
                        ok = 0;
                }
        ok &= count == want_count;
        free(m), free(b);
    }
    tap_ok(t, ok, "border = mask minus its 6-connected erosion (edge voxels are border)");
    int64_t s[3] = {3, 3, 3};
    uint8_t full[27], b[27];
    memset(full, 1, sizeof full);
    int64_t c = fine_mask_border(full, s, b);
    tap_ok(t, c == 26 && b[13] == 0, "a full 3x3x3 mask has 26 border voxels, the centre is inside");
}

static void test_percentile(tap *t)
{
    /* values from numpy.percentile(v, 95) */
    double a[] = {1, 2, 3, 4}, b[] = {5}, c[] = {0, 10}, d[21], e[] = {3, 1, 2}, f[] = {0.5, 0.25, 7, 7, 7, 1e-3, 2};
    for (int i = 0; i < 21; i++)
        d[i] = 20 - i;
    tap_ok(t, fine_percentile(a, 4, 95) == 3.8499999999999996, "percentile [1,2,3,4] = 3.85 (numpy)");
    tap_ok(t, fine_percentile(b, 1, 95) == 5, "percentile of one value");
    tap_ok(t, fine_percentile(c, 2, 95) == 9.5, "percentile [0,10] = 9.5");
    tap_ok(t, fine_percentile(d, 21, 95) == 19, "percentile 0..20 reversed = 19");
    tap_ok(t, close_rel(fine_percentile(e, 3, 95), 2.9, 1e-15), "percentile [3,1,2] = 2.9");
    tap_ok(t, fine_percentile(f, 7, 95) == 7, "percentile with ties = 7");
    tap_ok(t, isnan(fine_percentile(a, 0, 95)), "percentile of nothing is NaN");
    /* a large random array against a sort */
    int64_t n = 10007;
    double *v = malloc((size_t)n * sizeof *v), *w = malloc((size_t)n * sizeof *w);
    for (int64_t i = 0; i < n; i++)
        v[i] = w[i] = floor(uniform() * 500) / 7; /* many ties */
    for (int64_t i = 1; i < n; i++) /* insertion sort: independent of the quickselect */
        for (int64_t j = i; j > 0 && w[j - 1] > w[j]; j--) {
            double tmp = w[j];
            w[j] = w[j - 1];
            w[j - 1] = tmp;
        }
    double rank = 0.95 * (double)(n - 1), lo = floor(rank);
    double want = w[(int64_t)lo] + (rank - lo) * (w[(int64_t)lo + 1] - w[(int64_t)lo]);
    tap_ok(t, close_rel(fine_percentile(v, n, 95), want, 1e-14), "percentile of 10007 values with ties");
    free(v), free(w);
}

/* medpy's distances by brute force: every border voxel against every border voxel. */
static void brute_surface(const uint8_t *a, const uint8_t *b, const int64_t s[3], const double sp[3],
                          double *hd95, double *assd)
{
    int64_t n = s[0] * s[1] * s[2];
    uint8_t *ba = malloc((size_t)n), *bb = malloc((size_t)n);
    fine_mask_border(a, s, ba);
    fine_mask_border(b, s, bb);
    double *d = malloc((size_t)(2 * n) * sizeof *d);
    int64_t nd = 0;
    double sum[2] = {0, 0};
    int64_t cnt[2] = {0, 0};
    for (int dir = 0; dir < 2; dir++) {
        const uint8_t *from = dir ? bb : ba, *to = dir ? ba : bb;
        for (int64_t z = 0; z < s[0]; z++)
            for (int64_t y = 0; y < s[1]; y++)
                for (int64_t x = 0; x < s[2]; x++)
                    if (from[(z * s[1] + y) * s[2] + x]) {
                        double v = sqrt(brute_sq(to, s, sp, z, y, x));
                        d[nd++] = v;
                        sum[dir] += v;
                        cnt[dir]++;
                    }
    }
    *assd = (sum[0] / cnt[0] + sum[1] / cnt[1]) / 2;
    for (int64_t i = 1; i < nd; i++)
        for (int64_t j = i; j > 0 && d[j - 1] > d[j]; j--) {
            double tmp = d[j];
            d[j] = d[j - 1];
            d[j - 1] = tmp;
        }
    double rank = 0.95 * (double)(nd - 1);
    int64_t lo = (int64_t)floor(rank);
    *hd95 = lo + 1 < nd ? d[lo] + (rank - (double)lo) * (d[lo + 1] - d[lo]) : d[lo];
    free(ba), free(bb), free(d);
}

static void test_surface(tap *t)
{
    fine_err e = {0};
    int ok = 1, trials = 0;
    for (int trial = 0; trial < 30; trial++) {
        int64_t s[3] = {2 + (int64_t)(uniform() * 8), 2 + (int64_t)(uniform() * 10), 2 + (int64_t)(uniform() * 10)};
        double sp[3] = {0.5 + uniform() * 3, 0.5 + uniform(), 0.5 + uniform()};
        int64_t n = s[0] * s[1] * s[2];
        uint8_t *a = malloc((size_t)n), *b = malloc((size_t)n);
        blob_mask(a, s, 0.03);
        blob_mask(b, s, 0.03);
        if (trial == 3)
            memset(a, 1, (size_t)n); /* full: medpy computes it (nnU-Net's NaN is applied above) */
        if (trial == 4) {
            memset(a, 0, (size_t)n);
            a[n - 1] = 1; /* one voxel */
        }
        if (trial == 5) {
            memset(a, 0, (size_t)n);
            memset(b, 0, (size_t)n);
            a[0] = 1;
            b[n - 1] = 1; /* two single voxels in opposite corners */
        }
        if (trial != 5) { /* never empty */
            a[0] |= trial > 5;
            b[n / 3] |= 1;
        }
        fine_surface_dist sd;
        double hd95, assd;
        if (fine_surface_distances(a, b, s, sp, &sd, &e) < 0)
            ok = 0;
        brute_surface(a, b, s, sp, &hd95, &assd);
        if (!close_rel(sd.hd95, hd95, 1e-12) || !close_rel(sd.assd, assd, 1e-12)) {
            printf("# trial %d: hd95 %.17g brute %.17g, assd %.17g brute %.17g\n", trial, sd.hd95, hd95, sd.assd, assd);
            ok = 0;
        }
        if (trial == 5) {
            double dz = (double)(s[0] - 1) * sp[0], dy = (double)(s[1] - 1) * sp[1], dx = (double)(s[2] - 1) * sp[2];
            double want = sqrt(dz * dz + dy * dy + dx * dx);
            tap_ok(t, close_rel(sd.hd95, want, 1e-14) && close_rel(sd.assd, want, 1e-14),
                   "two single voxels: HD95 = ASSD = their distance in mm (%g)", want);
        }
        free(a), free(b);
        trials++;
    }
    tap_ok(t, ok, "HD95 and ASSD equal brute force on %d random mask pairs (full, single voxel)", trials);

    int64_t s[3] = {4, 4, 4};
    double sp[3] = {1, 1, 1};
    uint8_t a[64] = {0}, b[64] = {0};
    b[5] = 1;
    fine_surface_dist sd;
    fine_surface_distances(a, b, s, sp, &sd, &e);
    tap_ok(t, isnan(sd.hd95) && isnan(sd.assd), "an empty mask gives NaN");
    memcpy(a, b, sizeof a);
    fine_surface_distances(a, b, s, sp, &sd, &e);
    tap_ok(t, sd.hd95 == 0 && sd.assd == 0, "identical masks give 0");
}

/* Label volumes: 3 labels on a small grid, with every convention exercised. */
static void test_labels(tap *t)
{
    fine_err e = {0};
    int64_t shape[3] = {6, 7, 8};
    int64_t n = 6 * 7 * 8;
    fine_tensor p, r;
    fine_tensor_alloc(&p, FINE_U8, 3, shape, &e);
    fine_tensor_alloc(&r, FINE_U8, 3, shape, &e);
    uint8_t *pd = p.data, *rd = r.data;
    uint8_t *m1 = malloc((size_t)n), *m2 = malloc((size_t)n);
    blob_mask(m1, shape, 0.02);
    blob_mask(m2, shape, 0.02);
    m1[10] = 1, m2[11] = 1;
    for (int64_t i = 0; i < n; i++) {
        pd[i] = m1[i] ? 1 : 0;
        rd[i] = m2[i] ? 1 : 0;
    }
    pd[n - 1] = 2;      /* label 2 only in the prediction */
    rd[n - 2] = 3;      /* label 3 only in the reference */
    pd[n - 3] = 9;      /* label 9 is not asked for */
    int64_t labels[5] = {1, 2, 3, 4, 9};
    fine_label_metrics m[5];
    double sp[3] = {2.5, 0.7, 0.8};
    int rc = fine_label_metrics_compute(&p, &r, sp, labels, 4, m, &e);
    tap_ok(t, rc == 0, "label metrics computed (%s)", rc ? e.msg : "ok");
    int64_t tp = 0, fp = 0, fn = 0;
    for (int64_t i = 0; i < n; i++) {
        tp += pd[i] == 1 && rd[i] == 1;
        fp += pd[i] == 1 && rd[i] != 1;
        fn += pd[i] != 1 && rd[i] == 1;
    }
    tap_ok(t, m[0].tp == tp && m[0].fp == fp && m[0].fn == fn && m[0].dice == 2.0 * tp / (2 * tp + fp + fn),
           "label 1: TP %lld FP %lld FN %lld, Dice exact", (long long)tp, (long long)fp, (long long)fn);
    uint8_t *a = malloc((size_t)n), *b = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++)
        a[i] = pd[i] == 1, b[i] = rd[i] == 1;
    fine_surface_dist sd;
    fine_surface_distances(a, b, shape, sp, &sd, &e);
    tap_ok(t, close_rel(m[0].hd95, sd.hd95, 1e-14) && close_rel(m[0].assd, sd.assd, 1e-14),
           "label 1: the bounding box changes nothing (%.6g %.6g)", m[0].hd95, m[0].assd);
    tap_ok(t, m[1].dice == 0 && isnan(m[1].hd95) && isnan(m[1].assd) && m[1].n_pred == 1 && m[1].n_ref == 0,
           "reference empty: Dice 0, HD95 and ASSD NaN");
    tap_ok(t, m[2].dice == 0 && isnan(m[2].hd95) && m[2].n_pred == 0 && m[2].n_ref == 1,
           "prediction empty: Dice 0, HD95 NaN");
    tap_ok(t, isnan(m[3].dice) && isnan(m[3].hd95) && isnan(m[3].assd) && m[3].tp == 0,
           "both empty: everything NaN");

    /* other dtypes give the same numbers */
    int same = 1;
    fine_dtype dts[] = {FINE_I8, FINE_U16, FINE_I16, FINE_I32, FINE_I64, FINE_F32, FINE_F64};
    for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
        fine_tensor p2, r2;
        fine_tensor_convert(&p, dts[k], &p2, &e);
        fine_tensor_convert(&r, dts[k], &r2, &e);
        fine_label_metrics m2[4];
        fine_label_metrics_compute(&p2, &r2, sp, labels, 4, m2, &e);
        for (int l = 0; l < 4; l++)
            same &= m2[l].tp == m[l].tp && m2[l].fp == m[l].fp && m2[l].fn == m[l].fn &&
                    close_rel(m2[l].hd95, m[l].hd95, 0) && close_rel(m2[l].assd, m[l].assd, 0);
        fine_tensor_free(&p2);
        fine_tensor_free(&r2);
    }
    tap_ok(t, same, "i8 u16 i16 i32 i64 f32 f64 volumes give the u8 results");

    /* full masks: NaN surface metrics (nnU-Net), Dice still computed */
    memset(pd, 1, (size_t)n);
    fine_label_metrics_compute(&p, &r, sp, labels, 1, m, &e);
    tap_ok(t, isnan(m[0].hd95) && isnan(m[0].assd) && m[0].dice == 2.0 * m[0].tp / (2.0 * m[0].tp + m[0].fp + m[0].fn),
           "prediction full: HD95 and ASSD NaN, Dice %.4f", m[0].dice);
    memset(rd, 1, (size_t)n);
    fine_label_metrics_compute(&p, &r, sp, labels, 1, m, &e);
    tap_ok(t, m[0].dice == 1 && isnan(m[0].hd95), "both full: Dice 1, HD95 NaN");

    /* refusals */
    int64_t dup[2] = {1, 1};
    tap_ok(t, fine_label_metrics_compute(&p, &r, sp, dup, 2, m, &e) < 0 && strstr(e.msg, "twice"),
           "a repeated label is refused: %s", e.msg);
    fine_tensor q;
    int64_t shape2[3] = {6, 7, 9};
    fine_tensor_alloc(&q, FINE_U8, 3, shape2, &e);
    tap_ok(t, fine_label_metrics_compute(&p, &q, sp, labels, 1, m, &e) < 0 && strstr(e.msg, "6x7x8"),
           "different shapes are refused: %s", e.msg);
    fine_tensor_free(&q);
    fine_tensor_free(&p);
    fine_tensor_free(&r);
    free(m1), free(m2), free(a), free(b);
}

static void test_evaluate(tap *t)
{
    struct {
        const char *id, *key;
    } keys[] = {{"ABD_001", "#1"},     {"img0001", "#1"},       {"label0001", "#1"}, {"ABD_001_0000", "#1"},
                {"ABD_040", "#40"},    {"img0040_0000", "#40"}, {"case_00012", "case_00012"},
                {"label", "label"},    {"imgX001", "imgX001"},  {"seg0001", "seg0001"}};
    int ok = 1;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char k[64];
        fine_case_key(keys[i].id, k, sizeof k);
        if (strcmp(k, keys[i].key) != 0) {
            printf("# key of %s: %s, want %s\n", keys[i].id, k, keys[i].key);
            ok = 0;
        }
    }
    tap_ok(t, ok, "case keys: ABD_001 = img0001 = label0001 = ABD_001_0000; other names are themselves");

    fine_err e = {0};
    int64_t L[300];
    int n = fine_parse_labels("1-13", L, 255, &e);
    tap_ok(t, n == 13 && L[0] == 1 && L[12] == 13, "labels 1-13");
    n = fine_parse_labels("0,2,6-8", L, 255, &e);
    tap_ok(t, n == 5 && L[0] == 0 && L[1] == 2 && L[2] == 6 && L[4] == 8, "labels 0,2,6-8");
    tap_ok(t, fine_parse_labels("1,1", L, 255, &e) < 0 && fine_parse_labels("3-1", L, 255, &e) < 0 &&
                  fine_parse_labels("1,", L, 255, &e) < 0 && fine_parse_labels("a", L, 255, &e) < 0 &&
                  fine_parse_labels("0-300", L, 255, &e) < 0 && fine_parse_labels("", L, 255, &e) < 0,
           "bad label lists are refused");
    tap_ok(t, strcmp(fine_bcv_organ(11), "pancreas") == 0 && fine_bcv_organ(14) == NULL && fine_bcv_is_synapse(11) &&
                  !fine_bcv_is_synapse(5),
           "BCV organ names and the Synapse set");

    /* means: 2 cases x 13 labels, hand-made NaNs */
    int64_t labels[13];
    for (int k = 0; k < 13; k++)
        labels[k] = k + 1;
    fine_label_metrics m[2][13];
    fine_eval_case cases[2];
    memset(cases, 0, sizeof cases);
    for (int c = 0; c < 2; c++) {
        cases[c].m = m[c];
        for (int k = 0; k < 13; k++) {
            memset(&m[c][k], 0, sizeof m[c][k]);
            m[c][k].label = k + 1;
            m[c][k].dice = 0.1 * (k + 1) + 0.01 * c;
            m[c][k].hd95 = k + c;
            m[c][k].assd = 0.5 * k;
        }
    }
    m[0][0].dice = NAN;      /* label 1: only case 1 counts */
    m[0][4].hd95 = NAN;
    m[1][4].hd95 = NAN;      /* label 5: HD95 NaN in every case */
    fine_eval_summary s;
    fine_eval_summarize(cases, 2, labels, 13, &s);
    tap_ok(t, close_rel(s.dice[0], 0.11, 1e-15) && s.n_dice[0] == 1 && isnan(s.hd95[4]) &&
                  close_rel(s.dice[1], 0.205, 1e-15),
           "per-label nanmean over cases");
    double want13 = 0, want8 = 0, h13 = 0;
    int nh = 0;
    for (int k = 0; k < 13; k++) {
        want13 += s.dice[k] / 13;
        if (!isnan(s.hd95[k]))
            h13 += s.hd95[k], nh++;
        if (fine_bcv_is_synapse(k + 1))
            want8 += s.dice[k] / 8;
    }
    tap_ok(t, s.row_present[0] && s.row_present[1] && strcmp(s.row_name[0], "mean (13 organs)") == 0 &&
                  close_rel(s.row_dice[0], want13, 1e-14) && close_rel(s.row_dice[1], want8, 1e-14) &&
                  close_rel(s.row_hd95[0], h13 / nh, 1e-14),
           "mean (13 organs) and mean (8 Synapse organs) of the per-label means, NaN ignored");
    int64_t few[3] = {1, 2, 5};
    fine_eval_summarize(cases, 2, few, 3, &s);
    tap_ok(t, s.row_present[0] && !s.row_present[1] && strcmp(s.row_name[0], "mean (3 labels)") == 0,
           "other label sets: 'mean (3 labels)', no Synapse row");

    /* grids */
    fine_volume a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int64_t sz[3] = {5, 6, 7};
    double sp[3] = {3, 0.7, 0.7};
    fine_tensor_alloc(&a.data, FINE_U8, 3, sz, &e);
    fine_tensor_alloc(&b.data, FINE_U8, 3, sz, &e);
    fine_geometry_init(&a.geom, sz, sp);
    fine_geometry_init(&b.geom, sz, sp);
    snprintf(a.case_id, sizeof a.case_id, "ABD_001");
    tap_ok(t, fine_check_same_grid(&a, "p.nii.gz", &b, "r.nii.gz", 1e-2, &e) == 0, "same grid accepted");
    b.geom.spacing[2] = 0.7 * (1 + 5e-3);
    tap_ok(t, fine_check_same_grid(&a, "p.nii.gz", &b, "r.nii.gz", 1e-2, &e) == 0, "spacing within tolerance accepted");
    b.geom.spacing[2] = 0.8;
    tap_ok(t, fine_check_same_grid(&a, "p.nii.gz", &b, "r.nii.gz", 1e-2, &e) < 0 && strstr(e.msg, "spacing"),
           "spacing mismatch refused: %s", e.msg);
    b.geom.spacing[2] = 0.7;
    b.geom.sform_code = a.geom.sform_code = 1;
    b.geom.srow[0][3] += 0.005;
    tap_ok(t, fine_check_same_grid(&a, "p.nii.gz", &b, "r.nii.gz", 1e-2, &e) == 0,
           "origin moved by 0.005 mm (under 1/100 voxel) accepted");
    b.geom.srow[0][3] += 0.01;
    tap_ok(t, fine_check_same_grid(&a, "p.nii.gz", &b, "r.nii.gz", 1e-2, &e) < 0,
           "origin moved by 0.015 mm refused");
    b.geom.srow[0][3] = a.geom.srow[0][3];
    b.geom.srow[1][0] = 0.01; /* a shear: the far corner moves by 0.06 mm */
    tap_ok(t, fine_check_same_grid(&a, "p.nii.gz", &b, "r.nii.gz", 1e-2, &e) < 0 && strstr(e.msg, "0.06 mm"),
           "sheared affine refused: %s", e.msg);
    b.geom.srow[1][0] = 0;
    b.geom.srow[0][3] += 5;
    int affine_refused = fine_check_same_grid(&a, "p.nii.gz", &b, "r.nii.gz", 1e-2, &e) < 0 && strstr(e.msg, "affine");
    tap_ok(t, affine_refused, "shifted origin refused: %s", e.msg);
    fine_tensor_free(&b.data);
    int64_t sz2[3] = {6, 6, 7};
    fine_tensor_alloc(&b.data, FINE_U8, 3, sz2, &e);
    fine_geometry_init(&b.geom, sz2, sp);
    tap_ok(t, fine_check_same_grid(&a, "p.nii.gz", &b, "r.nii.gz", 1e-2, &e) < 0 && strstr(e.msg, "p.nii.gz") &&
                  strstr(e.msg, "r.nii.gz") && strstr(e.msg, "5x6x7") && strstr(e.msg, "6x6x7"),
           "shape mismatch names both files and shapes: %s", e.msg);
    fine_tensor_free(&a.data);
    fine_tensor_free(&b.data);
}

int main(void)
{
    tap t = {0, 0};
    test_edt(&t);
    test_border(&t);
    test_percentile(&t);
    test_surface(&t);
    test_labels(&t);
    test_evaluate(&t);
    return tap_done(&t);
}
