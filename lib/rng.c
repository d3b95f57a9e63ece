/* rng.c: xoshiro256** with splitmix64 seeding (the reference algorithms of
 * https://prng.di.unimi.it/, written from their definitions). */
#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void fine_rng_seed(fine_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) /* cannot happen for splitmix64, but cheap */
        r->s[0] = 1;
}

void fine_rng_seed_stream(fine_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t a = seed, b = stream ^ 0x6a09e667f3bcc909ull; /* keep (s, t) and (t, s) apart */
    uint64_t h = splitmix64(&a);
    h ^= rotl(splitmix64(&b), 17);
    fine_rng_seed(r, h);
}

uint64_t fine_rng_u64(fine_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double fine_rng_uniform(fine_rng *r)
{
    return (double)(fine_rng_u64(r) >> 11) * 0x1.0p-53;
}

double fine_rng_range(fine_rng *r, double lo, double hi)
{
    if (lo == hi)
        return lo;
    double v = lo + (hi - lo) * fine_rng_uniform(r);
    return v < hi ? v : lo; /* rounding could reach hi for huge ranges */
}

uint64_t fine_rng_below(fine_rng *r, uint64_t n)
{
    if (n == 0)
        return 0;
    /* Lemire: the high word of x * n is uniform once the biased low words are rejected. */
    unsigned __int128 m = (unsigned __int128)fine_rng_u64(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t threshold = -n % n;
        while (lo < threshold) {
            m = (unsigned __int128)fine_rng_u64(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

int64_t fine_rng_int(fine_rng *r, int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    uint64_t span = (uint64_t)hi - (uint64_t)lo + 1; /* 0 when the range is all of int64 */
    uint64_t v = span ? fine_rng_below(r, span) : fine_rng_u64(r);
    return (int64_t)((uint64_t)lo + v);
}

/* One polar pair: two independent standard normals. */
static void polar_pair(fine_rng *r, double *a, double *b)
{
    double u, v, s;
    do {
        u = 2.0 * fine_rng_uniform(r) - 1.0;
        v = 2.0 * fine_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * log(s) / s);
    *a = u * f;
    *b = v * f;
}

double fine_rng_normal(fine_rng *r)
{
    double a, b;
    polar_pair(r, &a, &b);
    return a;
}

void fine_rng_add_normal_f32(fine_rng *r, float *x, int64_t n, double mean, double std)
{
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
        double a, b;
        polar_pair(r, &a, &b);
        x[i] = (float)((double)x[i] + mean + std * a);
        x[i + 1] = (float)((double)x[i + 1] + mean + std * b);
    }
    if (i < n)
        x[i] = (float)((double)x[i] + mean + std * fine_rng_normal(r));
}

void fine_rng_save(const fine_rng *r, uint8_t out[FINE_RNG_STATE_BYTES])
{
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 8; b++)
            out[8 * i + b] = (uint8_t)(r->s[i] >> (8 * b));
}

int fine_rng_restore(fine_rng *r, const uint8_t in[FINE_RNG_STATE_BYTES], fine_err *e)
{
    uint64_t s[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 8; b++)
            s[i] |= (uint64_t)in[8 * i + b] << (8 * b);
    if (!(s[0] | s[1] | s[2] | s[3]))
        return fine_err_set(e, "random generator state is all zero (not a saved fine_rng state)");
    for (int i = 0; i < 4; i++)
        r->s[i] = s[i];
    return 0;
}
