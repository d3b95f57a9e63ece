/* fine_model.c: configuration presets and the parameter table of the FINE network. */
#include "fine_model.h"
#include "nn/ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fine_config_preset(fine_config *c, const char *name)
{
    memset(c, 0, sizeof *c);
    c->in_chans = 1;
    c->num_classes = 14;
    c->patch[0] = 2, c->patch[1] = 4, c->patch[2] = 4;
    for (int i = 0; i < FINE_STAGES; i++)
        c->window[i] = 4;
    c->mlp_ratio = 4.0;
    c->gt_num = 1;
    c->vt_map[0] = 3, c->vt_map[1] = 4, c->vt_map[2] = 4;
    c->max_imsize[0] = 198, c->max_imsize[1] = 512, c->max_imsize[2] = 512;
    c->vt_overflow = FINE_VT_CLAMP;
    c->ds_weights[0] = 8.0 / 15.0, c->ds_weights[1] = 4.0 / 15.0;
    for (int i = 0; i < FINE_STAGES; i++)
        c->depths[i] = 2;
    for (int i = 0; i < FINE_STAGES - 1; i++)
        c->dec_depths[i] = 2;
    int heads[4] = {6, 12, 24, 48};
    double scale = 1.0;
    if (strcmp(name, "bcv") == 0) {
        c->crop[0] = 64, c->crop[1] = 128, c->crop[2] = 128;
        c->embed_dim = 192;
        c->drop_path = 0.2;
    } else if (strcmp(name, "small") == 0) {
        c->crop[0] = 64, c->crop[1] = 128, c->crop[2] = 128;
        c->embed_dim = 24;
        c->drop_path = 0.2;
        scale = 6;
        c->vt_overflow = FINE_VT_REFERENCE;
    } else if (strcmp(name, "tiny") == 0) {
        /* 32 x 64 x 64 crops, window 2: stages at 16^3, 8^3, 4^3, 2^3 tokens */
        c->crop[0] = 32, c->crop[1] = 64, c->crop[2] = 64;
        c->embed_dim = 24;
        for (int i = 0; i < FINE_STAGES; i++)
            c->window[i] = 2;
        c->drop_path = 0.0;
        scale = 6;
    } else {
        return -1;
    }
    for (int i = 0; i < FINE_STAGES; i++)
        c->heads[i] = (int)(heads[i] / scale > 1 ? heads[i] / scale : 1);
    for (int i = 0; i < FINE_STAGES - 1; i++) /* decoder heads, deepest stage first: 24, 12, 6 */
        c->dec_heads[i] = c->heads[FINE_STAGES - 2 - i];
    return 0;
}

void fine_embed_strides(const fine_config *c, int s1[3], int s2[3])
{
    for (int d = 0; d < 3; d++) {
        s1[d] = 2;
        s2[d] = c->patch[d] / 2;
    }
}

void fine_head_kernel(const fine_config *c, int h, int k[3])
{
    for (int d = 0; d < 3; d++)
        k[d] = h == 0 ? c->patch[d] : 4;
}

int fine_config_check(const fine_config *c, fine_err *e)
{
    if (c->in_chans < 1 || c->in_chans > 16)
        return fine_err_set(e, "config: in_chans %d must be 1..16", c->in_chans);
    if (c->num_classes < 2 || c->num_classes > 255)
        return fine_err_set(e, "config: num_classes %d must be 2..255", c->num_classes);
    if ((c->patch[0] != 2 && c->patch[0] != 4) || c->patch[1] != 4 || c->patch[2] != 4)
        return fine_err_set(e, "config: patch %d,%d,%d: 2,4,4 and 4,4,4 are supported (the reference's two)",
                            c->patch[0], c->patch[1], c->patch[2]);
    if (c->gt_num < 1 || c->gt_num > FINE_MAX_GT)
        return fine_err_set(e, "config: gt_num %d must be 1..%d", c->gt_num, FINE_MAX_GT);
    if (c->embed_dim < 2 || c->embed_dim % 2)
        return fine_err_set(e, "config: embed_dim %d must be even", c->embed_dim);
    for (int i = 0; i < FINE_STAGES; i++)
        if (c->window[i] < 1 || c->window[i] > FINE_MAX_WINDOW)
            return fine_err_set(e, "config: window[%d] = %d must be 1..%d", i, c->window[i], FINE_MAX_WINDOW);
    for (int i = 0; i < FINE_STAGES; i++) {
        int C = c->embed_dim << i;
        if (c->depths[i] < 1 || c->depths[i] > FINE_MAX_DEPTH)
            return fine_err_set(e, "config: depths[%d] = %d must be 1..%d", i, c->depths[i], FINE_MAX_DEPTH);
        if (c->heads[i] < 1 || C % c->heads[i])
            return fine_err_set(e, "config: heads[%d] = %d does not divide %d channels", i, c->heads[i], C);
    }
    for (int i = 0; i < FINE_STAGES - 1; i++) {
        int C = c->embed_dim << (FINE_STAGES - 2 - i);
        if (c->dec_depths[i] < 1 || c->dec_depths[i] > FINE_MAX_DEPTH)
            return fine_err_set(e, "config: dec_depths[%d] = %d must be 1..%d", i, c->dec_depths[i],
                                FINE_MAX_DEPTH);
        if (c->dec_heads[i] < 1 || C % c->dec_heads[i])
            return fine_err_set(e, "config: dec_heads[%d] = %d does not divide %d channels", i,
                                c->dec_heads[i], C);
    }
    for (int d = 0; d < 3; d++) {
        int tok = c->crop[d] / c->patch[d];
        if (c->crop[d] < 1 || c->crop[d] % c->patch[d])
            return fine_err_set(e, "config: crop %d is not a multiple of the patch %d", c->crop[d],
                                c->patch[d]);
        /* four stages halve the grid three times; windows must tile every stage (checked
         * with the stage sizes in fine_model_build) */
        if (tok % 8 != 0)
            return fine_err_set(e, "config: crop %d gives a token grid of %d, which must be a "
                                "multiple of 8", c->crop[d], tok);
        if (c->max_imsize[d] < 1)
            return fine_err_set(e, "config: max_imsize must be positive");
    }
    if (c->vt_map[1] < 2 || c->vt_map[2] < 2 || c->vt_map[0] < 1)
        return fine_err_set(e, "config: vt_map %d,%d,%d: the in-plane grid must be at least 2x2 "
                            "(B 2.8: 1 gives a negative index)", c->vt_map[0], c->vt_map[1], c->vt_map[2]);
    if (c->mlp_ratio <= 0 || c->drop_path < 0 || c->drop_path >= 1)
        return fine_err_set(e, "config: mlp_ratio must be positive and drop_path in [0, 1)");
    if (c->vt_overflow != FINE_VT_REFERENCE && c->vt_overflow != FINE_VT_CLAMP)
        return fine_err_set(e, "config: vt_overflow must be reference or clamp");
    return 0;
}

/* ------------------------------------------------------------------ the parameter table */

typedef struct table {
    fine_param *p;
    int n, cap;
    size_t off;
    int oom;
} table;

static void add(table *t, const char *name, int ndim, int64_t s0, int64_t s1, int64_t s2, int64_t s3,
                int64_t s4)
{
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 256;
        fine_param *np = realloc(t->p, (size_t)cap * sizeof *np);
        if (!np) {
            t->oom = 1;
            return;
        }
        t->p = np;
        t->cap = cap;
    }
    fine_param *p = &t->p[t->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    int64_t s[5] = {s0, s1, s2, s3, s4};
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = s[i];
        p->numel *= (size_t)s[i];
    }
    p->offset = t->off;
    t->off += (p->numel + 15) / 16 * 16; /* 64-byte aligned views */
}

static void addf(table *t, int ndim, const int64_t *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void addf(table *t, int ndim, const int64_t *s, const char *fmt, ...)
{
    char name[FINE_NAME_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    add(t, name, ndim, s[0], ndim > 1 ? s[1] : 0, ndim > 2 ? s[2] : 0, ndim > 3 ? s[3] : 0,
        ndim > 4 ? s[4] : 0);
}

static void add_linear(table *t, const char *prefix, int64_t out, int64_t in)
{
    int64_t w[2] = {out, in}, b[1] = {out};
    addf(t, 2, w, "%s.weight", prefix);
    addf(t, 1, b, "%s.bias", prefix);
}

static void add_norm(table *t, const char *prefix, int64_t C)
{
    int64_t s[1] = {C};
    addf(t, 1, s, "%s.weight", prefix);
    addf(t, 1, s, "%s.bias", prefix);
}

static void add_conv(table *t, const char *prefix, int64_t a, int64_t b, int k0, int k1, int k2, int64_t nbias)
{
    int64_t w[5] = {a, b, k0, k1, k2}, bs[1] = {nbias};
    addf(t, 5, w, "%s.weight", prefix);
    addf(t, 1, bs, "%s.bias", prefix);
}

int fine_block_has_gt(int depth, int j)
{
    return j < depth - 1;
}

int fine_block_has_vt(int depth, int j)
{
    return j < depth - 2;
}

/* A ClassicAttention module (gt_attn or vt_attn) of block j: qkv and proj Linears. */
static void add_classic(table *t, const char *prefix, int j, const char *module, int64_t C)
{
    char p[FINE_NAME_LEN];
    snprintf(p, sizeof p, "%s.blocks.%d.%s.qkv", prefix, j, module);
    add_linear(t, p, 3 * C, C);
    snprintf(p, sizeof p, "%s.blocks.%d.%s.proj", prefix, j, module);
    add_linear(t, p, C, C);
}

/* A layer's tokens and blocks; gt_attn and vt_attn only where a later block consumes them (A1). */
static void add_layer(table *t, const char *prefix, const fine_stage_dims *s, int depth, int nV,
                      double mlp_ratio)
{
    char p[FINE_NAME_LEN];
    int64_t C = s->C, hidden = (int64_t)(mlp_ratio * (double)C);
    int64_t gt[2] = {s->G, C}, vt[2] = {nV, C}, pe[2] = {s->pe_rows, C};
    int64_t tab[2] = {(2 * s->ws - 1) * (2 * s->ws - 1) * (2 * s->ws - 1), s->heads};
    addf(t, 2, gt, "%s.global_token", prefix);
    addf(t, 2, vt, "%s.volume_token", prefix);
    addf(t, 2, pe, "%s.pe", prefix);
    for (int j = 0; j < depth; j++) {
        snprintf(p, sizeof p, "%s.blocks.%d.norm1", prefix, j);
        add_norm(t, p, C);
        addf(t, 2, tab, "%s.blocks.%d.attn.relative_position_bias_table", prefix, j);
        snprintf(p, sizeof p, "%s.blocks.%d.attn.qkv", prefix, j);
        add_linear(t, p, 3 * C, C);
        snprintf(p, sizeof p, "%s.blocks.%d.attn.proj", prefix, j);
        add_linear(t, p, C, C);
        snprintf(p, sizeof p, "%s.blocks.%d.norm2", prefix, j);
        add_norm(t, p, C);
        snprintf(p, sizeof p, "%s.blocks.%d.mlp.fc1", prefix, j);
        add_linear(t, p, hidden, C);
        snprintf(p, sizeof p, "%s.blocks.%d.mlp.fc2", prefix, j);
        add_linear(t, p, C, hidden);
        if (fine_block_has_gt(depth, j))
            add_classic(t, prefix, j, "gt_attn", C);
        if (fine_block_has_vt(depth, j))
            add_classic(t, prefix, j, "vt_attn", C);
    }
}

static void stage_dims(fine_stage_dims *s, const int64_t res[3], int64_t C, int heads, int ws, int G)
{
    int64_t mn = res[0];
    for (int d = 0; d < 3; d++) {
        s->res[d] = res[d];
        if (res[d] < mn)
            mn = res[d];
    }
    s->C = C;
    s->heads = heads;
    s->ws = mn < ws ? (int)mn : ws; /* the reference's rule: min(res) <= ws -> one window edge */
    s->shift = mn <= ws ? 0 : ws / 2;
    s->nW = (res[0] / s->ws) * (res[1] / s->ws) * (res[2] / s->ws);
    /* the reference sizes pe (res/ws * G) per axis and reads the nW * G rows in its middle; with
     * G = 1 that is every row in window order (B 2.4; A1's general rule for any crop) */
    s->G = G;
    s->pe_rows = s->nW * G * G * G;
    s->pe_first = s->pe_rows / 2 - s->nW * G / 2;
}

int fine_model_build(fine_model *m, const fine_config *c, fine_err *e)
{
    memset(m, 0, sizeof *m);
    if (fine_config_check(c, e) < 0)
        return -1;
    m->cfg = *c;
    m->nV = c->vt_map[1] * c->vt_map[2];
    int64_t res[3];
    for (int d = 0; d < 3; d++)
        res[d] = c->crop[d] / c->patch[d];
    for (int i = 0; i < FINE_STAGES; i++) {
        stage_dims(&m->enc[i], res, (int64_t)c->embed_dim << i, c->heads[i], c->window[i], c->gt_num);
        if (i < FINE_STAGES - 1)
            stage_dims(&m->dec[i], res, (int64_t)c->embed_dim << i, c->dec_heads[FINE_STAGES - 2 - i],
                       c->window[i], c->gt_num);
        for (int d = 0; d < 3; d++)
            res[d] /= 2;
    }
    for (int i = 0; i < FINE_STAGES; i++) {
        /* only the reference's exception may shrink the window: a grid of one window */
        const fine_stage_dims *s = &m->enc[i];
        int ok = s->ws == c->window[i] || s->nW == 1;
        for (int d = 0; d < 3; d++)
            ok = ok && s->res[d] % s->ws == 0;
        if (!ok)
            return fine_err_set(e, "config: crop %d,%d,%d gives stage %d a %lldx%lldx%lld token grid "
                                "that windows of %d do not tile", c->crop[0], c->crop[1], c->crop[2], i,
                                (long long)s->res[0], (long long)s->res[1], (long long)s->res[2], c->window[i]);
    }
    table t = {0};
    int64_t E = c->embed_dim, H = E / 2, K = c->num_classes;
    add_conv(&t, "model_down.patch_embed.proj1.conv1", H, c->in_chans, 3, 3, 3, H);
    add_conv(&t, "model_down.patch_embed.proj1.conv2", H, H, 3, 3, 3, H);
    add_norm(&t, "model_down.patch_embed.proj1.norm1", H);
    add_norm(&t, "model_down.patch_embed.proj1.norm2", H);
    add_conv(&t, "model_down.patch_embed.proj2.conv1", E, H, 3, 3, 3, E);
    add_conv(&t, "model_down.patch_embed.proj2.conv2", E, E, 3, 3, 3, E);
    add_norm(&t, "model_down.patch_embed.proj2.norm1", E);
    add_norm(&t, "model_down.patch_embed.norm", E);
    char p[FINE_NAME_LEN];
    for (int i = 0; i < FINE_STAGES; i++) {
        snprintf(p, sizeof p, "model_down.layers.%d", i);
        add_layer(&t, p, &m->enc[i], c->depths[i], m->nV, c->mlp_ratio);
        if (i < FINE_STAGES - 1) { /* the last stage's PatchMerging is dead (B 1.2 row 17) */
            int64_t C = m->enc[i].C;
            snprintf(p, sizeof p, "model_down.layers.%d.downsample.reduction", i);
            add_conv(&t, p, 2 * C, C, 2, 2, 2, 2 * C);
            snprintf(p, sizeof p, "model_down.layers.%d.downsample.norm", i);
            add_norm(&t, p, C);
        }
    }
    for (int i = 0; i < FINE_STAGES; i++) {
        snprintf(p, sizeof p, "model_down.norm%d", i);
        add_norm(&t, p, m->enc[i].C);
    }
    for (int k = 0; k < FINE_STAGES - 1; k++) {
        int64_t C = m->dec[k].C;
        snprintf(p, sizeof p, "encoder.layers.%d", k);
        add_layer(&t, p, &m->dec[k], c->dec_depths[FINE_STAGES - 2 - k], m->nV, c->mlp_ratio);
        snprintf(p, sizeof p, "encoder.layers.%d.Upsample.norm", k);
        add_norm(&t, p, 2 * C);
        snprintf(p, sizeof p, "encoder.layers.%d.Upsample.up", k);
        add_conv(&t, p, 2 * C, C, 2, 2, 2, C);
    }
    int k0[3], k1[3];
    fine_head_kernel(c, 0, k0);
    fine_head_kernel(c, 1, k1);
    add_conv(&t, "final.0.up", E, K, k0[0], k0[1], k0[2], K);
    add_conv(&t, "final.1.up", 2 * E, K, k1[0], k1[1], k1[2], K);
    if (t.oom) {
        free(t.p);
        return fine_err_set(e, "out of memory");
    }
    m->params = t.p;
    m->nparams = t.n;
    m->nfloats = t.off;
    m->w = aligned_alloc(64, (m->nfloats * sizeof(float) + 63) / 64 * 64);
    m->vt_check = calloc((size_t)m->nV, sizeof(float));
    int oom = !m->w || !m->vt_check;
    /* one index per window edge in use (a decoder stage has its encoder stage's grid and edge) */
    for (int i = 0; i < FINE_STAGES && !oom; i++) {
        int ws = m->enc[i].ws, N = ws * ws * ws;
        if (!m->relpos[ws] && (m->relpos[ws] = malloc((size_t)N * (size_t)N * sizeof(int64_t))))
            fine_relpos_index(m->relpos[ws], ws);
        oom = !m->relpos[ws];
    }
    if (oom) {
        fine_model_free(m);
        return fine_err_set(e, "out of memory allocating %zu parameters", m->nfloats);
    }
    memset(m->w, 0, m->nfloats * sizeof(float));
    return 0;
}

void fine_model_free(fine_model *m)
{
    free(m->params);
    free(m->w);
    free(m->vt_check);
    for (int ws = 0; ws <= FINE_MAX_WINDOW; ws++)
        free(m->relpos[ws]);
    memset(m, 0, sizeof *m);
}

const fine_param *fine_model_param(const fine_model *m, const char *name)
{
    for (int i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return &m->params[i];
    return NULL;
}

float *fine_model_view(const fine_model *m, float *base, const char *fmt, ...)
{
    char name[FINE_NAME_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const fine_param *p = fine_model_param(m, name);
    if (!p) {
        fprintf(stderr, "fine: internal error: no parameter '%s'\n", name);
        abort();
    }
    return base + p->offset;
}

size_t fine_model_live_params(const fine_model *m)
{
    size_t n = 0;
    for (int i = 0; i < m->nparams; i++)
        n += m->params[i].numel;
    return n;
}

size_t fine_model_reference_params(const fine_config *c)
{
    /* B 4.3: every stage owns all of its modules in the reference, dead or not */
    size_t E = (size_t)c->embed_dim, H = E / 2, K = (size_t)c->num_classes;
    size_t nV = (size_t)c->vt_map[1] * (size_t)c->vt_map[2], G = (size_t)c->gt_num;
    size_t n = H * (size_t)c->in_chans * 27 + H + H * H * 27 + H + 4 * H + E * H * 27 + E + E * E * 27 + E + 4 * E;
    size_t res = (size_t)(c->crop[0] / c->patch[0]) * (size_t)(c->crop[1] / c->patch[1]) *
                 (size_t)(c->crop[2] / c->patch[2]);
    size_t hidden_ratio = (size_t)c->mlp_ratio;
    for (int i = 0; i < FINE_STAGES; i++) {
        size_t C = E << i, h = (size_t)c->heads[i];
        size_t wsi = (size_t)c->window[i];
        size_t nW = res / (wsi * wsi * wsi) ? res / (wsi * wsi * wsi) : 1;
        size_t block = (3 + 1 + 4 + 4) * C * C + 2 * hidden_ratio * C * C + (2 + 3 + 1 + 2 + 1 + 3 + 1 + 3 + 1) * C +
                       hidden_ratio * C + (2 * wsi - 1) * (2 * wsi - 1) * (2 * wsi - 1) * h;
        n += C * (G + nV + nW * G * G * G) + (size_t)c->depths[i] * block + 16 * C * C + 2 * C + 2 * C;
        n += 2 * C; /* model_down.norm{i} */
        if (i < FINE_STAGES - 1) {
            size_t hd = (size_t)c->dec_heads[FINE_STAGES - 2 - i];
            size_t bd = (3 + 1 + 4 + 4) * C * C + 2 * hidden_ratio * C * C + (2 + 3 + 1 + 2 + 1 + 3 + 1 + 3 + 1) * C +
                        hidden_ratio * C + (2 * wsi - 1) * (2 * wsi - 1) * (2 * wsi - 1) * hd;
            n += C * (G + nV + nW * G * G * G) + (size_t)c->dec_depths[FINE_STAGES - 2 - i] * bd + 4 * C + 16 * C * C + C;
        }
        res /= 8;
    }
    size_t kp = (size_t)c->patch[0] * (size_t)c->patch[1] * (size_t)c->patch[2];
    n += E * K * kp + K + 2 * E * K * 2 * kp + K + 4 * E * K * 2 * kp + K; /* final.0, .1, .2 */
    n += nV;                                                              /* vt_check */
    return n;
}

void fine_pos_to_vt(const fine_config *c, const int64_t pos[3], int out[4])
{
    int t[3];
    for (int i = 0; i < 3; i++) {
        int64_t D = c->crop[i], M = c->max_imsize[i], V = c->vt_map[i];
        int64_t u = pos[i] + M / 2;
        int64_t diff = M - D * V;
        /* pad = ceil(diff / 2) as the reference computes it: floor division plus 1 when odd */
        int64_t fl = diff >= 0 ? diff / 2 : -((-diff + 1) / 2);
        int64_t pad = fl + ((diff % 2) != 0 ? 1 : 0);
        int64_t num = u - pad - D / 2;
        int64_t ti = num >= 0 ? num / D : -((-num + D - 1) / D); /* floor */
        if (ti < 0)
            ti = 0;
        if (u - pad >= V * D)
            ti = c->vt_overflow == FINE_VT_CLAMP ? V - 1 : 0;
        t[i] = (int)ti;
    }
    int r = t[1], cc = t[2], V1 = c->vt_map[1], V2 = c->vt_map[2];
    int dr = r == V1 - 1 ? -1 : 1, dc = cc == V2 - 1 ? -1 : 1;
    out[0] = r * V2 + cc;
    out[1] = (r + dr) * V2 + cc;
    out[2] = r * V2 + (cc + dc);
    out[3] = (r + dr) * V2 + (cc + dc);
}
