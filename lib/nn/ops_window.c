/* ops_window.c: the window layers of ops.h: window partition and reverse with the cyclic shift
 * (fine-reference B 2.1), the relative position index and bias (B 2.2) and the shift mask
 * (B 2.3). Partition and reverse are one permutation of tokens read in two directions, so
 * each accumulating form is the backward of the other. */
#include "nn/ops.h"

#include <string.h>

/* Work below this many floats runs on the calling thread only. */
#define SERIAL_FLOATS 32768

static inline int64_t wrap(int64_t i, int64_t n)
{
    int64_t r = i % n;
    return r < 0 ? r + n : r;
}

/* Walks every token of every window: window token n = (b*nW + window) * ws^3 + t, t the
 * (d, h, w) raster index inside the window, reads x at the position rolled by -shift:
 * x[b, (d + shift) mod D, (h + shift) mod H, (w + shift) mod W].
 * to_windows: win[n] (+)= x[that token]; otherwise x[that token] (+)= win[n]. */
static inline __attribute__((always_inline)) void
window_walk(float *dst, const float *src, int64_t B, int64_t D, int64_t H, int64_t W, int64_t C,
            int ws, int shift, int to_windows, int accumulate)
{
    int64_t nd = D / ws, nh = H / ws, nw = W / ws;
    int64_t windows = B * nd * nh * nw, N = (int64_t)ws * ws * ws;
#pragma omp parallel for schedule(static) if (windows * N * C > SERIAL_FLOATS)
    for (int64_t win = 0; win < windows; win++) {
        int64_t ww = win % nw, wh = (win / nw) % nh, wd = (win / (nw * nh)) % nd;
        int64_t b = win / (nw * nh * nd);
        int64_t n = win * N;
        for (int td = 0; td < ws; td++) {
            int64_t d = wrap(wd * ws + td + shift, D);
            for (int th = 0; th < ws; th++) {
                int64_t h = wrap(wh * ws + th + shift, H);
                for (int tw = 0; tw < ws; tw++, n++) {
                    int64_t w = wrap(ww * ws + tw + shift, W);
                    int64_t xi = ((b * D + d) * H + h) * W + w;
                    float *o = to_windows ? dst + n * C : dst + xi * C;
                    const float *s = to_windows ? src + xi * C : src + n * C;
                    if (accumulate) {
#pragma omp simd
                        for (int64_t c = 0; c < C; c++)
                            o[c] += s[c];
                    } else {
                        memcpy(o, s, (size_t)C * sizeof(float));
                    }
                }
            }
        }
    }
}

void fine_window_partition(float *out, const float *x, int64_t B, int64_t D, int64_t H, int64_t W,
                           int64_t C, int ws, int shift)
{
    window_walk(out, x, B, D, H, W, C, ws, shift, 1, 0);
}

void fine_window_reverse(float *x, const float *win, int64_t B, int64_t D, int64_t H, int64_t W,
                         int64_t C, int ws, int shift)
{
    window_walk(x, win, B, D, H, W, C, ws, shift, 0, 0);
}

void fine_window_partition_acc(float *dx, const float *dwin, int64_t B, int64_t D, int64_t H,
                               int64_t W, int64_t C, int ws, int shift)
{
    window_walk(dx, dwin, B, D, H, W, C, ws, shift, 0, 1);
}

void fine_window_reverse_acc(float *dwin, const float *dx, int64_t B, int64_t D, int64_t H,
                             int64_t W, int64_t C, int ws, int shift)
{
    window_walk(dwin, dx, B, D, H, W, C, ws, shift, 1, 1);
}

void fine_relpos_index(int64_t *index, int ws)
{
    int64_t N = (int64_t)ws * ws * ws;
    for (int64_t i = 0; i < N; i++) {
        int64_t si = i / (ws * ws), hi = (i / ws) % ws, wi = i % ws;
        for (int64_t j = 0; j < N; j++) {
            int64_t sj = j / (ws * ws), hj = (j / ws) % ws, wj = j % ws;
            int64_t ds = si - sj + ws - 1, dh = hi - hj + ws - 1, dw = wi - wj + ws - 1;
            index[i * N + j] = ds * (3 * ws - 1) + dh * (2 * ws - 1) + dw;
        }
    }
}

void fine_relpos_bias(float *bias, const float *table, const int64_t *index, int heads, int N)
{
    int64_t NN = (int64_t)N * N;
#pragma omp parallel for schedule(static) if (heads * NN > SERIAL_FLOATS)
    for (int h = 0; h < heads; h++)
        for (int64_t k = 0; k < NN; k++)
            bias[h * NN + k] = table[index[k] * heads + h];
}

void fine_relpos_bias_backward(float *dtable, const float *dbias, const int64_t *index, int heads,
                               int N)
{
    int64_t NN = (int64_t)N * N;
    /* each head owns its column of the table: no two threads write one entry */
#pragma omp parallel for schedule(static) if (heads * NN > SERIAL_FLOATS)
    for (int h = 0; h < heads; h++)
        for (int64_t k = 0; k < NN; k++)
            dtable[index[k] * heads + h] += dbias[h * NN + k];
}

/* Region label along one axis of size S: 0 on [0, S-ws), 1 on [S-ws, S-shift), 2 on
 * [S-shift, S). */
static inline int region(int64_t c, int64_t S, int ws, int shift)
{
    return c < S - ws ? 0 : (c < S - shift ? 1 : 2);
}

void fine_shift_mask(float *mask, int64_t D, int64_t H, int64_t W, int ws, int shift)
{
    int64_t nd = D / ws, nh = H / ws, nw = W / ws, N = (int64_t)ws * ws * ws;
    int64_t windows = nd * nh * nw;
#pragma omp parallel for schedule(static) if (windows * N * N > SERIAL_FLOATS)
    for (int64_t win = 0; win < windows; win++) {
        int64_t ww = win % nw, wh = (win / nw) % nh, wd = win / (nw * nh);
        int id[N];
        for (int64_t t = 0; t < N; t++) {
            int64_t td = t / (ws * ws), th = (t / ws) % ws, tw = t % ws;
            id[t] = 9 * region(wd * ws + td, D, ws, shift) +
                    3 * region(wh * ws + th, H, ws, shift) +
                    region(ww * ws + tw, W, ws, shift);
        }
        float *m = mask + win * N * N;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++)
                m[i * N + j] = id[i] == id[j] ? 0.0f : -100.0f;
    }
}
