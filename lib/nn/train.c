/* train.c: loss, backward and the optimizer step for one batch (fine-reference B 5.2, 5.3). */
#include "nn/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/ops.h"
#include "nn/shards.h"

int fine_optimizer_parse(const char *name)
{
    if (strcmp(name, "sgd") == 0)
        return FINE_OPT_SGD;
    if (strcmp(name, "adamw") == 0)
        return FINE_OPT_ADAMW;
    return -1;
}

const char *fine_optimizer_name(int opt)
{
    return opt == FINE_OPT_ADAMW ? "adamw" : "sgd";
}

void fine_train_opts_init(fine_train_opts *o)
{
    o->optimizer = FINE_OPT_SGD;
    o->lr = 0.01;
    o->momentum = 0.99;
    o->weight_decay = 3e-5;
    o->clip = 12.0;
    o->epochs = 1000;
    o->iters_per_epoch = 250;
    o->seed = 12345;
}

double fine_poly_lr(double lr0, int epoch, int epochs)
{
    double f = 1.0 - (double)epoch / (double)epochs;
    return lr0 * pow(f > 0 ? f : 0, 0.9);
}

int fine_trainer_init_on(fine_trainer *t, const fine_backend *be, const fine_model *m, int B, fine_err *e)
{
    return fine_trainer_init_ex(t, be, m, B, fine_recompute_default(be), e);
}

static int init_level(fine_trainer *t, const fine_backend *be, const fine_model *m, int B, int recompute,
                      fine_err *e);

int fine_trainer_init_ex(fine_trainer *t, const fine_backend *be, const fine_model *m, int B, int recompute,
                         fine_err *e)
{
    if (recompute >= 0)
        return init_level(t, be, m, B, recompute, e);
    /* auto: the backend's default level, or more recomputation while the memory does not fit */
    for (int level = fine_recompute_default(be);; level++) {
        if (init_level(t, be, m, B, level, e) == 0 || level >= FINE_RECOMPUTE_ALL)
            return t->net ? 0 : -1;
    }
}

static int init_level(fine_trainer *t, const fine_backend *be, const fine_model *m, int B, int recompute,
                      fine_err *e)
{
    memset(t, 0, sizeof *t);
    t->B = B;
    t->be = be;
    t->val_ema = t->val_best = NAN;
    t->shards = fine_shard_count(be, B);
    int Bs = B / t->shards;
    for (int s = 0; s < t->shards; s++) {
        t->part[s] = fine_net_plan_train_on(be, m, Bs, recompute, e);
        if (!t->part[s]) {
            fine_trainer_free(t);
            return -1;
        }
        if (t->shards > 1)
            fine_net_set_shard(t->part[s], s * Bs, B);
    }
    t->net = t->part[0];
    int64_t n0 = fine_net_logits_numel(t->net, 0) * t->shards, n1 = fine_net_logits_numel(t->net, 1) * t->shards;
    int64_t L0 = n0 / m->cfg.num_classes;
    int lost = 0;
    for (int s = 1; s < t->shards; s++)
        lost |= !(t->part_grad[s] = be->alloc(be->ctx, m->nfloats * sizeof(float)));
    if (t->shards > 1) {
        t->logits0 = be->alloc(be->ctx, (size_t)n0 * sizeof(float));
        t->logits1 = be->alloc(be->ctx, (size_t)n1 * sizeof(float));
        lost |= !t->logits0 || !t->logits1;
    }
    t->grad = t->part_grad[0] = be->alloc(be->ctx, m->nfloats * sizeof(float));
    t->momentum = be->alloc(be->ctx, m->nfloats * sizeof(float));
    t->momentum_host = be->is_device ? calloc(m->nfloats, sizeof(float)) : t->momentum;
    t->probs = be->alloc(be->ctx, (size_t)n0 * sizeof(float));
    t->dlog0 = be->alloc(be->ctx, (size_t)n0 * sizeof(float));
    t->dlog1 = be->alloc(be->ctx, (size_t)n1 * sizeof(float));
    t->target1 = be->alloc(be->ctx, (size_t)(n1 / m->cfg.num_classes));
    t->labels = be->is_device ? be->alloc(be->ctx, (size_t)L0) : NULL;
    if (lost || !t->grad || !t->momentum || !t->momentum_host || !t->probs || !t->dlog0 || !t->dlog1 ||
        !t->target1 || (be->is_device && !t->labels)) {
        fine_trainer_free(t);
        return fine_err_set(e, "out of memory on %s for the optimizer and loss buffers", be->name);
    }
    return 0;
}

int fine_trainer_init(fine_trainer *t, const fine_model *m, int B, fine_err *e)
{
    return fine_trainer_init_on(t, fine_backend_cpu(), m, B, e);
}

int fine_trainer_set_optimizer(fine_trainer *t, const fine_model *m, int opt, fine_err *e)
{
    const fine_backend *be = t->be;
    if (opt != FINE_OPT_ADAMW || t->moment2)
        return 0;
    size_t bytes = m->nfloats * sizeof(float);
    t->moment2 = be->alloc(be->ctx, bytes);
    t->moment2_host = be->is_device ? calloc(m->nfloats, sizeof(float)) : t->moment2;
    if (!t->moment2 || !t->moment2_host)
        return fine_err_set(e, "out of memory on %s for AdamW's second moment", be->name);
    be->zero(be->ctx, t->moment2, bytes);
    if (be->is_device)
        memset(t->moment2_host, 0, bytes);
    return 0;
}

void fine_trainer_set_loss_scaling(fine_trainer *t, int on)
{
    t->loss_scale = on ? FINE_SCALE_INIT : 0.0;
    t->scale_good = 0;
}

void fine_trainer_free(fine_trainer *t)
{
    const fine_backend *be = t->be;
    if (!be) {
        memset(t, 0, sizeof *t);
        return;
    }
    for (int s = 0; s < t->shards; s++) {
        fine_net_free(t->part[s]);
        if (s > 0 && t->part_grad[s])
            be->free(be->ctx, t->part_grad[s]);
    }
    if (t->momentum_host != t->momentum)
        free(t->momentum_host);
    if (t->moment2_host != t->moment2)
        free(t->moment2_host);
    void *bufs[] = {t->grad,   t->momentum, t->moment2, t->probs,  t->dlog0,
                    t->dlog1,  t->target1,  t->labels,  t->logits0, t->logits1};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i])
            be->free(be->ctx, bufs[i]);
    memset(t, 0, sizeof *t);
}

int fine_trainer_push(fine_trainer *t, const fine_model *m, fine_err *e)
{
    if (!t->be->is_device)
        return 0;
    t->be->upload(t->be->ctx, t->momentum, t->momentum_host, m->nfloats * sizeof(float));
    if (t->moment2)
        t->be->upload(t->be->ctx, t->moment2, t->moment2_host, m->nfloats * sizeof(float));
    return fine_net_load_params(t->net, m, e);
}

int fine_trainer_pull(fine_trainer *t, fine_model *m, fine_err *e)
{
    if (!t->be->is_device)
        return 0;
    t->be->download(t->be->ctx, t->momentum_host, t->momentum, m->nfloats * sizeof(float));
    if (t->moment2)
        t->be->download(t->be->ctx, t->moment2_host, t->moment2, m->nfloats * sizeof(float));
    return fine_net_store_params(t->net, m, e);
}

int fine_trainer_check(fine_trainer *t, fine_err *e)
{
    return t->be->sync(t->be->ctx, e);
}

/* labels (B, L) in the backend's memory */
static const uint8_t *labels_on(fine_trainer *t, const uint8_t *labels, int64_t n)
{
    if (!t->be->is_device)
        return labels;
    t->be->upload(t->be->ctx, t->labels, labels, (size_t)n);
    return t->labels;
}

void fine_dice_count(fine_dice_counts *s, const float *logits, const uint8_t *target, int64_t nb,
                     int64_t K, int64_t L)
{
    /* whole counts: exact in any order, so the voxels are split between threads */
    int64_t tp[256] = {0}, fp[256] = {0}, fn[256] = {0};
    for (int64_t b = 0; b < nb; b++) {
#pragma omp parallel for schedule(static) reduction(+ : tp[:256], fp[:256], fn[:256]) if (L > 65536)
        for (int64_t i = 0; i < L; i++) {
            const float *l = logits + b * K * L + i;
            int best = 0;
            for (int64_t k = 1; k < K; k++)
                if (l[k * L] > l[best * L])
                    best = (int)k;
            int y = target[b * L + i];
            if (best == y) {
                tp[y] += 1;
            } else {
                fp[best] += 1;
                fn[y] += 1;
            }
        }
    }
    for (int k = 0; k < 256; k++) {
        s->tp[k] += (double)tp[k];
        s->fp[k] += (double)fp[k];
        s->fn[k] += (double)fn[k];
    }
}

double fine_dice_global(const fine_dice_counts *s, int K, double *per_class)
{
    double sum = 0;
    int n = 0;
    for (int k = 1; k < K; k++) {
        double den = 2 * s->tp[k] + s->fp[k] + s->fn[k];
        double d = den > 0 ? 2 * s->tp[k] / den : NAN;
        if (per_class)
            per_class[k - 1] = d;
        if (d == d) {
            sum += d;
            n++;
        }
    }
    return n ? sum / n : NAN;
}

double fine_trainer_dice(fine_trainer *t, int K, int reset)
{
    double d = fine_dice_global(&t->train, K, NULL);
    if (reset)
        memset(&t->train, 0, sizeof t->train);
    return d;
}

/* ------------------------------------------------------------------ shards */

/* One shard's forward (its logits copied into the batch's) or backward (into its gradient). */
typedef struct shard_job {
    fine_trainer *t;
    fine_model *m;
    int s, backward, train;
    const float *x, *dlog0, *dlog1; /* the whole batch's */
    const int64_t *pos;
    uint64_t seed;
} shard_job;

static void shard_run(void *arg)
{
    const shard_job *j = arg;
    fine_trainer *t = j->t;
    fine_net *n = t->part[j->s];
    const fine_config *c = &j->m->cfg;
    int64_t Bs = t->B / t->shards, xs = Bs * c->in_chans * c->crop[0] * c->crop[1] * c->crop[2];
    int64_t n0 = fine_net_logits_numel(n, 0), n1 = fine_net_logits_numel(n, 1);
    if (j->backward) {
        memset(t->part_grad[j->s], 0, j->m->nfloats * sizeof(float));
        fine_net_backward(n, j->m, t->part_grad[j->s], j->dlog0 + j->s * n0, j->dlog1 + j->s * n1, NULL);
    } else {
        fine_net_forward(n, j->m, j->x + j->s * xs, j->pos + j->s * Bs * 3, j->train, j->seed);
        memcpy(t->logits0 + j->s * n0, fine_net_logits(n, 0), (size_t)n0 * sizeof(float));
        memcpy(t->logits1 + j->s * n1, fine_net_logits(n, 1), (size_t)n1 * sizeof(float));
    }
}

/* Every shard of job on its own thread (shards.h). */
static void run_shards(const shard_job *job)
{
    shard_job jobs[FINE_MAX_SHARDS];
    for (int s = 0; s < job->t->shards; s++) {
        jobs[s] = *job;
        jobs[s].s = s;
    }
    fine_run_shards(job->t->shards, shard_run, jobs, sizeof jobs[0]);
}

/* The forward of the whole batch: one net, or every shard on its own thread (train.h), their
 * logits gathered into logits0 and logits1. */
static void forward(fine_trainer *t, fine_model *m, const float *x, const int64_t *pos, int train, uint64_t seed)
{
    if (t->shards == 1) {
        fine_net_forward(t->net, m, x, pos, train, seed);
        return;
    }
    fine_vt_visit(m, pos, t->B);
    shard_job j = {.t = t, .m = m, .train = train, .x = x, .pos = pos, .seed = seed};
    run_shards(&j);
}

static const float *logits(fine_trainer *t, int head)
{
    if (t->shards > 1)
        return head ? t->logits1 : t->logits0;
    return fine_net_logits(t->net, head);
}

/* grad = dL/dparams of the last forward: each shard into its own buffer, then the sum in shard
 * order. */
static void backward(fine_trainer *t, const fine_model *m, const float *dlog0, const float *dlog1)
{
    const fine_backend *be = t->be;
    if (t->shards == 1) {
        be->zero(be->ctx, t->grad, m->nfloats * sizeof(float));
        fine_net_backward(t->net, m, t->grad, dlog0, dlog1, NULL);
        return;
    }
    shard_job j = {.t = t, .m = (fine_model *)m, .backward = 1, .dlog0 = dlog0, .dlog1 = dlog1};
    run_shards(&j);
    float *g = t->grad;
    int64_t n = (int64_t)m->nfloats;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float sum = g[i];
        for (int s = 1; s < t->shards; s++)
            sum += t->part_grad[s][i];
        g[i] = sum;
    }
}

void fine_trainer_eval(fine_trainer *t, fine_model *m, const float *x, const uint8_t *labels,
                       const int64_t *pos, int nb, fine_dice_counts *s)
{
    const fine_config *c = &m->cfg;
    int64_t L0 = (int64_t)c->crop[0] * c->crop[1] * c->crop[2];
    forward(t, m, x, pos, 0, 0);
    const uint8_t *y = labels_on(t, labels, (int64_t)nb * L0);
    t->be->dice_count(t->be->ctx, s, logits(t, 0), y, nb, c->num_classes, L0);
}

int fine_trainer_val_update(fine_trainer *t, double dice)
{
    if (dice != dice)
        return 0;
    t->val_ema = t->val_ema == t->val_ema ? 0.9 * t->val_ema + 0.1 * dice : dice;
    if (t->val_best == t->val_best && !(t->val_ema > t->val_best))
        return 0;
    t->val_best = t->val_ema;
    return 1;
}

double fine_train_step(fine_trainer *t, fine_model *m, const fine_train_opts *o, const float *x,
                       const uint8_t *labels, const int64_t *pos, double lr, double *grad_norm)
{
    if (o->optimizer == FINE_OPT_ADAMW && !t->moment2) /* fine_trainer_set_optimizer was not called */
        return NAN;
    const fine_config *c = &m->cfg;
    int64_t B = t->B, K = c->num_classes;
    int64_t L0 = (int64_t)c->crop[0] * c->crop[1] * c->crop[2];
    int64_t L1 = fine_net_logits_numel(t->net, 1) * t->shards / (B * K);
    const fine_backend *be = t->be;
    void *cx = be->ctx;
    forward(t, m, x, pos, 1, o->seed ^ (uint64_t)t->iteration);
    const uint8_t *y = labels_on(t, labels, B * L0);
    /* head 1's target: nearest-neighbour downsampling to head 1's grid, by (1, 2, 2) for
     * patch 2,4,4 (B 5.2) */
    int f[3], k1[3];
    fine_head_kernel(c, 1, k1);
    for (int d = 0; d < 3; d++)
        f[d] = (int)(c->crop[d] / (m->dec[1].res[d] * k1[d]));
    be->downsample_labels(cx, t->target1, y, B, c->crop[0], c->crop[1], c->crop[2], f);
    const float *l0 = logits(t, 0), *l1 = logits(t, 1);
    be->zero(cx, t->dlog0, (size_t)(B * K * L0) * sizeof(float));
    be->zero(cx, t->dlog1, (size_t)(B * K * L1) * sizeof(float));
    float w0 = (float)c->ds_weights[0], w1 = (float)c->ds_weights[1];
    double S = t->loss_scale > 0 ? t->loss_scale : 1.0; /* the gradients' scale (fp16) */
    float g0 = (float)(w0 * S), g1 = (float)(w1 * S);
    double loss = 0;
    loss += w0 * be->softmax_ce(cx, t->probs, t->dlog0, l0, y, B, K, L0, g0);
    loss += w0 * be->soft_dice(cx, t->dlog0, t->probs, y, B, K, L0, g0);
    loss += w1 * be->softmax_ce(cx, t->probs, t->dlog1, l1, t->target1, B, K, L1, g1);
    loss += w1 * be->soft_dice(cx, t->dlog1, t->probs, t->target1, B, K, L1, g1);
    be->dice_count(cx, &t->train, l0, y, B, K, L0);
    backward(t, m, t->dlog0, t->dlog1);
    /* global L2 clipping, then SGD with Nesterov momentum and L2 weight decay as PyTorch:
     * d = g + wd p; buf = mu buf + d; p -= lr (d + mu buf); or AdamW (backend.h) */
    double norm = sqrt(be->sumsq(cx, t->grad, m->nfloats));
    if (t->loss_scale > 0) {
        if (!isfinite(norm)) { /* overflow somewhere in the scaled backward: skip this step */
            t->loss_scale = t->loss_scale > 1.0 ? t->loss_scale / 2 : 1.0;
            t->scale_good = 0;
            t->skipped++;
            t->iteration++;
            *grad_norm = NAN;
            return loss;
        }
        if (++t->scale_good >= FINE_SCALE_GROWTH) {
            t->loss_scale *= 2;
            t->scale_good = 0;
        }
        norm /= S;
    }
    *grad_norm = norm;
    /* clipping, and the loss scale undone, in the optimizer's gradient factor */
    float scale = (float)((norm > o->clip ? o->clip / (norm + 1e-6) : 1.0) / S);
    float *p = fine_net_params(t->net, m);
    if (o->optimizer == FINE_OPT_ADAMW) {
        double n = (double)(t->iteration + 1); /* PyTorch's step count, from 1 */
        double step = lr / (1.0 - pow(FINE_ADAMW_BETA1, n));
        double rbc2 = 1.0 / sqrt(1.0 - pow(FINE_ADAMW_BETA2, n));
        be->adamw_step(cx, p, t->momentum, t->moment2, t->grad, m->nfloats, scale, (float)FINE_ADAMW_BETA1,
                       (float)FINE_ADAMW_BETA2, (float)FINE_ADAMW_EPS, (float)lr, (float)o->weight_decay,
                       (float)step, (float)rbc2);
    } else {
        be->sgd_step(cx, p, t->momentum, t->grad, m->nfloats, scale, (float)o->momentum, (float)o->weight_decay,
                     (float)lr);
    }
    t->iteration++;
    return loss;
}

int fine_trainer_write_state(fine_writer *w, const fine_trainer *t, const fine_model *m,
                             const fine_train_opts *o, int epoch, fine_err *e)
{
    fine_map *r = fine_map_new("train_state");
    fine_map_i64(r, "iteration", t->iteration);
    fine_map_i64(r, "epoch", epoch);
    fine_map_i64(r, "batch", t->B);
    fine_map_str(r, "optimizer", fine_optimizer_name(o->optimizer));
    fine_map_f64(r, "lr", o->lr);
    fine_map_f64(r, "momentum_coef", o->momentum);
    fine_map_f64(r, "weight_decay", o->weight_decay);
    fine_map_f64(r, "clip", o->clip);
    fine_map_i64(r, "epochs", o->epochs);
    fine_map_i64(r, "iters_per_epoch", o->iters_per_epoch);
    fine_map_i64(r, "seed", (int64_t)o->seed);
    fine_map_f64(r, "val_ema", t->val_ema);
    fine_map_f64(r, "val_best", t->val_best);
    if (t->loss_scale > 0) {
        fine_map_f64(r, "loss_scale", t->loss_scale);
        fine_map_i64(r, "scale_good", t->scale_good);
    }
    fine_tensor mom = {.dtype = FINE_F32, .ndim = 1, .shape = {(int64_t)m->nfloats}, .data = t->momentum_host};
    fine_map_tensor(r, "momentum", &mom);
    fine_tensor m2 = {.dtype = FINE_F32, .ndim = 1, .shape = {(int64_t)m->nfloats}, .data = t->moment2_host};
    if (o->optimizer == FINE_OPT_ADAMW && t->moment2_host)
        fine_map_tensor(r, "second_moment", &m2);
    int rc = fine_writer_put(w, r, e);
    fine_map_free(r);
    return rc;
}

/* Copies the f32 tensor `key` of r (n values) into dst; what names it in the error. 0 or -1. */
static int read_buffer(const fine_record *r, const char *key, const char *what, float *dst, size_t n, fine_err *e)
{
    fine_tensor v;
    if (fine_record_tensor_view(r, key, &v, e) < 0)
        return -1;
    int ok = v.dtype == FINE_F32 && (size_t)fine_tensor_numel(&v) == n;
    if (ok)
        memcpy(dst, v.data, n * sizeof(float));
    fine_tensor_free(&v);
    return ok ? 0 : fine_err_set(e, "train_state: the %s buffer does not match the model", what);
}

int fine_trainer_read_state(const fine_record *r, fine_trainer *t, const fine_model *m,
                            fine_train_opts *o, int *epoch, fine_err *e)
{
    int64_t it, ep, epochs, ipe, seed;
    if (fine_record_i64(r, "iteration", &it, e) < 0 || fine_record_i64(r, "epoch", &ep, e) < 0 ||
        fine_record_f64(r, "lr", &o->lr, e) < 0 || fine_record_f64(r, "momentum_coef", &o->momentum, e) < 0 ||
        fine_record_f64(r, "weight_decay", &o->weight_decay, e) < 0 || fine_record_f64(r, "clip", &o->clip, e) < 0 ||
        fine_record_i64(r, "epochs", &epochs, e) < 0 || fine_record_i64(r, "iters_per_epoch", &ipe, e) < 0 ||
        fine_record_i64(r, "seed", &seed, e) < 0)
        return -1;
    o->optimizer = FINE_OPT_SGD;
    if (fine_record_get(r, "optimizer")) {
        char name[16];
        if (fine_record_str(r, "optimizer", name, sizeof name, e) < 0)
            return -1;
        o->optimizer = fine_optimizer_parse(name);
        if (o->optimizer < 0)
            return fine_err_set(e, "train_state: unknown optimizer '%s'", name);
    }
    if (fine_trainer_set_optimizer(t, m, o->optimizer, e) < 0)
        return -1;
    if (o->optimizer == FINE_OPT_ADAMW &&
        read_buffer(r, "second_moment", "second-moment", t->moment2_host, m->nfloats, e) < 0)
        return -1;
    if (read_buffer(r, "momentum", "momentum", t->momentum_host, m->nfloats, e) < 0)
        return -1;
    double ema = NAN, best = NAN;
    if (fine_record_get(r, "val_ema") && (fine_record_f64(r, "val_ema", &ema, e) < 0 ||
                                          fine_record_f64(r, "val_best", &best, e) < 0))
        return -1;
    t->val_ema = ema;
    t->val_best = best;
    /* a run that scaled its loss goes on with its scale where this one scales too */
    if (t->loss_scale > 0 && fine_record_get(r, "loss_scale")) {
        double ls;
        int64_t good;
        if (fine_record_f64(r, "loss_scale", &ls, e) < 0 || fine_record_i64(r, "scale_good", &good, e) < 0)
            return -1;
        if (!(ls >= 1.0 && ls <= 1e38) || good < 0)
            return fine_err_set(e, "train_state: loss_scale %g or scale_good %lld out of range", ls, (long long)good);
        t->loss_scale = ls;
        t->scale_good = good;
    }
    t->iteration = it;
    o->epochs = (int)epochs;
    o->iters_per_epoch = (int)ipe;
    o->seed = (uint64_t)seed;
    *epoch = (int)ep;
    return 0;
}
