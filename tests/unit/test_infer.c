/* test_infer.c: the pieces of lib/infer.c against hand-computed values: mirroring of a
 * (C, z, y, x) array over each axis subset (element by element from the index formula),
 * mirroring twice is the identity, the softmax over channels (logits 0 and 1 give 1/(1+e) and
 * e/(1+e); huge logits do not overflow; in place), and the weighted mirrored accumulation. The
 * predictor itself (network, TTA, batching) is checked end to end by tests/bats/infer.bats. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "nn/ops.h"
#include "tap.h"

int main(void)
{
    tap t = {0};
    const int64_t C = 2, dims[3] = {2, 3, 4};
    const int64_t n = dims[0] * dims[1] * dims[2];
    float src[2 * 24], dst[2 * 24], back[2 * 24], acc[2 * 24];
    for (int64_t i = 0; i < C * n; i++)
        src[i] = (float)i;

    for (unsigned axes = 0; axes < 8; axes++) {
        fine_mirror(dst, src, C, dims, axes);
        int ok = 1;
        for (int64_t c = 0; c < C; c++)
            for (int64_t z = 0; z < dims[0]; z++)
                for (int64_t y = 0; y < dims[1]; y++)
                    for (int64_t x = 0; x < dims[2]; x++) {
                        int64_t sz = axes & FINE_MIRROR_Z ? dims[0] - 1 - z : z;
                        int64_t sy = axes & FINE_MIRROR_Y ? dims[1] - 1 - y : y;
                        int64_t sx = axes & FINE_MIRROR_X ? dims[2] - 1 - x : x;
                        float want = (float)(((c * dims[0] + sz) * dims[1] + sy) * dims[2] + sx);
                        ok &= dst[((c * dims[0] + z) * dims[1] + y) * dims[2] + x] == want;
                    }
        tap_ok(&t, ok, "mirror over axes %u: element by element", axes);
        fine_mirror(back, dst, C, dims, axes);
        tap_ok(&t, memcmp(back, src, sizeof src) == 0, "mirror over axes %u twice is the identity", axes);
    }
    /* z and x by hand: dst(c, z, y, x) = src(c, 1 - z, y, 3 - x) */
    fine_mirror(dst, src, C, dims, FINE_MIRROR_Z | FINE_MIRROR_X);
    tap_ok(&t, dst[0] == 15.0f && dst[24] == 39.0f && dst[3] == 12.0f,
           "mirror z,x by hand: %g %g %g (want 15 39 12)", dst[0], dst[24], dst[3]);

    /* softmax: K = 2 over 300 voxels (more than one block); voxel i has logits (0, 1) or
     * (1000, 1001), exact in f32: probabilities (1/(1+e), e/(1+e)) either way */
    {
        enum { K = 2, N = 300 };
        float *lg = malloc(sizeof(float) * K * N), *p = malloc(sizeof(float) * K * N);
        for (int i = 0; i < N; i++) {
            float base = i % 2 ? 1000.0f : 0.0f;
            lg[i] = base;
            lg[N + i] = base + 1.0f;
        }
        fine_softmax_channels(p, lg, K, N);
        double err = 0;
        for (int i = 0; i < N; i++)
            err = fmax(err, fmax(fabs(p[i] - 1 / (1 + M_E)), fabs(p[N + i] - M_E / (1 + M_E))));
        tap_ok(&t, err < 1e-6, "softmax (0, 1) -> (1/(1+e), e/(1+e)), also at logit 1000: max error %g", err);
        fine_softmax_channels(lg, lg, K, N);
        tap_ok(&t, memcmp(lg, p, sizeof(float) * K * N) == 0, "softmax in place equals out of place");
        free(lg);
        free(p);
    }
    /* 14 classes: sums to 1 and the order of the logits is kept */
    {
        enum { K = 14, N = 5 };
        float lg[K * N], p[K * N];
        for (int k = 0; k < K; k++)
            for (int i = 0; i < N; i++)
                lg[k * N + i] = (float)(k * 0.3 - i * 1.7 + (k * i % 3));
        fine_softmax_channels(p, lg, K, N);
        int ok = 1;
        for (int i = 0; i < N; i++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                s += p[k * N + i];
                double want = 0;
                for (int j = 0; j < K; j++)
                    want += exp((double)lg[j * N + i] - lg[k * N + i]);
                ok &= fabs(p[k * N + i] - 1.0 / want) < 1e-6;
            }
            ok &= fabs(s - 1) < 1e-6;
        }
        tap_ok(&t, ok, "softmax of 14 classes: 1 / sum_j exp(l_j - l_k), sums to 1");
    }

    /* accumulate: acc = 1 + 0.5 * mirror_y(src) */
    for (int64_t i = 0; i < C * n; i++)
        acc[i] = 1.0f;
    fine_mirror_accumulate(acc, src, C, dims, FINE_MIRROR_Y, 0.5f);
    fine_mirror(dst, src, C, dims, FINE_MIRROR_Y);
    int ok = 1;
    for (int64_t i = 0; i < C * n; i++)
        ok &= acc[i] == 1.0f + 0.5f * dst[i];
    tap_ok(&t, ok, "mirror_accumulate adds weight * the mirrored array");
    for (int64_t i = 0; i < C * n; i++)
        acc[i] = 0.0f;
    fine_mirror_accumulate(acc, src, C, dims, FINE_MIRROR_X | FINE_MIRROR_Z, 1.0f);
    fine_mirror(dst, src, C, dims, FINE_MIRROR_X | FINE_MIRROR_Z);
    tap_ok(&t, memcmp(acc, dst, sizeof acc) == 0, "mirror_accumulate with weight 1 into zeros is the mirror");
    return tap_done(&t);
}
