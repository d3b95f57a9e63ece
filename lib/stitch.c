#include "stitch.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "patch_grid.h"

int fine_stitch_begin(fine_stitch *s, const int64_t size[3], int gaussian, int threads, fine_err *e)
{
    memset(s, 0, sizeof *s);
    for (int d = 0; d < 3; d++) {
        if (size[d] < 1)
            return fine_err_set(e, "stitch: volume size %lldx%lldx%lld has an empty axis",
                                (long long)size[0], (long long)size[1], (long long)size[2]);
        s->size[d] = size[d];
    }
    s->gaussian = gaussian;
    s->threads = threads < 1 ? 1 : threads;
    return 0;
}

void fine_stitch_free(fine_stitch *s)
{
    free(s->acc);
    free(s->wsum);
    free(s->gmap);
    free(s->f16);
    memset(s, 0, sizeof *s);
}

/* One thread's share of a tile: rows [r0, r1) of the overlap box (rows are (z, y) pairs). */
typedef struct add_job {
    fine_stitch *s;
    const fine_tensor *pred;
    int logits;
    int64_t lo[3], hi[3];   /* overlap box in volume coordinates */
    int64_t origin[3];
    int64_t r0, r1;
    float *tmp;             /* K * row length */
} add_job;

/* a[i] += x[i] * g[i]; unrolled by 8 so that the compiler can vectorize it at -O2. */
static void add_weighted(float *restrict a, const float *restrict x, const float *restrict g, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a[i] += x[i] * g[i];
        a[i + 1] += x[i + 1] * g[i + 1];
        a[i + 2] += x[i + 2] * g[i + 2];
        a[i + 3] += x[i + 3] * g[i + 3];
        a[i + 4] += x[i + 4] * g[i + 4];
        a[i + 5] += x[i + 5] * g[i + 5];
        a[i + 6] += x[i + 6] * g[i + 6];
        a[i + 7] += x[i + 7] * g[i + 7];
    }
    for (; i < n; i++)
        a[i] += x[i] * g[i];
}

static void add_row(float *restrict a, const float *restrict g, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a[i] += g[i];
        a[i + 1] += g[i + 1];
        a[i + 2] += g[i + 2];
        a[i + 3] += g[i + 3];
        a[i + 4] += g[i + 4];
        a[i + 5] += g[i + 5];
        a[i + 6] += g[i + 6];
        a[i + 7] += g[i + 7];
    }
    for (; i < n; i++)
        a[i] += g[i];
}

static void *add_rows(void *arg)
{
    add_job *j = arg;
    fine_stitch *s = j->s;
    const fine_tensor *p = j->pred;
    int64_t K = s->classes, P[3] = {p->shape[1], p->shape[2], p->shape[3]};
    int64_t tn = P[0] * P[1] * P[2], vn = s->size[0] * s->size[1] * s->size[2];
    int64_t ny = j->hi[1] - j->lo[1], len = j->hi[2] - j->lo[2];
    const float *pf = p->dtype == FINE_F32 ? p->data : NULL;
    const uint16_t *ph = p->dtype == FINE_F16 ? p->data : NULL;
    for (int64_t r = j->r0; r < j->r1; r++) {
        int64_t z = j->lo[0] + r / ny, y = j->lo[1] + r % ny, x0 = j->lo[2];
        int64_t t0 = ((z - j->origin[0]) * P[1] + (y - j->origin[1])) * P[2] + (x0 - j->origin[2]);
        int64_t v0 = (z * s->size[1] + y) * s->size[2] + x0;
        const float *g = s->gmap + t0;
        add_row(s->wsum + v0, g, len);
        if (pf && !j->logits) { /* f32 probabilities: straight from the record */
            for (int64_t c = 0; c < K; c++)
                add_weighted(s->acc + c * vn + v0, pf + c * tn + t0, g, len);
            continue;
        }
        for (int64_t c = 0; c < K; c++) {
            float *row = j->tmp + c * len;
            if (pf)
                memcpy(row, pf + c * tn + t0, (size_t)len * sizeof *row);
            else
                for (int64_t i = 0; i < len; i++)
                    row[i] = s->f16[ph[c * tn + t0 + i]];
        }
        if (j->logits) /* softmax over the channels, per voxel */
            for (int64_t i = 0; i < len; i++) {
                float mx = j->tmp[i];
                for (int64_t c = 1; c < K; c++)
                    mx = fmaxf(mx, j->tmp[c * len + i]);
                float sum = 0;
                for (int64_t c = 0; c < K; c++)
                    sum += (j->tmp[c * len + i] = expf(j->tmp[c * len + i] - mx));
                for (int64_t c = 0; c < K; c++)
                    j->tmp[c * len + i] /= sum;
            }
        for (int64_t c = 0; c < K; c++)
            add_weighted(s->acc + c * vn + v0, j->tmp + c * len, g, len);
    }
    return NULL;
}

static int ensure_map(fine_stitch *s, const int64_t P[3], fine_err *e)
{
    if (s->gmap && memcmp(s->patch, P, sizeof s->patch) == 0)
        return 0;
    free(s->gmap);
    int64_t n = P[0] * P[1] * P[2];
    s->gmap = malloc((size_t)n * sizeof(float));
    if (!s->gmap)
        return fine_err_set(e, "out of memory (weight map of %lld voxels)", (long long)n);
    memcpy(s->patch, P, sizeof s->patch);
    if (!s->gaussian) {
        for (int64_t i = 0; i < n; i++)
            s->gmap[i] = 1.0f;
        return 0;
    }
    return fine_gaussian_map(P, 1.0 / 8.0, s->gmap, e);
}

int fine_stitch_add(fine_stitch *s, const fine_tensor *pred, const int64_t origin[3], int logits,
                    fine_err *e)
{
    if (pred->ndim != 4 || (pred->dtype != FINE_F32 && pred->dtype != FINE_F16))
        return fine_err_set(e, "prediction must be a [K, z, y, x] f16 or f32 tensor");
    int64_t K = pred->shape[0], P[3] = {pred->shape[1], pred->shape[2], pred->shape[3]};
    if (K < 1 || P[0] < 1 || P[1] < 1 || P[2] < 1)
        return fine_err_set(e, "prediction has an empty axis");
    int64_t vn = s->size[0] * s->size[1] * s->size[2];
    if (!s->acc) {
        s->classes = K;
        s->acc = calloc((size_t)(K * vn), sizeof(float));
        s->wsum = calloc((size_t)vn, sizeof(float));
        if (!s->acc || !s->wsum)
            return fine_err_set(e, "out of memory (%lld classes x %lld voxels)", (long long)K,
                                (long long)vn);
    } else if (K != s->classes) {
        return fine_err_set(e, "prediction has %lld classes, earlier ones had %lld", (long long)K,
                            (long long)s->classes);
    }
    int64_t lo[3], hi[3];
    for (int d = 0; d < 3; d++) {
        lo[d] = origin[d] > 0 ? origin[d] : 0;
        hi[d] = origin[d] + P[d] < s->size[d] ? origin[d] + P[d] : s->size[d];
        if (hi[d] <= lo[d])
            return fine_err_set(e, "tile at origin [%lld, %lld, %lld] of size %lldx%lldx%lld lies "
                                   "outside the volume %lldx%lldx%lld",
                                (long long)origin[0], (long long)origin[1], (long long)origin[2],
                                (long long)P[0], (long long)P[1], (long long)P[2],
                                (long long)s->size[0], (long long)s->size[1], (long long)s->size[2]);
    }
    if (ensure_map(s, P, e) < 0)
        return -1;
    if (pred->dtype == FINE_F16 && !s->f16) {
        s->f16 = malloc(65536 * sizeof(float));
        if (!s->f16)
            return fine_err_set(e, "out of memory");
        for (uint32_t h = 0; h < 65536; h++)
            s->f16[h] = fine_f16_to_f32((uint16_t)h);
    }
    int64_t rows = (hi[0] - lo[0]) * (hi[1] - lo[1]), len = hi[2] - lo[2];
    int nt = s->threads;
    if (nt > rows)
        nt = (int)rows;
    if (rows * len * K < (1 << 16))
        nt = 1;
    add_job jobs[64];
    pthread_t tid[64];
    if (nt > 64)
        nt = 64;
    int started = 0, failed = 0;
    for (int t = 0; t < nt; t++) {
        add_job *j = &jobs[t];
        memset(j, 0, sizeof *j);
        j->s = s;
        j->pred = pred;
        j->logits = logits;
        memcpy(j->lo, lo, sizeof lo);
        memcpy(j->hi, hi, sizeof hi);
        memcpy(j->origin, origin, sizeof j->origin);
        j->r0 = rows * t / nt;
        j->r1 = rows * (t + 1) / nt;
        j->tmp = malloc((size_t)(K * len) * sizeof(float));
        if (!j->tmp)
            failed = 1;
    }
    if (!failed) {
        for (int t = 1; t < nt; t++) {
            if (pthread_create(&tid[t], NULL, add_rows, &jobs[t]) != 0)
                break;
            started = t;
        }
        /* rows of threads that did not start are done here */
        add_rows(&jobs[0]);
        for (int t = started + 1; t < nt; t++)
            add_rows(&jobs[t]);
        for (int t = 1; t <= started; t++)
            pthread_join(tid[t], NULL);
    }
    for (int t = 0; t < nt; t++)
        free(jobs[t].tmp);
    if (failed)
        return fine_err_set(e, "out of memory");
    s->tiles++;
    return 0;
}

int fine_stitch_finish(fine_stitch *s, fine_tensor *prob, fine_err *e)
{
    memset(prob, 0, sizeof *prob);
    if (!s->tiles) {
        fine_stitch_free(s);
        return fine_err_set(e, "no predictions");
    }
    int64_t vn = s->size[0] * s->size[1] * s->size[2], K = s->classes;
    for (int64_t v = 0; v < vn; v++)
        if (!(s->wsum[v] > 0)) {
            int64_t z = v / (s->size[1] * s->size[2]), y = (v / s->size[2]) % s->size[1],
                    x = v % s->size[2];
            fine_stitch_free(s);
            return fine_err_set(e, "voxel [%lld, %lld, %lld] is covered by no prediction",
                                (long long)z, (long long)y, (long long)x);
        }
    int finite = 1;
    for (int64_t c = 0; c < K; c++) {
        float *a = s->acc + c * vn, z = 0;
        for (int64_t v = 0; v < vn; v++) {
            a[v] /= s->wsum[v];
            z += a[v] * 0.0f; /* NaN once a value is not finite */
        }
        finite = finite && z == 0;
    }
    if (!finite) {
        fine_stitch_free(s);
        return fine_err_set(e, "the predictions hold a value that is not finite");
    }
    prob->dtype = FINE_F32;
    prob->ndim = 4;
    prob->shape[0] = K;
    for (int d = 0; d < 3; d++)
        prob->shape[d + 1] = s->size[d];
    prob->data = s->acc;
    prob->owns_data = 1;
    s->acc = NULL;
    fine_stitch_free(s);
    return 0;
}

int fine_argmax_u8(const fine_tensor *prob, fine_tensor *seg, fine_err *e)
{
    memset(seg, 0, sizeof *seg);
    if (prob->ndim != 4 || prob->dtype != FINE_F32)
        return fine_err_set(e, "argmax: probabilities must be a [K, z, y, x] f32 tensor");
    int64_t K = prob->shape[0];
    if (K < 1 || K > 256)
        return fine_err_set(e, "argmax: %lld classes (1 to 256 fit a u8 segmentation)", (long long)K);
    if (fine_tensor_alloc(seg, FINE_U8, 3, prob->shape + 1, e) < 0)
        return -1;
    int64_t vn = fine_tensor_numel(seg);
    const float *p = prob->data;
    uint8_t *o = seg->data;
    /* channel by channel, keeping the running maximum in a scratch row per block of voxels */
    enum { BLOCK = 4096 };
    float best[BLOCK];
    for (int64_t v0 = 0; v0 < vn; v0 += BLOCK) {
        int64_t n = vn - v0 < BLOCK ? vn - v0 : BLOCK;
        for (int64_t i = 0; i < n; i++) {
            best[i] = p[v0 + i];
            o[v0 + i] = 0;
        }
        for (int64_t c = 1; c < K; c++) {
            const float *pc = p + c * vn + v0;
            for (int64_t i = 0; i < n; i++)
                if (pc[i] > best[i]) { /* strictly greater: the first maximum wins */
                    best[i] = pc[i];
                    o[v0 + i] = (uint8_t)c;
                }
        }
    }
    return 0;
}

void fine_stitch_original_geometry(const fine_geometry *g, fine_geometry *out)
{
    *out = *g;
    for (int d = 0; d < 3; d++) {
        out->size[d] = g->original_size[d];
        out->spacing[d] = g->original_spacing[d];
        out->crop_lo[d] = 0;
        out->crop_hi[d] = g->original_size[d];
    }
}

void fine_stitch_crop_geometry(const fine_geometry *g, fine_geometry *out)
{
    *out = *g;
    for (int d = 0; d < 3; d++) {
        out->size[d] = g->crop_hi[d] - g->crop_lo[d];
        out->spacing[d] = g->original_spacing[d];
    }
}

int fine_stitch_is_unresampled(const fine_geometry *g)
{
    for (int d = 0; d < 3; d++)
        if (g->size[d] != g->crop_hi[d] - g->crop_lo[d])
            return 0;
    return 1;
}

int fine_paste_crop(const fine_tensor *crop, const fine_geometry *g, double fill0, fine_tensor *out,
                    fine_err *e)
{
    memset(out, 0, sizeof *out);
    if (crop->ndim != 3 && crop->ndim != 4)
        return fine_err_set(e, "paste: expected a [z, y, x] or [C, z, y, x] tensor, got %d dimensions",
                            crop->ndim);
    int sp = crop->ndim - 3;
    int64_t C = sp ? crop->shape[0] : 1;
    const int64_t *cs = crop->shape + sp, *os = g->original_size;
    for (int d = 0; d < 3; d++)
        if (g->crop_lo[d] < 0 || g->crop_lo[d] >= os[d] || cs[d] != g->crop_hi[d] - g->crop_lo[d])
            return fine_err_set(e, "paste: crop box [%lld, %lld) on axis %d does not fit the "
                                   "array (%lld voxels) and the original grid (%lld)",
                                (long long)g->crop_lo[d], (long long)g->crop_hi[d], d,
                                (long long)cs[d], (long long)os[d]);
    int64_t shape[4] = {C, os[0], os[1], os[2]};
    if (fine_tensor_alloc(out, crop->dtype, crop->ndim, sp ? shape : shape + 1, e) < 0)
        return -1;
    int64_t on = os[0] * os[1] * os[2], cn = cs[0] * cs[1] * cs[2];
    if (sp && fill0 != 0)
        for (int64_t i = 0; i < on; i++)
            fine_tensor_set(out, i, fill0);
    int64_t n[3], lo[3];
    for (int d = 0; d < 3; d++) {
        lo[d] = g->crop_lo[d];
        n[d] = lo[d] + cs[d] > os[d] ? os[d] - lo[d] : cs[d];
    }
    size_t es = fine_dtype_size(crop->dtype);
    const char *src = crop->data;
    char *dst = out->data;
    for (int64_t c = 0; c < C; c++)
        for (int64_t z = 0; z < n[0]; z++)
            for (int64_t y = 0; y < n[1]; y++) {
                int64_t o = c * on + ((lo[0] + z) * os[1] + lo[1] + y) * os[2] + lo[2];
                int64_t i = c * cn + (z * cs[1] + y) * cs[2];
                memcpy(dst + (size_t)o * es, src + (size_t)i * es, (size_t)n[2] * es);
            }
    return 0;
}
