/* ops_vec.h: what the pointwise CPU kernels share (private to lib/nn): the AVX2 + FMA
 * variant attribute and its run-time check, a branch-free select and a vectorisable exp. */
#ifndef FINE_OPS_VEC_H
#define FINE_OPS_VEC_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
/* the AVX2 variants also fuse a * b + c into FMA (GCC does not contract under -std=c11) */
#define FINE_AVX2 __attribute__((target("avx2,fma"), optimize("fp-contract=fast")))
#define FINE_HAVE_AVX2 1
static inline int have_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
#define FINE_INLINE static inline __attribute__((always_inline))

/* c ? a : b without a branch. GCC does not if-convert float selects under its default
 * -ftrapping-math, which keeps `omp simd` loops with a plain ?: scalar; integer masks it
 * vectorises. */
FINE_INLINE float select_f(int c, float a, float b)
{
    int32_t ia, ib, m = -c, r;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    r = (ia & m) | (ib & ~m);
    float f;
    memcpy(&f, &r, sizeof f);
    return f;
}

/* exp(x) in float, about 2 ulp, for x <= 88; 0 below -87.3 (no subnormal results).
 * Branch-free so that `omp simd` loops vectorise: x = n ln2 + r, |r| <= ln2/2 (Cody-Waite,
 * ln2 split in two), e^r by its Taylor polynomial of degree 7 (truncation 5e-9), 2^n built
 * in the exponent bits. */
FINE_INLINE float vexpf(float x)
{
    int tiny = x < -87.33654f; /* exp(x) < 2^-126: flushed to 0 */
    x = select_f(tiny, -87.33654f, x);
    x = select_f(x > 88.0f, 88.0f, x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        int32_t i;
        float f;
    } s;
    s.i = ((int32_t)n + 127) << 23;
    return select_f(tiny, 0.0f, p * s.f);
}

#endif
