/* test_ops_window: window partition/reverse with the cyclic shift, the relative position index
 * and bias, and the shift mask of lib/nn/ops_window.c (fine-reference B 2.1-2.3).
 *
 * The partition is checked against a reference written the way PyTorch does it: the rolled
 * volume materialised (torch.roll(x, -shift)), then viewed as (B, D/ws, ws, H/ws, ws, W/ws, ws, C),
 * permuted to (0, 1, 3, 5, 2, 4, 6, 7) and read out through strides. The shift mask is checked
 * against the reference's construction: an id volume filled by slices, partitioned by the same
 * reference, compared pairwise. All comparisons are exact. */
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "tap.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static float urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Reference partition: roll, then an 8-D strided view read in permuted order. */
static void ref_partition(float *out, const float *x, int64_t B, int64_t D, int64_t H, int64_t W,
                          int64_t C, int ws, int shift)
{
    int64_t n = B * D * H * W * C;
    float *rolled = malloc((size_t)n * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t d = 0; d < D; d++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++)
                    for (int64_t c = 0; c < C; c++)
                        rolled[(((b * D + d) * H + h) * W + w) * C + c] =
                            x[(((b * D + (d + shift) % D) * H + (h + shift) % H) * W +
                               (w + shift) % W) * C + c];
    /* view dims (B, nd, ws, nh, ws, nw, ws, C) and their strides in the rolled array */
    int64_t nd = D / ws, nh = H / ws, nw = W / ws;
    int64_t dims[8] = {B, nd, ws, nh, ws, nw, ws, C};
    int64_t strides[8];
    strides[7] = 1;
    for (int k = 6; k >= 0; k--)
        strides[k] = strides[k + 1] * dims[k + 1];
    int perm[8] = {0, 1, 3, 5, 2, 4, 6, 7};
    int64_t idx[8] = {0};
    for (int64_t o = 0; o < n; o++) {
        int64_t src = 0;
        for (int k = 0; k < 8; k++)
            src += idx[k] * strides[perm[k]];
        out[o] = rolled[src];
        for (int k = 7; k >= 0; k--) { /* odometer over the permuted dims */
            if (++idx[k] < dims[perm[k]])
                break;
            idx[k] = 0;
        }
    }
    free(rolled);
}

static void test_partition(tap *t, int64_t B, int64_t D, int64_t H, int64_t W, int64_t C, int ws,
                           int shift)
{
    int64_t n = B * D * H * W * C;
    float *x = malloc((size_t)n * 4), *win = malloc((size_t)n * 4), *ref = malloc((size_t)n * 4);
    float *back = malloc((size_t)n * 4), *acc = malloc((size_t)n * 4);
    float *acc0 = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++)
        x[i] = urand();
    fine_window_partition(win, x, B, D, H, W, C, ws, shift);
    ref_partition(ref, x, B, D, H, W, C, ws, shift);
    tap_ok(t, !memcmp(win, ref, (size_t)n * 4),
           "partition (%lld,%lld,%lld,%lld,%lld) ws %d shift %d = roll + view + permute",
           (long long)B, (long long)D, (long long)H, (long long)W, (long long)C, ws, shift);
    fine_window_reverse(back, win, B, D, H, W, C, ws, shift);
    tap_ok(t, !memcmp(back, x, (size_t)n * 4), "reverse(partition(x)) = x (shift %d)", shift);
    fine_window_partition(back, win, B, D, H, W, C, ws, 0); /* treat win as a volume */
    fine_window_reverse(ref, back, B, D, H, W, C, ws, 0);
    tap_ok(t, !memcmp(ref, win, (size_t)n * 4), "reverse(partition) round trip without shift");

    /* accumulating forms: partition_acc(dx, dwin) adds reverse(dwin) to dx; reverse_acc(dwin,
     * dx) adds partition(dx) to dwin */
    for (int64_t i = 0; i < n; i++)
        acc[i] = acc0[i] = urand();
    fine_window_partition_acc(acc, win, B, D, H, W, C, ws, shift);
    int ok = 1;
    for (int64_t i = 0; i < n; i++)
        ok &= acc[i] == acc0[i] + x[i];
    tap_ok(t, ok, "partition_acc adds the reverse (the backward of partition), shift %d", shift);
    memcpy(acc, acc0, (size_t)n * 4);
    fine_window_reverse_acc(acc, x, B, D, H, W, C, ws, shift);
    ok = 1;
    for (int64_t i = 0; i < n; i++)
        ok &= acc[i] == acc0[i] + win[i];
    tap_ok(t, ok, "reverse_acc adds the partition (the backward of reverse), shift %d", shift);
    free(x), free(win), free(ref), free(back), free(acc), free(acc0);
}

static void test_relpos(tap *t)
{
    const int ws = 4, N = 64;
    int64_t *idx = malloc(N * N * sizeof(int64_t));
    fine_relpos_index(idx, ws);
    /* token (s, h, w) is s*16 + h*4 + w; index = 11 ds + 7 dh + dw, d = c_i - c_j + 3 */
    int ok = idx[0 * N + 0] == 57 && idx[63 * N + 0] == 114 && idx[0 * N + 63] == 0;
    /* i = (1,2,3) = 27, j = (2,0,1) = 33: ds 2, dh 5, dw 5 -> 22 + 35 + 5 = 62 */
    ok &= idx[27 * N + 33] == 62;
    /* i = (0,3,0) = 12, j = (3,0,2) = 50: ds 0, dh 6, dw 1 -> 43 */
    ok &= idx[12 * N + 50] == 43;
    tap_ok(t, ok, "relpos index spot values (57, 114, 0, 62, 43)");
    int seen[343] = {0}, lo = 1000, hi = -1;
    for (int k = 0; k < N * N; k++) {
        int v = (int)idx[k];
        lo = v < lo ? v : lo, hi = v > hi ? v : hi;
        if (v >= 0 && v < 343)
            seen[v] = 1;
    }
    int distinct = 0;
    for (int v = 0; v < 343; v++)
        distinct += seen[v];
    tap_ok(t, lo == 0 && hi == 114 && distinct == 115,
           "relpos index range 0..114, 115 values used");
    /* non-injective: offsets (ds,dh,dw) = (0,1,4) and (1,0,0) both give 11 */
    int64_t a = idx[(0 * 16 + 1 * 4 + 3) * N + (3 * 16 + 3 * 4 + 2)]; /* (0,1,3) vs (3,3,2) */
    int64_t b = idx[(0 * 16 + 0 * 4 + 0) * N + (2 * 16 + 3 * 4 + 3)]; /* (0,0,0) vs (2,3,3) */
    tap_ok(t, a == 11 && b == 11,
           "relpos index is not injective: offsets (0,1,4) and (1,0,0) share 11");

    /* bias and its backward */
    const int heads = 3;
    float *table = malloc(343 * heads * 4), *bias = malloc((size_t)heads * N * N * 4);
    for (int i = 0; i < 343 * heads; i++)
        table[i] = urand();
    fine_relpos_bias(bias, table, idx, heads, N);
    ok = 1;
    for (int h = 0; h < heads; h++)
        for (int k = 0; k < N * N; k++)
            ok &= bias[h * N * N + k] == table[idx[k] * heads + h];
    tap_ok(t, ok, "relpos bias[h, i, j] = table[index(i, j), h]");
    float *dbias = malloc((size_t)heads * N * N * 4), *dt = malloc(343 * heads * 4);
    double *ref = calloc(343 * heads, sizeof(double));
    for (int k = 0; k < heads * N * N; k++)
        dbias[k] = urand();
    for (int i = 0; i < 343 * heads; i++)
        dt[i] = table[i]; /* accumulate onto something */
    for (int h = 0; h < heads; h++)
        for (int k = 0; k < N * N; k++)
            ref[idx[k] * heads + h] += dbias[h * N * N + k];
    fine_relpos_bias_backward(dt, dbias, idx, heads, N);
    double err = 0;
    ok = 1;
    for (int i = 0; i < 343 * heads; i++) {
        double e = (double)dt[i] - (double)table[i] - ref[i];
        err = e > err ? e : (-e > err ? -e : err);
        if (i >= 115 * heads)
            ok &= dt[i] == table[i]; /* never-read rows get nothing */
    }
    tap_ok(t, err < 1e-4 && ok,
           "relpos bias backward scatter-adds (err %.1e), rows 115..342 untouched",
           err);
    free(idx), free(table), free(bias), free(dbias), free(dt), free(ref);
}

/* The reference's mask: ids by slices on the (unrolled) grid, partitioned like x. */
static void test_shift_mask(tap *t, int64_t D, int64_t H, int64_t W, int ws, int shift)
{
    int64_t L = D * H * W, N = (int64_t)ws * ws * ws, nW = L / N;
    float *img = malloc((size_t)L * 4), *win = malloc((size_t)L * 4);
    int64_t S[3] = {D, H, W};
    for (int64_t d = 0; d < D; d++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t w = 0; w < W; w++) {
                int64_t c[3] = {d, h, w};
                int l[3];
                for (int a = 0; a < 3; a++) /* slices (0, -ws), (-ws, -shift), (-shift, None) */
                    l[a] = c[a] < S[a] - ws ? 0 : (c[a] < S[a] - shift ? 1 : 2);
                img[(d * H + h) * W + w] = (float)(9 * l[0] + 3 * l[1] + l[2]);
            }
    ref_partition(win, img, 1, D, H, W, 1, ws, 0);
    float *mask = malloc((size_t)(nW * N * N) * 4);
    fine_shift_mask(mask, D, H, W, ws, shift);
    int ok = 1, mixed = 0;
    for (int64_t w = 0; w < nW; w++)
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                float e = win[w * N + i] == win[w * N + j] ? 0.0f : -100.0f;
                ok &= mask[(w * N + i) * N + j] == e;
                mixed += e != 0.0f;
            }
    tap_ok(t, ok && (shift == 0 ? mixed == 0 : mixed > 0),
           "shift mask %lldx%lldx%lld ws %d shift %d: 0 within a region, -100 across (%d pairs)",
           (long long)D, (long long)H, (long long)W, ws, shift, mixed);
    free(img), free(win), free(mask);
}

static void test_shift_mask_spots(tap *t)
{
    /* 8^3 grid, ws 4, shift 2: window 0 is one region; in the last window (1,1,1) token
     * (0,0,0) sits at (4,4,4), ids 9+3+1 = 13, and token (3,3,3) at (7,7,7), id 26 */
    float *mask = malloc(8 * 64 * 64 * 4);
    fine_shift_mask(mask, 8, 8, 8, 4, 2);
    int ok = 1;
    for (int k = 0; k < 64 * 64; k++)
        ok &= mask[k] == 0.0f;
    float *last = mask + 7 * 64 * 64;
    ok &= last[0 * 64 + 63] == -100.0f && last[63 * 64 + 0] == -100.0f;
    /* tokens (0,0,0) and (1,1,1) = 21: both coords 4,5 -> same region */
    ok &= last[0 * 64 + 21] == 0.0f;
    /* (0,0,0) and (0,0,2) = 2: w 4 -> label 1, w 6 -> label 2 */
    ok &= last[0 * 64 + 2] == -100.0f;
    /* window 1 = (0,0,1): only w varies across regions */
    float *w1 = mask + 1 * 64 * 64;
    ok &= w1[0 * 64 + 48] == 0.0f && w1[0 * 64 + 3] == -100.0f;
    tap_ok(t, ok, "shift mask spot values on 8^3 (windows 0, 1, 7)");
    free(mask);
}

int main(void)
{
    tap t = {0};
    test_partition(&t, 2, 8, 12, 4, 3, 4, 0);
    test_partition(&t, 2, 8, 12, 4, 3, 4, 2);
    test_partition(&t, 1, 8, 8, 8, 5, 4, 2);
    test_partition(&t, 2, 6, 6, 9, 2, 3, 1);
    test_partition(&t, 2, 16, 16, 16, 48, 4, 2); /* the parallel path */
    test_relpos(&t);
    test_shift_mask(&t, 8, 8, 8, 4, 2);
    test_shift_mask(&t, 8, 12, 4, 4, 2);
    test_shift_mask(&t, 16, 8, 12, 4, 2);
    test_shift_mask(&t, 8, 8, 8, 4, 0);
    test_shift_mask(&t, 9, 6, 6, 3, 1);
    test_shift_mask_spots(&t);
    return tap_done(&t);
}
