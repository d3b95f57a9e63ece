/* ops_attention.c: the multi-head attention core of ops.h (fine-reference B 2.1, 2.4, 2.5):
 * scores, bias and masks on the window sub-block, softmax, weighted sum, and the backward.
 *
 * Sequences are short (65 tokens for windows, up to a few hundred for the memory-token
 * attention) and numerous, so the work is organised per (sequence, head): OpenMP over those
 * pairs, each done by one thread with small register-blocked matrix products (4 rows x 16
 * columns of accumulators, B packed into a 16-column tile on the stack). The relative position
 * bias gradient, a sum over all sequences, is summed per fixed chunk of sequences and the
 * chunks are added in order, so it is race-free and does not depend on the thread count.
 * The kernels are compiled for the baseline ISA and for AVX2 (with FMA contraction). */
#include "nn/ops.h"

#include <math.h>
#include <string.h>

#include "nn/ops_vec.h"

/* Floats of the per-task stack buffer of the backward (rows of dP / dS). A sequence longer
 * than this takes the row-at-a-time path that needs no buffer. Overridable for testing. */
#ifndef FINE_ATTN_BUF
#define FINE_ATTN_BUF 16384
#endif
/* Inner dimension handled per packed tile. */
#define KC 128

typedef float v8f __attribute__((vector_size(32)));

/* v = 8 floats at p (any alignment); a macro, since a function returning a 32-byte vector
 * changes the ABI between the baseline and AVX builds. */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v8f))



/* ------------------------------------------------------------------ small matrix product */

/* Writes (add = 0) or adds (add = 1) alpha * (v[0], v[1]) to the jn <= 16 floats at cr. */
FINE_INLINE void store_row(float *cr, v8f *v, int64_t jn, int add, float alpha)
{
    if (alpha != 1.0f) {
        v[0] *= alpha;
        v[1] *= alpha;
    }
    if (jn == 16) {
        if (add) {
            v8f c0, c1;
            LOAD8(c0, cr);
            LOAD8(c1, cr + 8);
            v[0] += c0;
            v[1] += c1;
        }
        memcpy(cr, &v[0], sizeof(v8f));
        memcpy(cr + 8, &v[1], sizeof(v8f));
        return;
    }
    float t[16];
    memcpy(t, v, sizeof t);
    if (add)
        for (int64_t jj = 0; jj < jn; jj++)
            cr[jj] += t[jj];
    else
        for (int64_t jj = 0; jj < jn; jj++)
            cr[jj] = t[jj];
}

/* c[i*ldc + j] (= or, with accumulate, +=) alpha * sum_kk A(i,kk) B(kk,j), i < m, j < n,
 * with A(i,kk) = a[i*ars + kk*acs] and B(kk,j) = b[kk*brs + j*bcs]: any strides, so that
 * transposed operands need no copy of their own. B is packed per 16 columns and KC rows into
 * a tile on the stack; blocks of 4 rows x 16 columns accumulate in 8 vector registers, with
 * the A values broadcast straight from memory. */
FINE_INLINE void small_gemm(int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                            int64_t ars, int64_t acs, const float *b, int64_t brs, int64_t bcs,
                            float *c, int64_t ldc, int accumulate)
{
    float bt[KC * 16] __attribute__((aligned(32)));
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
        int64_t jn = n - j0 < 16 ? n - j0 : 16;
        for (int64_t k0 = 0; k0 < k; k0 += KC) {
            int64_t kn = k - k0 < KC ? k - k0 : KC;
            if (bcs == 1) { /* rows of B are contiguous */
                if (jn == 16)
                    for (int64_t kk = 0; kk < kn; kk++)
                        memcpy(bt + kk * 16, b + (k0 + kk) * brs + j0, 16 * sizeof(float));
                else
                    for (int64_t kk = 0; kk < kn; kk++)
                        for (int64_t jj = 0; jj < 16; jj++)
                            bt[kk * 16 + jj] = jj < jn ? b[(k0 + kk) * brs + j0 + jj] : 0.0f;
            } else { /* columns of B are contiguous (a transposed operand) */
                for (int64_t jj = 0; jj < jn; jj++) {
                    const float *src = b + (j0 + jj) * bcs + k0 * brs;
                    for (int64_t kk = 0; kk < kn; kk++)
                        bt[kk * 16 + jj] = src[kk * brs];
                }
                for (int64_t jj = jn; jj < 16; jj++)
                    for (int64_t kk = 0; kk < kn; kk++)
                        bt[kk * 16 + jj] = 0.0f;
            }
            int add = accumulate || k0 > 0;
            const float *ak = a + k0 * acs;
            int64_t i0 = 0;
            for (; i0 + 4 <= m; i0 += 4) {
                const float *a0 = ak + i0 * ars, *a1 = a0 + ars, *a2 = a1 + ars, *a3 = a2 + ars;
                v8f r[8];
                if (jn > 8) {
                    v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0};
                    v8f c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
                    for (int64_t kk = 0; kk < kn; kk++) {
                        v8f b0, b1;
                        LOAD8(b0, bt + kk * 16);
                        LOAD8(b1, bt + kk * 16 + 8);
                        float x0 = a0[kk * acs], x1 = a1[kk * acs];
                        float x2 = a2[kk * acs], x3 = a3[kk * acs];
                        c00 += b0 * x0;
                        c01 += b1 * x0;
                        c10 += b0 * x1;
                        c11 += b1 * x1;
                        c20 += b0 * x2;
                        c21 += b1 * x2;
                        c30 += b0 * x3;
                        c31 += b1 * x3;
                    }
                    r[0] = c00, r[1] = c01, r[2] = c10, r[3] = c11;
                    r[4] = c20, r[5] = c21, r[6] = c30, r[7] = c31;
                } else {
                    v8f c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
                    for (int64_t kk = 0; kk < kn; kk++) {
                        v8f b0;
                        LOAD8(b0, bt + kk * 16);
                        c0 += b0 * a0[kk * acs];
                        c1 += b0 * a1[kk * acs];
                        c2 += b0 * a2[kk * acs];
                        c3 += b0 * a3[kk * acs];
                    }
                    v8f z = {0};
                    r[0] = c0, r[2] = c1, r[4] = c2, r[6] = c3;
                    r[1] = r[3] = r[5] = r[7] = z;
                }
                for (int64_t q = 0; q < 4; q++)
                    store_row(c + (i0 + q) * ldc + j0, r + 2 * q, jn, add, alpha);
            }
            for (; i0 < m; i0++) { /* the last m % 4 rows, one at a time */
                const float *ai = ak + i0 * ars;
                v8f r[2] = {{0}, {0}};
                for (int64_t kk = 0; kk < kn; kk++) {
                    v8f b0, b1;
                    LOAD8(b0, bt + kk * 16);
                    LOAD8(b1, bt + kk * 16 + 8);
                    r[0] += b0 * ai[kk * acs];
                    r[1] += b1 * ai[kk * acs];
                }
                store_row(c + i0 * ldc + j0, r, jn, add, alpha);
            }
        }
    }
}

/* ------------------------------------------------------------------ forward */

typedef struct attn_ptrs {
    const float *q, *k, *v; /* row stride ld */
    int64_t ld;
    float scale;
} attn_ptrs;

static attn_ptrs head_ptrs(const fine_attn_shape *s, const float *qkv, int64_t seq, int h)
{
    int64_t d = s->C / s->heads;
    attn_ptrs p;
    p.ld = 3 * s->C;
    p.q = qkv + seq * s->T * p.ld + h * d;
    p.k = p.q + s->C;
    p.v = p.q + 2 * s->C;
    p.scale = (float)(1.0 / sqrt((double)d));
    return p;
}

/* Scores of one row to probabilities: adds bias and mask on the sub-block (row i >= G,
 * columns >= G), key_mask on every column, then softmax over the T columns. */
FINE_INLINE void softmax_row(float *row, int64_t i, int64_t T, int64_t G, const float *bias_h,
                             const float *mask_w, const float *key_mask)
{
    int64_t N = T - G;
    if (i >= G) {
        float *sub = row + G;
        if (bias_h) {
            const float *bh = bias_h + (i - G) * N;
#pragma omp simd
            for (int64_t j = 0; j < N; j++)
                sub[j] += bh[j];
        }
        if (mask_w) {
            const float *mw = mask_w + (i - G) * N;
#pragma omp simd
            for (int64_t j = 0; j < N; j++)
                sub[j] += mw[j];
        }
    }
    if (key_mask) {
#pragma omp simd
        for (int64_t j = 0; j < T; j++)
            row[j] += key_mask[j];
    }
    float mx = row[0];
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < T; j++)
        mx = mx > row[j] ? mx : row[j];
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < T; j++) {
        float e = vexpf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < T; j++)
        row[j] *= inv;
}

FINE_INLINE void forward_one(const fine_attn_shape *s, int64_t seq, int h, float *out, float *att,
                             const float *qkv, const float *bias, const float *mask,
                             const float *key_mask)
{
    int64_t T = s->T, G = s->G, N = T - G, d = s->C / s->heads;
    attn_ptrs p = head_ptrs(s, qkv, seq, h);
    float *P = att + (seq * s->heads + h) * T * T;
    /* S = scale (q k^T), the scale applied to the sums (the contract's (q scale) k^T up to
     * rounding); B(kk, j) = k[j*ld + kk] */
    small_gemm(T, T, d, p.scale, p.q, p.ld, 1, p.k, 1, p.ld, P, T, 0);
    const float *bias_h = bias ? bias + (int64_t)h * N * N : NULL;
    const float *mask_w = mask ? mask + (seq % s->mask_count) * N * N : NULL;
    for (int64_t i = 0; i < T; i++)
        softmax_row(P + i * T, i, T, G, bias_h, mask_w, key_mask);
    /* out = P v */
    small_gemm(T, d, T, 1.0f, P, T, 1, p.v, p.ld, 1, out + seq * T * s->C + h * d, s->C, 0);
}

static void forward_one_base(const fine_attn_shape *s, int64_t seq, int h, float *out, float *att,
                             const float *qkv, const float *bias, const float *mask,
                             const float *key_mask)
{
    forward_one(s, seq, h, out, att, qkv, bias, mask, key_mask);
}
#ifdef FINE_HAVE_AVX2
FINE_AVX2 static void forward_one_avx2(const fine_attn_shape *s, int64_t seq, int h, float *out,
                                       float *att, const float *qkv, const float *bias,
                                       const float *mask, const float *key_mask)
{
    forward_one(s, seq, h, out, att, qkv, bias, mask, key_mask);
}
#endif

void fine_attention_forward(const fine_attn_shape *s, float *out, float *att, const float *qkv,
                            const float *bias, const float *mask, const float *key_mask)
{
    void (*one)(const fine_attn_shape *, int64_t, int, float *, float *, const float *,
                const float *, const float *, const float *) = forward_one_base;
#ifdef FINE_HAVE_AVX2
    if (have_avx2())
        one = forward_one_avx2;
#endif
    if (s->mask_count <= 0)
        mask = NULL;
    int64_t tasks = s->Bs * s->heads;
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (int64_t t = 0; t < tasks; t++)
        one(s, t / s->heads, (int)(t % s->heads), out, att, qkv, bias, mask, key_mask);
}

/* ------------------------------------------------------------------ backward */

/* dS for rows [i0, i0 + rn) of one (sequence, head) into ds (rn x T): dP = dO v^T, then
 * dS = P o (dP - rowsum(P o dP)). */
FINE_INLINE void scores_grad(float *ds, const float *P, const float *dO, int64_t ldo,
                             const attn_ptrs *p, int64_t i0, int64_t rn, int64_t T, int64_t d)
{
    small_gemm(rn, T, d, 1.0f, dO + i0 * ldo, ldo, 1, p->v, 1, p->ld, ds, T, 0);
    for (int64_t r = 0; r < rn; r++) {
        const float *pr = P + (i0 + r) * T;
        float *g = ds + r * T;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < T; j++)
            dot += pr[j] * g[j];
#pragma omp simd
        for (int64_t j = 0; j < T; j++)
            g[j] = pr[j] * (g[j] - dot);
    }
}

/* Backward of one (sequence, head): dq, dk, dv (row stride ld) += when dqkv is not NULL, and
 * the window sub-block of dS added to dpart (N x N) when dpart is not NULL. Rows go in blocks
 * whose dS fits the stack buffer; a sequence longer than the buffer goes a row at a time
 * through dot products (rowsum first, then the updates), which needs no buffer. */
FINE_INLINE void backward_one(const fine_attn_shape *s, int64_t seq, int h, float *dqkv,
                              float *dpart, const float *dout, const float *qkv, const float *att)
{
    int64_t T = s->T, G = s->G, N = T - G, d = s->C / s->heads;
    attn_ptrs p = head_ptrs(s, qkv, seq, h);
    const float *P = att + (seq * s->heads + h) * T * T;
    const float *dO = dout + seq * T * s->C + h * d;
    float *dq = NULL, *dk = NULL, *dv = NULL;
    if (dqkv) {
        dq = dqkv + seq * T * p.ld + h * d;
        dk = dq + s->C;
        dv = dq + 2 * s->C;
    }
    if (T <= FINE_ATTN_BUF) {
        float ds[FINE_ATTN_BUF];
        int64_t R = FINE_ATTN_BUF / T;
        for (int64_t i0 = 0; i0 < T; i0 += R) {
            int64_t rn = T - i0 < R ? T - i0 : R;
            scores_grad(ds, P, dO, s->C, &p, i0, rn, T, d);
            if (dpart)
                for (int64_t r = i0 < G ? G - i0 : 0; r < rn; r++) {
                    float *dr = dpart + (i0 + r - G) * N;
                    const float *sr = ds + r * T + G;
#pragma omp simd
                    for (int64_t j = 0; j < N; j++)
                        dr[j] += sr[j];
                }
            if (!dqkv)
                continue;
            /* dv += P[rows]^T dO[rows] */
            small_gemm(T, d, rn, 1.0f, P + i0 * T, 1, T, dO + i0 * s->C, s->C, 1, dv, p.ld, 1);
            /* dq[rows] += scale dS k */
            small_gemm(rn, d, T, p.scale, ds, T, 1, p.k, p.ld, 1, dq + i0 * p.ld, p.ld, 1);
            /* dk += scale dS^T q[rows] */
            small_gemm(T, d, rn, p.scale, ds, 1, T, p.q + i0 * p.ld, p.ld, 1, dk, p.ld, 1);
        }
        return;
    }
    for (int64_t i = 0; i < T; i++) {
        const float *pr = P + i * T, *go = dO + i * s->C, *qi = p.q + i * p.ld;
        float dot = 0.0f;
        for (int64_t j = 0; j < T; j++) {
            float dp = 0.0f;
            for (int64_t c = 0; c < d; c++)
                dp += go[c] * p.v[j * p.ld + c];
            dot += pr[j] * dp;
        }
        for (int64_t j = 0; j < T; j++) {
            const float *vj = p.v + j * p.ld, *kj = p.k + j * p.ld;
            float dp = 0.0f;
            for (int64_t c = 0; c < d; c++)
                dp += go[c] * vj[c];
            float g = pr[j] * (dp - dot);
            if (dpart && i >= G && j >= G)
                dpart[(i - G) * N + j - G] += g;
            if (!dqkv)
                continue;
            g *= p.scale;
            for (int64_t c = 0; c < d; c++) {
                dq[i * p.ld + c] += g * kj[c];
                dk[j * p.ld + c] += g * qi[c];
                dv[j * p.ld + c] += pr[j] * go[c];
            }
        }
    }
}

static void backward_one_base(const fine_attn_shape *s, int64_t seq, int h, float *dqkv,
                              float *dpart, const float *dout, const float *qkv, const float *att)
{
    backward_one(s, seq, h, dqkv, dpart, dout, qkv, att);
}
#ifdef FINE_HAVE_AVX2
FINE_AVX2 static void backward_one_avx2(const fine_attn_shape *s, int64_t seq, int h, float *dqkv,
                                        float *dpart, const float *dout, const float *qkv,
                                        const float *att)
{
    backward_one(s, seq, h, dqkv, dpart, dout, qkv, att);
}
#endif

/* The bias gradient sums dS over all sequences. Sequences go in fixed chunks of SEQ_CHUNK
 * per task, heads in groups whose N x N partials fit FINE_ATTN_PART floats on the stack; each
 * task sums its chunk into its partials, and the partials are added to dbias in task order
 * (an OpenMP ordered section), so the sum does not depend on the thread count. Tasks run
 * chunk-major so that all heads of a sequence are done together (qkv rows stay in cache).
 * A sub-block larger than the stack partial takes the sequences one at a time, serially. */
#define SEQ_CHUNK 16
#ifndef FINE_ATTN_PART
#define FINE_ATTN_PART 32768
#endif

void fine_attention_backward(const fine_attn_shape *s, float *dqkv, float *dbias,
                             const float *dout, const float *qkv, const float *att)
{
    void (*one)(const fine_attn_shape *, int64_t, int, float *, float *, const float *,
                const float *, const float *) = backward_one_base;
#ifdef FINE_HAVE_AVX2
    if (have_avx2())
        one = backward_one_avx2;
#endif
    int64_t N = s->T - s->G, NN = N * N;
    if (!dbias) {
        if (!dqkv)
            return;
        int64_t tasks = s->Bs * s->heads;
#pragma omp parallel for schedule(static) if (tasks > 1)
        for (int64_t t = 0; t < tasks; t++)
            one(s, t / s->heads, (int)(t % s->heads), dqkv, NULL, dout, qkv, att);
        return;
    }
    if (NN > FINE_ATTN_PART) { /* rare: sequences in order, dbias updated in place */
        for (int h = 0; h < s->heads; h++)
            for (int64_t seq = 0; seq < s->Bs; seq++)
                one(s, seq, h, dqkv, dbias + (int64_t)h * NN, dout, qkv, att);
        return;
    }
    int64_t hg = FINE_ATTN_PART / NN < s->heads ? FINE_ATTN_PART / NN : s->heads;
    int64_t groups = (s->heads + hg - 1) / hg, chunks = (s->Bs + SEQ_CHUNK - 1) / SEQ_CHUNK;
    int64_t tasks = chunks * groups;
#pragma omp parallel for ordered schedule(static, 1) if (tasks > 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t s0 = (t / groups) * SEQ_CHUNK, h0 = (t % groups) * hg;
        int64_t s1 = s0 + SEQ_CHUNK < s->Bs ? s0 + SEQ_CHUNK : s->Bs;
        int64_t h1 = h0 + hg < s->heads ? h0 + hg : s->heads;
        float part[FINE_ATTN_PART];
        memset(part, 0, (size_t)((h1 - h0) * NN) * sizeof(float));
        for (int64_t seq = s0; seq < s1; seq++)
            for (int64_t h = h0; h < h1; h++)
                one(s, seq, (int)h, dqkv, part + (h - h0) * NN, dout, qkv, att);
        float *db = dbias + h0 * NN;
        int64_t n = (h1 - h0) * NN;
#pragma omp ordered
        {
#pragma omp simd
            for (int64_t k = 0; k < n; k++)
                db[k] += part[k];
        }
    }
}
