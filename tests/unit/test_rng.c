/* test_rng.c: the generator (lib/rng.c) against the published algorithms and its contract:
 * xoshiro256** outputs from a known state and splitmix64 seeding (values computed with an
 * independent Python implementation of the definitions at prng.di.unimi.it), save/restore
 * continuing the very same sequence, streams that differ, and the distributions of the
 * uniform, integer and normal draws. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "tap.h"

static void state_bytes(const uint64_t s[4], uint8_t b[FINE_RNG_STATE_BYTES])
{
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 8; k++)
            b[8 * i + k] = (uint8_t)(s[i] >> (8 * k));
}

int main(void)
{
    tap t = {0};
    fine_err e = {0};

    /* known answers */
    {
        const uint64_t s[4] = {1, 2, 3, 4};
        const uint64_t want[6] = {11520ull, 0ull, 1509978240ull, 1215971899390074240ull,
                                  1216172134540287360ull, 607988272756665600ull};
        uint8_t b[FINE_RNG_STATE_BYTES];
        state_bytes(s, b);
        fine_rng r;
        int ok = fine_rng_restore(&r, b, &e) == 0;
        for (int i = 0; i < 6; i++)
            ok &= fine_rng_u64(&r) == want[i];
        tap_ok(&t, ok, "xoshiro256** from state {1,2,3,4} gives the reference outputs");
    }
    {
        fine_rng r;
        fine_rng_seed(&r, 42);
        const uint64_t want[3] = {1546998764402558742ull, 6990951692964543102ull,
                                  12544586762248559009ull};
        int ok = 1;
        for (int i = 0; i < 3; i++)
            ok &= fine_rng_u64(&r) == want[i];
        tap_ok(&t, ok, "seed 42: state from splitmix64, outputs as the reference definitions give");
    }

    /* save and restore */
    {
        fine_rng a, b;
        fine_rng_seed(&a, 7);
        for (int i = 0; i < 37; i++) { /* leave it somewhere in the middle of mixed draws */
            fine_rng_uniform(&a);
            fine_rng_normal(&a);
            fine_rng_below(&a, 1000);
        }
        uint8_t st[FINE_RNG_STATE_BYTES], st2[FINE_RNG_STATE_BYTES];
        fine_rng_save(&a, st);
        int ok = fine_rng_restore(&b, st, &e) == 0;
        fine_rng_save(&b, st2);
        ok &= memcmp(st, st2, sizeof st) == 0;
        for (int i = 0; i < 1000 && ok; i++) {
            ok &= fine_rng_u64(&a) == fine_rng_u64(&b);
            ok &= fine_rng_normal(&a) == fine_rng_normal(&b);
            ok &= fine_rng_int(&a, -5, 5) == fine_rng_int(&b, -5, 5);
            ok &= fine_rng_range(&a, 0.7, 1.4) == fine_rng_range(&b, 0.7, 1.4);
        }
        tap_ok(&t, ok, "a restored state continues the same sequence (u64, normal, int, range)");
        uint8_t zero[FINE_RNG_STATE_BYTES] = {0};
        fine_rng c = b;
        int rc = fine_rng_restore(&c, zero, &e);
        tap_ok(&t, rc < 0 && memcmp(&c, &b, sizeof c) == 0 && strstr(e.msg, "zero"),
               "the all-zero state is refused and leaves the generator as it was (%s)", e.msg);
    }

    /* seeds and streams */
    {
        fine_rng a, b, c, d, f;
        fine_rng_seed_stream(&a, 12345, 0);
        fine_rng_seed_stream(&b, 12345, 0);
        fine_rng_seed_stream(&c, 12345, 1);
        fine_rng_seed_stream(&d, 1, 2);
        fine_rng_seed_stream(&f, 2, 1);
        uint64_t va = fine_rng_u64(&a), vb = fine_rng_u64(&b), vc = fine_rng_u64(&c);
        uint64_t vd = fine_rng_u64(&d), vf = fine_rng_u64(&f);
        tap_ok(&t, va == vb && va != vc && vd != vf,
               "streams: (s, b) repeats, (s, b) and (s, b+1) differ, (1, 2) and (2, 1) differ");
        fine_rng s0, s1;
        fine_rng_seed(&s0, 0);
        fine_rng_seed(&s1, 1);
        tap_ok(&t, fine_rng_u64(&s0) != fine_rng_u64(&s1), "seeds 0 and 1 differ");
    }

    /* distributions */
    {
        fine_rng r;
        fine_rng_seed(&r, 3);
        int n = 1000000, ok = 1;
        double s = 0, s2 = 0;
        for (int i = 0; i < n; i++) {
            double u = fine_rng_uniform(&r);
            ok &= u >= 0 && u < 1;
            s += u;
            s2 += u * u;
        }
        double mean = s / n, var = s2 / n - mean * mean;
        tap_ok(&t, ok && fabs(mean - 0.5) < 0.002 && fabs(var - 1.0 / 12) < 0.001,
               "uniform in [0, 1): mean %.4f var %.5f", mean, var);
        ok = 1;
        for (int i = 0; i < 10000; i++) {
            double v = fine_rng_range(&r, 0.7, 1.4);
            ok &= v >= 0.7 && v < 1.4;
        }
        tap_ok(&t, ok && fine_rng_range(&r, 2.5, 2.5) == 2.5, "range [lo, hi), and lo when lo == hi");

        int64_t cnt[7] = {0};
        for (int i = 0; i < 70000; i++)
            cnt[fine_rng_below(&r, 7)]++;
        double chi = 0;
        for (int k = 0; k < 7; k++)
            chi += (cnt[k] - 10000.0) * (cnt[k] - 10000.0) / 10000.0;
        /* 6 degrees of freedom: P(chi2 > 22.46) = 0.001 */
        tap_ok(&t, chi < 22.46, "below(7) uniform: chi2 %.2f (6 dof)", chi);
        uint64_t big = (1ull << 63) + 1;
        ok = fine_rng_below(&r, 1) == 0 && fine_rng_below(&r, 0) == 0;
        for (int i = 0; i < 1000; i++)
            ok &= fine_rng_below(&r, big) < big;
        tap_ok(&t, ok, "below(1) and below(0) are 0, below(2^63+1) stays below");
        int seen[7] = {0};
        ok = 1;
        for (int i = 0; i < 7000; i++) {
            int64_t v = fine_rng_int(&r, -3, 3);
            ok &= v >= -3 && v <= 3;
            if (v >= -3 && v <= 3)
                seen[v + 3] = 1;
        }
        for (int k = 0; k < 7; k++)
            ok &= seen[k];
        tap_ok(&t, ok && fine_rng_int(&r, 5, 5) == 5, "int(-3, 3) hits both ends and nothing else");

        s = s2 = 0;
        int64_t inside = 0;
        for (int i = 0; i < n; i++) {
            double g = fine_rng_normal(&r);
            s += g;
            s2 += g * g;
            inside += fabs(g) < 1;
        }
        mean = s / n;
        double sd = sqrt(s2 / n - mean * mean), frac = (double)inside / n;
        tap_ok(&t, fabs(mean) < 0.005 && fabs(sd - 1) < 0.005 && fabs(frac - 0.682689) < 0.003,
               "normal: mean %.4f sd %.4f P(|x|<1) %.4f", mean, sd, frac);

        int m = 200001;
        float *x = calloc((size_t)m, sizeof *x);
        fine_rng_add_normal_f32(&r, x, m, 2.0, 0.5);
        s = s2 = 0;
        for (int i = 0; i < m; i++) {
            s += x[i];
            s2 += (double)x[i] * x[i];
        }
        mean = s / m;
        sd = sqrt(s2 / m - mean * mean);
        tap_ok(&t, fabs(mean - 2) < 0.01 && fabs(sd - 0.5) < 0.01 && x[m - 1] != 0,
               "add_normal_f32: mean %.4f sd %.4f, odd length filled to the end", mean, sd);
        free(x);
    }
    return tap_done(&t);
}
