#include "crop.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- hole filling */

/* A growable stack of voxel indices (z * Y + y) * X + x. */
typedef struct seed_stack {
    int64_t *v;
    size_t n, cap;
} seed_stack;

static int push(seed_stack *s, int64_t i)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4096;
        int64_t *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = i;
    return 0;
}

/* Pushes the first voxel of every run of 0s of row (z, y) within [xl, xr]. */
static int push_runs(seed_stack *s, const uint8_t *mask, int64_t row, int64_t xl, int64_t xr)
{
    int in_run = 0;
    for (int64_t x = xl; x <= xr; x++) {
        if (mask[row + x] == 0) {
            if (!in_run && push(s, row + x) < 0)
                return -1;
            in_run = 1;
        } else {
            in_run = 0;
        }
    }
    return 0;
}

/* Scanline flood fill from voxel `start`: every 0 voxel 6-connected to it through 0 voxels
 * becomes 2 ("outside"). */
static int flood(uint8_t *mask, const int64_t size[3], int64_t start, seed_stack *s)
{
    const int64_t Z = size[0], Y = size[1], X = size[2];
    s->n = 0;
    if (push(s, start) < 0)
        return -1;
    while (s->n) {
        int64_t i = s->v[--s->n];
        if (mask[i] != 0)
            continue;
        int64_t x = i % X, zy = i / X, y = zy % Y, z = zy / Y;
        int64_t row = zy * X, xl = x, xr = x;
        while (xl > 0 && mask[row + xl - 1] == 0)
            xl--;
        while (xr + 1 < X && mask[row + xr + 1] == 0)
            xr++;
        memset(mask + row + xl, 2, (size_t)(xr - xl + 1));
        if ((y > 0 && push_runs(s, mask, row - X, xl, xr) < 0) ||
            (y + 1 < Y && push_runs(s, mask, row + X, xl, xr) < 0) ||
            (z > 0 && push_runs(s, mask, row - Y * X, xl, xr) < 0) ||
            (z + 1 < Z && push_runs(s, mask, row + Y * X, xl, xr) < 0))
            return -1;
    }
    return 0;
}

int fine_fill_holes(uint8_t *mask, const int64_t size[3], fine_err *e)
{
    const int64_t Z = size[0], Y = size[1], X = size[2];
    int64_t n = Z * Y * X;
    if (n <= 0)
        return 0;
    seed_stack s = {0};
    int rc = 0;
    /* every border voxel: the faces z = 0, Z-1, y = 0, Y-1, x = 0, X-1 */
    for (int64_t z = 0; z < Z && rc == 0; z++)
        for (int64_t y = 0; y < Y && rc == 0; y++) {
            int64_t row = (z * Y + y) * X;
            int whole = z == 0 || z == Z - 1 || y == 0 || y == Y - 1 || X <= 2;
            for (int64_t x = 0; x < X && rc == 0; x += (whole || x == X - 1) ? 1 : X - 1) {
                if (mask[row + x] == 0)
                    rc = flood(mask, size, row + x, &s);
            }
        }
    free(s.v);
    if (rc < 0) {
        for (int64_t i = 0; i < n; i++) /* leave the mask as it was */
            mask[i] = mask[i] == 1;
        return fine_err_set(e, "out of memory filling the holes of a %lldx%lldx%lld mask", (long long)Z,
                            (long long)Y, (long long)X);
    }
    for (int64_t i = 0; i < n; i++)
        mask[i] = mask[i] != 2;
    return 0;
}

/* ---------------------------------------------------------------- masks and boxes */

static int is_3d(const fine_tensor *t, fine_err *e)
{
    if (t->ndim != 3)
        return fine_err_set(e, "expected a 3-D array (z, y, x), got %d dimensions", t->ndim);
    return 0;
}

int fine_nonzero_mask(const fine_tensor *t, uint8_t *mask, fine_err *e)
{
    if (is_3d(t, e) < 0)
        return -1;
    int64_t n = fine_tensor_numel(t);
    switch (t->dtype) {
    case FINE_U8:
    case FINE_I8:
        for (int64_t i = 0; i < n; i++)
            mask[i] = ((const uint8_t *)t->data)[i] != 0;
        break;
    case FINE_I16:
    case FINE_U16:
        for (int64_t i = 0; i < n; i++)
            mask[i] = ((const uint16_t *)t->data)[i] != 0;
        break;
    case FINE_F16: /* +0 and -0 are zero */
        for (int64_t i = 0; i < n; i++)
            mask[i] = (((const uint16_t *)t->data)[i] & 0x7fff) != 0;
        break;
    case FINE_I32:
        for (int64_t i = 0; i < n; i++)
            mask[i] = ((const int32_t *)t->data)[i] != 0;
        break;
    case FINE_I64:
        for (int64_t i = 0; i < n; i++)
            mask[i] = ((const int64_t *)t->data)[i] != 0;
        break;
    case FINE_F32:
        for (int64_t i = 0; i < n; i++)
            mask[i] = ((const float *)t->data)[i] != 0.0f;
        break;
    case FINE_F64:
        for (int64_t i = 0; i < n; i++)
            mask[i] = ((const double *)t->data)[i] != 0.0;
        break;
    default: return fine_err_set(e, "invalid dtype %d", (int)t->dtype);
    }
    return fine_fill_holes(mask, t->shape, e);
}

int fine_mask_box(const uint8_t *mask, const int64_t size[3], int64_t lo[3], int64_t hi[3])
{
    int64_t Z = size[0], Y = size[1], X = size[2];
    int64_t l[3] = {Z, Y, X}, h[3] = {0, 0, 0};
    for (int64_t z = 0; z < Z; z++)
        for (int64_t y = 0; y < Y; y++) {
            const uint8_t *row = mask + (z * Y + y) * X;
            int64_t x0 = 0, x1 = X - 1;
            while (x0 < X && !row[x0])
                x0++;
            if (x0 == X)
                continue;
            while (!row[x1])
                x1--;
            if (z < l[0]) l[0] = z;
            if (z + 1 > h[0]) h[0] = z + 1;
            if (y < l[1]) l[1] = y;
            if (y + 1 > h[1]) h[1] = y + 1;
            if (x0 < l[2]) l[2] = x0;
            if (x1 + 1 > h[2]) h[2] = x1 + 1;
        }
    if (h[0] == 0) {
        for (int d = 0; d < 3; d++)
            lo[d] = hi[d] = 0;
        return 0;
    }
    for (int d = 0; d < 3; d++) {
        lo[d] = l[d];
        hi[d] = h[d];
    }
    return 1;
}

/* The box of the non-zero voxels of one row type; NaN != 0 counts as non-zero, like numpy.
 * The box of the hole-filled mask is the same (see crop.h), so no mask is built. */
#define BOX_OF(T, NONZERO)                                                                                 \
    do {                                                                                                   \
        const T *p = (const T *)image->data;                                                               \
        for (int64_t z = 0; z < Z; z++)                                                                    \
            for (int64_t y = 0; y < Y; y++) {                                                              \
                const T *row = p + (z * Y + y) * X;                                                        \
                int64_t x0 = 0, x1 = X - 1;                                                                \
                while (x0 < X && !(NONZERO(row[x0])))                                                      \
                    x0++;                                                                                  \
                if (x0 == X)                                                                               \
                    continue;                                                                              \
                while (!(NONZERO(row[x1])))                                                                \
                    x1--;                                                                                  \
                if (z < l[0]) l[0] = z;                                                                    \
                h[0] = z + 1;                                                                              \
                if (y < l[1]) l[1] = y;                                                                    \
                if (y + 1 > h[1]) h[1] = y + 1;                                                            \
                if (x0 < l[2]) l[2] = x0;                                                                  \
                if (x1 + 1 > h[2]) h[2] = x1 + 1;                                                          \
            }                                                                                              \
    } while (0)

#define NZ_INT(v) ((v) != 0)
#define NZ_F16(v) (((v) & 0x7fff) != 0)

int fine_crop_box(const fine_tensor *image, int64_t lo[3], int64_t hi[3], fine_err *e)
{
    if (is_3d(image, e) < 0)
        return -1;
    const int64_t Z = image->shape[0], Y = image->shape[1], X = image->shape[2];
    if (Z <= 0 || Y <= 0 || X <= 0)
        return fine_err_set(e, "image is empty (%lldx%lldx%lld voxels)", (long long)Z, (long long)Y, (long long)X);
    int64_t bad = fine_tensor_first_nonfinite(image);
    if (bad >= 0)
        return fine_err_set(e, "non-finite intensity (%s) at voxel (%lld, %lld, %lld) (z, y, x)",
                            isnan(fine_tensor_get(image, bad)) ? "NaN" : "inf", (long long)(bad / (Y * X)),
                            (long long)(bad / X % Y), (long long)(bad % X));
    int64_t l[3] = {Z, Y, X}, h[3] = {0, 0, 0};
    switch (image->dtype) {
    case FINE_U8:
    case FINE_I8: BOX_OF(uint8_t, NZ_INT); break;
    case FINE_I16:
    case FINE_U16: BOX_OF(uint16_t, NZ_INT); break;
    case FINE_F16: BOX_OF(uint16_t, NZ_F16); break;
    case FINE_I32: BOX_OF(int32_t, NZ_INT); break;
    case FINE_I64: BOX_OF(int64_t, NZ_INT); break;
    case FINE_F32: BOX_OF(float, NZ_INT); break;
    case FINE_F64: BOX_OF(double, NZ_INT); break;
    default: return fine_err_set(e, "invalid dtype %d", (int)image->dtype);
    }
    if (h[0] == 0)
        return fine_err_set(e, "image is empty (no non-zero voxel)");
    for (int d = 0; d < 3; d++) {
        lo[d] = l[d];
        hi[d] = h[d];
    }
    return 0;
}

/* ---------------------------------------------------------------- cropping */

/* n values from src (dtype sd) to dst (dtype dd); fast paths for what preprocessing meets. */
static void convert_row(const void *src, fine_dtype sd, void *dst, fine_dtype dd, int64_t n)
{
    if (sd == dd) {
        memcpy(dst, src, (size_t)n * fine_dtype_size(sd));
    } else if (dd == FINE_F32 && sd == FINE_I16) {
        const int16_t *s = src;
        float *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = (float)s[i];
    } else if (dd == FINE_F32 && sd == FINE_U8) {
        const uint8_t *s = src;
        float *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = (float)s[i];
    } else if (dd == FINE_F32 && sd == FINE_F16) {
        const uint16_t *s = src;
        float *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = fine_f16_to_f32(s[i]);
    } else {
        fine_tensor ts = {.dtype = sd, .ndim = 1, .shape = {n}, .data = (void *)src};
        fine_tensor td = {.dtype = dd, .ndim = 1, .shape = {n}, .data = dst};
        for (int64_t i = 0; i < n; i++)
            fine_tensor_set(&td, i, fine_tensor_get(&ts, i));
    }
}

int fine_crop_tensor(const fine_tensor *src, const int64_t lo[3], const int64_t hi[3], fine_dtype to,
                     fine_tensor *dst, fine_err *e)
{
    memset(dst, 0, sizeof *dst);
    if (src->ndim != 3 && src->ndim != 4)
        return fine_err_set(e, "expected a 3-D or 4-D array, got %d dimensions", src->ndim);
    int off = src->ndim - 3;
    int64_t C = off ? src->shape[0] : 1;
    const int64_t *in = src->shape + off;
    for (int d = 0; d < 3; d++)
        if (lo[d] < 0 || hi[d] > in[d] || lo[d] >= hi[d])
            return fine_err_set(e, "crop box [%lld, %lld) on axis %d is outside the array of size %lld",
                                (long long)lo[d], (long long)hi[d], d, (long long)in[d]);
    int64_t shape[4], *os = shape + off;
    if (off)
        shape[0] = C;
    for (int d = 0; d < 3; d++)
        os[d] = hi[d] - lo[d];
    if (fine_tensor_alloc(dst, to, src->ndim, shape, e) < 0)
        return -1;
    size_t is = fine_dtype_size(src->dtype), ds = fine_dtype_size(to);
    for (int64_t c = 0; c < C; c++)
        for (int64_t z = 0; z < os[0]; z++)
            for (int64_t y = 0; y < os[1]; y++) {
                int64_t si = ((c * in[0] + z + lo[0]) * in[1] + y + lo[1]) * in[2] + lo[2];
                int64_t di = ((c * os[0] + z) * os[1] + y) * os[2];
                convert_row((const char *)src->data + (size_t)si * is, src->dtype, (char *)dst->data + (size_t)di * ds,
                            to, os[2]);
            }
    return 0;
}

int fine_volume_crop(fine_volume *v, const int64_t lo[3], const int64_t hi[3], int to, fine_err *e)
{
    fine_geometry *g = &v->geom;
    for (int d = 0; d < 3; d++)
        if (g->size[d] != g->crop_hi[d] - g->crop_lo[d])
            return fine_err_set(e, "case %s: %s is not on its original grid (size %lldx%lldx%lld, crop box "
                                "%lldx%lldx%lld): already resampled?",
                                v->case_id, v->name, (long long)g->size[0], (long long)g->size[1],
                                (long long)g->size[2], (long long)(g->crop_hi[0] - g->crop_lo[0]),
                                (long long)(g->crop_hi[1] - g->crop_lo[1]), (long long)(g->crop_hi[2] - g->crop_lo[2]));
    fine_tensor out;
    if (fine_crop_tensor(&v->data, lo, hi, to < 0 ? v->data.dtype : (fine_dtype)to, &out, e) < 0)
        return -1;
    fine_tensor_free(&v->data);
    v->data = out;
    for (int d = 0; d < 3; d++) {
        g->size[d] = hi[d] - lo[d];
        g->crop_lo[d] += lo[d];
        g->crop_hi[d] = g->crop_lo[d] + g->size[d];
    }
    return 0;
}
