/* train_patch.c: the training sampler (nnU-Net v1 DataLoader3D + the FINE trainer's pos) and
 * the `fine-patch --train` command: load the cases, draw their class locations, then make
 * batches on worker threads and write them in order. See train_patch.h. */
#include "train_patch.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "dataset.h"
#include "stream.h"
#include "volume_check.h"

/* ---------------------------------------------------------------- cases */

void fine_train_case_free(fine_train_case *c)
{
    fine_tensor_free(&c->image);
    fine_tensor_free(&c->label);
    for (int i = 0; i < c->nclasses; i++)
        free(c->locs[i]);
    memset(c, 0, sizeof *c);
}

int fine_train_case_locations(fine_train_case *c, uint64_t seed, fine_err *e)
{
    for (int i = 0; i < c->nclasses; i++)
        free(c->locs[i]);
    c->nclasses = 0;
    const uint8_t *L = c->label.data;
    int64_t n = c->size[0] * c->size[1] * c->size[2];
    int64_t count[256] = {0};
    for (int64_t i = 0; i < n; i++)
        count[L[i]]++;
    int slot[256];
    int64_t want[256] = {0}, left[256] = {0};
    for (int v = 1; v < 256; v++) {
        slot[v] = -1;
        if (!count[v])
            continue;
        int64_t k = count[v] < 10000 ? count[v] : 10000;
        int64_t cover = (int64_t)ceil((double)count[v] * 0.01);
        k = k > cover ? k : cover;
        int s = c->nclasses++;
        c->classes[s] = (uint8_t)v;
        c->nlocs[s] = 0;
        c->locs[s] = malloc((size_t)k * sizeof(int64_t));
        if (!c->locs[s]) {
            c->nclasses = s; /* the ones allocated so far are freed by the caller */
            return fine_err_set(e, "case %s: out of memory for class locations", c->id);
        }
        slot[v] = s;
        want[v] = k;
        left[v] = count[v];
    }
    /* selection sampling (Knuth's algorithm S) per class, in one raster pass: voxel i of a
     * class with `left` voxels still to see is taken with probability want / left (no draw
     * when every remaining voxel is wanted) */
    fine_rng rng;
    fine_rng_seed(&rng, seed);
    for (int64_t i = 0; i < n; i++) {
        int v = L[i];
        if (!v)
            continue;
        if (want[v] && (want[v] == left[v] || (int64_t)fine_rng_below(&rng, (uint64_t)left[v]) < want[v])) {
            int s = slot[v];
            c->locs[s][c->nlocs[s]++] = i;
            want[v]--;
        }
        left[v]--;
    }
    return 0;
}

/* ---------------------------------------------------------------- the sampler's rules */

int fine_train_forced_fg(int k, int batch, double oversample)
{
    /* get_do_oversample: not k < round(B * (1 - p)); nearbyint rounds half to even */
    return !((double)k < nearbyint((double)batch * (1.0 - oversample)));
}

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

void fine_train_box_bounds(const int64_t size[3], const int64_t box[3], const int64_t crop[3],
                           int64_t lb[3], int64_t ub[3])
{
    for (int d = 0; d < 3; d++) {
        int64_t need = box[d] - crop[d];
        if (need + size[d] < box[d])
            need = box[d] - size[d];
        lb[d] = floordiv(-need, 2);
        ub[d] = size[d] + floordiv(need, 2) + (need % 2 + 2) % 2 - box[d];
    }
}

void fine_train_pos(const int64_t lo[3], const int64_t box[3], const int64_t size[3], int64_t pos[3])
{
    for (int d = 0; d < 3; d++) {
        int64_t vlo = lo[d] > 0 ? lo[d] : 0;
        int64_t vhi = lo[d] + box[d] < size[d] ? lo[d] + box[d] : size[d];
        pos[d] = vlo + floordiv(vhi - vlo, 2) - floordiv(size[d], 2);
    }
}

void fine_train_draw_box(const fine_train_case *c, int force_fg, const int64_t box[3],
                         const int64_t crop[3], fine_rng *rng, int64_t lo[3], int *fg_class)
{
    int64_t lb[3], ub[3];
    fine_train_box_bounds(c->size, box, crop, lb, ub);
    *fg_class = 0;
    if (force_fg && c->nclasses > 0) {
        int s = (int)fine_rng_below(rng, (uint64_t)c->nclasses);
        int64_t v = c->locs[s][fine_rng_below(rng, (uint64_t)c->nlocs[s])];
        int64_t at[3] = {v / (c->size[1] * c->size[2]), (v / c->size[2]) % c->size[1], v % c->size[2]};
        for (int d = 0; d < 3; d++) {
            int64_t l = at[d] - box[d] / 2;
            lo[d] = l > lb[d] ? l : lb[d];
        }
        *fg_class = c->classes[s];
        return;
    }
    for (int d = 0; d < 3; d++)
        lo[d] = fine_rng_int(rng, lb[d], ub[d]);
}

/* ---------------------------------------------------------------- batches */

void fine_train_config_default(fine_train_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->crop[0] = 64;
    cfg->crop[1] = 128;
    cfg->crop[2] = 128;
    cfg->batch = 2;
    cfg->oversample = 0.33;
    cfg->seed = 12345;
    fine_aug_params_default(&cfg->aug, 0);
    fine_aug_basic_patch(&cfg->aug, cfg->crop, cfg->box);
}

int fine_train_make_batch(const fine_train_config *cfg, const fine_train_case *cases, int ncases,
                          uint64_t batch_no, fine_train_patch *out, fine_aug_work *w, fine_err *e)
{
    if (ncases < 1)
        return fine_err_set(e, "no cases to sample from");
    fine_rng rng;
    fine_rng_seed_stream(&rng, cfg->seed, batch_no);
    /* np.random.choice(keys, B, replace=True) first, then each sample in turn */
    for (int k = 0; k < cfg->batch; k++)
        out[k].case_index = (int)fine_rng_below(&rng, (uint64_t)ncases);
    for (int k = 0; k < cfg->batch; k++) {
        fine_train_patch *p = &out[k];
        const fine_train_case *c = &cases[p->case_index];
        p->forced_fg = fine_train_forced_fg(k, cfg->batch, cfg->oversample);
        fine_train_draw_box(c, p->forced_fg, cfg->box, cfg->crop, &rng, p->box_lo, &p->fg_class);
        fine_train_pos(p->box_lo, cfg->box, c->size, p->pos);
        for (int d = 0; d < 3; d++)
            p->origin[d] = p->box_lo[d] + (cfg->box[d] - cfg->crop[d]) / 2;
        fine_aug_source src = {c->image.data, c->label.data, {c->size[0], c->size[1], c->size[2]},
                               {p->box_lo[0], p->box_lo[1], p->box_lo[2]},
                               {cfg->box[0], cfg->box[1], cfg->box[2]}};
        fine_aug_draw_spatial(&cfg->aug, &rng, &p->spatial);
        int rc = p->spatial.rotated || p->spatial.scaled
                     ? fine_aug_resample(&src, p->spatial.m, cfg->aug.planar, cfg->crop, p->image,
                                         p->label, w, e)
                     : fine_aug_crop(&src, cfg->crop, p->image, p->label, e);
        if (rc < 0 || fine_aug_intensity(&cfg->aug, &rng, p->image, p->label, cfg->crop, w,
                                         &p->applied, e) < 0) {
            fine_err_prefix(e, c->id);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- loading the cases */

typedef struct case_set {
    fine_train_case *c;
    int n, cap;
    fine_case_list only; /* --cases (n == 0: all) */
} case_set;

static void case_set_free(case_set *s)
{
    for (int i = 0; i < s->n; i++)
        fine_train_case_free(&s->c[i]);
    free(s->c);
    fine_case_list_free(&s->only);
    memset(s, 0, sizeof *s);
}

static int listed(const case_set *s, const char *id)
{
    return s->only.n == 0 || fine_case_list_has(&s->only, id);
}

/* --cases: @FILE or a file (lib/dataset.h selection file), else ids separated by commas; ids
 * normalised as everywhere ("5", "img0005" -> ABD_005). */
static int parse_cases(const char *arg, fine_case_list *list, fine_err *e)
{
    struct stat st;
    if (arg[0] == '@')
        return fine_case_list_read(arg + 1, list, e);
    if (stat(arg, &st) == 0)
        return fine_case_list_read(arg, list, e);
    memset(list, 0, sizeof *list);
    int n = 1;
    for (const char *c = arg; *c; c++)
        n += *c == ',';
    if (!(list->ids = calloc((size_t)n, sizeof *list->ids)))
        return fine_err_set(e, "out of memory");
    for (const char *t = arg; *t;) {
        size_t len = strcspn(t, ",");
        char tok[FINE_CASE_MAX], id[FINE_CASE_MAX];
        if (len == 0 || len >= sizeof tok) {
            fine_case_list_free(list);
            return fine_err_set(e, "--cases: '%s' is neither a file nor a list of case ids", arg);
        }
        snprintf(tok, sizeof tok, "%.*s", (int)len, t);
        fine_case_id_normalize(tok, id, sizeof id);
        if (!fine_case_list_has(list, id))
            snprintf(list->ids[list->n++], FINE_CASE_MAX, "%s", id);
        t += len + (t[len] == ',');
    }
    return 0;
}

static fine_train_case *case_get(case_set *s, const char *id, fine_err *e)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->c[i].id, id) == 0)
            return &s->c[i];
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        fine_train_case *n = realloc(s->c, (size_t)cap * sizeof *n);
        if (!n) {
            fine_err_set(e, "out of memory");
            return NULL;
        }
        s->c = n;
        s->cap = cap;
    }
    fine_train_case *c = &s->c[s->n++];
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    return c;
}

/* An image or label volume record into case c (converted to f32 / u8). */
static int load_volume(const fine_record *rec, fine_train_case *c, int is_label, fine_err *e)
{
    fine_tensor *dst = is_label ? &c->label : &c->image;
    if (dst->data)
        return fine_err_set(e, "case %s: a second %s volume", c->id, is_label ? "label" : "image");
    fine_tensor t;
    fine_geometry g;
    /* the geometry is optional here (only the spacing check reads it) */
    int has_geom = fine_record_get(rec, "geometry") != NULL;
    if ((has_geom && fine_record_geometry(rec, &g, e) < 0) || fine_record_tensor(rec, NULL, &t, e) < 0) {
        char where[FINE_CASE_MAX + 8];
        snprintf(where, sizeof where, "case %s", c->id);
        fine_err_prefix(e, where);
        return -1;
    }
    for (int d = 0; d < 3; d++)
        c->spacing[is_label][d] = has_geom ? g.spacing[d] : 0.0;
    if (t.ndim == 4 && t.shape[0] == 1) { /* [1, z, y, x] */
        for (int d = 0; d < 3; d++)
            t.shape[d] = t.shape[d + 1];
        t.ndim = 3;
    }
    if (t.ndim != 3) {
        fine_tensor_free(&t);
        return fine_err_set(e, "case %s: %s volume has %d dimensions, expected 3 (z, y, x)", c->id,
                            is_label ? "label" : "image", t.ndim);
    }
    fine_dtype want = is_label ? FINE_U8 : FINE_F32;
    if (t.dtype != want) {
        if (is_label && (!fine_dtype_is_int(t.dtype) || !fine_tensor_fits(&t, FINE_U8))) {
            fine_dtype dt = t.dtype;
            fine_tensor_free(&t);
            return fine_err_set(e, "case %s: label values must be integers in 0..255 (dtype %s)",
                                c->id, fine_dtype_name(dt));
        }
        fine_tensor u;
        if (fine_tensor_convert(&t, want, &u, e) < 0) {
            fine_tensor_free(&t);
            return -1;
        }
        fine_tensor_free(&t);
        t = u;
    }
    *dst = t;
    return 0;
}

static int check_cases(case_set *s, const char *in, int max_label, fine_err *e)
{
    for (int i = 0; i < s->only.n; i++) {
        int found = 0;
        for (int j = 0; j < s->n && !found; j++)
            found = strcmp(s->c[j].id, s->only.ids[i]) == 0;
        if (!found)
            return fine_err_set(e, "%s: case %s (from --cases) has no image and label volumes", in,
                                s->only.ids[i]);
    }
    if (!s->n)
        return fine_err_set(e, "%s: no image and label volume records to sample from", in);
    for (int i = 0; i < s->n; i++) {
        fine_train_case *c = &s->c[i];
        if (!c->image.data || !c->label.data)
            return fine_err_set(e, "%s: case %s has no %s volume", in, c->id,
                                c->image.data ? "label" : "image");
        for (int d = 0; d < 3; d++)
            if (c->image.shape[d] != c->label.shape[d])
                return fine_err_set(e,
                                    "%s: case %s: label shape %lldx%lldx%lld differs from image "
                                    "shape %lldx%lldx%lld",
                                    in, c->id, (long long)c->label.shape[0],
                                    (long long)c->label.shape[1], (long long)c->label.shape[2],
                                    (long long)c->image.shape[0], (long long)c->image.shape[1],
                                    (long long)c->image.shape[2]);
        for (int d = 0; d < 3; d++)
            c->size[d] = c->image.shape[d];
        if (c->size[0] * c->size[1] * c->size[2] == 0)
            return fine_err_set(e, "%s: case %s is empty", in, c->id);
        if (fine_check_image(&c->image, c->id, e) < 0 || fine_check_label(&c->label, max_label, c->id, e) < 0 ||
            (c->spacing[0][0] > 0 && c->spacing[1][0] > 0 &&
             fine_check_same_spacing(c->spacing[0], c->spacing[1], c->id, e) < 0)) {
            fine_err_prefix(e, in);
            return -1;
        }
    }
    return 0;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const fine_train_case *)a)->id, ((const fine_train_case *)b)->id);
}

/* Class locations of every case, on `threads` threads. */
typedef struct loc_job {
    case_set *s;
    int next, failed;
    fine_err err;
    pthread_mutex_t mu;
} loc_job;

static void *loc_worker(void *arg)
{
    loc_job *j = arg;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        int i = j->failed ? j->s->n : j->next++;
        pthread_mutex_unlock(&j->mu);
        if (i >= j->s->n)
            return NULL;
        fine_err e = {0};
        if (fine_train_case_locations(&j->s->c[i], 1234, &e) < 0) {
            pthread_mutex_lock(&j->mu);
            if (!j->failed)
                j->err = e;
            j->failed = 1;
            pthread_mutex_unlock(&j->mu);
        }
    }
}

static int all_locations(case_set *s, int threads, fine_err *e)
{
    loc_job j = {.s = s};
    pthread_mutex_init(&j.mu, NULL);
    pthread_t tid[64];
    int nt = threads < s->n ? threads : s->n, started = 0;
    nt = nt < 64 ? nt : 64;
    for (int i = 1; i < nt; i++)
        if (pthread_create(&tid[started], NULL, loc_worker, &j) == 0)
            started++;
    loc_worker(&j);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&j.mu);
    if (j.failed) {
        *e = j.err;
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- making and writing batches */

typedef struct slot {
    int ready;
    fine_train_patch *p;
} slot;

typedef struct gen {
    const fine_train_config *cfg;
    const fine_train_case *cases;
    int ncases;
    int64_t count; /* batches; -1 endless */
    slot *slots;
    int nslots;
    uint64_t next, written;
    int stop, failed;
    fine_err err;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} gen;

static void *gen_worker(void *arg)
{
    gen *g = arg;
    fine_aug_work *w = fine_aug_work_new();
    pthread_mutex_lock(&g->mu);
    if (!w) {
        g->failed = g->stop = 1;
        fine_err_set(&g->err, "out of memory");
        pthread_cond_broadcast(&g->cv);
    }
    for (;;) {
        while (!g->stop && (g->count < 0 || g->next < (uint64_t)g->count) &&
               g->next - g->written >= (uint64_t)g->nslots)
            pthread_cond_wait(&g->cv, &g->mu);
        if (g->stop || (g->count >= 0 && g->next >= (uint64_t)g->count))
            break;
        uint64_t b = g->next++;
        slot *s = &g->slots[b % (uint64_t)g->nslots];
        pthread_mutex_unlock(&g->mu);
        fine_err e = {0};
        int rc = fine_train_make_batch(g->cfg, g->cases, g->ncases, b, s->p, w, &e);
        pthread_mutex_lock(&g->mu);
        if (rc < 0) {
            if (!g->failed)
                g->err = e;
            g->failed = g->stop = 1;
        } else {
            s->ready = 1;
        }
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    fine_aug_work_free(w);
    return NULL;
}

static void map_f64s3(fine_map *m, const char *key, const double v[3])
{
    fine_map_f64s(m, key, v, 3);
}

static int write_patch(fine_writer *wr, const fine_train_config *cfg, const fine_train_case *c,
                       const fine_train_patch *p, int k, uint64_t b, fine_err *e)
{
    fine_map *m = fine_map_new("patch");
    if (!m)
        return fine_err_set(e, "out of memory");
    fine_map_str(m, "case", c->id);
    fine_map_str(m, "name", "image");
    fine_tensor t = {.dtype = FINE_F32, .ndim = 4, .data = p->image};
    t.shape[0] = 1;
    for (int d = 0; d < 3; d++)
        t.shape[d + 1] = cfg->crop[d];
    fine_map_tensor_fields(m, &t);
    fine_tensor l = {.dtype = FINE_U8, .ndim = 3, .data = p->label};
    for (int d = 0; d < 3; d++)
        l.shape[d] = cfg->crop[d];
    fine_map_tensor(m, "label", &l);
    fine_map_i64s(m, "origin", p->origin, 3);
    fine_map_i64s(m, "pos", p->pos, 3);
    fine_map_i64s(m, "volume_size", c->size, 3);
    fine_map_i64(m, "index", k);
    fine_map_i64(m, "batch", (int64_t)b);
    /* what was drawn, for inspection and tests */
    fine_map *meta = fine_map_map(m, "meta");
    fine_map_i64s(meta, "box_lo", p->box_lo, 3);
    fine_map_i64s(meta, "box_size", cfg->box, 3);
    fine_map_bool(meta, "forced_fg", p->forced_fg);
    fine_map_i64(meta, "fg_class", p->fg_class);
    fine_map_bool(meta, "rotated", p->spatial.rotated);
    fine_map_bool(meta, "scaled", p->spatial.scaled);
    map_f64s3(meta, "angle", p->spatial.angle);
    fine_map_f64(meta, "scale", p->spatial.scale);
    fine_map_bool(meta, "dummy_2d", cfg->aug.planar);
    const fine_aug_applied *a = &p->applied;
    if (a->noise)
        fine_map_f64(meta, "noise_std", a->noise_std);
    if (a->blur_sigma > 0)
        fine_map_f64(meta, "blur_sigma", a->blur_sigma);
    if (a->brightness > 0)
        fine_map_f64(meta, "brightness", a->brightness);
    if (a->contrast > 0)
        fine_map_f64(meta, "contrast", a->contrast);
    if (a->lowres[0] > 0)
        fine_map_i64s(meta, "lowres", a->lowres, 3);
    if (a->gamma_invert > 0)
        fine_map_f64(meta, "gamma_invert", a->gamma_invert);
    if (a->gamma > 0)
        fine_map_f64(meta, "gamma", a->gamma);
    int64_t mir[3] = {a->mirror[0], a->mirror[1], a->mirror[2]};
    fine_map_i64s(meta, "mirror", mir, 3);
    int rc = fine_writer_put(wr, m, e);
    fine_map_free(m);
    return rc;
}

static void free_slots(slot *s, int nslots, int batch)
{
    if (!s)
        return;
    for (int i = 0; i < nslots; i++) {
        for (int k = 0; s[i].p && k < batch; k++) {
            free(s[i].p[k].image);
            free(s[i].p[k].label);
        }
        free(s[i].p);
    }
    free(s);
}

static slot *alloc_slots(int nslots, int batch, int64_t voxels)
{
    slot *s = calloc((size_t)nslots, sizeof *s);
    if (!s)
        return NULL;
    size_t fb = ((size_t)voxels * sizeof(float) + 63) / 64 * 64, lb = ((size_t)voxels + 63) / 64 * 64;
    for (int i = 0; i < nslots; i++) {
        s[i].p = calloc((size_t)batch, sizeof *s[i].p);
        if (!s[i].p)
            goto fail;
        for (int k = 0; k < batch; k++) {
            s[i].p[k].image = aligned_alloc(64, fb);
            s[i].p[k].label = aligned_alloc(64, lb);
            if (!s[i].p[k].image || !s[i].p[k].label)
                goto fail;
        }
    }
    return s;
fail:
    free_slots(s, nslots, batch);
    return NULL;
}

/* Makes `count` batches (-1: until the output closes) and writes them in order. */
static int generate(fine_writer *wr, const fine_train_config *cfg, const case_set *cs,
                    int64_t count, int threads, fine_progress *pg, fine_err *e)
{
    gen g = {.cfg = cfg, .cases = cs->c, .ncases = cs->n, .count = count};
    g.nslots = 2 * threads;
    g.slots = alloc_slots(g.nslots, cfg->batch, cfg->crop[0] * cfg->crop[1] * cfg->crop[2]);
    if (!g.slots)
        return fine_err_set(e, "out of memory for %d batches of %d patches", g.nslots, cfg->batch);
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    pthread_t tid[256];
    int started = 0, rc = 0;
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&tid[started], NULL, gen_worker, &g) != 0)
            break;
        started++;
    }
    if (!started) {
        rc = fine_err_set(e, "cannot start a thread");
        goto done;
    }
    double t0 = fine_now();
    for (uint64_t b = 0; count < 0 || b < (uint64_t)count; b++) {
        slot *s = &g.slots[b % (uint64_t)g.nslots];
        pthread_mutex_lock(&g.mu);
        while (!s->ready && !g.stop)
            pthread_cond_wait(&g.cv, &g.mu);
        int ok = s->ready && !g.failed;
        pthread_mutex_unlock(&g.mu);
        if (!ok)
            break;
        for (int k = 0; k < cfg->batch && rc == 0; k++)
            rc = write_patch(wr, cfg, &cs->c[s->p[k].case_index], &s->p[k], k, b, e);
        pthread_mutex_lock(&g.mu);
        if (rc < 0)
            g.stop = 1;
        s->ready = 0;
        g.written++;
        pthread_cond_broadcast(&g.cv);
        pthread_mutex_unlock(&g.mu);
        if (rc < 0)
            break;
        char what[64];
        double dt = fine_now() - t0;
        snprintf(what, sizeof what, "batch %llu  %.1f patches/s", (unsigned long long)(b + 1),
                 dt > 0 ? (double)(b + 1) * cfg->batch / dt : 0.0);
        fine_progress_update(pg, (int64_t)(b + 1), count, what);
    }
    pthread_mutex_lock(&g.mu);
    g.stop = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    if (rc == 0 && g.failed) {
        *e = g.err;
        rc = -1;
    }
done:
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    free_slots(g.slots, g.nslots, cfg->batch);
    return rc;
}

/* ---------------------------------------------------------------- the command */

static void usage(const char *tool)
{
    printf("Usage: %s --train [options] IN [-o OUT]\n"
           "Training batches for fine-train: from preprocessed cases (the image and label volume\n"
           "records of IN, as fine-resample | fine-normalize write them), an endless stream of\n"
           "patch records, BATCH consecutive patches per batch, made as the FINE reference's\n"
           "nnU-Net v1 loader and augmentation make them (fine-reference A8, B 3.1, 5.4, 5.5).\n\n"
           "Each batch draws its cases uniformly with replacement; sample k is centred on a\n"
           "random stored voxel of a random foreground class iff k >= round(BATCH * 0.67)\n"
           "(sample 1 of 2). The box sampled is the enlarged patch nnU-Net's get_patch_size\n"
           "gives for the crop (140,205,168 for 64,128,128); the crop is its centre after\n"
           "rotation (p 0.2, +-30 degrees per axis), scaling (p 0.2, 0.7..1.4), then noise,\n"
           "blur, brightness, contrast, low resolution, gamma and mirroring.\n\n"
           "Each patch: a [1,z,y,x] f32 image, a u8 label [z,y,x], case, origin (the crop's\n"
           "first voxel before augmentation), pos (centre of the box's in-image part minus the\n"
           "case centre, preprocessed voxels), volume_size, index (in the batch), batch, and\n"
           "meta (what was drawn). Records other than image and label volumes are passed\n"
           "through first. Output is the same for a --seed whatever --threads.\n\n"
           "All cases are held in memory: 5 bytes per voxel (f32 image, u8 label), e.g. 18 BCV\n"
           "cases of about 150x500x500 after resampling need about 3.4 GB.\n\n"
           "Options:\n"
           "  --crop Z,Y,X        final patch size (default 64,128,128)\n"
           "  --batch B           patches per batch (default 2)\n"
           "  --count N|endless   batches to write (default endless: until the reader closes)\n"
           "  --seed S            random seed (default 12345)\n"
           "  --augment MODE      default, none (centre crop of the box, no transform) or\n"
           "                      spatial (rotation and scaling only)\n"
           "  --dummy-2d          dummy-2D augmentation: rotation (+-180 degrees) and scaling of\n"
           "                      each z slice in plane, box Z,150,150 for 64,128,128\n"
           "  --threads N         worker threads (default 1)\n"
           "  --max-label N       labels must be in 0..N (default 13, the BCV organs)\n"
           "  --cases LIST        sample only these cases: a file or @FILE (one id per line, #\n"
           "                      comments) or ids separated by commas; the others' volumes\n"
           "                      are dropped\n"
           "  -o, --output OUT    output stream (default -: stdout)\n"
           "  -f, --force         overwrite OUT\n"
           "  -q, --quiet         no progress line\n"
           "      --progress      progress line even when stderr is not a terminal\n"
           "  -h, --help          this help\n"
           "      --version       print the version\n\n"
           "Exit status: 0 success, 1 bad input or failure, 2 usage error.\n\n"
           "Examples:\n"
           "  fine-resample --plan plan.fst cases.fst | fine-normalize - | \\\n"
           "      fine-patch --train --cases train.txt --threads 2 - | fine-train ...\n"
           "  %s --train --count 10 --seed 1 prep.fst -o batches.fst\n",
           tool, tool);
}

static int parse_count(const char *s, int64_t *out)
{
    if (strcmp(s, "endless") == 0) {
        *out = -1;
        return 0;
    }
    return fine_parse_i64(s, out);
}

/* The command; typed is argv as it was before getopt_long permuted it (for the provenance). */
static int train_main(int argc, char **argv, char **typed, const char *tool)
{
    static const struct option opts[] = {
        {"train", no_argument, NULL, 'T'},      {"crop", required_argument, NULL, 'c'},
        {"batch", required_argument, NULL, 'b'}, {"count", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},  {"augment", required_argument, NULL, 'a'},
        {"dummy-2d", no_argument, NULL, 'D'},    {"threads", required_argument, NULL, 't'},
        {"cases", required_argument, NULL, 'C'}, {"output", required_argument, NULL, 'o'},
        {"force", no_argument, NULL, 'f'},       {"quiet", no_argument, NULL, 'q'},
        {"progress", no_argument, NULL, 'P'},    {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},     {"max-label", required_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    int max_label = FINE_MAX_LABEL_DEFAULT;
    fine_train_config cfg;
    fine_train_config_default(&cfg);
    int64_t count = -1, threads = 1;
    int force = 0, quiet = 0, progress = 0, dummy = 0, c;
    const char *mode = "default", *cases_file = NULL, *out = "-";
    optind = 0; /* glibc: start afresh, whatever parsed argv before */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:fqh", opts, NULL)) != -1) {
        switch (c) {
        case 'T': break;
        case 'c':
            if (fine_parse_i64s(optarg, cfg.crop, 3, 1) < 0 || cfg.crop[0] < 1 || cfg.crop[1] < 1 ||
                cfg.crop[2] < 1)
                return fine_cli_usage(tool, "--crop needs Z,Y,X positive sizes, not '%s'", optarg);
            break;
        case 'b': {
            int64_t v;
            if (fine_parse_i64(optarg, &v) < 0 || v < 1 || v > 4096)
                return fine_cli_usage(tool, "--batch needs a number in 1..4096, not '%s'", optarg);
            cfg.batch = (int)v;
            break;
        }
        case 'n':
            if (parse_count(optarg, &count) < 0)
                return fine_cli_usage(tool, "--count needs a number or 'endless', not '%s'", optarg);
            break;
        case 's': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end || optarg[0] == '-')
                return fine_cli_usage(tool, "--seed needs a non-negative integer, not '%s'", optarg);
            cfg.seed = (uint64_t)v;
            break;
        }
        case 'a':
            if (strcmp(optarg, "default") && strcmp(optarg, "none") && strcmp(optarg, "spatial"))
                return fine_cli_usage(tool, "--augment must be default, none or spatial, not '%s'",
                                      optarg);
            mode = optarg;
            break;
        case 'D': dummy = 1; break;
        case 't':
            if (fine_parse_i64(optarg, &threads) < 0 || threads < 1 || threads > 256)
                return fine_cli_usage(tool, "--threads needs a number in 1..256, not '%s'", optarg);
            break;
        case 'C': cases_file = optarg; break;
        case 'L': {
            int64_t v;
            if (fine_parse_i64(optarg, &v) < 0 || v < 1 || v > 255)
                return fine_cli_usage(tool, "--max-label needs a number in 1..255, not '%s'", optarg);
            max_label = (int)v;
            break;
        }
        case 'o': out = optarg; break;
        case 'f': force = 1; break;
        case 'q': quiet = 1; break;
        case 'P': progress = 1; break;
        case 'h': usage(tool); return FINE_EXIT_OK;
        case 'V': fine_cli_version(tool); return FINE_EXIT_OK;
        case ':': return fine_cli_usage(tool, "option '%s' needs an argument", argv[optind - 1]);
        default: return fine_cli_usage(tool, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return fine_cli_usage(tool, "expected one input stream IN, got %d arguments", argc - optind);
    const char *in = argv[optind];

    fine_aug_params_default(&cfg.aug, dummy);
    fine_aug_basic_patch(&cfg.aug, cfg.crop, cfg.box); /* the box keeps the default ranges */
    if (strcmp(mode, "none") == 0)
        fine_aug_params_off(&cfg.aug);
    else if (strcmp(mode, "spatial") == 0)
        fine_aug_params_spatial_only(&cfg.aug);

    fine_err e = {0};
    case_set cs = {0};
    if (cases_file && parse_cases(cases_file, &cs.only, &e) < 0) {
        case_set_free(&cs);
        return fine_cli_fail(tool, &e);
    }
    fine_reader *r = fine_reader_open(in, &e);
    if (!r) {
        case_set_free(&cs);
        return fine_cli_fail(tool, &e);
    }
    fine_writer *w = fine_writer_open(out, force, &e);
    if (!w) {
        fine_reader_close(r);
        case_set_free(&cs);
        return fine_cli_fail(tool, &e);
    }
    int rc = fine_writer_header(w, fine_reader_provenance(r), tool, argc, typed, &e);
    fine_record rec;
    while (rc == 0 && (rc = fine_reader_next(r, &rec, &e)) == 1) {
        rc = 0;
        char name[FINE_NAME_MAX], id[FINE_CASE_MAX];
        if (strcmp(rec.type, "volume") == 0 && fine_record_str(&rec, "name", name, sizeof name, NULL) == 0 &&
            (strcmp(name, "image") == 0 || strcmp(name, "label") == 0)) {
            if (fine_record_str(&rec, "case", id, sizeof id, &e) < 0) {
                rc = -1;
            } else if (listed(&cs, id)) {
                fine_train_case *tc = case_get(&cs, id, &e);
                rc = tc ? load_volume(&rec, tc, name[0] == 'l', &e) : -1;
            }
            if (rc < 0)
                fine_err_prefix(&e, fine_reader_name(r));
            continue;
        }
        rc = fine_writer_put_record(w, &rec, &e); /* pass through */
    }
    if (rc == 0)
        rc = check_cases(&cs, fine_reader_name(r), max_label, &e);
    fine_reader_close(r);
    if (rc == 0) {
        qsort(cs.c, (size_t)cs.n, sizeof *cs.c, by_id); /* the sampling does not depend on input order */
        rc = all_locations(&cs, (int)threads, &e);
    }
    if (rc == 0) {
        fine_progress pg;
        fine_progress_init(&pg, tool, quiet, progress);
        rc = generate(w, &cfg, &cs, count, (int)threads, &pg, &e);
        fine_progress_done(&pg);
    }
    case_set_free(&cs);
    if (rc < 0) {
        fine_writer_abort(w);
        return fine_cli_fail(tool, &e);
    }
    if (fine_writer_close(w, &e) < 0)
        return fine_cli_fail(tool, &e);
    return FINE_EXIT_OK;
}

int fine_patch_train(int argc, char **argv, const char *tool)
{
    fine_cli_init();
    char **typed = malloc((size_t)(argc + 1) * sizeof *typed);
    if (!typed) {
        fine_err oom;
        fine_err_set(&oom, "out of memory");
        return fine_cli_fail(tool, &oom);
    }
    memcpy(typed, argv, (size_t)argc * sizeof *typed);
    typed[argc] = NULL;
    int status = train_main(argc, argv, typed, tool);
    free(typed);
    return status;
}
