#include "patch_grid.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t fine_grid_steps(int64_t L, int64_t P, double step, int64_t *out, int64_t cap, fine_err *e)
{
    if (P < 1 || L < P)
        return fine_err_set(e, "sliding window: length %lld is smaller than the patch %lld",
                            (long long)L, (long long)P);
    if (!(step > 0 && step <= 1))
        return fine_err_set(e, "sliding window: step %g is not in (0, 1]", step);
    /* nnU-Net v1: num_steps = int(np.ceil((i - k) / j)) + 1 with j = patch * step_size. */
    double target = (double)P * step;
    int64_t n = (int64_t)ceil((double)(L - P) / target) + 1;
    double actual = n > 1 ? (double)(L - P) / (double)(n - 1) : 99999999999.0;
    for (int64_t i = 0; i < n && i < cap; i++)
        out[i] = (int64_t)rint(actual * (double)i); /* np.round: half to even */
    return n;
}

void fine_grid_pad(int64_t L, int64_t P, int64_t *lo, int64_t *hi)
{
    int64_t diff = P > L ? P - L : 0;
    *lo = diff / 2;
    *hi = diff - diff / 2;
}

void fine_grid_free(fine_grid *g)
{
    for (int d = 0; d < 3; d++)
        free(g->steps[d]);
    memset(g, 0, sizeof *g);
}

int fine_grid_plan(fine_grid *g, const int64_t size[3], const int64_t patch[3], double step,
                   fine_err *e)
{
    memset(g, 0, sizeof *g);
    for (int d = 0; d < 3; d++) {
        if (size[d] < 1 || patch[d] < 1)
            return fine_err_set(e, "sliding window: volume %lldx%lldx%lld or patch %lldx%lldx%lld "
                                   "has an empty axis",
                                (long long)size[0], (long long)size[1], (long long)size[2],
                                (long long)patch[0], (long long)patch[1], (long long)patch[2]);
        int64_t hi;
        g->size[d] = size[d];
        g->patch[d] = patch[d];
        fine_grid_pad(size[d], patch[d], &g->pad_lo[d], &hi);
        g->padded[d] = size[d] + g->pad_lo[d] + hi;
    }
    g->count = 1;
    for (int d = 0; d < 3; d++) {
        int64_t n = fine_grid_steps(g->padded[d], patch[d], step, NULL, 0, e);
        if (n < 0) {
            fine_grid_free(g);
            return -1;
        }
        g->steps[d] = malloc((size_t)n * sizeof(int64_t));
        if (!g->steps[d]) {
            fine_grid_free(g);
            return fine_err_set(e, "out of memory");
        }
        fine_grid_steps(g->padded[d], patch[d], step, g->steps[d], n, e);
        g->n[d] = n;
        g->count *= n;
    }
    return 0;
}

void fine_grid_tile(const fine_grid *g, int64_t i, int64_t lb[3], int64_t origin[3], int64_t pos[3])
{
    int64_t idx[3];
    idx[2] = i % g->n[2];
    idx[1] = (i / g->n[2]) % g->n[1];
    idx[0] = i / (g->n[2] * g->n[1]);
    for (int d = 0; d < 3; d++) {
        int64_t s = g->steps[d][idx[d]];
        if (lb)
            lb[d] = s;
        if (origin)
            origin[d] = s - g->pad_lo[d];
        if (pos) /* B §3.2: lb + F//2 - shape//2, shape of the padded volume */
            pos[d] = s + g->patch[d] / 2 - g->padded[d] / 2;
    }
}

void fine_gaussian_1d(int64_t P, double sigma, double *w)
{
    /* scipy.ndimage._gaussian_kernel1d(sigma, 0, radius), radius = int(4.0 * sigma + 0.5) */
    int64_t radius = (int64_t)(4.0 * sigma + 0.5);
    double sigma2 = sigma * sigma, sum = 0;
    for (int64_t x = -radius; x <= radius; x++)
        sum += exp(-0.5 / sigma2 * (double)(x * x));
    int64_t c = P / 2;
    for (int64_t i = 0; i < P; i++) {
        int64_t x = i - c;
        w[i] = (x >= -radius && x <= radius) ? exp(-0.5 / sigma2 * (double)(x * x)) / sum : 0.0;
    }
}

int fine_gaussian_map(const int64_t patch[3], double sigma_scale, float *out, fine_err *e)
{
    for (int d = 0; d < 3; d++)
        if (patch[d] < 1)
            return fine_err_set(e, "gaussian map: patch axis %d has size %lld", d, (long long)patch[d]);
    if (!(sigma_scale > 0))
        return fine_err_set(e, "gaussian map: sigma scale %g is not positive", sigma_scale);
    double *w[3];
    w[0] = malloc((size_t)(patch[0] + patch[1] + patch[2]) * sizeof(double));
    if (!w[0])
        return fine_err_set(e, "out of memory");
    w[1] = w[0] + patch[0];
    w[2] = w[1] + patch[1];
    for (int d = 0; d < 3; d++)
        fine_gaussian_1d(patch[d], (double)patch[d] * sigma_scale, w[d]);
    /* gaussian_filter filters axis 0, then 1, then 2: the impulse becomes (w0 * w1) * w2 exactly
     * (every other term of each correlation sum is an exact zero). */
    double mx = 0;
    for (int64_t i = 0; i < patch[0]; i++)
        for (int64_t j = 0; j < patch[1]; j++)
            for (int64_t k = 0; k < patch[2]; k++) {
                double v = (w[0][i] * w[1][j]) * w[2][k];
                if (v > mx)
                    mx = v;
            }
    float minnz = INFINITY;
    int64_t n = 0;
    for (int64_t i = 0; i < patch[0]; i++)
        for (int64_t j = 0; j < patch[1]; j++)
            for (int64_t k = 0; k < patch[2]; k++) {
                float v = (float)((w[0][i] * w[1][j]) * w[2][k] / mx * 1.0);
                out[n++] = v;
                if (v != 0 && v < minnz)
                    minnz = v;
            }
    free(w[0]);
    for (int64_t i = 0; i < n; i++)
        if (out[i] == 0)
            out[i] = minnz;
    return 0;
}

void fine_grid_extract(const fine_tensor *vol, const int64_t origin[3], const int64_t box[3], void *out)
{
    const int64_t *S = vol->shape + vol->ndim - 3;
    size_t es = fine_dtype_size(vol->dtype);
    int64_t lo[3], hi[3];
    int empty = 0;
    for (int d = 0; d < 3; d++) {
        lo[d] = origin[d] > 0 ? origin[d] : 0;
        hi[d] = origin[d] + box[d] < S[d] ? origin[d] + box[d] : S[d];
        if (hi[d] <= lo[d])
            empty = 1;
    }
    char *o = out;
    const char *src = vol->data;
    int full = !empty;
    for (int d = 0; d < 3; d++)
        if (lo[d] != origin[d] || hi[d] != origin[d] + box[d])
            full = 0;
    if (!full)
        memset(o, 0, (size_t)(box[0] * box[1] * box[2]) * es);
    if (empty)
        return;
    size_t row = (size_t)(hi[2] - lo[2]) * es;
    for (int64_t z = lo[0]; z < hi[0]; z++)
        for (int64_t y = lo[1]; y < hi[1]; y++) {
            int64_t t = ((z - origin[0]) * box[1] + (y - origin[1])) * box[2] + (lo[2] - origin[2]);
            int64_t v = (z * S[1] + y) * S[2] + lo[2];
            memcpy(o + (size_t)t * es, src + (size_t)v * es, row);
        }
}
