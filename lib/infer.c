/* infer.c: patch probabilities from the network, with mirroring test-time augmentation
 * (fine-reference B 5.6). */
#include "infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/fine_net.h"
#include "nn/shards.h"

/* Source index of destination index i along an axis of length n, mirrored or not. */
static inline int64_t mirror_index(int64_t i, int64_t n, int flip)
{
    return flip ? n - 1 - i : i;
}

void fine_mirror(float *dst, const float *src, int64_t C, const int64_t dims[3], unsigned axes)
{
    int64_t D = dims[0], H = dims[1], W = dims[2];
    int fz = !!(axes & FINE_MIRROR_Z), fy = !!(axes & FINE_MIRROR_Y), fx = !!(axes & FINE_MIRROR_X);
    for (int64_t c = 0; c < C; c++)
        for (int64_t z = 0; z < D; z++)
            for (int64_t y = 0; y < H; y++) {
                const float *s = src + ((c * D + mirror_index(z, D, fz)) * H + mirror_index(y, H, fy)) * W;
                float *d = dst + ((c * D + z) * H + y) * W;
                if (fx)
                    for (int64_t x = 0; x < W; x++)
                        d[x] = s[W - 1 - x];
                else
                    memcpy(d, s, (size_t)W * sizeof(float));
            }
}

void fine_mirror_accumulate(float *acc, const float *src, int64_t C, const int64_t dims[3], unsigned axes,
                            float weight)
{
    int64_t D = dims[0], H = dims[1], W = dims[2];
    int fz = !!(axes & FINE_MIRROR_Z), fy = !!(axes & FINE_MIRROR_Y), fx = !!(axes & FINE_MIRROR_X);
    for (int64_t c = 0; c < C; c++)
        for (int64_t z = 0; z < D; z++)
            for (int64_t y = 0; y < H; y++) {
                const float *s = src + ((c * D + mirror_index(z, D, fz)) * H + mirror_index(y, H, fy)) * W;
                float *d = acc + ((c * D + z) * H + y) * W;
                if (fx)
                    for (int64_t x = 0; x < W; x++)
                        d[x] += weight * s[W - 1 - x];
                else
                    for (int64_t x = 0; x < W; x++)
                        d[x] += weight * s[x];
            }
}

struct fine_infer {
    fine_model *m;
    fine_net *net;           /* the net (shards: the first shard's) */
    int shards;              /* CPU data parallelism (shards.h): part[s] predicts B / shards patches */
    fine_net *part[FINE_MAX_SHARDS];
    float *part_sm[FINE_MAX_SHARDS]; /* TTA: each shard's softmax of one patch and pass */
    int B, tta;
    int64_t dims[3];
    int64_t C, K;
    int64_t vox_in, vox_out; /* floats per patch: C x crop, K x crop */
    float *x;                /* (B, C, crop) the patches as put */
    float *xm;               /* (B, C, crop) the mirrored patches of a TTA pass */
    float *prob;             /* (B, K, crop) results */
    int64_t *pos;            /* (B, 3) */
    const fine_backend *be;
    float *dprob;            /* device backends: the softmax on the device (B, K, crop) */
    float *lg;               /* device backends, TTA: one pass's softmax on the host */
};

fine_infer *fine_infer_new(fine_model *m, int batch, int tta, fine_err *e)
{
    return fine_infer_new_on(fine_backend_cpu(), m, batch, tta, e);
}

fine_infer *fine_infer_new_on(const fine_backend *be, fine_model *m, int batch, int tta, fine_err *e)
{
    fine_infer *p = calloc(1, sizeof *p);
    if (!p) {
        fine_err_set(e, "out of memory");
        return NULL;
    }
    const fine_config *c = &m->cfg;
    p->m = m;
    p->B = batch;
    p->tta = tta;
    for (int d = 0; d < 3; d++)
        p->dims[d] = c->crop[d];
    p->C = c->in_chans;
    p->K = c->num_classes;
    int64_t n = p->dims[0] * p->dims[1] * p->dims[2];
    p->vox_in = p->C * n;
    p->vox_out = p->K * n;
    p->be = be;
    p->shards = fine_shard_count(be, batch);
    for (int s = 0; s < p->shards; s++) {
        p->part[s] = fine_net_plan_eval_on(be, m, batch / p->shards, e);
        if (!p->part[s]) {
            fine_infer_free(p);
            return NULL;
        }
        if (p->shards > 1)
            fine_net_set_shard(p->part[s], s * (batch / p->shards), batch);
    }
    p->net = p->part[0];
    if (fine_net_load_params(p->net, m, e) < 0) {
        fine_infer_free(p);
        return NULL;
    }
    size_t in_bytes = (size_t)(p->vox_in * batch) * sizeof(float);
    size_t out_bytes = (size_t)(p->vox_out * batch) * sizeof(float);
    p->x = aligned_alloc(64, in_bytes);
    p->prob = be->host_alloc(be->ctx, out_bytes);
    p->pos = calloc((size_t)batch * 3, sizeof(int64_t));
    int lost = 0;
    if (tta) {
        p->xm = aligned_alloc(64, in_bytes);
        for (int s = 0; s < p->shards; s++)
            lost |= !(p->part_sm[s] = aligned_alloc(64, (size_t)p->vox_out * sizeof(float)));
    }
    if (be->is_device) {
        p->dprob = be->alloc(be->ctx, out_bytes);
        p->lg = tta ? be->host_alloc(be->ctx, out_bytes) : NULL;
    }
    if (lost || !p->x || !p->prob || !p->pos || (tta && !p->xm) ||
        (be->is_device && (!p->dprob || (tta && !p->lg)))) {
        fine_infer_free(p);
        fine_err_set(e, "out of memory (%.1f MB of patch buffers for batch %d)",
                     (double)(2 * in_bytes + out_bytes) / 1e6, batch);
        return NULL;
    }
    memset(p->x, 0, in_bytes);
    return p;
}

void fine_infer_free(fine_infer *p)
{
    if (!p)
        return;
    for (int s = 0; s < p->shards; s++) {
        fine_net_free(p->part[s]);
        free(p->part_sm[s]);
    }
    free(p->x);
    free(p->xm);
    if (p->prob)
        p->be->host_free(p->be->ctx, p->prob);
    if (p->lg)
        p->be->host_free(p->be->ctx, p->lg);
    if (p->dprob)
        p->be->free(p->be->ctx, p->dprob);
    free(p->pos);
    free(p);
}

float *fine_infer_input(fine_infer *p, int b)
{
    return p->x + (int64_t)b * p->vox_in;
}

int64_t *fine_infer_pos(fine_infer *p, int b)
{
    return p->pos + (int64_t)b * 3;
}

const float *fine_infer_prob(const fine_infer *p, int b)
{
    return p->prob + (int64_t)b * p->vox_out;
}

int64_t fine_infer_in_numel(const fine_infer *p)
{
    return p->vox_in;
}

int64_t fine_infer_prob_numel(const fine_infer *p)
{
    return p->vox_out;
}

/* Device backends: one pass (the forward of x, or of its mirroring by axes under TTA) with
 * the softmax on the device, brought to the host: into prob, or accumulated into it. */
static int device_pass(fine_infer *p, int n, unsigned axes, fine_err *e)
{
    const fine_backend *be = p->be;
    int64_t nvox = p->dims[0] * p->dims[1] * p->dims[2];
    fine_net_forward(p->net, p->m, p->tta ? p->xm : p->x, p->pos, 0, 0); /* the unmirrored pos (A4) */
    be->softmax_channels(be->ctx, p->dprob, fine_net_logits(p->net, 0), n, p->K, nvox);
    be->download(be->ctx, p->tta ? p->lg : p->prob, p->dprob, (size_t)(n * p->vox_out) * sizeof(float));
    if (be->sync(be->ctx, e) < 0)
        return -1;
    for (int b = 0; p->tta && b < n; b++)
        fine_mirror_accumulate(p->prob + b * p->vox_out, p->lg + b * p->vox_out, p->K, p->dims, axes, 0.125f);
    return 0;
}

/* One shard's part of a CPU pass (with one net: the whole batch): the forward of its patches
 * and their probabilities. */
typedef struct shard_job {
    fine_infer *p;
    int s, n;     /* shard, patches of the batch to keep */
    unsigned axes; /* TTA: the pass's mirroring */
} shard_job;

static void shard_run(void *arg)
{
    const shard_job *j = arg;
    fine_infer *p = j->p;
    int Bs = p->B / p->shards, b0 = j->s * Bs;
    if (b0 >= j->n) /* only padding in this shard: nothing to keep */
        return;
    int64_t nvox = p->dims[0] * p->dims[1] * p->dims[2];
    const float *x = (p->tta ? p->xm : p->x) + (int64_t)b0 * p->vox_in;
    fine_net_forward(p->part[j->s], p->m, x, p->pos + (int64_t)b0 * 3, 0, 0);
    const float *lg = fine_net_logits(p->part[j->s], 0);
    for (int b = b0; b < b0 + Bs && b < j->n; b++) {
        const float *l = lg + (int64_t)(b - b0) * p->vox_out;
        if (!p->tta) {
            fine_softmax_channels(p->prob + b * p->vox_out, l, p->K, nvox);
            continue;
        }
        fine_softmax_channels(p->part_sm[j->s], l, p->K, nvox);
        fine_mirror_accumulate(p->prob + b * p->vox_out, p->part_sm[j->s], p->K, p->dims, j->axes, 0.125f);
    }
}

/* One pass over the whole batch on the CPU: one net on this thread, or every shard on its own
 * thread with the visitation counter counted once for the batch, as one net counts it. */
static void cpu_pass(fine_infer *p, int n, unsigned axes)
{
    shard_job jobs[FINE_MAX_SHARDS];
    for (int s = 0; s < p->shards; s++)
        jobs[s] = (shard_job){p, s, n, axes};
    if (p->shards == 1) {
        shard_run(&jobs[0]);
        return;
    }
    fine_vt_visit(p->m, p->pos, p->B);
    fine_run_shards(p->shards, shard_run, jobs, sizeof jobs[0]);
}

int fine_infer_run(fine_infer *p, int n, fine_err *e)
{
    /* a short batch: pad with copies of its first patch, whose results are not read */
    for (int b = n; b < p->B; b++) {
        memcpy(fine_infer_input(p, b), p->x, (size_t)p->vox_in * sizeof(float));
        memcpy(fine_infer_pos(p, b), p->pos, 3 * sizeof(int64_t));
    }
    if (p->tta)
        memset(p->prob, 0, (size_t)(p->vox_out * n) * sizeof(float));
    for (unsigned axes = 0; axes < (p->tta ? 8u : 1u); axes++) {
        for (int b = 0; p->tta && b < p->B; b++)
            fine_mirror(p->xm + b * p->vox_in, p->x + b * p->vox_in, p->C, p->dims, axes);
        if (!p->be->is_device)
            cpu_pass(p, n, axes);
        else if (device_pass(p, n, axes, e) < 0)
            return -1;
    }
    return 0;
}
