/* test_ops_attention: the attention core of lib/nn/ops_attention.c (fine-reference B 2.1, 2.4,
 * 2.5) against a naive double-precision reference written here, plus hand-made cases.
 *
 * Generic cases (window attention with memory token, bias and shift mask; memory-token
 * attention without either; volume-token attention with a key mask; long sequences):
 *   (a) float forward against the double forward: out within 1e-5 of max |out|, att within
 *       1e-6 absolute (probabilities);
 *   (b) double analytic backward against central differences (eps 1e-6) of the double forward
 *       of L = sum(g * out), for every element of qkv and bias: max |fd - an| <= 1e-6 max |an|;
 *   (c) float backward against the double backward: max |f - d| <= 1e-4 max |d|, accumulated
 *       onto random contents, and with NULL gradient pointers;
 *   (d) dbias bitwise equal with 1 and 2 threads.
 * Hand-made: (1) a zero memory token gets an unbiased, unmasked row and column; (2) a window
 * whose softmax is known in closed form; (3) the shift mask isolates regions except through
 * the memory token; (4) the bias reaches only the window sub-block; (5) the key mask removes
 * keys (equal to attention over the remaining keys). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "tap.h"

static uint64_t rng_state = 0x853c49e6748fea9bull;

static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static float *frand(int64_t n, double scale)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(scale * urand());
    return p;
}

static double *to_d(const float *f, int64_t n)
{
    if (!f)
        return NULL;
    double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

static double max_abs(const double *d, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabs(d[i]) > m ? fabs(d[i]) : m;
    return m;
}

static double rel_f(const float *f, const float *base, const double *d, int64_t n)
{
    double e = 0, m = max_abs(d, n);
    for (int64_t i = 0; i < n; i++) {
        double v = fabs((double)f[i] - (base ? (double)base[i] : 0.0) - d[i]);
        e = v > e ? v : e;
    }
    return m > 0 ? e / m : e;
}

static double rel_d(const double *a, const double *d, int64_t n)
{
    double e = 0, m = max_abs(d, n);
    for (int64_t i = 0; i < n; i++)
        e = fabs(a[i] - d[i]) > e ? fabs(a[i] - d[i]) : e;
    return m > 0 ? e / m : e;
}

/* ------------------------------------------------------------------ double reference */

typedef struct ref_in {
    fine_attn_shape s;
    double *qkv, *bias, *mask, *key_mask;
} ref_in;

/* Scores, softmax and output of one (sequence, head), straight from the definition. */
static void ref_forward(const ref_in *r, double *out, double *att)
{
    const fine_attn_shape *s = &r->s;
    int64_t T = s->T, C = s->C, G = s->G, N = T - G, d = C / s->heads;
    double scale = 1.0 / sqrt((double)d);
    double *row = malloc((size_t)T * sizeof(double));
    for (int64_t q = 0; q < s->Bs; q++)
        for (int h = 0; h < s->heads; h++) {
            const double *base = r->qkv + q * T * 3 * C;
            for (int64_t i = 0; i < T; i++) {
                double mx = -INFINITY;
                for (int64_t j = 0; j < T; j++) {
                    double a = 0;
                    for (int64_t c = 0; c < d; c++)
                        a += base[i * 3 * C + h * d + c] * scale * base[j * 3 * C + C + h * d + c];
                    if (i >= G && j >= G) {
                        if (r->bias)
                            a += r->bias[(h * N + i - G) * N + j - G];
                        if (r->mask)
                            a += r->mask[((q % s->mask_count) * N + i - G) * N + j - G];
                    }
                    if (r->key_mask)
                        a += r->key_mask[j];
                    row[j] = a;
                    mx = a > mx ? a : mx;
                }
                double sum = 0;
                for (int64_t j = 0; j < T; j++)
                    sum += (row[j] = exp(row[j] - mx));
                for (int64_t c = 0; c < d; c++) {
                    double o = 0;
                    for (int64_t j = 0; j < T; j++)
                        o += row[j] / sum * base[j * 3 * C + 2 * C + h * d + c];
                    out[(q * T + i) * C + h * d + c] = o;
                }
                if (att)
                    for (int64_t j = 0; j < T; j++)
                        att[((q * s->heads + h) * T + i) * T + j] = row[j] / sum;
            }
        }
    free(row);
}

/* dqkv and dbias (overwritten) from the standard formulas: dV = P^T dO, dP = dO V^T,
 * dS = P (dP - rowsum(P dP)), dQ = scale dS K, dK = scale dS^T Q, dbias = sum dS[G:, G:]. */
static void ref_backward(const ref_in *r, double *dqkv, double *dbias, const double *dout)
{
    const fine_attn_shape *s = &r->s;
    int64_t T = s->T, C = s->C, G = s->G, N = T - G, d = C / s->heads;
    double scale = 1.0 / sqrt((double)d);
    double *out = malloc((size_t)(s->Bs * T * C) * 8);
    double *P = malloc((size_t)(s->Bs * s->heads * T * T) * 8);
    double *dS = malloc((size_t)(T * T) * 8);
    ref_forward(r, out, P);
    memset(dqkv, 0, (size_t)(s->Bs * T * 3 * C) * 8);
    if (dbias)
        memset(dbias, 0, (size_t)(s->heads * N * N) * 8);
    for (int64_t q = 0; q < s->Bs; q++)
        for (int h = 0; h < s->heads; h++) {
            const double *base = r->qkv + q * T * 3 * C, *p = P + (q * s->heads + h) * T * T;
            double *db = dqkv + q * T * 3 * C;
            const double *go = dout + q * T * C;
            for (int64_t i = 0; i < T; i++) {
                double rs = 0;
                for (int64_t j = 0; j < T; j++) {
                    double dp = 0;
                    for (int64_t c = 0; c < d; c++)
                        dp += go[i * C + h * d + c] * base[j * 3 * C + 2 * C + h * d + c];
                    dS[i * T + j] = dp;
                    rs += p[i * T + j] * dp;
                }
                for (int64_t j = 0; j < T; j++)
                    dS[i * T + j] = p[i * T + j] * (dS[i * T + j] - rs);
            }
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j < T; j++)
                    for (int64_t c = 0; c < d; c++) {
                        db[i * 3 * C + h * d + c] +=
                            scale * dS[i * T + j] * base[j * 3 * C + C + h * d + c];
                        db[j * 3 * C + C + h * d + c] +=
                            scale * dS[i * T + j] * base[i * 3 * C + h * d + c];
                        db[j * 3 * C + 2 * C + h * d + c] += p[i * T + j] * go[i * C + h * d + c];
                    }
            if (dbias)
                for (int64_t i = 0; i < N; i++)
                    for (int64_t j = 0; j < N; j++)
                        dbias[(h * N + i) * N + j] += dS[(G + i) * T + G + j];
        }
    free(out), free(P), free(dS);
}

typedef struct fd_ctx {
    ref_in *r;
    const double *g;
    double *out;
} fd_ctx;

static double fd_loss(fd_ctx *c)
{
    ref_forward(c->r, c->out, NULL);
    double s = 0;
    int64_t n = c->r->s.Bs * c->r->s.T * c->r->s.C;
    for (int64_t i = 0; i < n; i++)
        s += c->g[i] * c->out[i];
    return s;
}

static double central_diff_err(fd_ctx *c, double *x, const double *an, int64_t n)
{
    double *fd = malloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++) {
        double keep = x[i];
        x[i] = keep + 1e-6;
        double lp = fd_loss(c);
        x[i] = keep - 1e-6;
        double lm = fd_loss(c);
        x[i] = keep;
        fd[i] = (lp - lm) / 2e-6;
    }
    double e = rel_d(fd, an, n);
    free(fd);
    return e;
}

/* ------------------------------------------------------------------ generic case */

static void check_case(tap *t, const char *name, fine_attn_shape s, int with_bias, int with_mask,
                       int with_key_mask, int fd)
{
    int64_t T = s.T, C = s.C, N = T - s.G, n_qkv = s.Bs * T * 3 * C, n_out = s.Bs * T * C;
    int64_t n_att = s.Bs * s.heads * T * T, n_bias = s.heads * N * N;
    float *qkv = frand(n_qkv, 1.5), *bias = with_bias ? frand(n_bias, 1.0) : NULL;
    float *mask = NULL, *key_mask = NULL;
    if (with_mask) { /* a real shift-mask-like pattern: 0 or -100 */
        mask = malloc((size_t)(s.mask_count * N * N) * 4);
        for (int64_t k = 0; k < s.mask_count * N * N; k++) {
            int64_t w = k / (N * N), i = (k / N) % N, j = k % N;
            mask[k] = ((i * 7 + w) % 3) == ((j * 7 + w) % 3) ? 0.0f : -100.0f;
        }
    } else {
        s.mask_count = 0;
    }
    if (with_key_mask) {
        key_mask = malloc((size_t)T * 4);
        for (int64_t j = 0; j < T; j++)
            key_mask[j] = j % 3 == 1 ? -1000.0f : 0.0f;
    }
    float *out = malloc((size_t)n_out * 4), *att = malloc((size_t)n_att * 4);
    fine_attention_forward(&s, out, att, qkv, bias, mask, key_mask);

    ref_in r = {s, to_d(qkv, n_qkv), to_d(bias, n_bias), to_d(mask, s.mask_count * N * N),
                to_d(key_mask, T)};
    double *rout = malloc((size_t)n_out * 8), *ratt = malloc((size_t)n_att * 8);
    ref_forward(&r, rout, ratt);
    double ea = 0;
    for (int64_t i = 0; i < n_att; i++)
        ea = fabs(att[i] - ratt[i]) > ea ? fabs(att[i] - ratt[i]) : ea;
    double eo = rel_f(out, NULL, rout, n_out);
    tap_ok(t, eo < 1e-5 && ea < 1e-6, "%s: forward matches double (out %.1e, att %.1e)", name, eo,
           ea);

    float *gf = frand(n_out, 1.0);
    double *g = to_d(gf, n_out);
    double *dq = malloc((size_t)n_qkv * 8), *dbias = malloc((size_t)n_bias * 8);
    ref_backward(&r, dq, dbias, g);
    if (fd) {
        fd_ctx c = {&r, g, malloc((size_t)n_out * 8)};
        double e1 = central_diff_err(&c, r.qkv, dq, n_qkv);
        double e2 = with_bias ? central_diff_err(&c, r.bias, dbias, n_bias) : 0.0;
        tap_ok(t, e1 < 1e-6 && e2 < 1e-6,
               "%s: double backward = central differences (qkv %.1e, bias %.1e)", name, e1, e2);
        free(c.out);
    }
    float *fdq = frand(n_qkv, 1.0), *fdb = frand(n_bias, 1.0);
    float *dq0 = malloc((size_t)n_qkv * 4), *db0 = malloc((size_t)n_bias * 4);
    memcpy(dq0, fdq, (size_t)n_qkv * 4);
    memcpy(db0, fdb, (size_t)n_bias * 4);
    fine_attention_backward(&s, fdq, fdb, gf, qkv, att);
    double e1 = rel_f(fdq, dq0, dq, n_qkv), e2 = rel_f(fdb, db0, dbias, n_bias);
    tap_ok(t, e1 < 1e-4 && e2 < 1e-4,
           "%s: float backward accumulates the double one (qkv %.1e, bias %.1e)", name, e1, e2);
    /* NULL pointers */
    memcpy(fdq, dq0, (size_t)n_qkv * 4);
    fine_attention_backward(&s, fdq, NULL, gf, qkv, att);
    memcpy(fdb, db0, (size_t)n_bias * 4);
    fine_attention_backward(&s, NULL, fdb, gf, qkv, att);
    tap_ok(t, rel_f(fdq, dq0, dq, n_qkv) < 1e-4 && rel_f(fdb, db0, dbias, n_bias) < 1e-4,
           "%s: NULL dbias, NULL dqkv", name);
    /* thread count */
    float *b1 = calloc((size_t)n_bias, 4), *b2 = calloc((size_t)n_bias, 4);
    float *q1 = calloc((size_t)n_qkv, 4), *q2 = calloc((size_t)n_qkv, 4);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    fine_attention_backward(&s, q1, b1, gf, qkv, att);
    omp_set_num_threads(threads > 1 ? threads : 2);
    fine_attention_backward(&s, q2, b2, gf, qkv, att);
    omp_set_num_threads(threads);
    tap_ok(t, !memcmp(b1, b2, (size_t)n_bias * 4) && !memcmp(q1, q2, (size_t)n_qkv * 4),
           "%s: gradients bitwise equal with 1 and 2 threads", name);

    free(qkv), free(bias), free(mask), free(key_mask), free(out), free(att);
    free(r.qkv), free(r.bias), free(r.mask), free(r.key_mask), free(rout), free(ratt);
    free(gf), free(g), free(dq), free(dbias), free(fdq), free(fdb), free(dq0), free(db0);
    free(b1), free(b2), free(q1), free(q2);
}

/* ------------------------------------------------------------------ hand-made cases */

/* (2) Bs 1, T 2, one head of d 4 (scale 1/2 exactly): q0 = (2,0,0,0), k0 = (1,0,0,0), the
 * rest 0: scores row 0 = (1, 0), row 1 = (0, 0); v0 = e1, v1 = e2:
 * out0 = (e/(e+1), 1/(e+1), 0, 0), out1 = (1/2, 1/2, 0, 0). With G = 1 and bias[0,0,0] = ln 2
 * on the 1x1 window sub-block, row 1 becomes (1/3, 2/3). */
static void test_closed_form(tap *t)
{
    fine_attn_shape s = {1, 2, 4, 1, 0, 0};
    float qkv[2 * 12] = {0};
    qkv[0] = 2.0f;      /* q0 */
    qkv[4] = 1.0f;      /* k0 */
    qkv[8] = 1.0f;      /* v0 = e1 */
    qkv[12 + 9] = 1.0f; /* v1 = e2 */
    float out[8], att[4];
    fine_attention_forward(&s, out, att, qkv, NULL, NULL, NULL);
    double e = exp(1.0), a = e / (e + 1), b = 1 / (e + 1);
    int ok = fabs(out[0] - a) < 1e-6 && fabs(out[1] - b) < 1e-6 && out[2] == 0 && out[3] == 0 &&
             fabs(out[4] - 0.5) < 1e-7 && fabs(out[5] - 0.5) < 1e-7 && fabs(att[0] - a) < 1e-6 &&
             fabs(att[1] - b) < 1e-6;
    tap_ok(t, ok, "closed form: softmax (e/(e+1), 1/(e+1)) and (1/2, 1/2) (out0 %.7f %.7f)",
           out[0], out[1]);
    s.G = 1;
    float bias = logf(2.0f);
    fine_attention_forward(&s, out, att, qkv, &bias, NULL, NULL);
    ok = fabs(att[2] - 1.0 / 3) < 1e-6 && fabs(att[3] - 2.0 / 3) < 1e-6 && fabs(att[0] - a) < 1e-6;
    tap_ok(t, ok,
           "closed form: bias ln 2 on the window sub-block makes row 1 (1/3, 2/3) (%.7f %.7f)",
           att[2], att[3]);
}

/* Fills qkv for (Bs, T, 3C) with random values and zero q, k, v for token 0. */
static float *qkv_zero_memory(int64_t Bs, int64_t T, int64_t C)
{
    float *qkv = frand(Bs * T * 3 * C, 1.5);
    for (int64_t q = 0; q < Bs; q++)
        memset(qkv + q * T * 3 * C, 0, (size_t)(3 * C) * 4);
    return qkv;
}

/* (1) zero memory token: its row is uniform (all scores 0, no bias, no mask) and its column
 * has score exactly 0 + nothing for every query; checked against rows built here by hand. */
static void test_zero_memory(tap *t, const float *shift_mask)
{
    const int64_t Bs = 8, T = 65, C = 8, N = 64;
    const int heads = 2, d = 4;
    fine_attn_shape s = {Bs, T, C, heads, 1, 8};
    float *qkv = qkv_zero_memory(Bs, T, C), *bias = frand(heads * N * N, 2.0);
    float *out = malloc(Bs * T * C * 4), *att = malloc(Bs * heads * T * T * 4);
    fine_attention_forward(&s, out, att, qkv, bias, shift_mask, NULL);
    double worst_row0 = 0, worst = 0;
    for (int64_t q = 0; q < Bs; q++)
        for (int h = 0; h < heads; h++) {
            const float *A = att + (q * heads + h) * T * T;
            for (int64_t j = 0; j < T; j++)
                worst_row0 = fmax(worst_row0, fabs(A[j] - 1.0 / T));
            const float *base = qkv + q * T * 3 * C;
            for (int64_t i = 1; i < T; i++) {
                double e[65], sum = 1.0; /* e[0] = exp(0): unbiased, unmasked */
                e[0] = 1.0;
                for (int64_t j = 1; j < T; j++) {
                    double a = 0;
                    for (int c = 0; c < d; c++)
                        a += (double)base[i * 3 * C + h * d + c] * 0.5 *
                             base[j * 3 * C + C + h * d + c];
                    a += bias[(h * N + i - 1) * N + j - 1];
                    a += shift_mask[((q % 8) * N + i - 1) * N + j - 1];
                    sum += (e[j] = exp(a));
                }
                for (int64_t j = 0; j < T; j++)
                    worst = fmax(worst, fabs(A[i * T + j] - e[j] / sum));
            }
        }
    tap_ok(t, worst_row0 < 1e-7 && worst < 1e-6,
           "zero memory token: row 0 uniform 1/65 (%.1e), column 0 unbiased and unmasked (%.1e)",
           worst_row0, worst);
    /* its output is the mean of the values (v0 = 0) */
    double eo = 0;
    for (int64_t q = 0; q < Bs; q++)
        for (int64_t c = 0; c < C; c++) {
            double m = 0;
            for (int64_t j = 0; j < T; j++)
                m += qkv[(q * T + j) * 3 * C + 2 * C + c];
            eo = fmax(eo, fabs(out[q * T * C + c] - m / T));
        }
    tap_ok(t, eo < 1e-6, "zero memory token: its output is the mean of v (%.1e)", eo);
    free(qkv), free(bias), free(out), free(att);
}

/* (3) the shift mask isolates regions: in window 7 of an 8^3 grid (8 regions), perturbing the
 * q, k, v of tokens of other regions leaves a token's output unchanged, while perturbing any
 * token changes the memory token's output, and perturbing the memory token's v changes all. */
static void test_isolation(tap *t, const float *shift_mask)
{
    const int64_t Bs = 8, T = 65, C = 8, N = 64;
    const int heads = 2;
    fine_attn_shape s = {Bs, T, C, heads, 1, 8};
    float *qkv = frand(Bs * T * 3 * C, 1.5), *bias = frand(heads * N * N, 1.0);
    float *out = malloc(Bs * T * C * 4), *out2 = malloc(Bs * T * C * 4);
    float *att = malloc(Bs * heads * T * T * 4);
    fine_attention_forward(&s, out, att, qkv, bias, shift_mask, NULL);
    const float *m7 = shift_mask + 7 * N * N;
    const int64_t w = 7;
    double worst_same = 0, least_mem = 1e30;
    int tokens[3] = {0, 21, 63}; /* regions 13, 13, 26 */
    for (int k = 0; k < 3; k++) {
        int64_t i = tokens[k];
        float *p = malloc(Bs * T * 3 * C * 4);
        memcpy(p, qkv, Bs * T * 3 * C * 4);
        int others = 0;
        for (int64_t j = 0; j < N; j++)
            if (m7[i * N + j] != 0.0f) { /* another region: perturb q, k and v */
                others++;
                for (int64_t c = 0; c < 3 * C; c++)
                    p[(w * T + 1 + j) * 3 * C + c] += 0.7f;
            }
        fine_attention_forward(&s, out2, att, p, bias, shift_mask, NULL);
        for (int64_t c = 0; c < C; c++)
            worst_same = fmax(worst_same, fabs(out2[(w * T + 1 + i) * C + c] -
                                                out[(w * T + 1 + i) * C + c]));
        double dm = 0;
        for (int64_t c = 0; c < C; c++)
            dm = fmax(dm, fabs(out2[w * T * C + c] - out[w * T * C + c]));
        least_mem = fmin(least_mem, others ? dm : 1e30);
        free(p);
    }
    tap_ok(t, worst_same < 1e-6 && least_mem > 1e-3,
           "shift mask: other regions do not reach a token (%.1e), the memory token sees them "
           "(%.1e)", worst_same, least_mem);
    /* the memory token's column is unmasked: its v reaches every token of the window */
    float *p = malloc(Bs * T * 3 * C * 4);
    memcpy(p, qkv, Bs * T * 3 * C * 4);
    for (int64_t c = 0; c < C; c++)
        p[w * T * 3 * C + 2 * C + c] += 1.0f;
    fine_attention_forward(&s, out2, att, p, bias, shift_mask, NULL);
    double least = 1e30;
    for (int64_t i = 0; i < T; i++) {
        double dm = 0;
        for (int64_t c = 0; c < C; c++)
            dm = fmax(dm, fabs(out2[(w * T + i) * C + c] - out[(w * T + i) * C + c]));
        least = fmin(least, dm);
    }
    tap_ok(t, least > 1e-4, "shift mask: the memory token's v reaches all 65 tokens (min %.1e)",
           least);
    free(qkv), free(bias), free(out), free(out2), free(att), free(p);
}

/* (4) the bias reaches only the window sub-block: a constant bias of 5 leaves row 0 unchanged
 * and multiplies every other row's window entries by e^5 relative to its column 0. */
static void test_bias_subblock(tap *t)
{
    const int64_t Bs = 3, T = 9, C = 8, N = 8;
    const int heads = 2;
    fine_attn_shape s = {Bs, T, C, heads, 1, 0};
    float *qkv = frand(Bs * T * 3 * C, 1.0), *bias = malloc(heads * N * N * 4);
    for (int64_t k = 0; k < heads * N * N; k++)
        bias[k] = 5.0f;
    float *out = malloc(Bs * T * C * 4), *a0 = malloc(Bs * heads * T * T * 4),
          *a1 = malloc(Bs * heads * T * T * 4);
    fine_attention_forward(&s, out, a0, qkv, NULL, NULL, NULL);
    fine_attention_forward(&s, out, a1, qkv, bias, NULL, NULL);
    double row0 = 0, ratio = 0;
    for (int64_t q = 0; q < Bs * heads; q++) {
        const float *A0 = a0 + q * T * T, *A1 = a1 + q * T * T;
        for (int64_t j = 0; j < T; j++)
            row0 = fmax(row0, fabs(A1[j] - A0[j]));
        for (int64_t i = 1; i < T; i++)
            for (int64_t j = 1; j < T; j++) {
                double r1 = (double)A1[i * T + j] / A1[i * T];
                double r = r1 / ((double)A0[i * T + j] / A0[i * T]);
                ratio = fmax(ratio, fabs(r / exp(5.0) - 1.0));
            }
    }
    tap_ok(t, row0 == 0.0 && ratio < 1e-5,
           "bias only on the window sub-block: row 0 unchanged, window/column-0 ratio x e^5 (%.1e)",
           ratio);
    free(qkv), free(bias), free(out), free(a0), free(a1);
}

/* (5) key mask -1000 on some keys = attention over the other keys only. */
static void test_key_mask(tap *t)
{
    const int64_t Bs = 2, T = 7, C = 6;
    const int heads = 3;
    fine_attn_shape s = {Bs, T, C, heads, 0, 0};
    float *qkv = frand(Bs * T * 3 * C, 1.5), key_mask[7] = {0, -1000, 0, 0, -1000, -1000, 0};
    float *out = malloc(Bs * T * C * 4), *att = malloc(Bs * heads * T * T * 4);
    fine_attention_forward(&s, out, att, qkv, NULL, NULL, key_mask);
    /* reference: the 4 kept keys as a shorter sequence of keys, by hand */
    int keep[4] = {0, 2, 3, 6};
    double worst = 0, masked = 0;
    for (int64_t q = 0; q < Bs; q++)
        for (int h = 0; h < heads; h++)
            for (int64_t i = 0; i < T; i++) {
                const float *base = qkv + q * T * 3 * C;
                double e[4], sum = 0;
                for (int k = 0; k < 4; k++) {
                    double a = 0;
                    for (int c = 0; c < 2; c++)
                        a += (double)base[i * 3 * C + h * 2 + c] / sqrt(2.0) *
                             base[keep[k] * 3 * C + C + h * 2 + c];
                    sum += (e[k] = exp(a));
                }
                for (int c = 0; c < 2; c++) {
                    double o = 0;
                    for (int k = 0; k < 4; k++)
                        o += e[k] / sum * base[keep[k] * 3 * C + 2 * C + h * 2 + c];
                    worst = fmax(worst, fabs(out[(q * T + i) * C + h * 2 + c] - o));
                }
                const float *A = att + ((q * heads + h) * T + i) * T;
                masked = fmax(masked, fmax(A[1], fmax(A[4], A[5])));
            }
    tap_ok(t, worst < 1e-6 && masked == 0.0,
           "key mask: masked keys get probability 0, output = attention over the rest (%.1e)",
           worst);
    free(qkv), free(out), free(att);
}

int main(void)
{
    tap t = {0};
    /* generic cases with finite differences (small) */
    check_case(&t, "window T9 G1 bias+mask", (fine_attn_shape){4, 9, 8, 2, 1, 2}, 1, 1, 0, 1);
    check_case(&t, "memory T11 G0", (fine_attn_shape){2, 11, 12, 2, 0, 0}, 0, 0, 0, 1);
    check_case(&t, "volume T6 key mask", (fine_attn_shape){2, 6, 8, 2, 0, 0}, 0, 0, 1, 1);
    check_case(&t, "window T9 G2 bias only", (fine_attn_shape){3, 10, 6, 3, 2, 0}, 1, 0, 0, 1);
    /* real sizes, float against double only */
    check_case(&t, "window T65 C96 h3", (fine_attn_shape){24, 65, 96, 3, 1, 8}, 1, 1, 0, 0);
    check_case(&t, "memory T516 C64 h2", (fine_attn_shape){2, 516, 64, 2, 0, 0}, 0, 0, 0, 0);
    check_case(&t, "head dim 136 > one packed tile", (fine_attn_shape){2, 9, 272, 2, 1, 1}, 1, 1,
               0, 0);

    test_closed_form(&t);
    float *mask = malloc(8 * 64 * 64 * 4);
    fine_shift_mask(mask, 8, 8, 8, 4, 2);
    test_zero_memory(&t, mask);
    test_isolation(&t, mask);
    free(mask);
    test_bias_subblock(&t);
    test_key_mask(&t);
    return tap_done(&t);
}
