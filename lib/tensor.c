#include "tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
    int is_int;
} dtype_info[FINE_DTYPE_COUNT] = {
    [FINE_U8] = {"u8", 1, 1},   [FINE_I8] = {"i8", 1, 1},   [FINE_I16] = {"i16", 2, 1},
    [FINE_U16] = {"u16", 2, 1}, [FINE_I32] = {"i32", 4, 1}, [FINE_I64] = {"i64", 8, 1},
    [FINE_F16] = {"f16", 2, 0}, [FINE_F32] = {"f32", 4, 0}, [FINE_F64] = {"f64", 8, 0},
};

size_t fine_dtype_size(fine_dtype dt)
{
    return (unsigned)dt < FINE_DTYPE_COUNT ? dtype_info[dt].size : 0;
}

const char *fine_dtype_name(fine_dtype dt)
{
    return (unsigned)dt < FINE_DTYPE_COUNT ? dtype_info[dt].name : "?";
}

int fine_dtype_parse(const char *name, fine_dtype *dt)
{
    for (int i = 0; i < FINE_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *dt = (fine_dtype)i;
            return 0;
        }
    }
    return -1;
}

int fine_dtype_is_int(fine_dtype dt)
{
    return (unsigned)dt < FINE_DTYPE_COUNT && dtype_info[dt].is_int;
}

int64_t fine_tensor_numel(const fine_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t fine_tensor_nbytes(const fine_tensor *t)
{
    return (size_t)fine_tensor_numel(t) * fine_dtype_size(t->dtype);
}

int fine_tensor_alloc(fine_tensor *t, fine_dtype dt, int ndim, const int64_t *shape, fine_err *e)
{
    memset(t, 0, sizeof *t);
    if (fine_dtype_size(dt) == 0)
        return fine_err_set(e, "invalid dtype %d", (int)dt);
    if (ndim < 0 || ndim > FINE_MAX_DIMS)
        return fine_err_set(e, "tensor has %d dimensions (at most %d)", ndim, FINE_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return fine_err_set(e, "negative dimension %lld", (long long)shape[i]);
        if (shape[i] > 0 && n > INT64_MAX / 16 / shape[i])
            return fine_err_set(e, "tensor too large");
        n *= shape[i];
        t->shape[i] = shape[i];
    }
    t->dtype = dt;
    t->ndim = ndim;
    size_t bytes = (size_t)n * fine_dtype_size(dt);
    size_t alloc = (bytes + 63) / 64 * 64;
    if (alloc == 0)
        alloc = 64;
    t->data = aligned_alloc(64, alloc);
    if (!t->data) {
        memset(t, 0, sizeof *t);
        return fine_err_set(e, "out of memory allocating %zu bytes", bytes);
    }
    memset(t->data, 0, alloc);
    t->owns_data = 1;
    return 0;
}

void fine_tensor_free(fine_tensor *t)
{
    if (t->owns_data)
        free(t->data);
    memset(t, 0, sizeof *t);
}

float fine_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fine_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xff;
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) /* inf or NaN (keep NaN quiet and non-zero) */
        return sign | 0x7c00 | (man ? 0x200 | (uint16_t)(man >> 13) : 0);
    int e = (int)exp - 127 + 15;
    if (e >= 31)
        return sign | 0x7c00;
    if (e <= 0) { /* subnormal or zero in f16 */
        if (e < -10)
            return sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return sign | (uint16_t)half;
    }
    uint32_t half = (uint32_t)e << 10 | man >> 13;
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
        half++; /* may carry into the exponent, which rounds up to inf correctly */
    return sign | (uint16_t)half;
}

double fine_tensor_get(const fine_tensor *t, int64_t i)
{
    const void *d = t->data;
    switch (t->dtype) {
    case FINE_U8: return ((const uint8_t *)d)[i];
    case FINE_I8: return ((const int8_t *)d)[i];
    case FINE_I16: return ((const int16_t *)d)[i];
    case FINE_U16: return ((const uint16_t *)d)[i];
    case FINE_I32: return ((const int32_t *)d)[i];
    case FINE_I64: return (double)((const int64_t *)d)[i];
    case FINE_F16: return fine_f16_to_f32(((const uint16_t *)d)[i]);
    case FINE_F32: return ((const float *)d)[i];
    case FINE_F64: return ((const double *)d)[i];
    default: return NAN;
    }
}

static double clamp_round(double v, double lo, double hi)
{
    if (isnan(v))
        return 0;
    v = nearbyint(v);
    return v < lo ? lo : v > hi ? hi : v;
}

void fine_tensor_set(fine_tensor *t, int64_t i, double v)
{
    void *d = t->data;
    switch (t->dtype) {
    case FINE_U8: ((uint8_t *)d)[i] = (uint8_t)clamp_round(v, 0, 255); break;
    case FINE_I8: ((int8_t *)d)[i] = (int8_t)clamp_round(v, -128, 127); break;
    case FINE_I16: ((int16_t *)d)[i] = (int16_t)clamp_round(v, -32768, 32767); break;
    case FINE_U16: ((uint16_t *)d)[i] = (uint16_t)clamp_round(v, 0, 65535); break;
    case FINE_I32: ((int32_t *)d)[i] = (int32_t)clamp_round(v, -2147483648.0, 2147483647.0); break;
    case FINE_I64:
        ((int64_t *)d)[i] = (int64_t)clamp_round(v, -9223372036854775808.0, 9223372036854774784.0);
        break;
    case FINE_F16: ((uint16_t *)d)[i] = fine_f32_to_f16((float)v); break;
    case FINE_F32: ((float *)d)[i] = (float)v; break;
    case FINE_F64: ((double *)d)[i] = v; break;
    default: break;
    }
}

int fine_tensor_convert(const fine_tensor *src, fine_dtype to, fine_tensor *dst, fine_err *e)
{
    if (fine_tensor_alloc(dst, to, src->ndim, src->shape, e) < 0)
        return -1;
    int64_t n = fine_tensor_numel(src);
    if (src->dtype == to) {
        memcpy(dst->data, src->data, fine_tensor_nbytes(src));
        return 0;
    }
    /* The two conversions on hot paths get a direct loop; everything else goes through double,
     * which is exact for every dtype pair except i64 beyond 2^53 (not used for voxel data). */
    if (src->dtype == FINE_F32 && to == FINE_F16) {
        const float *s = src->data;
        uint16_t *o = dst->data;
        for (int64_t i = 0; i < n; i++)
            o[i] = fine_f32_to_f16(s[i]);
        return 0;
    }
    if (src->dtype == FINE_F16 && to == FINE_F32) {
        const uint16_t *s = src->data;
        float *o = dst->data;
        for (int64_t i = 0; i < n; i++)
            o[i] = fine_f16_to_f32(s[i]);
        return 0;
    }
    for (int64_t i = 0; i < n; i++)
        fine_tensor_set(dst, i, fine_tensor_get(src, i));
    return 0;
}

void fine_tensor_range(const fine_tensor *t, double *min, double *max)
{
    double lo = INFINITY, hi = -INFINITY;
    int64_t n = fine_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v = fine_tensor_get(t, i);
        if (isnan(v))
            continue;
        if (v < lo)
            lo = v;
        if (v > hi)
            hi = v;
    }
    if (lo > hi)
        lo = hi = NAN;
    *min = lo;
    *max = hi;
}

/* Index of the first non-finite value of a float tensor, or -1. */
int64_t fine_tensor_first_nonfinite(const fine_tensor *t)
{
    int64_t n = fine_tensor_numel(t);
    if (t->dtype == FINE_F32) {
        const uint32_t *p = t->data; /* exponent all ones: inf or NaN */
        for (int64_t i = 0; i < n; i++)
            if ((p[i] & 0x7f800000u) == 0x7f800000u)
                return i;
    } else if (t->dtype == FINE_F64) {
        const double *p = t->data;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(p[i]))
                return i;
    } else if (t->dtype == FINE_F16) {
        const uint16_t *p = t->data;
        for (int64_t i = 0; i < n; i++)
            if ((p[i] & 0x7c00) == 0x7c00)
                return i;
    }
    return -1;
}
