/* test_normalize.c: CT normalisation statistics and their application (lib/normalize.c)
 * against hand-checked values and against numpy (FINE_PYTHON, default /usr/bin/python3):
 * percentile (linear), mean and std of arrays with many ties, as nnU-Net's _compute_stats;
 * the every-10th-foreground-voxel sample; clip-then-z-score in f32. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "normalize.h"
#include "tap.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Writes n doubles to a temporary file, runs the Python script src on it (the path is argv[1])
 * and reads the numbers it prints into out (at most cap). Returns the count or -1. */
static int64_t py_on_doubles(const char *src, const double *v, int64_t n, double *out, int64_t cap)
{
    char data[] = "/tmp/fine_test_data_XXXXXX", script[] = "/tmp/fine_test_py_XXXXXX";
    int fd = mkstemp(data), fs = mkstemp(script);
    if (fd < 0 || fs < 0)
        return -1;
    FILE *f = fdopen(fd, "wb");
    fwrite(v, sizeof *v, (size_t)n, f);
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

static void test_percentile_by_hand(tap *t)
{
    double a[] = {4, 1, 3, 2};
    tap_ok(t, fine_norm_percentile(a, 4, 50) == 2.5, "p50 of 1 2 3 4 is 2.5");
    double b[] = {4, 1, 3, 2};
    tap_ok(t, fine_norm_percentile(b, 4, 0) == 1 && fine_norm_percentile(b, 4, 100) == 4, "p0 and p100 are min and max");
    double c[] = {7};
    tap_ok(t, fine_norm_percentile(c, 1, 99.5) == 7, "one value: every percentile is it");
    /* 201 values 0..200: index 0.995 * 200 = 199 exactly */
    double d[201];
    for (int i = 0; i < 201; i++)
        d[i] = 200 - i;
    tap_ok(t, fine_norm_percentile(d, 201, 99.5) == 199, "p99.5 of 0..200 is 199");
    double m, s;
    double e[] = {2, 4, 4, 4, 5, 5, 7, 9};
    fine_norm_mean_std(e, 8, &m, &s);
    tap_ok(t, m == 5 && s == 2, "mean 5, std 2 of the textbook example");
}

/* Arrays of several sizes and kinds of ties against numpy, in one Python run. */
static void test_vs_numpy(tap *t)
{
    enum { NA = 14, NQ = 7, NR = NQ + 3 };
    static const double qs[NQ] = {0.5, 99.5, 50, 0, 100, 33.3, 10};
    static const int64_t sizes[NA / 2] = {1, 2, 3, 10, 199, 1000, 123457};
    int64_t total = 0, off[NA + 1];
    for (int a = 0; a < NA; a++) {
        off[a] = total;
        total += sizes[a / 2];
    }
    off[NA] = total;
    double *all = malloc((size_t)total * sizeof *all), *w = malloc((size_t)total * sizeof *w);
    for (int a = 0; a < NA; a++) /* even: HU-like integers with many ties; odd: continuous */
        for (int64_t i = off[a]; i < off[a + 1]; i++)
            all[i] = a % 2 == 0 ? (double)((int64_t)(rnd() % 700) - 300)
                                : (double)(rnd() >> 11) * 0x1.0p-53 * 2000.0 - 1000.0;
    char src[1024];
    int len = snprintf(src, sizeof src, "import sys, numpy as np\n"
                                        "v = np.fromfile(sys.argv[1], dtype='<f8')\n"
                                        "o = 0\n"
                                        "for n in [");
    for (int a = 0; a < NA; a++)
        len += snprintf(src + len, sizeof src - (size_t)len, "%lld, ", (long long)sizes[a / 2]);
    snprintf(src + len, sizeof src - (size_t)len,
             "]:\n"
             "    x = v[o:o + n]; o += n\n"
             "    for q in (0.5, 99.5, 50, 0, 100, 33.3, 10):\n"
             "        print(repr(float(np.percentile(x, q))))\n"
             "    print(repr(float(np.mean(x))), repr(float(np.std(x))), repr(float(np.median(x))))\n");
    double ref[NA * NR];
    int64_t k = py_on_doubles(src, all, total, ref, NA * NR);
    tap_ok(t, k == NA * NR, "numpy reference ran (%lld numbers)", (long long)k);
    for (int a = 0; k == NA * NR && a < NA; a++) {
        int64_t n = sizes[a / 2];
        const double *v = all + off[a], *r = ref + a * NR;
        double worst = 0;
        for (int qi = 0; qi < NQ; qi++) {
            memcpy(w, v, (size_t)n * sizeof *v);
            worst = fmax(worst, fabs(fine_norm_percentile(w, n, qs[qi]) - r[qi]));
        }
        double m, s;
        fine_norm_mean_std(v, n, &m, &s);
        memcpy(w, v, (size_t)n * sizeof *v);
        fine_fg_sample smp = {.v = w, .n = n, .cap = n};
        fine_norm_stats st;
        fine_err e = {0};
        int ok = fine_fg_sample_stats(&smp, &st, &e) == 0;
        tap_ok(t, ok && worst == 0 && fabs(m - r[NQ]) <= 1e-12 * fmax(1, fabs(r[NQ])) &&
                      fabs(s - r[NQ + 1]) <= 1e-12 * fmax(1, r[NQ + 1]) && st.median == r[NQ + 2] &&
                      st.lower == r[0] && st.upper == r[1] && st.mean == m && st.std == s,
               "n %lld %s: percentiles equal numpy's (max diff %g), mean %.17g (numpy %.17g), "
               "std %.17g (numpy %.17g), median %g (numpy %g)",
               (long long)n, a % 2 ? "continuous" : "integers", worst, m, r[NQ], s, r[NQ + 1],
               ok ? st.median : NAN, r[NQ + 2]);
    }
    free(all);
    free(w);
}

static void test_sample(tap *t)
{
    /* image[label > 0][::10] over a 2x5x5 volume whose foreground is every voxel with odd index */
    fine_tensor im, lb;
    fine_err e = {0};
    fine_tensor_alloc(&im, FINE_I16, 3, (int64_t[]){2, 5, 5}, &e);
    fine_tensor_alloc(&lb, FINE_U8, 3, (int64_t[]){2, 5, 5}, &e);
    for (int i = 0; i < 50; i++) {
        ((int16_t *)im.data)[i] = (int16_t)(100 + i);
        ((uint8_t *)lb.data)[i] = (uint8_t)(i % 2 ? 1 + i % 7 : 0);
    }
    fine_fg_sample s = {0};
    int64_t n = fine_fg_sample_add(&s, &im, &lb, &e);
    /* foreground indices 1,3,...,49 (25 voxels); every 10th of them: 1, 21, 41 */
    tap_ok(t, n == 25 && s.n == 3 && s.v[0] == 101 && s.v[1] == 121 && s.v[2] == 141,
           "sample: foreground 25 voxels, every 10th taken (101 121 141)");
    n = fine_fg_sample_add(&s, &im, &lb, &e);
    tap_ok(t, n == 25 && s.n == 6 && s.v[3] == 101, "a second case restarts its every-10th count");
    fine_tensor bad;
    fine_tensor_alloc(&bad, FINE_U8, 3, (int64_t[]){2, 5, 4}, &e);
    tap_ok(t, fine_fg_sample_add(&s, &im, &bad, &e) < 0, "shapes differ: refused (%s)", e.msg);
    fine_tensor_free(&bad);
    fine_fg_sample_free(&s);
    fine_fg_sample empty = {0};
    fine_norm_stats st;
    tap_ok(t, fine_fg_sample_stats(&empty, &st, &e) < 0, "no foreground: refused (%s)", e.msg);
    fine_tensor_free(&im);
    fine_tensor_free(&lb);
}

static void test_apply(tap *t)
{
    fine_tensor in, out;
    fine_err e = {0};
    fine_tensor_alloc(&in, FINE_I16, 3, (int64_t[]){1, 1, 5}, &e);
    int16_t vals[5] = {-1000, -100, 0, 40, 3000};
    memcpy(in.data, vals, sizeof vals);
    fine_norm_stats st = {.scheme = FINE_NORM_CT, .lower = -150.5, .upper = 250.25, .mean = 40.0, .std = 60.0};
    int ok = fine_norm_apply(&in, &st, &out, NULL, NULL, &e) == 0 && out.dtype == FINE_F32;
    float want[5] = {(-150.5f - 40.0f) / 60.0f, (-100.0f - 40.0f) / 60.0f, (0.0f - 40.0f) / 60.0f, 0.0f,
                     (250.25f - 40.0f) / 60.0f};
    tap_ok(t, ok && memcmp(out.data, want, sizeof want) == 0, "ct: clip to [lower, upper], then (x - mean) / std in f32");
    fine_tensor_free(&out);
    st.scheme = FINE_NORM_ZSCORE;
    double m, s;
    ok = fine_norm_apply(&in, &st, &out, &m, &s, &e) == 0;
    /* mean 388, std of {-1000,-100,0,40,3000} around 388 */
    double sd = sqrt((1388.0 * 1388 + 488.0 * 488 + 388.0 * 388 + 348.0 * 348 + 2612.0 * 2612) / 5);
    float *o = out.data;
    tap_ok(t, ok && m == 388 && fabs(s - sd) < 1e-9 && o[2] == (0.0f - 388.0f) / (float)(sd + 1e-8),
           "zscore: the case's mean and std (+1e-8)");
    fine_tensor_free(&out);
    st.scheme = FINE_NORM_NONE;
    ok = fine_norm_apply(&in, &st, &out, NULL, NULL, &e) == 0;
    tap_ok(t, ok && ((float *)out.data)[4] == 3000.0f, "none: values unchanged, as f32");
    fine_tensor_free(&out);
    st = (fine_norm_stats){.scheme = FINE_NORM_CT, .lower = 0, .upper = 1, .mean = 0, .std = 0};
    tap_ok(t, fine_norm_apply(&in, &st, &out, NULL, NULL, &e) < 0, "ct with std 0: refused (%s)", e.msg);
    fine_tensor_free(&in);
    fine_norm_scheme sc;
    tap_ok(t, fine_norm_scheme_parse("zscore", &sc) == 0 && sc == FINE_NORM_ZSCORE &&
                  fine_norm_scheme_parse("CT", &sc) < 0 && strcmp(fine_norm_scheme_name(FINE_NORM_CT), "ct") == 0,
           "scheme names");
}

int main(void)
{
    tap t = {0};
    test_percentile_by_hand(&t);
    test_vs_numpy(&t);
    test_sample(&t);
    test_apply(&t);
    return tap_done(&t);
}
