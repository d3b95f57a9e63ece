/* fine_net.c: the FINE network's forward and backward, top to bottom as in fine-reference
 * B 1.2: patch embedding, four encoder stages (FINE blocks, skip norms, patch merging), three
 * decoder stages (patch expanding, skip addition, FINE blocks), two segmentation heads.
 *
 * A FINE block (B 2.1-2.5, 2.9), for tokens x (B, L, C) and G memory tokens per window g
 * (B*nW, G, C):
 *   [g' ; y] = WindowAttention([g ; windows(LN1(x))])   bias and shift mask on the window part
 *   x1 = x + DP(y);  x2 = x1 + DP(MLP(LN2(x1)))
 * and, only when a later block consumes the memory tokens (A1):
 *   g1 = g + DP(g');  g2 = g1 + DP(MLP(LN2(g1)))          the same LN2 and MLP
 *   [v' ; g_next] = MHSA([V[k1..k4] ; g2 + pe])           volume tokens chosen by pos
 * and, only when a later block's MHSA reads the volume tokens:
 *   V_next = MHSA_vt(V + scatter(v' at k1..k4), key mask)  per-sample banks, no residual
 * V is the layer's volume_token for block 0 (every sample alike), then each sample's own bank.
 * With depth 2, block 0 computes g_next for block 1; block 1's memory branch is dead and no
 * bank is written. */
#include "nn/fine_net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/ops.h"

#define NVT 4 /* volume tokens read per sample (B 2.5) */

typedef struct block_acts {
    float *ln1, *ln1_mean, *ln1_rstd; /* (B*L, C), (B*L) */
    float *seq;                       /* (Bw, T, C): memory token then the window */
    float *qkv;                       /* (Bw, T, 3C) */
    float *att;                       /* (Bw, h, T, T) */
    float *ao;                        /* (Bw, T, C) attention output before proj */
    float *po;                        /* (Bw, T, C) after proj */
    float *bias;                      /* (h, N, N) */
    float *x1;                        /* (B*L, C) */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fc1, *act;                 /* (B*L, hidden) before and after GELU */
    float *out;                       /* (B*L, C) */
    float *dpx1, *dpx2;               /* (B) drop-path scales of the two residual branches */
    int dp_on;                        /* drop path active in the last forward (train, rate > 0) */
    /* memory-token branch (has_gt) */
    int has_gt;
    float *g1, *gln, *gln_mean, *gln_rstd, *gfc1, *gact, *g2; /* (Bw, C|hidden) */
    float *u, *uqkv, *uatt, *uao, *upo;                       /* (B, 4+nW, C|3C), (B, h, U, U) */
    float *dpg1, *dpg2;                                       /* (Bw) */
    float *gnext;                                             /* (Bw, G, C) next block's memory tokens */
    /* volume-token write-back and attention (has_vt) */
    int has_vt;
    float *vnew;                      /* (B, 4, C) the MHSA's volume-token rows */
    float *bankw, *vqkv, *vatt, *vao; /* (B, nV, C|3C), (B, h, nV, nV), (B, nV, C) */
    float *vnext;                     /* (B, nV, C) the next block's bank */
} block_acts;

typedef struct layer_acts {
    const fine_stage_dims *s;
    const char *prefix; /* "model_down.layers.%d" or "encoder.layers.%d" */
    int index, depth;
    float *in;          /* (B*L, C) layer input (owned by whoever produced it) */
    float *gt0;         /* (Bw, G, C) the global tokens broadcast to every window */
    float *mask;        /* (nW, N, N) shift mask, NULL when the layer is not shifted */
    block_acts blk[FINE_MAX_DEPTH];
} layer_acts;

typedef struct conv_act {
    fine_conv3d_shape s;
    float *out;
} conv_act;

typedef struct bump {
    char *base;
    size_t off;
} bump;

struct fine_net {
    int B;
    int shard_first, shard_batch; /* fine_net_set_shard: samples [first, first + B) of shard_batch; 0, 0 */
    const fine_model *m; /* for shapes only */
    const fine_backend *be;
    float *w;            /* device backends: the parameters (fine_net_load_params); CPU: NULL, m->w is used */
    int64_t *relpos[FINE_MAX_WINDOW + 1]; /* fine_model's relpos, in the backend's memory */
    int *vt_dev;         /* n->vt in the backend's memory */
    float *vt_key;       /* (nV) volume-token key mask of the last forward: 0 visited, -1000 not (B 2.5) */
    float *vt_key_dev;   /* vt_key in the backend's memory */
    float *xdev;         /* device backends: the uploaded input */
    float *dp_host;      /* host mirror of the drop-path scales, [dp_first, dp_end) of the arena */
    char *dp_first, *dp_end;
    /* patch embedding */
    const float *x;      /* the input of the last forward (caller's) */
    conv_act c1, c2, c3, c4;
    float *a1, *t1, *n1, *n1_mean, *n1_rstd, *n1cf;
    float *a2, *t2, *n2, *n2_mean, *n2_rstd, *n2cf;
    float *a3, *t3, *n3, *n3_mean, *n3_rstd, *n3cf;
    float *t4, *tok0, *tok0_mean, *tok0_rstd;
    /* encoder */
    layer_acts enc[FINE_STAGES];
    float *skip[FINE_STAGES], *skip_mean[FINE_STAGES], *skip_rstd[FINE_STAGES];
    float *dg[FINE_STAGES - 1], *dln[FINE_STAGES - 1], *dln_mean[FINE_STAGES - 1],
        *dln_rstd[FINE_STAGES - 1], *dcf[FINE_STAGES - 1];
    conv_act down[FINE_STAGES - 1];
    float *down_tok[FINE_STAGES - 1];
    /* decoder (index k = encoder.layers.k, run from k = 2 down to 0) */
    layer_acts dec[FINE_STAGES - 1];
    float *uln[FINE_STAGES - 1], *uln_mean[FINE_STAGES - 1], *uln_rstd[FINE_STAGES - 1];
    fine_convT3d_shape up_s[FINE_STAGES - 1];
    float *up[FINE_STAGES - 1], *dec_in[FINE_STAGES - 1];
    /* heads */
    fine_convT3d_shape head_s[2];
    float *logits[2];
    /* volume-token indices of the last forward (B, 4), then the same offset by b * nV into
     * per-sample banks (B, nV, C) */
    int *vt;
    /* scratch: convolution work space and the backward's gradient buffers */
    float *conv_scratch;
    size_t conv_scratch_n;
    float *ga, *gb, *gc, *gd, *ge; /* max_act floats each (token and convolution sized), ge max_hid */
    float *gw1, *gw2, *gw3, *gw4; /* window-sized: gw2 max_win3 (Bw*T*3C), the others max_win */
    float *gw5;                   /* the memory tokens' gradient: max over stages of Bw*G*C */
    float *gv;                    /* a bank's gradient, carried between blocks: max B*nV*C */
    float *gatt;                        /* the backend's attention-backward scratch */
    int eval;                           /* evaluation only: no backward, pooled block buffers */
    int recompute;                      /* training nets: fine_recompute */
    /* 0, 1: evaluation nets: block outputs in turn; 2: forward temporaries; 3: training nets:
     * the block buffers the backward recomputes (plan_layer: by recompute level) */
    bump pool[4];
    size_t pool_max[4], main_bytes;
    size_t max_act, max_hid, max_win, max_win3, max_gt, max_bank, att_scratch_n, max_tok;
    char *arena;
    size_t bytes;
};

/* ------------------------------------------------------------------ planning */

static float *take(bump *b, size_t nfloats)
{
    size_t bytes = (nfloats * sizeof(float) + 63) / 64 * 64;
    float *p = b->base ? (float *)(b->base + b->off) : NULL;
    b->off += bytes;
    return p;
}

static int64_t tokens(const fine_stage_dims *s)
{
    return s->res[0] * s->res[1] * s->res[2];
}

static int64_t hidden_of(const fine_model *m, int64_t C)
{
    return (int64_t)(m->cfg.mlp_ratio * (double)C);
}

static void need_act(fine_net *n, size_t v)
{
    if (v > n->max_act)
        n->max_act = v;
}

/* Evaluation nets: pool i, emptied for a new user; pool_end records how much the user took. */
static bump *pool_start(fine_net *n, int i)
{
    n->pool[i].off = 0;
    return &n->pool[i];
}

static void pool_end(fine_net *n, int i)
{
    if (n->pool[i].off > n->pool_max[i])
        n->pool_max[i] = n->pool[i].off;
}

/* A forward temporary no backward reads (a LayerNorm output only windowed or transposed, an
 * activation only transposed, a projection only unpacked): pool 2, reused by the next one. */
static float *temporary(fine_net *n, size_t nfloats)
{
    float *p = take(pool_start(n, 2), nfloats);
    pool_end(n, 2);
    return p;
}

static void need_attention(fine_net *n, fine_attn_shape s)
{
    size_t v = n->be->attention_scratch(n->be->ctx, &s);
    if (v > n->att_scratch_n)
        n->att_scratch_n = v;
}

/* The volume-token indices of the last forward as rows of the per-sample banks (b * nV added). */
static const int *bank_rows(const fine_net *n)
{
    return n->vt_dev + n->B * NVT;
}

static void plan_layer(fine_net *n, layer_acts *la, bump *b, bump *d, const fine_stage_dims *s,
                       const char *prefix, int index, int depth)
{
    const fine_model *m = n->m;
    int64_t B = n->B, L = tokens(s), C = s->C, h = s->heads, N = (int64_t)s->ws * s->ws * s->ws;
    int64_t G = s->G, T = N + G, Bw = B * s->nW, hid = hidden_of(m, C), U = NVT + s->nW * G, nV = m->nV;
    la->s = s;
    la->prefix = prefix;
    la->index = index;
    la->depth = depth;
    la->gt0 = take(b, (size_t)(Bw * G * C));
    la->mask = s->shift > 0 && depth > 1 ? take(b, (size_t)(s->nW * N * N)) : NULL;
    for (int j = 0; j < depth; j++) {
        block_acts *k = &la->blk[j];
        /* an evaluation-only net keeps no block's activations for a backward: a block's
         * temporaries share one pool with every other block's, its outputs (out, gnext) come
         * from two pools in turn (a block reads the previous block's) */
        bump *kb = b, *ko = b;
        if (n->eval) {
            kb = pool_start(n, 2);
            ko = pool_start(n, j & 1);
        }
        /* Recomputation (fine_recompute): a training net may keep, of a block's attention and
         * MLP, only what the backward cannot recompute cheaply (the inputs x and x1, the
         * LayerNorm statistics, the bias). What it does not keep comes from pool 3, which every
         * block shares, and the backward recomputes it: the same calls on the same inputs, so
         * the same values. The attention group (sequences, qkv, probabilities, output: level
         * all) and the MLP group (GELU output: gelu; LN2 output and fc1 too: mlp) share pool 3
         * as well: neither reads the other. */
        int rl = n->eval ? FINE_RECOMPUTE_NONE : n->recompute;
        bump *ka = rl >= FINE_RECOMPUTE_ALL ? pool_start(n, 3) : kb;
        k->ln1 = n->eval ? take(kb, (size_t)(B * L * C)) : temporary(n, (size_t)(B * L * C));
        k->ln1_mean = take(kb, (size_t)(B * L));
        k->ln1_rstd = take(kb, (size_t)(B * L));
        k->seq = take(ka, (size_t)(Bw * T * C));
        k->qkv = take(ka, (size_t)(Bw * T * 3 * C));
        k->att = take(ka, (size_t)(Bw * h * T * T));
        k->ao = take(ka, (size_t)(Bw * T * C));
        if (rl >= FINE_RECOMPUTE_ALL)
            pool_end(n, 3);
        k->po = n->eval ? take(kb, (size_t)(Bw * T * C)) : temporary(n, (size_t)(Bw * T * C));
        k->bias = take(kb, (size_t)(h * N * N));
        k->x1 = take(kb, (size_t)(B * L * C));
        k->ln2_mean = take(kb, (size_t)(B * L));
        k->ln2_rstd = take(kb, (size_t)(B * L));
        bump *km = rl >= FINE_RECOMPUTE_GELU ? pool_start(n, 3) : kb;
        k->ln2 = take(rl >= FINE_RECOMPUTE_MLP ? km : kb, (size_t)(B * L * C));
        k->fc1 = take(rl >= FINE_RECOMPUTE_MLP ? km : kb, (size_t)(B * L * hid));
        k->act = take(km, (size_t)(B * L * hid));
        if (rl >= FINE_RECOMPUTE_GELU)
            pool_end(n, 3);
        k->out = take(ko, (size_t)(B * L * C));
        k->dpx1 = take(d, (size_t)B);
        k->dpx2 = take(d, (size_t)B);
        k->has_gt = fine_block_has_gt(depth, j);
        k->has_vt = fine_block_has_vt(depth, j);
        if (k->has_gt) {
            k->g1 = take(kb, (size_t)(Bw * G * C));
            k->gln = take(kb, (size_t)(Bw * G * C));
            k->gln_mean = take(kb, (size_t)(Bw * G));
            k->gln_rstd = take(kb, (size_t)(Bw * G));
            k->gfc1 = take(kb, (size_t)(Bw * G * hid));
            k->gact = take(kb, (size_t)(Bw * G * hid));
            k->g2 = take(kb, (size_t)(Bw * G * C));
            k->u = take(kb, (size_t)(B * U * C));
            k->uqkv = take(kb, (size_t)(B * U * 3 * C));
            k->uatt = take(kb, (size_t)(B * h * U * U));
            k->uao = take(kb, (size_t)(B * U * C));
            k->upo = take(kb, (size_t)(B * U * C));
            k->dpg1 = take(d, (size_t)Bw);
            k->dpg2 = take(d, (size_t)Bw);
            k->gnext = take(ko, (size_t)(Bw * G * C));
        }
        if (k->has_vt) {
            k->vnew = take(kb, (size_t)(B * NVT * C));
            k->bankw = take(kb, (size_t)(B * nV * C));
            k->vqkv = take(kb, (size_t)(B * nV * 3 * C));
            k->vatt = take(kb, (size_t)(B * h * nV * nV));
            k->vao = take(kb, (size_t)(B * nV * C));
            k->vnext = take(ko, (size_t)(B * nV * C));
        }
        pool_end(n, 2);
        pool_end(n, j & 1);
        /* the backward's window-sized gradients: of seq, the attention output and proj output
         * (max_win), of qkv (max_win3), and of the memory-token branch (no T x T score matrix:
         * the backends keep those in the attention scratch) */
        size_t win = (size_t)(Bw * T * C) > (size_t)(B * U * C) ? (size_t)(Bw * T * C) : (size_t)(B * U * C);
        if (k->has_vt && (size_t)(B * nV * C) > win)
            win = (size_t)(B * nV * C);
        if (win > n->max_win)
            n->max_win = win;
        if (3 * win > n->max_win3)
            n->max_win3 = 3 * win;
        if ((size_t)(Bw * G * C) > n->max_gt)
            n->max_gt = (size_t)(Bw * G * C);
        if (k->has_vt && (size_t)(B * nV * C) > n->max_bank)
            n->max_bank = (size_t)(B * nV * C);
        /* the MLP backward's hidden-sized gradient (and, for the memory tokens, both of them) */
        size_t hmax = (size_t)(B * L * hid) > (size_t)(2 * Bw * G * hid) ? (size_t)(B * L * hid)
                                                                          : (size_t)(2 * Bw * G * hid);
        if (hmax > n->max_hid)
            n->max_hid = hmax;
        need_act(n, (size_t)(B * L * C));
        if ((size_t)(B * L * C) > n->max_tok)
            n->max_tok = (size_t)(B * L * C);
        need_attention(n, (fine_attn_shape){Bw, T, C, (int)h, (int)G, s->shift ? s->nW : 0});
        if (k->has_gt)
            need_attention(n, (fine_attn_shape){B, U, C, (int)h, 0, 0});
        if (k->has_vt)
            need_attention(n, (fine_attn_shape){B, nV, C, (int)h, 0, 0});
    }
}

static void need_conv(fine_net *n, const fine_conv3d_shape *s)
{
    size_t v = n->be->conv3d_scratch(n->be->ctx, s);
    if (v > n->conv_scratch_n)
        n->conv_scratch_n = v;
}

static conv_act conv_plan(fine_net *n, bump *b, int64_t Cin, const int64_t in_res[3], int64_t Cout, int k,
                          const int stride[3], int pad, int64_t out_res[3])
{
    conv_act c;
    memset(&c, 0, sizeof c);
    c.s.B = n->B;
    c.s.Cin = Cin;
    c.s.D = in_res[0], c.s.H = in_res[1], c.s.W = in_res[2];
    c.s.Cout = Cout;
    for (int d = 0; d < 3; d++) {
        c.s.k[d] = k;
        c.s.stride[d] = stride[d];
        c.s.pad[d] = pad;
    }
    fine_conv3d_out_size(&c.s, &out_res[0], &out_res[1], &out_res[2]);
    size_t outn = (size_t)(n->B * Cout * out_res[0] * out_res[1] * out_res[2]);
    c.out = take(b, outn);
    need_act(n, outn);
    need_act(n, (size_t)(n->B * Cin * in_res[0] * in_res[1] * in_res[2]));
    need_conv(n, &c.s);
    return c;
}

static void plan(fine_net *n, bump *b, bump *d)
{
    const fine_model *m = n->m;
    const fine_config *c = &m->cfg;
    int64_t B = n->B, E = c->embed_dim, H = E / 2, K = c->num_classes;
    n->max_act = n->max_hid = n->max_win = n->max_win3 = n->max_gt = n->max_bank = 0;
    n->conv_scratch_n = n->att_scratch_n = n->max_tok = 0;

    /* patch embedding: conv k3 stride (2,2,2) -> GELU -> LN, conv k3 -> GELU -> LN,
     * conv k3 stride patch/2 ((1,2,2) for bcv) -> GELU -> LN, conv k3 -> LN (B 1.2 rows 2-7) */
    int64_t r0[3] = {c->crop[0], c->crop[1], c->crop[2]}, r1[3], r2[3], r3[3], r4[3];
    int s222[3] = {2, 2, 2}, s111[3] = {1, 1, 1}, se1[3], se2[3];
    fine_embed_strides(c, se1, se2);
    /* evaluation nets: each stage's buffers in pool 0 or 1 in turn (a stage reads the last) */
    bump *e0 = n->eval ? pool_start(n, 0) : b;
    n->c1 = conv_plan(n, e0, c->in_chans, r0, H, 3, se1, 1, r1);
    int64_t v1 = r1[0] * r1[1] * r1[2];
    n->a1 = temporary(n, (size_t)(B * H * v1));
    n->t1 = take(e0, (size_t)(B * H * v1));
    n->n1 = temporary(n, (size_t)(B * H * v1));
    n->n1_mean = take(e0, (size_t)(B * v1));
    n->n1_rstd = take(e0, (size_t)(B * v1));
    n->n1cf = take(e0, (size_t)(B * H * v1));
    pool_end(n, 0);
    bump *e1 = n->eval ? pool_start(n, 1) : b;
    n->c2 = conv_plan(n, e1, H, r1, H, 3, s111, 1, r2);
    n->a2 = temporary(n, (size_t)(B * H * v1));
    n->t2 = take(e1, (size_t)(B * H * v1));
    n->n2 = temporary(n, (size_t)(B * H * v1));
    n->n2_mean = take(e1, (size_t)(B * v1));
    n->n2_rstd = take(e1, (size_t)(B * v1));
    n->n2cf = take(e1, (size_t)(B * H * v1));
    pool_end(n, 1);
    e0 = n->eval ? pool_start(n, 0) : b;
    n->c3 = conv_plan(n, e0, H, r2, E, 3, se2, 1, r3);
    int64_t v3 = r3[0] * r3[1] * r3[2];
    n->a3 = temporary(n, (size_t)(B * E * v3));
    n->t3 = take(e0, (size_t)(B * E * v3));
    n->n3 = temporary(n, (size_t)(B * E * v3));
    n->n3_mean = take(e0, (size_t)(B * v3));
    n->n3_rstd = take(e0, (size_t)(B * v3));
    n->n3cf = take(e0, (size_t)(B * E * v3));
    pool_end(n, 0);
    e1 = n->eval ? pool_start(n, 1) : b;
    n->c4 = conv_plan(n, e1, E, r3, E, 3, s111, 1, r4);
    n->t4 = take(e1, (size_t)(B * E * v3));
    pool_end(n, 1);
    n->tok0 = take(b, (size_t)(B * E * v3));
    n->tok0_mean = take(b, (size_t)(B * v3));
    n->tok0_rstd = take(b, (size_t)(B * v3));

    static const char *enc_prefix = "model_down.layers.%d", *dec_prefix = "encoder.layers.%d";
    for (int i = 0; i < FINE_STAGES; i++) {
        const fine_stage_dims *s = &m->enc[i];
        int64_t L = tokens(s), C = s->C;
        plan_layer(n, &n->enc[i], b, d, s, enc_prefix, i, c->depths[i]);
        n->skip[i] = take(b, (size_t)(B * L * C));
        n->skip_mean[i] = take(b, (size_t)(B * L));
        n->skip_rstd[i] = take(b, (size_t)(B * L));
        if (i < FINE_STAGES - 1) {
            n->dg[i] = take(b, (size_t)(B * L * C));
            n->dln[i] = take(b, (size_t)(B * L * C));
            n->dln_mean[i] = take(b, (size_t)(B * L));
            n->dln_rstd[i] = take(b, (size_t)(B * L));
            n->dcf[i] = take(b, (size_t)(B * L * C));
            int64_t out[3];
            n->down[i] = conv_plan(n, b, C, s->res, 2 * C, 2, s222, 0, out);
            n->down[i].s.pad[0] = n->down[i].s.pad[1] = n->down[i].s.pad[2] = 0;
            n->down_tok[i] = take(b, (size_t)(B * L / 8 * 2 * C));
        }
    }
    for (int k = FINE_STAGES - 2; k >= 0; k--) {
        const fine_stage_dims *s = &m->dec[k];
        int64_t L = tokens(s), C = s->C, Lin = L / 8;
        n->uln[k] = take(b, (size_t)(B * Lin * 2 * C));
        n->uln_mean[k] = take(b, (size_t)(B * Lin));
        n->uln_rstd[k] = take(b, (size_t)(B * Lin));
        fine_convT3d_shape *u = &n->up_s[k];
        memset(u, 0, sizeof *u);
        u->B = B, u->Cin = 2 * C, u->D = s->res[0] / 2, u->H = s->res[1] / 2, u->W = s->res[2] / 2;
        u->Cout = C, u->k[0] = u->k[1] = u->k[2] = 2, u->out_channels_last = 1;
        if (n->be->convT3d_scratch(n->be->ctx, u) > n->conv_scratch_n)
            n->conv_scratch_n = n->be->convT3d_scratch(n->be->ctx, u);
        n->up[k] = take(b, (size_t)(B * L * C));
        n->dec_in[k] = take(b, (size_t)(B * L * C));
        plan_layer(n, &n->dec[k], b, d, s, dec_prefix, k, c->dec_depths[FINE_STAGES - 2 - k]);
    }
    for (int h = 0; h < 2; h++) {
        const fine_stage_dims *s = &m->dec[h];
        fine_convT3d_shape *t = &n->head_s[h];
        memset(t, 0, sizeof *t);
        t->B = B, t->Cin = s->C, t->D = s->res[0], t->H = s->res[1], t->W = s->res[2];
        t->Cout = K;
        fine_head_kernel(c, h, t->k);
        t->out_channels_last = 0;
        if (n->be->convT3d_scratch(n->be->ctx, t) > n->conv_scratch_n)
            n->conv_scratch_n = n->be->convT3d_scratch(n->be->ctx, t);
        size_t numel = (size_t)(B * K * t->D * t->k[0] * t->H * t->k[1] * t->W * t->k[2]);
        n->logits[h] = take(b, numel);
    }
    n->conv_scratch = take(b, n->conv_scratch_n);
    /* the forward uses ga and gb for token-sized temporaries, the backward for more */
    n->ga = take(b, n->eval ? n->max_tok : n->max_act);
    n->gb = take(b, n->eval ? n->max_tok : n->max_act);
    if (!n->eval) { /* the backward's gradient buffers */
        n->gc = take(b, n->max_act);
        n->gd = take(b, n->max_act);
        n->ge = take(b, n->max_hid); /* the MLP backward's hidden-sized gradient */
        n->gw1 = take(b, n->max_win);
        n->gw2 = take(b, n->max_win3);
        n->gw3 = take(b, n->max_win);
        n->gw4 = take(b, n->max_win);
        n->gw5 = take(b, n->max_gt);
        n->gv = take(b, n->max_bank);
        n->gatt = take(b, n->att_scratch_n);
    }
    if (n->be->is_device) {
        n->w = take(b, n->m->nfloats);
        n->xdev = take(b, (size_t)(B * c->in_chans * c->crop[0] * c->crop[1] * c->crop[2]));
        for (int ws = 1; ws <= FINE_MAX_WINDOW; ws++) {
            size_t N = (size_t)ws * ws * ws; /* m->relpos[ws]'s size */
            n->relpos[ws] = n->m->relpos[ws] ? (int64_t *)take(b, N * N * 2) : NULL; /* int64: two floats */
        }
        n->vt_dev = (int *)take(b, (size_t)(2 * B * NVT));
        n->vt_key_dev = take(b, (size_t)m->nV);
    }
}

/* Sizes every buffer (plan() with NULL bases). The arena is [activations][pools 0, 1, 2, 3]
 * [drop-path scales] (the scales together so that one upload sends them); pool 2 holds the
 * forward temporaries, pools 0 and 1 are used by evaluation-only nets alone, pool 3 by
 * training nets alone (what the backward recomputes). Sets
 * n->main_bytes and n->pool_max. */
static size_t plan_sizes(fine_net *n, size_t *dp_bytes)
{
    bump b = {NULL, 0}, d = {NULL, 0};
    memset(n->pool, 0, sizeof n->pool);
    memset(n->pool_max, 0, sizeof n->pool_max);
    plan(n, &b, &d);
    *dp_bytes = d.off;
    n->main_bytes = b.off;
    return b.off + n->pool_max[0] + n->pool_max[1] + n->pool_max[2] + n->pool_max[3] + d.off;
}

static fine_net *plan_net(const fine_backend *be, const fine_model *m, int B, int eval, int recompute,
                           fine_err *e)
{
    fine_net *n = calloc(1, sizeof *n);
    if (!n) {
        fine_err_set(e, "out of memory");
        return NULL;
    }
    n->B = B;
    n->m = m;
    n->be = be;
    n->eval = eval;
    n->recompute = recompute;
    size_t dp_bytes;
    size_t total = plan_sizes(n, &dp_bytes);
    n->bytes = total;
    n->arena = be->alloc(be->ctx, total);
    n->dp_host = malloc(dp_bytes ? dp_bytes : 1);
    n->vt = calloc((size_t)(2 * B * NVT), sizeof(int));
    n->vt_key = calloc((size_t)m->nV, sizeof(float));
    float *mask_host = NULL;
    if (!n->arena || !n->dp_host || !n->vt || !n->vt_key) {
        fine_err_set(e, "out of memory on %s: activations for batch %d need %.2f GB", be->name, B,
                     (double)total / 1e9);
        fine_net_free(n);
        return NULL;
    }
    bump b = {n->arena, 0}, d = {n->arena + (total - dp_bytes), 0};
    n->pool[0].base = n->arena + n->main_bytes;
    n->pool[1].base = n->pool[0].base + n->pool_max[0];
    n->pool[2].base = n->pool[1].base + n->pool_max[1];
    n->pool[3].base = n->pool[2].base + n->pool_max[2];
    plan(n, &b, &d);
    n->dp_first = n->arena + (total - dp_bytes);
    n->dp_end = n->arena + total;
    if (!be->is_device) { /* the host arrays serve as they are */
        memcpy(n->relpos, m->relpos, sizeof n->relpos);
        n->vt_dev = n->vt;
        n->vt_key_dev = n->vt_key;
    }
    else {
        for (int ws = 1; ws <= FINE_MAX_WINDOW; ws++) {
            size_t N = (size_t)ws * ws * ws;
            if (m->relpos[ws])
                be->upload(be->ctx, n->relpos[ws], m->relpos[ws], N * N * sizeof(int64_t));
        }
    }
    /* shift masks: computed on the host, then placed */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < (pass ? FINE_STAGES - 1 : FINE_STAGES); i++) {
            const fine_stage_dims *s = pass ? &m->dec[i] : &m->enc[i];
            float *mask = pass ? n->dec[i].mask : n->enc[i].mask;
            if (!mask)
                continue;
            size_t N = (size_t)s->ws * s->ws * s->ws, count = (size_t)s->nW * N * N;
            float *hm = be->is_device ? realloc(mask_host, count * sizeof(float)) : mask;
            if (!hm) {
                fine_err_set(e, "out of memory");
                free(mask_host);
                fine_net_free(n);
                return NULL;
            }
            fine_shift_mask(hm, s->res[0], s->res[1], s->res[2], s->ws, s->shift);
            if (be->is_device) {
                mask_host = hm;
                be->upload(be->ctx, mask, hm, count * sizeof(float));
                be->sync(be->ctx, NULL); /* the pageable source is reused next */
            }
        }
    free(mask_host);
    if (be->sync(be->ctx, e) < 0) {
        fine_net_free(n);
        return NULL;
    }
    return n;
}

int fine_net_recompute(const fine_net *n)
{
    return n->eval ? FINE_RECOMPUTE_NONE : n->recompute;
}

int fine_recompute_default(const fine_backend *be)
{
    return be->is_device ? FINE_RECOMPUTE_GELU : FINE_RECOMPUTE_NONE;
}

const char *fine_recompute_name(int level)
{
    static const char *names[] = {"none", "gelu", "mlp", "all"};
    return level >= 0 && level <= FINE_RECOMPUTE_ALL ? names[level] : "?";
}

int fine_recompute_parse(const char *name)
{
    for (int i = 0; i <= FINE_RECOMPUTE_ALL; i++)
        if (strcmp(name, fine_recompute_name(i)) == 0)
            return i;
    return -1;
}

fine_net *fine_net_plan_train_on(const fine_backend *be, const fine_model *m, int B, int recompute, fine_err *e)
{
    if (recompute < 0 || recompute > FINE_RECOMPUTE_ALL) {
        fine_err_set(e, "recompute level %d out of range", recompute);
        return NULL;
    }
    return plan_net(be, m, B, 0, recompute, e);
}

fine_net *fine_net_plan_on(const fine_backend *be, const fine_model *m, int B, fine_err *e)
{
    return plan_net(be, m, B, 0, fine_recompute_default(be), e);
}

fine_net *fine_net_plan_eval_on(const fine_backend *be, const fine_model *m, int B, fine_err *e)
{
    return plan_net(be, m, B, 1, FINE_RECOMPUTE_NONE, e);
}

fine_net *fine_net_plan(const fine_model *m, int B, fine_err *e)
{
    return fine_net_plan_on(fine_backend_cpu(), m, B, e);
}

size_t fine_net_plan_bytes_on(const fine_backend *be, const fine_model *m, int B, int eval)
{
    return fine_net_plan_train_bytes_on(be, m, B, eval ? -1 : fine_recompute_default(be));
}

size_t fine_net_plan_train_bytes_on(const fine_backend *be, const fine_model *m, int B, int recompute)
{
    fine_net *n = calloc(1, sizeof *n); /* large: the struct holds every stage's pointers */
    if (!n)
        return 0;
    n->B = B;
    n->m = m;
    n->be = be;
    n->eval = recompute < 0;
    n->recompute = recompute < 0 ? FINE_RECOMPUTE_NONE : recompute;
    size_t dp, total = plan_sizes(n, &dp);
    free(n);
    return total;
}

size_t fine_net_plan_bytes(const fine_model *m, int B)
{
    return fine_net_plan_bytes_on(fine_backend_cpu(), m, B, 0);
}

void fine_net_free(fine_net *n)
{
    if (!n)
        return;
    if (n->arena)
        n->be->free(n->be->ctx, n->arena);
    free(n->dp_host);
    free(n->vt);
    free(n->vt_key);
    free(n);
}

size_t fine_net_bytes(const fine_net *n)
{
    return n->bytes;
}

const fine_backend *fine_net_backend(const fine_net *n)
{
    return n->be;
}

float *fine_net_params(fine_net *n, fine_model *m)
{
    return n->be->is_device ? n->w : m->w;
}

int fine_net_load_params(fine_net *n, const fine_model *m, fine_err *e)
{
    if (!n->be->is_device)
        return 0;
    n->be->upload(n->be->ctx, n->w, m->w, m->nfloats * sizeof(float));
    return n->be->sync(n->be->ctx, e);
}

int fine_net_store_params(fine_net *n, fine_model *m, fine_err *e)
{
    if (!n->be->is_device)
        return 0;
    n->be->download(n->be->ctx, m->w, n->w, m->nfloats * sizeof(float));
    return n->be->sync(n->be->ctx, e);
}

int fine_net_logits_host(fine_net *n, int head, float *dst, fine_err *e)
{
    n->be->download(n->be->ctx, dst, n->logits[head], (size_t)fine_net_logits_numel(n, head) * sizeof(float));
    return n->be->sync(n->be->ctx, e);
}

float *fine_net_logits(fine_net *n, int head)
{
    return n->logits[head];
}

void fine_net_logits_shape(const fine_net *n, int head, int64_t shape[5])
{
    const fine_convT3d_shape *t = &n->head_s[head];
    shape[0] = t->B;
    shape[1] = t->Cout;
    shape[2] = t->D * t->k[0];
    shape[3] = t->H * t->k[1];
    shape[4] = t->W * t->k[2];
}

int64_t fine_net_logits_numel(const fine_net *n, int head)
{
    int64_t s[5];
    fine_net_logits_shape(n, head, s);
    return s[0] * s[1] * s[2] * s[3] * s[4];
}

/* ------------------------------------------------------------------ drop path */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Fills count scales with 0 or 1/keep (timm DropPath) or all 1 when off. */
static void drop_path_scales(float *scale, int64_t count, double rate, int train, uint64_t *rng)
{
    for (int64_t i = 0; i < count; i++) {
        if (!train || rate <= 0) {
            scale[i] = 1.0f;
            continue;
        }
        double u = (double)(splitmix(rng) >> 11) / 9007199254740992.0;
        double keep = 1.0 - rate;
        scale[i] = u < keep ? (float)(1.0 / keep) : 0.0f;
    }
}

/* The scales of this net's samples, per_sample each: a shard draws those of the whole batch,
 * in the same order as one net of the whole batch, and keeps its own (fine_net_set_shard). */
static void drop_path_slice(const fine_net *n, float *scale, int64_t per_sample, double rate, int train,
                            uint64_t *rng)
{
    if (n->shard_batch == 0 || !train || rate <= 0) {
        drop_path_scales(scale, n->B * per_sample, rate, train, rng);
        return;
    }
    int64_t all = n->shard_batch * per_sample;
    for (int64_t i = 0; i < all; i++) {
        float v;
        drop_path_scales(&v, 1, rate, train, rng);
        int64_t b = i / per_sample - n->shard_first;
        if (b >= 0 && b < n->B)
            scale[b * per_sample + i % per_sample] = v;
    }
}

/* The drop-path rate of block j of encoder stage i or decoder stage k (B 1.1). */
static double block_rate(const fine_config *c, int decoder, int stage, int j)
{
    int total = 0, before = 0;
    if (!decoder) {
        for (int i = 0; i < FINE_STAGES; i++) {
            if (i < stage)
                before += c->depths[i];
            total += c->depths[i];
        }
    } else {
        /* decoder layers are built deepest first: i_layer = FINE_STAGES - 2 - k */
        int il = FINE_STAGES - 2 - stage;
        for (int i = 0; i < FINE_STAGES - 1; i++) {
            if (i < il)
                before += c->dec_depths[i];
            total += c->dec_depths[i];
        }
    }
    int idx = before + j;
    return total > 1 ? c->drop_path * (double)idx / (double)(total - 1) : 0.0;
}

/* ------------------------------------------------------------------ forward */

void fine_net_set_shard(fine_net *n, int first, int batch)
{
    n->shard_first = batch > 0 ? first : 0;
    n->shard_batch = batch > 0 ? batch : 0;
}

void fine_vt_visit(fine_model *m, const int64_t *pos, int64_t B)
{
    unsigned char *mark = calloc((size_t)m->nV, 1);
    if (!mark)
        return;
    for (int64_t b = 0; b < B; b++) {
        int vt[NVT];
        fine_pos_to_vt(&m->cfg, pos + b * 3, vt);
        for (int i = 0; i < NVT; i++)
            mark[vt[i]] = 1;
    }
    for (int v = 0; v < m->nV; v++)
        if (mark[v])
            m->vt_check[v] += 1.0f;
    free(mark);
}

static void gelu_ln(const fine_backend *be, float *act, float *t, float *ln, float *mean, float *rstd, float *cf,
                    const float *in, const float *w, const float *b, int64_t B, int64_t C, int64_t V, int do_gelu)
{
    const float *src = in;
    if (do_gelu) {
        be->gelu_forward(be->ctx, act, in, B * C * V);
        src = act;
    }
    be->to_channels_last(be->ctx, t, src, B, C, V);
    be->layernorm_forward(be->ctx, ln, mean, rstd, t, w, b, B * V, C);
    if (cf)
        be->to_channels_first(be->ctx, cf, ln, B, C, V);
}

/* [g ; window] sequences (Bw, G + N, C) from the memory tokens (Bw, G, C) and windows (Bw, N, C) */
static void pack_sequences(const fine_backend *be, float *seq, const float *gt, const float *win, int64_t Bw,
                           int64_t G, int64_t N, int64_t C)
{
    be->copy_rows(be->ctx, seq, (G + N) * C, gt, G * C, Bw, G * C);
    be->copy_rows(be->ctx, seq + G * C, (G + N) * C, win, N * C, Bw, N * C);
}

/* the window part of the sequences */
static void unpack_windows(const fine_backend *be, float *win, const float *seq, int64_t Bw, int64_t G, int64_t N,
                           int64_t C)
{
    be->copy_rows(be->ctx, win, N * C, seq + G * C, (G + N) * C, Bw, N * C);
}

static void mlp_forward(const fine_backend *be, float *out, float *fc1, float *act, const float *in,
                        const fine_model *m, float *w, const char *bp, int64_t rows, int64_t C, int64_t hid)
{
    be->linear_forward(be->ctx, fc1, in, fine_model_view(m, w, "%s.mlp.fc1.weight", bp),
                       fine_model_view(m, w, "%s.mlp.fc1.bias", bp), rows, C, hid);
    be->gelu_forward(be->ctx, act, fc1, rows * hid);
    be->linear_forward(be->ctx, out, act, fine_model_view(m, w, "%s.mlp.fc2.weight", bp),
                       fine_model_view(m, w, "%s.mlp.fc2.bias", bp), rows, hid, C);
}

/* The host mirror of a drop-path scale array of the arena. */
static float *dp_host(fine_net *n, const float *dev)
{
    return n->dp_host + ((const char *)dev - n->dp_first) / sizeof(float);
}

/* Draws every drop-path scale of one forward, in the order the blocks run (encoder stages, then
 * decoder stages deepest first; per block x1, x2, then the memory tokens' g1, g2), and sends
 * them to the backend in one copy. */
static void draw_scales(fine_net *n, const fine_model *m, int train, uint64_t *rng)
{
    for (int pass = 0; pass < 2; pass++) {
        int count = pass ? FINE_STAGES - 1 : FINE_STAGES;
        for (int t = 0; t < count; t++) {
            int i = pass ? FINE_STAGES - 2 - t : t;
            layer_acts *la = pass ? &n->dec[i] : &n->enc[i];
            for (int j = 0; j < la->depth; j++) {
                block_acts *k = &la->blk[j];
                double rate = block_rate(&m->cfg, pass, la->index, j);
                k->dp_on = train && rate > 0;
                drop_path_slice(n, dp_host(n, k->dpx1), 1, rate, train, rng);
                drop_path_slice(n, dp_host(n, k->dpx2), 1, rate, train, rng);
                if (k->has_gt) {
                    drop_path_slice(n, dp_host(n, k->dpg1), la->s->nW, rate, train, rng);
                    drop_path_slice(n, dp_host(n, k->dpg2), la->s->nW, rate, train, rng);
                }
            }
        }
    }
    n->be->upload(n->be->ctx, n->dp_first, n->dp_host, (size_t)(n->dp_end - n->dp_first));
}

static void layer_forward(fine_net *n, const fine_model *m, float *w, layer_acts *la)
{
    const fine_backend *be = n->be;
    void *cx = be->ctx;
    const fine_stage_dims *s = la->s;
    int64_t B = n->B, L = tokens(s), C = s->C, h = s->heads, N = (int64_t)s->ws * s->ws * s->ws;
    int64_t G = s->G, T = N + G, Bw = B * s->nW, hid = hidden_of(m, C), nW = s->nW, U = NVT + nW * G;
    int64_t nV = m->nV;
    char lp[64], bp[96];
    snprintf(lp, sizeof lp, la->prefix, la->index);
    be->copy_rows(cx, la->gt0, G * C, fine_model_view(m, w, "%s.global_token", lp), 0, Bw, G * C);
    const float *x = la->in;
    const float *g = la->gt0;
    /* the volume tokens block j reads: the parameter (block 0), then each sample's bank */
    const float *bank = fine_model_view(m, w, "%s.volume_token", lp);
    const int *idx = n->vt_dev;
    float *tmp = n->ga, *tmp2 = n->gb;
    for (int j = 0; j < la->depth; j++) {
        block_acts *k = &la->blk[j];
        snprintf(bp, sizeof bp, "%s.blocks.%d", lp, j);
        int shift = j % 2 ? s->shift : 0;
        /* window attention with the memory token as token 0 */
        be->layernorm_forward(cx, k->ln1, k->ln1_mean, k->ln1_rstd, x, fine_model_view(m, w, "%s.norm1.weight", bp),
                              fine_model_view(m, w, "%s.norm1.bias", bp), B * L, C);
        be->window_partition(cx, tmp, k->ln1, B, s->res[0], s->res[1], s->res[2], C, s->ws, shift);
        pack_sequences(be, k->seq, g, tmp, Bw, G, N, C);
        be->linear_forward(cx, k->qkv, k->seq, fine_model_view(m, w, "%s.attn.qkv.weight", bp),
                           fine_model_view(m, w, "%s.attn.qkv.bias", bp), Bw * T, C, 3 * C);
        be->relpos_bias(cx, k->bias, fine_model_view(m, w, "%s.attn.relative_position_bias_table", bp), n->relpos[s->ws],
                        (int)h, (int)N);
        fine_attn_shape as = {Bw, T, C, (int)h, (int)G, shift ? nW : 0};
        be->attention_forward(cx, &as, k->ao, k->att, k->qkv, k->bias, shift ? la->mask : NULL, NULL);
        be->linear_forward(cx, k->po, k->ao, fine_model_view(m, w, "%s.attn.proj.weight", bp),
                           fine_model_view(m, w, "%s.attn.proj.bias", bp), Bw * T, C, C);
        unpack_windows(be, tmp, k->po, Bw, G, N, C);
        be->window_reverse(cx, tmp2, tmp, B, s->res[0], s->res[1], s->res[2], C, s->ws, shift);
        if (k->dp_on)
            be->drop_path(cx, tmp2, k->dpx1, B, L, C);
        be->add(cx, k->x1, x, tmp2, B * L * C);
        be->layernorm_forward(cx, k->ln2, k->ln2_mean, k->ln2_rstd, k->x1, fine_model_view(m, w, "%s.norm2.weight", bp),
                              fine_model_view(m, w, "%s.norm2.bias", bp), B * L, C);
        mlp_forward(be, tmp2, k->fc1, k->act, k->ln2, m, w, bp, B * L, C, hid);
        if (k->dp_on)
            be->drop_path(cx, tmp2, k->dpx2, B, L, C);
        be->add(cx, k->out, k->x1, tmp2, B * L * C);
        if (k->has_gt) {
            /* memory tokens: residual (tokens 0..G-1 of each window's output; drop path per
             * window), the shared MLP, then attention with the volume tokens */
            be->axpy_rows(cx, k->g1, G * C, g, k->po, T * C, k->dpg1, Bw, G * C);
            be->layernorm_forward(cx, k->gln, k->gln_mean, k->gln_rstd, k->g1, fine_model_view(m, w, "%s.norm2.weight", bp),
                                  fine_model_view(m, w, "%s.norm2.bias", bp), Bw * G, C);
            mlp_forward(be, tmp, k->gfc1, k->gact, k->gln, m, w, bp, Bw * G, C, hid);
            if (k->dp_on)
                be->drop_path(cx, tmp, k->dpg2, Bw, G, C);
            be->add(cx, k->g2, k->g1, tmp, Bw * G * C);
            be->memtok_gather(cx, k->u, bank, idx, k->g2, fine_model_view(m, w, "%s.pe", lp) + s->pe_first * C, B,
                              nW * G, C, NVT);
            be->linear_forward(cx, k->uqkv, k->u, fine_model_view(m, w, "%s.gt_attn.qkv.weight", bp),
                               fine_model_view(m, w, "%s.gt_attn.qkv.bias", bp), B * U, C, 3 * C);
            fine_attn_shape us = {B, U, C, (int)h, 0, 0};
            be->attention_forward(cx, &us, k->uao, k->uatt, k->uqkv, NULL, NULL, NULL);
            be->linear_forward(cx, k->upo, k->uao, fine_model_view(m, w, "%s.gt_attn.proj.weight", bp),
                               fine_model_view(m, w, "%s.gt_attn.proj.bias", bp), B * U, C, C);
            /* the next block's memory tokens: rows NVT.. of each sample, window-major */
            be->copy_rows(cx, k->gnext, nW * G * C, k->upo + NVT * C, U * C, B, nW * G * C);
            g = k->gnext;
        }
        if (k->has_vt) {
            /* write-back: each sample's bank plus the new volume tokens at its 4 rows (distinct
             * within a sample, so the reference's assignment into zeros is this sum), then
             * attention among the bank's tokens with the unvisited ones masked as keys */
            if (j == 0)
                be->copy_rows(cx, k->bankw, nV * C, bank, 0, B, nV * C);
            else
                be->copy(cx, k->bankw, bank, (size_t)(B * nV * C) * sizeof(float));
            be->copy_rows(cx, k->vnew, NVT * C, k->upo, U * C, B, NVT * C);
            be->memtok_gather_backward(cx, k->bankw, NULL, NULL, k->vnew, bank_rows(n), B, 0, C, NVT);
            be->linear_forward(cx, k->vqkv, k->bankw, fine_model_view(m, w, "%s.vt_attn.qkv.weight", bp),
                               fine_model_view(m, w, "%s.vt_attn.qkv.bias", bp), B * nV, C, 3 * C);
            fine_attn_shape vs = {B, nV, C, (int)h, 0, 0};
            be->attention_forward(cx, &vs, k->vao, k->vatt, k->vqkv, NULL, NULL, n->vt_key_dev);
            be->linear_forward(cx, k->vnext, k->vao, fine_model_view(m, w, "%s.vt_attn.proj.weight", bp),
                               fine_model_view(m, w, "%s.vt_attn.proj.bias", bp), B * nV, C, C);
            bank = k->vnext;
            idx = bank_rows(n);
        }
        x = k->out;
    }
}

void fine_net_forward(fine_net *n, fine_model *m, const float *x, const int64_t *pos, int train, uint64_t dp_seed)
{
    const fine_config *c = &m->cfg;
    int64_t B = n->B, E = c->embed_dim, H = E / 2;
    const fine_backend *be = n->be;
    void *cx = be->ctx;
    float *w = fine_net_params(n, m);
    uint64_t rng = dp_seed;
    if (be->is_device) {
        be->upload(cx, n->xdev, x, (size_t)(B * c->in_chans * c->crop[0] * c->crop[1] * c->crop[2]) * sizeof(float));
        x = n->xdev;
    }
    n->x = x;
    /* volume tokens (and the same as rows of per-sample banks) and the visitation counter
     * (B 2.7: an indexed increment, once per index; a shard's caller counts the whole batch),
     * whose state after the increment masks the unvisited tokens as keys (B 2.5) */
    for (int64_t b = 0; b < B; b++) {
        fine_pos_to_vt(c, pos + b * 3, n->vt + b * NVT);
        for (int q = 0; q < NVT; q++)
            n->vt[(B + b) * NVT + q] = n->vt[b * NVT + q] + (int)b * m->nV;
    }
    if (n->shard_batch == 0)
        fine_vt_visit(m, pos, B);
    for (int v = 0; v < m->nV; v++)
        n->vt_key[v] = m->vt_check[v] >= 1.0f ? 0.0f : -1000.0f;
    if (be->is_device) {
        be->upload(cx, n->vt_dev, n->vt, (size_t)(2 * B * NVT) * sizeof(int));
        be->upload(cx, n->vt_key_dev, n->vt_key, (size_t)m->nV * sizeof(float));
    }
    draw_scales(n, m, train, &rng);

    /* patch embedding */
    int64_t r1[3];
    fine_conv3d_out_size(&n->c1.s, &r1[0], &r1[1], &r1[2]);
    int64_t v1 = r1[0] * r1[1] * r1[2];
    int64_t r3[3];
    fine_conv3d_out_size(&n->c3.s, &r3[0], &r3[1], &r3[2]);
    int64_t v3 = r3[0] * r3[1] * r3[2];
    const char *pe = "model_down.patch_embed";
    be->conv3d_forward(cx, &n->c1.s, n->c1.out, x, fine_model_view(m, w, "%s.proj1.conv1.weight", pe),
                        fine_model_view(m, w, "%s.proj1.conv1.bias", pe), n->conv_scratch);
    gelu_ln(be, n->a1, n->t1, n->n1, n->n1_mean, n->n1_rstd, n->n1cf, n->c1.out,
            fine_model_view(m, w, "%s.proj1.norm1.weight", pe), fine_model_view(m, w, "%s.proj1.norm1.bias", pe),
            B, H, v1, 1);
    be->conv3d_forward(cx, &n->c2.s, n->c2.out, n->n1cf, fine_model_view(m, w, "%s.proj1.conv2.weight", pe),
                        fine_model_view(m, w, "%s.proj1.conv2.bias", pe), n->conv_scratch);
    gelu_ln(be, n->a2, n->t2, n->n2, n->n2_mean, n->n2_rstd, n->n2cf, n->c2.out,
            fine_model_view(m, w, "%s.proj1.norm2.weight", pe), fine_model_view(m, w, "%s.proj1.norm2.bias", pe),
            B, H, v1, 1);
    be->conv3d_forward(cx, &n->c3.s, n->c3.out, n->n2cf, fine_model_view(m, w, "%s.proj2.conv1.weight", pe),
                        fine_model_view(m, w, "%s.proj2.conv1.bias", pe), n->conv_scratch);
    gelu_ln(be, n->a3, n->t3, n->n3, n->n3_mean, n->n3_rstd, n->n3cf, n->c3.out,
            fine_model_view(m, w, "%s.proj2.norm1.weight", pe), fine_model_view(m, w, "%s.proj2.norm1.bias", pe),
            B, E, v3, 1);
    be->conv3d_forward(cx, &n->c4.s, n->c4.out, n->n3cf, fine_model_view(m, w, "%s.proj2.conv2.weight", pe),
                        fine_model_view(m, w, "%s.proj2.conv2.bias", pe), n->conv_scratch);
    gelu_ln(be, NULL, n->t4, n->tok0, n->tok0_mean, n->tok0_rstd, NULL, n->c4.out,
            fine_model_view(m, w, "%s.norm.weight", pe), fine_model_view(m, w, "%s.norm.bias", pe), B, E, v3, 0);

    /* encoder: blocks, skip norm, patch merging (GELU -> LN -> conv k2 s2) */
    const float *in = n->tok0;
    for (int i = 0; i < FINE_STAGES; i++) {
        const fine_stage_dims *s = &m->enc[i];
        int64_t L = tokens(s), C = s->C;
        layer_acts *la = &n->enc[i];
        la->in = (float *)in;
        layer_forward(n, m, w, la);
        const float *out = la->blk[la->depth - 1].out;
        be->layernorm_forward(cx, n->skip[i], n->skip_mean[i], n->skip_rstd[i], out,
                               fine_model_view(m, w, "model_down.norm%d.weight", i),
                               fine_model_view(m, w, "model_down.norm%d.bias", i), B * L, C);
        if (i < FINE_STAGES - 1) {
            be->gelu_forward(cx, n->dg[i], out, B * L * C);
            be->layernorm_forward(cx, n->dln[i], n->dln_mean[i], n->dln_rstd[i], n->dg[i],
                                   fine_model_view(m, w, "model_down.layers.%d.downsample.norm.weight", i),
                                   fine_model_view(m, w, "model_down.layers.%d.downsample.norm.bias", i), B * L, C);
            be->to_channels_first(cx, n->dcf[i], n->dln[i], B, C, L);
            be->conv3d_forward(cx, &n->down[i].s, n->down[i].out, n->dcf[i],
                                fine_model_view(m, w, "model_down.layers.%d.downsample.reduction.weight", i),
                                fine_model_view(m, w, "model_down.layers.%d.downsample.reduction.bias", i),
                                n->conv_scratch);
            be->to_channels_last(cx, n->down_tok[i], n->down[i].out, B, 2 * C, L / 8);
            in = n->down_tok[i];
        }
    }

    /* decoder: LN -> convT k2 s2 -> + skip -> blocks, from the deepest stage up */
    in = n->skip[FINE_STAGES - 1];
    for (int k = FINE_STAGES - 2; k >= 0; k--) {
        const fine_stage_dims *s = &m->dec[k];
        int64_t L = tokens(s), C = s->C;
        be->layernorm_forward(cx, n->uln[k], n->uln_mean[k], n->uln_rstd[k], in,
                               fine_model_view(m, w, "encoder.layers.%d.Upsample.norm.weight", k),
                               fine_model_view(m, w, "encoder.layers.%d.Upsample.norm.bias", k), B * L / 8, 2 * C);
        be->convT3d_forward(cx, &n->up_s[k], n->up[k], n->uln[k],
                             fine_model_view(m, w, "encoder.layers.%d.Upsample.up.weight", k),
                             fine_model_view(m, w, "encoder.layers.%d.Upsample.up.bias", k), n->conv_scratch);
        be->add(cx, n->dec_in[k], n->up[k], n->skip[k], B * L * C);
        layer_acts *la = &n->dec[k];
        la->in = n->dec_in[k];
        layer_forward(n, m, w, la);
        in = la->blk[la->depth - 1].out;
        /* heads: final.1 on this stage when k = 1, final.0 when k = 0, at once (an evaluation
         * net reuses the stage's buffers in the next one) */
        if (k < 2)
            be->convT3d_forward(cx, &n->head_s[k], n->logits[k], in, fine_model_view(m, w, "final.%d.up.weight", k),
                                fine_model_view(m, w, "final.%d.up.bias", k), n->conv_scratch);
    }
}

/* ------------------------------------------------------------------ backward */

/* dact and dfc1: (rows, hid) work space; dfc1 may be act itself, dead once fc2's backward has
 * read it */
static void mlp_backward(const fine_backend *be, const float *w, float *din, const float *dout, const float *in, const float *fc1, const float *act,
                         const fine_model *m, float *grad, const char *bp, int64_t rows, int64_t C, int64_t hid,
                         float *dact, float *dfc1)
{
    void *cx = be->ctx;
    be->zero(cx, dact, (size_t)(rows * hid) * sizeof(float));
    be->linear_backward(cx, dact, fine_model_view(m, grad, "%s.mlp.fc2.weight", bp),
                         fine_model_view(m, grad, "%s.mlp.fc2.bias", bp), dout, act,
                         fine_model_view(m, (float *)w, "%s.mlp.fc2.weight", bp), rows, hid, C);
    be->zero(cx, dfc1, (size_t)(rows * hid) * sizeof(float));
    be->gelu_backward(cx, dfc1, dact, fc1, rows * hid);
    be->linear_backward(cx, din, fine_model_view(m, grad, "%s.mlp.fc1.weight", bp),
                         fine_model_view(m, grad, "%s.mlp.fc1.bias", bp), dfc1, in,
                         fine_model_view(m, (float *)w, "%s.mlp.fc1.weight", bp), rows, C, hid);
}

/* Backward through one layer. dout: gradient of the layer output (B*L, C), consumed.
 * dx: += gradient of the layer input. */
static void layer_backward(fine_net *n, const fine_model *m, layer_acts *la, float *grad, float *dout, float *dx)
{
    const fine_stage_dims *s = la->s;
    int64_t B = n->B, L = tokens(s), C = s->C, h = s->heads, N = (int64_t)s->ws * s->ws * s->ws;
    int64_t G = s->G, T = N + G, Bw = B * s->nW, hid = hidden_of(m, C), nW = s->nW, U = NVT + nW * G;
    int64_t nV = m->nV;
    const fine_backend *be = n->be;
    void *cx = be->ctx;
    const float *w = n->be->is_device ? n->w : m->w;
    char lp[64], bp[96];
    snprintf(lp, sizeof lp, la->prefix, la->index);
    float *dgnext = NULL; /* (Bw, G, C) gradient of the memory tokens the next block received */
    float *dg_keep = n->gw5;
    /* (B, nV, C) gradient of the bank the next block read (its block's vnext), when it has_vt */
    float *dbank = n->gv;
    for (int j = la->depth - 1; j >= 0; j--) {
        block_acts *k = &la->blk[j];
        snprintf(bp, sizeof bp, "%s.blocks.%d", lp, j);
        int shift = j % 2 ? s->shift : 0;
        const float *xin = j == 0 ? la->in : la->blk[j - 1].out;
        /* scratch: gc, gd token-sized; ge hidden-sized; gw1..gw4 window-sized, gw5 (Bw, G, C), gv (B, nV, C) */
        float *dx1 = n->gc, *tmp = n->gd, *dbig = n->ge;
        float *dseq = n->gw1, *dqkv = n->gw2, *dao = n->gw3, *dpo = n->gw4;
        /* x2 = x1 + DP2(MLP(LN2(x1))) */
        be->copy(cx, dx1, dout, (size_t)(B * L * C) * sizeof(float));
        be->copy(cx, tmp, dout, (size_t)(B * L * C) * sizeof(float));
        if (k->dp_on)
            be->drop_path(cx, tmp, k->dpx2, B, L, C);
        float *dln2 = dout; /* dout is consumed: reuse as dLN2 */
        be->zero(cx, dln2, (size_t)(B * L * C) * sizeof(float));
        /* recomputed (pool 3): LN2's output and fc1, the GELU output */
        if (n->recompute >= FINE_RECOMPUTE_MLP) {
            be->layernorm_forward(cx, k->ln2, k->ln2_mean, k->ln2_rstd, k->x1,
                                  fine_model_view(m, (float *)w, "%s.norm2.weight", bp),
                                  fine_model_view(m, (float *)w, "%s.norm2.bias", bp), B * L, C);
            be->linear_forward(cx, k->fc1, k->ln2, fine_model_view(m, (float *)w, "%s.mlp.fc1.weight", bp),
                               fine_model_view(m, (float *)w, "%s.mlp.fc1.bias", bp), B * L, C, hid);
        }
        if (n->recompute >= FINE_RECOMPUTE_GELU)
            be->gelu_forward(cx, k->act, k->fc1, B * L * hid);
        /* fc1's gradient overwrites act, dead once fc2's backward has read it */
        mlp_backward(be, w, dln2, tmp, k->ln2, k->fc1, k->act, m, grad, bp, B * L, C, hid, dbig, k->act);
        be->layernorm_backward(cx, dx1, fine_model_view(m, grad, "%s.norm2.weight", bp),
                                fine_model_view(m, grad, "%s.norm2.bias", bp), dln2, k->x1,
                                fine_model_view(m, (float *)w, "%s.norm2.weight", bp), k->ln2_mean, k->ln2_rstd,
                                B * L, C);
        /* memory-token branch (this block produced the next block's memory tokens) */
        float *dg_in = NULL; /* (Bw, G, C): gradient of this block's memory tokens g */
        be->zero(cx, dpo, (size_t)(Bw * T * C) * sizeof(float));
        if (k->has_gt) {
            float *dvnew = n->gw4; /* (B, NVT, C); dpo's buffer, zeroed again below */
            if (k->has_vt) {
                /* vnext = proj(MHSA(qkv(bankw))): dbank = d(vnext) becomes d(bankw), which is
                 * also d(bank) (the write-back adds); d(vnew) = its rows at the 4 indices */
                float *dvao = n->gw1, *dvqkv = n->gw2;
                be->zero(cx, dvao, (size_t)(B * nV * C) * sizeof(float));
                be->linear_backward(cx, dvao, fine_model_view(m, grad, "%s.vt_attn.proj.weight", bp),
                                     fine_model_view(m, grad, "%s.vt_attn.proj.bias", bp), dbank, k->vao,
                                     fine_model_view(m, (float *)w, "%s.vt_attn.proj.weight", bp), B * nV, C, C);
                be->zero(cx, dvqkv, (size_t)(B * nV * 3 * C) * sizeof(float));
                fine_attn_shape vs = {B, nV, C, (int)h, 0, 0};
                be->attention_backward(cx, &vs, dvqkv, NULL, dvao, k->vqkv, k->vatt, n->gatt);
                be->zero(cx, dbank, (size_t)(B * nV * C) * sizeof(float));
                be->linear_backward(cx, dbank, fine_model_view(m, grad, "%s.vt_attn.qkv.weight", bp),
                                     fine_model_view(m, grad, "%s.vt_attn.qkv.bias", bp), dvqkv, k->bankw,
                                     fine_model_view(m, (float *)w, "%s.vt_attn.qkv.weight", bp), B * nV, C, 3 * C);
                be->memtok_gather(cx, dvnew, dbank, bank_rows(n), NULL, NULL, B, 0, C, NVT);
            } else if (j > 0) {
                be->zero(cx, dbank, (size_t)(B * nV * C) * sizeof(float));
            }
            /* dupo rows NVT.. = dgnext, rows 0..NVT-1 = dvnew */
            float *dupo = n->gw3; /* (B, U, C) */
            be->zero(cx, dupo, (size_t)(B * U * C) * sizeof(float));
            be->copy_rows(cx, dupo + NVT * C, U * C, dgnext, nW * G * C, B, nW * G * C);
            if (k->has_vt)
                be->copy_rows(cx, dupo, U * C, dvnew, NVT * C, B, NVT * C);
            float *duao = n->gw1;
            be->zero(cx, duao, (size_t)(B * U * C) * sizeof(float));
            be->linear_backward(cx, duao, fine_model_view(m, grad, "%s.gt_attn.proj.weight", bp),
                                 fine_model_view(m, grad, "%s.gt_attn.proj.bias", bp), dupo, k->uao,
                                 fine_model_view(m, (float *)w, "%s.gt_attn.proj.weight", bp), B * U, C, C);
            float *duqkv = n->gw2;
            be->zero(cx, duqkv, (size_t)(B * U * 3 * C) * sizeof(float));
            fine_attn_shape us = {B, U, C, (int)h, 0, 0};
            be->attention_backward(cx, &us, duqkv, NULL, duao, k->uqkv, k->uatt, n->gatt);
            float *du = n->gw3;
            be->zero(cx, du, (size_t)(B * U * C) * sizeof(float));
            be->linear_backward(cx, du, fine_model_view(m, grad, "%s.gt_attn.qkv.weight", bp),
                                 fine_model_view(m, grad, "%s.gt_attn.qkv.bias", bp), duqkv, k->u,
                                 fine_model_view(m, (float *)w, "%s.gt_attn.qkv.weight", bp), B * U, C, 3 * C);
            /* block 0 read the parameter (and, with has_vt, wrote every sample's copy of it);
             * a later block read its bank, whose gradient goes on to the block before */
            float *dvt = fine_model_view(m, grad, "%s.volume_token", lp);
            float *dpe = fine_model_view(m, grad, "%s.pe", lp) + s->pe_first * C;
            float *dg2 = n->gw1; /* (Bw, G, C) */
            if (j == 0 && k->has_vt)
                be->sum_rows_acc(cx, dvt, dbank, B, nV * C);
            be->memtok_gather_backward(cx, j == 0 ? dvt : dbank, dpe, dg2, du, j == 0 ? n->vt_dev : bank_rows(n),
                                       B, nW * G, C, NVT);
            /* g2 = g1 + DP(MLP(LN2(g1))) */
            float *dg1 = n->gw2;
            be->copy(cx, dg1, dg2, (size_t)(Bw * G * C) * sizeof(float));
            if (k->dp_on)
                be->drop_path(cx, dg2, k->dpg2, Bw, G, C);
            float *dgln = n->gw4;
            be->zero(cx, dgln, (size_t)(Bw * G * C) * sizeof(float));
            mlp_backward(be, w, dgln, dg2, k->gln, k->gfc1, k->gact, m, grad, bp, Bw * G, C, hid, dbig,
                         dbig + Bw * G * hid);
            be->layernorm_backward(cx, dg1, fine_model_view(m, grad, "%s.norm2.weight", bp),
                                    fine_model_view(m, grad, "%s.norm2.bias", bp), dgln, k->g1,
                                    fine_model_view(m, (float *)w, "%s.norm2.weight", bp), k->gln_mean,
                                    k->gln_rstd, Bw * G, C);
            /* g1 = g + DP1(po[:, :G]) */
            be->zero(cx, dpo, (size_t)(Bw * T * C) * sizeof(float));
            be->axpy_rows(cx, dpo, T * C, NULL, dg1, G * C, k->dpg1, Bw, G * C);
            be->copy(cx, dg_keep, dg1, (size_t)(Bw * G * C) * sizeof(float));
            dg_in = dg_keep;
        }
        /* recomputed (pool 3): the sequences [g; windows of LN1(x)] (LN1's output in tmp, its
         * windows in dao's buffer, both free until below), qkv, the attention probabilities
         * and output */
        fine_attn_shape as = {Bw, T, C, (int)h, (int)G, shift ? nW : 0};
        if (n->recompute >= FINE_RECOMPUTE_ALL) {
            be->layernorm_forward(cx, tmp, k->ln1_mean, k->ln1_rstd, xin,
                                  fine_model_view(m, (float *)w, "%s.norm1.weight", bp),
                                  fine_model_view(m, (float *)w, "%s.norm1.bias", bp), B * L, C);
            be->window_partition(cx, dao, tmp, B, s->res[0], s->res[1], s->res[2], C, s->ws, shift);
            pack_sequences(be, k->seq, j == 0 ? la->gt0 : la->blk[j - 1].gnext, dao, Bw, G, N, C);
            be->linear_forward(cx, k->qkv, k->seq, fine_model_view(m, (float *)w, "%s.attn.qkv.weight", bp),
                               fine_model_view(m, (float *)w, "%s.attn.qkv.bias", bp), Bw * T, C, 3 * C);
            be->attention_forward(cx, &as, k->ao, k->att, k->qkv, k->bias, shift ? la->mask : NULL, NULL);
        }
        /* x1 = x + DP1(reverse(po[:, G:])) */
        be->accumulate(cx, dx, dx1, B * L * C); /* residual */
        be->copy(cx, tmp, dx1, (size_t)(B * L * C) * sizeof(float));
        if (k->dp_on)
            be->drop_path(cx, tmp, k->dpx1, B, L, C);
        /* window-order gradient of po[:, G:] */
        float *dwin = dx1; /* dx1 no longer needed */
        be->window_partition(cx, dwin, tmp, B, s->res[0], s->res[1], s->res[2], C, s->ws, shift);
        be->copy_rows(cx, dpo + G * C, T * C, dwin, N * C, Bw, N * C);
        be->zero(cx, dao, (size_t)(Bw * T * C) * sizeof(float));
        be->linear_backward(cx, dao, fine_model_view(m, grad, "%s.attn.proj.weight", bp),
                             fine_model_view(m, grad, "%s.attn.proj.bias", bp), dpo, k->ao,
                             fine_model_view(m, (float *)w, "%s.attn.proj.weight", bp), Bw * T, C, C);
        be->zero(cx, dqkv, (size_t)(Bw * T * 3 * C) * sizeof(float));
        float *dbias = tmp; /* (h, N, N) */
        be->zero(cx, dbias, (size_t)(h * N * N) * sizeof(float));
        be->attention_backward(cx, &as, dqkv, dbias, dao, k->qkv, k->att, n->gatt);
        be->relpos_bias_backward(cx, fine_model_view(m, grad, "%s.attn.relative_position_bias_table", bp), dbias,
                                  n->relpos[s->ws], (int)h, (int)N);
        be->zero(cx, dseq, (size_t)(Bw * T * C) * sizeof(float));
        be->linear_backward(cx, dseq, fine_model_view(m, grad, "%s.attn.qkv.weight", bp),
                             fine_model_view(m, grad, "%s.attn.qkv.bias", bp), dqkv, k->seq,
                             fine_model_view(m, (float *)w, "%s.attn.qkv.weight", bp), Bw * T, C, 3 * C);
        /* memory tokens' gradient: tokens 0..G-1 of every sequence */
        float *dgt = n->gw2; /* (Bw, G, C) */
        be->copy_rows(cx, dgt, G * C, dseq, T * C, Bw, G * C);
        if (dg_in)
            be->accumulate(cx, dgt, dg_in, Bw * G * C);
        unpack_windows(be, dwin, dseq, Bw, G, N, C);
        float *dln1 = tmp;
        be->zero(cx, dln1, (size_t)(B * L * C) * sizeof(float));
        be->window_partition_acc(cx, dln1, dwin, B, s->res[0], s->res[1], s->res[2], C, s->ws, shift);
        be->layernorm_backward(cx, dx, fine_model_view(m, grad, "%s.norm1.weight", bp),
                                fine_model_view(m, grad, "%s.norm1.bias", bp), dln1, xin,
                                fine_model_view(m, (float *)w, "%s.norm1.weight", bp), k->ln1_mean, k->ln1_rstd,
                                B * L, C);
        /* the memory tokens g of this block came from the previous block's gt attention, or
         * from the layer's global token */
        if (j > 0) {
            be->copy(cx, dg_keep, dgt, (size_t)(Bw * G * C) * sizeof(float));
            dgnext = dg_keep;
        } else {
            float *dtok = fine_model_view(m, grad, "%s.global_token", lp);
            be->sum_rows_acc(cx, dtok, dgt, Bw, G * C);
        }
        /* the next (earlier) block's output gradient is dx: hand it over as dout */
        if (j > 0) {
            be->copy(cx, dout, dx, (size_t)(B * L * C) * sizeof(float));
            be->zero(cx, dx, (size_t)(B * L * C) * sizeof(float));
        }
    }
}

/* Backward of gelu_ln (cf = cf(LN(cl(GELU(conv))))): dconv = dL/dconv from dcf = dL/dcf, with
 * the LayerNorm's parameter gradients accumulated. t1 and t2 are scratch of the volume's size;
 * dconv may be dcf (read first). */
static void gelu_ln_backward(const fine_backend *be, const float *w, float *dconv, float *t1, float *t2, const float *dcf, const float *t, const float *mean,
                             const float *rstd, const float *conv, const fine_model *m, float *grad, const char *norm,
                             int64_t B, int64_t C, int64_t V)
{
    void *cx = be->ctx;
    size_t bytes = (size_t)(B * C * V) * sizeof(float);
    be->to_channels_last(cx, t2, dcf, B, C, V);
    be->zero(cx, t1, bytes);
    be->layernorm_backward(cx, t1, fine_model_view(m, grad, "%s.weight", norm), fine_model_view(m, grad, "%s.bias", norm),
                            t2, t, fine_model_view(m, (float *)w, "%s.weight", norm), mean, rstd, B * V, C);
    be->zero(cx, t2, bytes);
    be->to_channels_last_backward(cx, t2, t1, B, C, V);
    be->zero(cx, dconv, bytes);
    be->gelu_backward(cx, dconv, t2, conv, B * C * V);
}

void fine_net_backward(fine_net *n, const fine_model *m, float *grad, const float *dlog0, const float *dlog1,
                       float *dx_in)
{
    if (n->eval) { /* a bug in the caller: the activations are gone */
        fprintf(stderr, "fine_net_backward: the net was planned for evaluation only\n");
        abort();
    }
    const fine_config *c = &m->cfg;
    int64_t B = n->B, E = c->embed_dim, H = E / 2;
    const fine_backend *be = n->be;
    void *cx = be->ctx;
    const float *w = n->be->is_device ? n->w : m->w;
    /* Decoder stages in reverse order of the forward: k = 0 (ran last) up to the deepest.
     * da: gradient of the stage's output (consumed), db: gradient of its input. The gradient
     * of each skip connection is kept in the dead activation up[k] until the encoder needs it. */
    float *da = n->ga, *db = n->gb;
    float *dprev = NULL; /* gradient of the output of the stage feeding this one's Upsample */
    for (int k = 0; k <= FINE_STAGES - 2; k++) {
        const fine_stage_dims *s = &m->dec[k];
        int64_t L = tokens(s), C = s->C;
        layer_acts *la = &n->dec[k];
        const float *out = la->blk[la->depth - 1].out;
        be->zero(cx, da, (size_t)(B * L * C) * sizeof(float));
        if (k < 2) {
            const float *dl = k == 0 ? dlog0 : dlog1;
            if (dl)
                be->convT3d_backward(cx, &n->head_s[k], da, fine_model_view(m, grad, "final.%d.up.weight", k),
                                      fine_model_view(m, grad, "final.%d.up.bias", k), dl, out,
                                      fine_model_view(m, (float *)w, "final.%d.up.weight", k), n->conv_scratch);
        }
        if (dprev)
            be->accumulate(cx, da, dprev, B * L * C);
        be->zero(cx, db, (size_t)(B * L * C) * sizeof(float));
        layer_backward(n, m, la, grad, da, db);
        /* db = d(dec_in[k]) = d(up[k]) = d(skip[k]); keep d(skip[k]) in up[k] (dead now) */
        be->copy(cx, n->up[k], db, (size_t)(B * L * C) * sizeof(float));
        /* up = convT(LN(in)); in is the deeper stage's output (or skip3) */
        int64_t Lin = L / 8;
        float *duln = n->gc;
        be->zero(cx, duln, (size_t)(B * Lin * 2 * C) * sizeof(float));
        be->convT3d_backward(cx, &n->up_s[k], duln, fine_model_view(m, grad, "encoder.layers.%d.Upsample.up.weight", k),
                              fine_model_view(m, grad, "encoder.layers.%d.Upsample.up.bias", k), db, n->uln[k],
                              fine_model_view(m, (float *)w, "encoder.layers.%d.Upsample.up.weight", k),
                              n->conv_scratch);
        const float *in = k == FINE_STAGES - 2 ? n->skip[FINE_STAGES - 1]
                                               : n->dec[k + 1].blk[n->dec[k + 1].depth - 1].out;
        float *din = n->gd;
        be->zero(cx, din, (size_t)(B * Lin * 2 * C) * sizeof(float));
        be->layernorm_backward(cx, din, fine_model_view(m, grad, "encoder.layers.%d.Upsample.norm.weight", k),
                                fine_model_view(m, grad, "encoder.layers.%d.Upsample.norm.bias", k), duln, in,
                                fine_model_view(m, (float *)w, "encoder.layers.%d.Upsample.norm.weight", k),
                                n->uln_mean[k], n->uln_rstd[k], B * Lin, 2 * C);
        dprev = din;
        if (k + 1 <= FINE_STAGES - 2) {
            /* the deeper decoder stage's output gradient: carry in gb-free buffer */
            be->copy(cx, n->ge, din, (size_t)(B * Lin * 2 * C) * sizeof(float));
            dprev = n->ge;
        }
    }
    /* dprev is now d(skip[3]) (the decoder's input) */
    float *dcur = n->ga; /* gradient of the current encoder stage output */
    {
        const fine_stage_dims *s = &m->enc[FINE_STAGES - 1];
        int64_t L = tokens(s), C = s->C;
        be->copy(cx, n->gc, dprev, (size_t)(B * L * C) * sizeof(float));
        be->zero(cx, dcur, (size_t)(B * L * C) * sizeof(float));
        be->layernorm_backward(cx, dcur, fine_model_view(m, grad, "model_down.norm%d.weight", FINE_STAGES - 1),
                                fine_model_view(m, grad, "model_down.norm%d.bias", FINE_STAGES - 1), n->gc,
                                n->enc[FINE_STAGES - 1].blk[n->enc[FINE_STAGES - 1].depth - 1].out,
                                fine_model_view(m, (float *)w, "model_down.norm%d.weight", FINE_STAGES - 1),
                                n->skip_mean[FINE_STAGES - 1], n->skip_rstd[FINE_STAGES - 1], B * L, C);
    }
    for (int i = FINE_STAGES - 1; i >= 0; i--) {
        const fine_stage_dims *s = &m->enc[i];
        int64_t L = tokens(s), C = s->C;
        layer_acts *la = &n->enc[i];
        be->zero(cx, n->gb, (size_t)(B * L * C) * sizeof(float));
        layer_backward(n, m, la, grad, dcur, n->gb);
        /* n->gb = d(layer input) = d(previous stage's patch merging output tokens) */
        if (i == 0)
            break;
        int j = i - 1;
        const fine_stage_dims *sp = &m->enc[j];
        int64_t Lp = tokens(sp), Cp = sp->C;
        /* down_tok = cl(conv(cf(LN(GELU(out_j))))) */
        be->to_channels_first(cx, n->gc, n->gb, B, 2 * Cp, Lp / 8); /* d(conv out) = transpose */
        float *ddcf = n->gd;
        be->zero(cx, ddcf, (size_t)(B * Lp * Cp) * sizeof(float));
        be->conv3d_backward(cx, &n->down[j].s, ddcf,
                             fine_model_view(m, grad, "model_down.layers.%d.downsample.reduction.weight", j),
                             fine_model_view(m, grad, "model_down.layers.%d.downsample.reduction.bias", j), n->gc,
                             n->dcf[j], fine_model_view(m, (float *)w, "model_down.layers.%d.downsample.reduction.weight", j),
                             n->conv_scratch);
        float *ddln = n->gc;
        be->to_channels_last(cx, ddln, ddcf, B, Cp, Lp);
        float *ddg = n->gd;
        be->zero(cx, ddg, (size_t)(B * Lp * Cp) * sizeof(float));
        be->layernorm_backward(cx, ddg, fine_model_view(m, grad, "model_down.layers.%d.downsample.norm.weight", j),
                                fine_model_view(m, grad, "model_down.layers.%d.downsample.norm.bias", j), ddln,
                                n->dg[j], fine_model_view(m, (float *)w, "model_down.layers.%d.downsample.norm.weight", j),
                                n->dln_mean[j], n->dln_rstd[j], B * Lp, Cp);
        const float *outj = n->enc[j].blk[n->enc[j].depth - 1].out;
        be->zero(cx, dcur, (size_t)(B * Lp * Cp) * sizeof(float));
        be->gelu_backward(cx, dcur, ddg, outj, B * Lp * Cp);
        /* + skip path: d(skip_j) kept in dec up[j] (j <= 2) */
        be->layernorm_backward(cx, dcur, fine_model_view(m, grad, "model_down.norm%d.weight", j),
                                fine_model_view(m, grad, "model_down.norm%d.bias", j), n->up[j], outj,
                                fine_model_view(m, (float *)w, "model_down.norm%d.weight", j), n->skip_mean[j],
                                n->skip_rstd[j], B * Lp, Cp);
    }
    /* n->gb = d(tok0). Patch embedding backward. */
    int64_t r1[3], r3[3];
    fine_conv3d_out_size(&n->c1.s, &r1[0], &r1[1], &r1[2]);
    fine_conv3d_out_size(&n->c3.s, &r3[0], &r3[1], &r3[2]);
    int64_t v1 = r1[0] * r1[1] * r1[2], v3 = r3[0] * r3[1] * r3[2];
    const char *pe = "model_down.patch_embed";
    /* tok0 = LN(cl(c4)) */
    float *dt4 = n->gc;
    be->zero(cx, dt4, (size_t)(B * E * v3) * sizeof(float));
    be->layernorm_backward(cx, dt4, fine_model_view(m, grad, "%s.norm.weight", pe), fine_model_view(m, grad, "%s.norm.bias", pe),
                            n->gb, n->t4, fine_model_view(m, (float *)w, "%s.norm.weight", pe), n->tok0_mean,
                            n->tok0_rstd, B * v3, E);
    float *dc4 = n->gd;
    be->to_channels_first(cx, dc4, dt4, B, E, v3);
    /* each earlier stage: conv backward into d(its input), then through its LN and GELU */
    be->zero(cx, n->ga, (size_t)(B * E * v3) * sizeof(float));
    be->conv3d_backward(cx, &n->c4.s, n->ga, fine_model_view(m, grad, "%s.proj2.conv2.weight", pe),
                         fine_model_view(m, grad, "%s.proj2.conv2.bias", pe), dc4, n->n3cf,
                         fine_model_view(m, (float *)w, "%s.proj2.conv2.weight", pe), n->conv_scratch);
    gelu_ln_backward(be, w, n->ga, n->gb, n->gc, n->ga, n->t3, n->n3_mean, n->n3_rstd, n->c3.out, m, grad,
                     "model_down.patch_embed.proj2.norm1", B, E, v3);
    be->zero(cx, n->gb, (size_t)(B * H * v1) * sizeof(float));
    be->conv3d_backward(cx, &n->c3.s, n->gb, fine_model_view(m, grad, "%s.proj2.conv1.weight", pe),
                         fine_model_view(m, grad, "%s.proj2.conv1.bias", pe), n->ga, n->n2cf,
                         fine_model_view(m, (float *)w, "%s.proj2.conv1.weight", pe), n->conv_scratch);
    gelu_ln_backward(be, w, n->gb, n->ga, n->gc, n->gb, n->t2, n->n2_mean, n->n2_rstd, n->c2.out, m, grad,
                     "model_down.patch_embed.proj1.norm2", B, H, v1);
    be->zero(cx, n->ga, (size_t)(B * H * v1) * sizeof(float));
    be->conv3d_backward(cx, &n->c2.s, n->ga, fine_model_view(m, grad, "%s.proj1.conv2.weight", pe),
                         fine_model_view(m, grad, "%s.proj1.conv2.bias", pe), n->gb, n->n1cf,
                         fine_model_view(m, (float *)w, "%s.proj1.conv2.weight", pe), n->conv_scratch);
    gelu_ln_backward(be, w, n->ga, n->gb, n->gc, n->ga, n->t1, n->n1_mean, n->n1_rstd, n->c1.out, m, grad,
                     "model_down.patch_embed.proj1.norm1", B, H, v1);
    float *dc1 = n->ga;
    be->conv3d_backward(cx, &n->c1.s, dx_in, fine_model_view(m, grad, "%s.proj1.conv1.weight", pe),
                         fine_model_view(m, grad, "%s.proj1.conv1.bias", pe), dc1, n->x,
                         fine_model_view(m, (float *)w, "%s.proj1.conv1.weight", pe), n->conv_scratch);
}

/* ------------------------------------------------------------------ FLOPs */

double fine_net_forward_flops(const fine_model *m, int B)
{
    const fine_config *c = &m->cfg;
    double f = 0, E = c->embed_dim, H = E / 2;
    int se1[3], se2[3], k1[3];
    fine_embed_strides(c, se1, se2);
    fine_head_kernel(c, 1, k1);
    double v1 = (double)(c->crop[0] / se1[0]) * (c->crop[1] / se1[1]) * (c->crop[2] / se1[2]);
    double v3 = (double)(c->crop[0] / c->patch[0]) * (c->crop[1] / c->patch[1]) * (c->crop[2] / c->patch[2]);
    f += 2 * v1 * H * c->in_chans * 27 + 2 * v1 * H * H * 27 + 2 * v3 * E * H * 27 + 2 * v3 * E * E * 27;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < (pass ? FINE_STAGES - 1 : FINE_STAGES); i++) {
            const fine_stage_dims *s = pass ? &m->dec[i] : &m->enc[i];
            int depth = pass ? c->dec_depths[FINE_STAGES - 2 - i] : c->depths[i];
            double L = (double)tokens(s), C = (double)s->C, N = (double)s->ws * s->ws * s->ws;
            double G = s->G, T = N + G, nW = (double)s->nW, hid = (double)hidden_of(m, s->C), U = NVT + nW * G;
            double nV = m->nV;
            for (int j = 0; j < depth; j++) {
                f += 2 * nW * T * C * 4 * C;          /* qkv + proj */
                f += 2 * nW * T * T * C * 2;          /* scores + values */
                f += 2 * L * C * hid * 2;             /* mlp */
                if (fine_block_has_gt(depth, j))
                    f += 2 * nW * G * C * hid * 2 + 2 * U * C * 4 * C + 2 * U * U * C * 2;
                if (fine_block_has_vt(depth, j))
                    f += 2 * nV * C * 4 * C + 2 * nV * nV * C * 2;
            }
            if (!pass && i < FINE_STAGES - 1)
                f += 2 * (L / 8) * (2 * C) * C * 8;  /* patch merging */
            if (pass)
                f += 2 * (L / 8) * (2 * C) * C * 8;  /* patch expanding */
        }
    }
    double K = c->num_classes;
    f += 2 * (double)c->crop[0] * c->crop[1] * c->crop[2] * K * E;           /* final.0 */
    const fine_stage_dims *d1 = &m->dec[1];                                   /* final.1 */
    f += 2 * (double)(d1->res[0] * k1[0]) * (d1->res[1] * k1[1]) * (d1->res[2] * k1[2]) * K * 2 * E;
    return f * B;
}
