/* fine-dice: Dice, HD95 and ASSD (mm) per organ of predicted segmentations against reference
 * labels, averaged over cases as nnU-Net's summary.json does (lib/metrics.h, lib/evaluate.h).
 *
 * The main thread walks the predictions (a NIfTI file, a folder, a list of pairs or a stream),
 * finds each one's reference (a NIfTI file, a folder or a stream, matched by case name) and
 * queues the pair; worker threads load files, check grids and compute the metrics, so cases run
 * in parallel. Stream volumes are decoded by the main thread (a stream is read in order), files
 * by the workers. The queue holds at most as many pairs as there are workers. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "evaluate.h"
#include "metrics.h"
#include "nifti_io.h"
#include "stream.h"
#include "volume.h"

static const char *TOOL = "fine-dice";

static void usage(void)
{
    printf("Usage: fine-dice [options] PRED REF\n"
           "       fine-dice [options] --list FILE\n"
           "Score predicted segmentations against reference labels, per case and label: Dice,\n"
           "HD95 and ASSD in millimetres (medpy's hd95/assd with the voxel spacing: borders are\n"
           "the voxels a 6-connected erosion removes, distances from an exact Euclidean distance\n"
           "transform). Prints a markdown table of the per-organ means over cases (NaN ignored)\n"
           "with the mean over the 13 organs and over the 8 Synapse organs (spleen, kidneys,\n"
           "gallbladder, liver, stomach, aorta, pancreas).\n\n"
           "PRED and REF are each a NIfTI file (.nii, .nii.gz), a folder of NIfTI files, or a\n"
           "fine stream of volume records ('-' for stdin). Two NIfTI files are one case. Otherwise\n"
           "each prediction is paired with the reference of the same case: names are compared\n"
           "after dropping .nii/.nii.gz/.fst and a trailing _0000, and the BCV forms ABD_001,\n"
           "img0001 and label0001 all name serial 1; other names must be equal. Every prediction\n"
           "needs a reference; unused references are ignored (a folder of 30 labels scores 12\n"
           "predictions). A REF that is one NIfTI file serves PRED's only case.\n"
           "From streams, PRED's volume records named seg or label and REF's named label or seg\n"
           "are used (one per case; --pred-name/--ref-name choose).\n\n"
           "Conventions (nnU-Net): Dice is NaN when both masks are empty; HD95 and ASSD are NaN\n"
           "when either mask is empty or fills the whole volume. Pairs on different grids (shape,\n"
           "spacing or affine) are refused.\n\n"
           "Options:\n"
           "  --labels LIST     labels to score: ids and ranges (default 1-13; e.g. 0-13, 1,2,6)\n"
           "  --list FILE       pairs to score, one 'PRED REF' pair of paths a line ('#' comments)\n"
           "  --per-case        also print a table of the Dice of every case and label\n"
           "  --csv FILE        write one row per case and label (full precision; '-': stdout,\n"
           "                    instead of the table)\n"
           "  --json FILE       write a summary like nnU-Net's summary.json (NaN as null; '-':\n"
           "                    stdout, instead of the table)\n"
           "  --pred-name LIST  stream PRED: volume record names to use (default seg,label)\n"
           "  --ref-name LIST   stream REF: volume record names to use (default label,seg)\n"
           "  --tolerance T     grid check: spacings may differ by T relative, and the corner\n"
           "                    voxels' world positions by T times the smallest spacing\n"
           "                    (default 0.01)\n"
           "  --threads N       cases scored in parallel (default: the number of CPUs)\n"
           "  -f, --force       overwrite the --csv/--json files\n"
           "  -q, --quiet       no progress line\n"
           "  --progress        a progress line even when stderr is not a terminal\n"
           "  -h, --help        this help\n"
           "  --version         print the version\n\n"
           "Exit status: 0 success, 1 bad input or failure, 2 usage error.\n\n"
           "Examples:\n"
           "  fine-dice validation_raw/ gt_segmentations/\n"
           "  fine-dice --json summary.json --csv cases.csv pred/ data/bcv/label/\n"
           "  fine-dice seg/img0001.nii.gz data/bcv/label/label0001.nii.gz\n"
           "  fine-stitch preds.fst - | fine-dice --per-case - data/bcv/label/\n");
}

/* ---------------------------------------------------------------- options */

typedef struct opts {
    int64_t labels[FINE_METRICS_MAX_LABELS];
    int nlabels;
    const char *pred_names, *ref_names;
    double tol;
    int threads, per_case, force, quiet, progress;
    const char *csv, *json, *list;
} opts;

/* 1 when name is in the comma-separated list. */
static int name_in(const char *name, const char *list)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *c = strchr(p, ',');
        size_t m = c ? (size_t)(c - p) : strlen(p);
        if (m == n && strncmp(p, name, n) == 0)
            return 1;
        if (!c)
            break;
        p = c + 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- jobs */

typedef struct job {
    char case_id[FINE_CASE_MAX];
    char *pred_path, *ref_path; /* files the worker loads; NULL when the volume is given */
    fine_volume pred, ref;      /* given when read from a stream */
    fine_eval_case res;         /* filled by the worker */
} job;

static void job_free(job *j)
{
    free(j->pred_path);
    free(j->ref_path);
    fine_volume_free(&j->pred);
    fine_volume_free(&j->ref);
    free(j->res.pred);
    free(j->res.ref);
    free(j->res.m);
    free(j);
}

typedef struct ctx {
    const opts *o;
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    job **queue;
    int qcap, qhead, qcount;
    int closed, failed, done, total;
    fine_err err;
    fine_progress pr;
} ctx;

/* Records the first failure; the others stop at their next job. Call with mu held. */
static void fail_locked(ctx *c, const fine_err *e)
{
    if (!c->failed) {
        c->failed = 1;
        c->err = *e;
    }
    pthread_cond_broadcast(&c->not_empty);
    pthread_cond_broadcast(&c->not_full);
}

/* The first volume record of a stream file with one of the names (the rest is read to the end
 * so that truncation is noticed). */
static int load_stream_file(const char *path, const char *names, const char *case_id, fine_volume *v, fine_err *e)
{
    fine_reader *r = fine_reader_open(path, e);
    if (!r)
        return -1;
    fine_record rec;
    int rc, found = 0;
    while ((rc = fine_reader_next(r, &rec, e)) == 1) {
        if (found || strcmp(rec.type, "volume") != 0)
            continue;
        char name[FINE_NAME_MAX];
        if (fine_record_str(&rec, "name", name, sizeof name, NULL) < 0 || !name_in(name, names))
            continue;
        if (fine_volume_from_record(&rec, v, e) < 0) {
            fine_err_prefix(e, path);
            rc = -1;
            break;
        }
        snprintf(v->case_id, sizeof v->case_id, "%s", case_id);
        found = 1;
    }
    fine_reader_close(r);
    if (rc == 0 && !found)
        rc = fine_err_set(e, "%s: no volume record named %s", path, names);
    if (rc < 0)
        fine_volume_free(v);
    return rc;
}

static int load_file(const char *path, const char *names, const char *case_id, fine_volume *v, fine_err *e)
{
    if (fine_nifti_is_path(path) && !fine_path_is_stream(path))
        return fine_volume_from_nifti(path, case_id, "seg", -1, v, e);
    return load_stream_file(path, names, case_id, v, e);
}

/* Loads what is not loaded yet, checks the grids, computes the metrics; frees the volumes. */
static int run_job(const opts *o, job *j, fine_err *e)
{
    if (j->pred_path && load_file(j->pred_path, o->pred_names, j->case_id, &j->pred, e) < 0)
        return -1;
    if (j->ref_path && load_file(j->ref_path, o->ref_names, j->case_id, &j->ref, e) < 0)
        return -1;
    snprintf(j->pred.case_id, sizeof j->pred.case_id, "%s", j->case_id);
    if (fine_check_same_grid(&j->pred, j->res.pred, &j->ref, j->res.ref, o->tol, e) < 0)
        return -1;
    j->res.m = calloc((size_t)o->nlabels, sizeof *j->res.m);
    if (!j->res.m)
        return fine_err_set(e, "case %s: out of memory", j->case_id);
    double sp[3] = {fabs(j->pred.geom.spacing[0]), fabs(j->pred.geom.spacing[1]), fabs(j->pred.geom.spacing[2])};
    if (fine_label_metrics_compute(&j->pred.data, &j->ref.data, sp, o->labels, o->nlabels, j->res.m, e) < 0) {
        char pre[FINE_CASE_MAX + 8];
        snprintf(pre, sizeof pre, "case %s", j->case_id);
        fine_err_prefix(e, pre);
        return -1;
    }
    fine_volume_free(&j->pred);
    fine_volume_free(&j->ref);
    return 0;
}

static void *worker(void *arg)
{
    ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->qcount == 0 && !c->closed && !c->failed)
            pthread_cond_wait(&c->not_empty, &c->mu);
        if (c->failed || c->qcount == 0)
            break;
        job *j = c->queue[c->qhead];
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qcount--;
        pthread_cond_signal(&c->not_full);
        pthread_mutex_unlock(&c->mu);
        fine_err e = {0};
        int rc = run_job(c->o, j, &e);
        if (rc < 0) { /* volumes are not needed any more */
            fine_volume_free(&j->pred);
            fine_volume_free(&j->ref);
        }
        pthread_mutex_lock(&c->mu);
        if (rc < 0)
            fail_locked(c, &e);
        c->done++;
        fine_progress_update(&c->pr, c->done, c->total, j->case_id);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Queues j (which the caller keeps in its list); waits while the queue is full. Returns -1
 * when a worker has failed. */
static int submit(ctx *c, job *j)
{
    pthread_mutex_lock(&c->mu);
    while (c->qcount == c->qcap && !c->failed)
        pthread_cond_wait(&c->not_full, &c->mu);
    int rc = c->failed ? -1 : 0;
    if (rc == 0) {
        c->queue[(c->qhead + c->qcount) % c->qcap] = j;
        c->qcount++;
        pthread_cond_signal(&c->not_empty);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---------------------------------------------------------------- sources */

typedef enum { SRC_NIFTI, SRC_DIR, SRC_STREAM } src_kind;

static src_kind kind_of(const char *path)
{
    struct stat st;
    if (strcmp(path, "-") != 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return SRC_DIR;
    if (strcmp(path, "-") != 0 && fine_nifti_is_path(path) && !fine_path_is_stream(path))
        return SRC_NIFTI;
    return SRC_STREAM;
}

/* A volume read from a REF stream ahead of its prediction. */
typedef struct pending {
    char key[FINE_CASE_MAX];
    fine_volume v;
    int used;
} pending;

/* Where references come from. */
typedef struct refs {
    src_kind kind;
    const char *path;
    int served;                  /* SRC_NIFTI: cases served */
    char **files, **keys;        /* SRC_DIR */
    int nfiles;
    fine_reader *r;              /* SRC_STREAM */
    pending *pend;
    int npend, cappend, eof;
} refs;

static int refs_open(refs *rf, const char *path, fine_err *e)
{
    memset(rf, 0, sizeof *rf);
    rf->kind = kind_of(path);
    rf->path = path;
    if (rf->kind == SRC_DIR) {
        if (fine_list_nifti_dir(path, &rf->files, &rf->nfiles, e) < 0)
            return -1;
        rf->keys = calloc((size_t)rf->nfiles + 1, sizeof *rf->keys);
        if (!rf->keys)
            return fine_err_set(e, "out of memory");
        for (int i = 0; i < rf->nfiles; i++) {
            char id[FINE_CASE_MAX], key[FINE_CASE_MAX];
            fine_case_id_from_path(rf->files[i], id, sizeof id);
            fine_case_key(id, key, sizeof key);
            if (!(rf->keys[i] = strdup(key)))
                return fine_err_set(e, "out of memory");
        }
    } else if (rf->kind == SRC_STREAM) {
        if (!(rf->r = fine_reader_open(path, e)))
            return -1;
    }
    return 0;
}

static void refs_close(refs *rf)
{
    fine_free_strings(rf->files, rf->nfiles);
    fine_free_strings(rf->keys, rf->nfiles);
    if (rf->r)
        fine_reader_close(rf->r);
    for (int i = 0; i < rf->npend; i++)
        fine_volume_free(&rf->pend[i].v);
    free(rf->pend);
    memset(rf, 0, sizeof *rf);
}

/* The next volume record of the REF stream with an accepted name, kept in rf->pend. Returns 1,
 * 0 at the end, -1 on error. */
static int refs_read_one(refs *rf, const opts *o, fine_err *e)
{
    fine_record rec;
    int rc;
    while ((rc = fine_reader_next(rf->r, &rec, e)) == 1) {
        char name[FINE_NAME_MAX];
        if (strcmp(rec.type, "volume") != 0 || fine_record_str(&rec, "name", name, sizeof name, NULL) < 0 ||
            !name_in(name, o->ref_names))
            continue;
        if (rf->npend == rf->cappend) {
            int cap = rf->cappend ? rf->cappend * 2 : 8;
            pending *p = realloc(rf->pend, (size_t)cap * sizeof *p);
            if (!p)
                return fine_err_set(e, "out of memory");
            rf->pend = p;
            rf->cappend = cap;
        }
        pending *p = &rf->pend[rf->npend];
        memset(p, 0, sizeof *p);
        if (fine_volume_from_record(&rec, &p->v, e) < 0) {
            fine_err_prefix(e, fine_reader_name(rf->r));
            return -1;
        }
        fine_case_key(p->v.case_id, p->key, sizeof p->key);
        for (int i = 0; i < rf->npend; i++)
            if (strcmp(rf->pend[i].key, p->key) == 0) {
                fine_err_set(e, "%s: case %s appears twice among the volume records named %s (choose one "
                             "name with --ref-name)", fine_reader_name(rf->r), p->v.case_id, o->ref_names);
                fine_volume_free(&p->v);
                return -1;
            }
        rf->npend++;
        return 1;
    }
    if (rc == 0)
        rf->eof = 1;
    return rc;
}

/* Finds the reference of case_id for job j: a path (j->ref_path) or a volume moved into j->ref;
 * j->res.ref is its name for reports. */
static int refs_find(refs *rf, const opts *o, const char *case_id, job *j, fine_err *e)
{
    char key[FINE_CASE_MAX];
    fine_case_key(case_id, key, sizeof key);
    if (rf->kind == SRC_NIFTI) {
        if (rf->served++ > 0)
            return fine_err_set(e, "case %s: REF %s is one file, but PRED holds more than one case", case_id,
                                rf->path);
        j->ref_path = strdup(rf->path);
        j->res.ref = strdup(rf->path);
        return j->ref_path && j->res.ref ? 0 : fine_err_set(e, "out of memory");
    }
    if (rf->kind == SRC_DIR) {
        int found = -1;
        for (int i = 0; i < rf->nfiles; i++) {
            if (strcmp(rf->keys[i], key) != 0)
                continue;
            if (found >= 0)
                return fine_err_set(e, "case %s: two references in %s: %s and %s", case_id, rf->path,
                                    rf->files[found], rf->files[i]);
            found = i;
        }
        if (found < 0)
            return fine_err_set(e, "case %s: no reference in %s (a file named %s, or for BCV serials ABD_xxx, "
                                "imgxxxx or labelxxxx)", case_id, rf->path, case_id);
        j->ref_path = strdup(rf->files[found]);
        j->res.ref = strdup(rf->files[found]);
        return j->ref_path && j->res.ref ? 0 : fine_err_set(e, "out of memory");
    }
    for (;;) {
        for (int i = 0; i < rf->npend; i++) {
            pending *p = &rf->pend[i];
            if (strcmp(p->key, key) != 0)
                continue;
            if (p->used)
                return fine_err_set(e, "case %s: its reference in %s was already used by another prediction",
                                    case_id, fine_reader_name(rf->r));
            char name[FINE_CASE_MAX + 512];
            snprintf(name, sizeof name, "%s:%s", fine_reader_name(rf->r), p->v.case_id);
            if (!(j->res.ref = strdup(name)))
                return fine_err_set(e, "out of memory");
            j->ref = p->v; /* moved */
            memset(&p->v, 0, sizeof p->v);
            p->used = 1;
            return 0;
        }
        int rc = rf->eof ? 0 : refs_read_one(rf, o, e);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return fine_err_set(e, "case %s: no volume record named %s for it in %s", case_id, o->ref_names,
                                fine_reader_name(rf->r));
    }
}

/* Reads the rest of a REF stream, so that a truncated or corrupt stream is an error. */
static int refs_finish(refs *rf, fine_err *e)
{
    if (rf->kind != SRC_STREAM || rf->eof)
        return 0;
    fine_record rec;
    int rc;
    while ((rc = fine_reader_next(rf->r, &rec, e)) == 1)
        ;
    return rc;
}

/* ---------------------------------------------------------------- the run */

typedef struct run {
    job **jobs;
    int njobs, cap;
    char **keys; /* of the predictions, to refuse a case given twice */
} run;

static job *new_job(run *R, const char *case_id, fine_err *e)
{
    if (R->njobs == R->cap) {
        int cap = R->cap ? R->cap * 2 : 32;
        job **a = realloc(R->jobs, (size_t)cap * sizeof *a);
        char **k = realloc(R->keys, (size_t)cap * sizeof *k);
        if (a)
            R->jobs = a;
        if (k)
            R->keys = k;
        if (!a || !k) {
            fine_err_set(e, "out of memory");
            return NULL;
        }
        R->cap = cap;
    }
    job *j = calloc(1, sizeof *j);
    char key[FINE_CASE_MAX];
    fine_case_key(case_id, key, sizeof key);
    char *k = strdup(key);
    if (!j || !k) {
        free(j), free(k);
        fine_err_set(e, "out of memory");
        return NULL;
    }
    snprintf(j->case_id, sizeof j->case_id, "%s", case_id);
    snprintf(j->res.case_id, sizeof j->res.case_id, "%s", case_id);
    R->jobs[R->njobs] = j;
    R->keys[R->njobs++] = k;
    return j;
}

/* Fails when an earlier prediction had the same case key as the last one. */
static int check_new_key(const run *R, const char *what, fine_err *e)
{
    const char *k = R->keys[R->njobs - 1];
    for (int i = 0; i < R->njobs - 1; i++)
        if (strcmp(R->keys[i], k) == 0)
            return fine_err_set(e, "%s: cases %s and %s are the same case (%s)%s", what, R->jobs[i]->case_id,
                                R->jobs[R->njobs - 1]->case_id, k[0] == '#' ? "one BCV serial" : "one name",
                                strcmp(what, "PRED") == 0 ? "" : " (choose one name with --pred-name)");
    return 0;
}

/* Produces every job from the sources and queues it. */
static int produce(ctx *c, run *R, const opts *o, const char *pred, const char *ref, fine_err *e)
{
    if (o->list) {
        char **pp, **rr;
        int n;
        if (fine_read_pair_list(o->list, &pp, &rr, &n, e) < 0)
            return -1;
        int rc = 0;
        pthread_mutex_lock(&c->mu);
        c->total = n;
        pthread_mutex_unlock(&c->mu);
        for (int i = 0; i < n && rc == 0; i++) {
            char id[FINE_CASE_MAX];
            fine_case_id_from_path(pp[i], id, sizeof id);
            job *j = new_job(R, id, e);
            if (!j)
                rc = -1;
            else if (!(j->pred_path = strdup(pp[i])) || !(j->ref_path = strdup(rr[i])) ||
                     !(j->res.pred = strdup(pp[i])) || !(j->res.ref = strdup(rr[i])))
                rc = fine_err_set(e, "out of memory");
            else
                rc = submit(c, j);
        }
        fine_free_strings(pp, n);
        fine_free_strings(rr, n);
        return rc;
    }

    refs rf;
    if (refs_open(&rf, ref, e) < 0) {
        refs_close(&rf);
        return -1;
    }
    src_kind pk = kind_of(pred);
    int rc = 0;
    if (pk == SRC_NIFTI || pk == SRC_DIR) {
        char **files = NULL;
        int n = 0;
        if (pk == SRC_NIFTI) {
            files = malloc(sizeof *files);
            if (files && (files[0] = strdup(pred)))
                n = 1;
            else
                rc = fine_err_set(e, "out of memory");
        } else if (fine_list_nifti_dir(pred, &files, &n, e) < 0) {
            rc = -1;
        } else if (n == 0) {
            rc = fine_err_set(e, "%s: no NIfTI files (.nii, .nii.gz)", pred);
        }
        pthread_mutex_lock(&c->mu);
        c->total = n;
        pthread_mutex_unlock(&c->mu);
        for (int i = 0; i < n && rc == 0; i++) {
            char id[FINE_CASE_MAX];
            fine_case_id_from_path(files[i], id, sizeof id);
            job *j = new_job(R, id, e);
            if (!j || check_new_key(R, "PRED", e) < 0)
                rc = -1;
            else if (!(j->pred_path = strdup(files[i])) || !(j->res.pred = strdup(files[i])))
                rc = fine_err_set(e, "out of memory");
            else if (refs_find(&rf, o, id, j, e) < 0)
                rc = -1;
            else
                rc = submit(c, j);
        }
        fine_free_strings(files, n);
    } else {
        if (strcmp(pred, "-") == 0 && strcmp(ref, "-") == 0) {
            refs_close(&rf);
            return fine_err_set(e, "PRED and REF cannot both be stdin");
        }
        fine_reader *r = fine_reader_open(pred, e);
        if (!r)
            rc = -1;
        fine_record rec;
        int got;
        while (rc == 0 && (got = fine_reader_next(r, &rec, e)) != 0) {
            if (got < 0) {
                rc = -1;
                break;
            }
            char name[FINE_NAME_MAX];
            if (strcmp(rec.type, "volume") != 0 || fine_record_str(&rec, "name", name, sizeof name, NULL) < 0 ||
                !name_in(name, o->pred_names))
                continue;
            char id[FINE_CASE_MAX];
            if (fine_record_str(&rec, "case", id, sizeof id, e) < 0) {
                fine_err_prefix(e, fine_reader_name(r));
                rc = -1;
                break;
            }
            job *j = new_job(R, id, e);
            char shown[FINE_CASE_MAX + 512];
            snprintf(shown, sizeof shown, "%s:%s", fine_reader_name(r), id);
            if (!j || check_new_key(R, fine_reader_name(r), e) < 0)
                rc = -1;
            else if (!(j->res.pred = strdup(shown)))
                rc = fine_err_set(e, "out of memory");
            else if (fine_volume_from_record(&rec, &j->pred, e) < 0) {
                fine_err_prefix(e, fine_reader_name(r));
                rc = -1;
            } else if (refs_find(&rf, o, id, j, e) < 0)
                rc = -1;
            else
                rc = submit(c, j);
        }
        if (rc == 0 && R->njobs == 0)
            rc = fine_err_set(e, "%s: no volume records named %s", fine_reader_name(r), o->pred_names);
        if (r)
            fine_reader_close(r);
    }
    if (rc == 0)
        rc = refs_finish(&rf, e);
    refs_close(&rf);
    return rc;
}

static int evaluate(const opts *o, const char *pred, const char *ref)
{
    ctx c;
    memset(&c, 0, sizeof c);
    c.o = o;
    int threads = o->threads;
    if (threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (int)cpus : 1;
    }
    c.qcap = threads;
    c.queue = calloc((size_t)threads, sizeof *c.queue);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    fine_err e = {0};
    if (!c.queue || !tid) {
        free(c.queue), free(tid);
        fine_err_set(&e, "out of memory");
        return fine_cli_fail(TOOL, &e);
    }
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.not_empty, NULL);
    pthread_cond_init(&c.not_full, NULL);
    fine_progress_init(&c.pr, TOOL, o->quiet, o->progress);
    int started = 0;
    for (int t = 0; t < threads; t++) {
        if (pthread_create(&tid[t], NULL, worker, &c) != 0)
            break;
        started++;
    }
    run R;
    memset(&R, 0, sizeof R);
    int rc = started ? produce(&c, &R, o, pred, ref, &e) : fine_err_set(&e, "cannot start a thread");
    pthread_mutex_lock(&c.mu);
    c.closed = 1;
    if (rc < 0)
        fail_locked(&c, &e);
    pthread_cond_broadcast(&c.not_empty);
    pthread_mutex_unlock(&c.mu);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    fine_progress_done(&c.pr);
    int status = FINE_EXIT_OK;
    if (c.failed) {
        status = fine_cli_fail(TOOL, &c.err);
    } else {
        fine_eval_case *cases = calloc((size_t)R.njobs + 1, sizeof *cases);
        fine_eval_summary *s = malloc(sizeof *s);
        if (!cases || !s) {
            fine_err_set(&e, "out of memory");
            status = fine_cli_fail(TOOL, &e);
        } else {
            for (int i = 0; i < R.njobs; i++)
                cases[i] = R.jobs[i]->res;
            fine_eval_summarize(cases, R.njobs, o->labels, o->nlabels, s);
            if (o->csv && fine_eval_save(o->csv, o->force, fine_eval_print_csv, cases, R.njobs, s, &e) < 0)
                status = fine_cli_fail(TOOL, &e);
            else if (o->json && fine_eval_save(o->json, o->force, fine_eval_print_json, cases, R.njobs, s, &e) < 0)
                status = fine_cli_fail(TOOL, &e);
            else if (!(o->csv && strcmp(o->csv, "-") == 0) && !(o->json && strcmp(o->json, "-") == 0)) {
                fine_eval_print_table(stdout, cases, R.njobs, s, o->per_case);
                if (fflush(stdout) != 0 || ferror(stdout)) {
                    fine_err_set(&e, "stdout: %s", strerror(errno));
                    status = fine_cli_fail(TOOL, &e);
                }
            }
        }
        free(cases);
        free(s);
    }
    for (int i = 0; i < R.njobs; i++)
        job_free(R.jobs[i]);
    fine_free_strings(R.keys, R.njobs);
    free(R.jobs);
    free(c.queue);
    free(tid);
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.not_empty);
    pthread_cond_destroy(&c.not_full);
    return status;
}

int main(int argc, char **argv)
{
    fine_cli_init();
    enum { O_LABELS = 256, O_LIST, O_PER_CASE, O_CSV, O_JSON, O_PRED_NAME, O_REF_NAME, O_TOL, O_THREADS,
           O_PROGRESS, O_VERSION };
    static const struct option longopts[] = {
        {"labels", required_argument, NULL, O_LABELS},   {"list", required_argument, NULL, O_LIST},
        {"per-case", no_argument, NULL, O_PER_CASE},     {"csv", required_argument, NULL, O_CSV},
        {"json", required_argument, NULL, O_JSON},       {"pred-name", required_argument, NULL, O_PRED_NAME},
        {"ref-name", required_argument, NULL, O_REF_NAME}, {"tolerance", required_argument, NULL, O_TOL},
        {"threads", required_argument, NULL, O_THREADS}, {"force", no_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},               {"progress", no_argument, NULL, O_PROGRESS},
        {"help", no_argument, NULL, 'h'},                {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    opts o;
    memset(&o, 0, sizeof o);
    o.pred_names = "seg,label";
    o.ref_names = "label,seg";
    o.tol = 1e-2;
    for (int k = 0; k < 13; k++)
        o.labels[k] = k + 1;
    o.nlabels = 13;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":fqh", longopts, NULL)) != -1) {
        switch (c) {
        case O_LABELS: {
            fine_err e = {0};
            int n = fine_parse_labels(optarg, o.labels, FINE_METRICS_MAX_LABELS, &e);
            if (n < 0)
                return fine_cli_usage(TOOL, "--labels: %s", e.msg);
            o.nlabels = n;
            break;
        }
        case O_LIST: o.list = optarg; break;
        case O_PER_CASE: o.per_case = 1; break;
        case O_CSV: o.csv = optarg; break;
        case O_JSON: o.json = optarg; break;
        case O_PRED_NAME:
        case O_REF_NAME:
            if (!optarg[0])
                return fine_cli_usage(TOOL, "%s needs a name", c == O_PRED_NAME ? "--pred-name" : "--ref-name");
            *(c == O_PRED_NAME ? &o.pred_names : &o.ref_names) = optarg;
            break;
        case O_TOL: {
            char *end;
            errno = 0;
            o.tol = strtod(optarg, &end);
            if (end == optarg || *end || errno || !(o.tol >= 0) || !isfinite(o.tol))
                return fine_cli_usage(TOOL, "--tolerance: '%s' is not a non-negative number", optarg);
            break;
        }
        case O_THREADS: {
            int64_t t;
            if (fine_parse_i64(optarg, &t) < 0 || t < 1 || t > 1024)
                return fine_cli_usage(TOOL, "--threads: '%s' is not a thread count (1 to 1024)", optarg);
            o.threads = (int)t;
            break;
        }
        case 'f': o.force = 1; break;
        case 'q': o.quiet = 1; break;
        case O_PROGRESS: o.progress = 1; break;
        case 'h': usage(); return FINE_EXIT_OK;
        case O_VERSION: fine_cli_version(TOOL); return FINE_EXIT_OK;
        case ':': return fine_cli_usage(TOOL, "option '%s' needs an argument", argv[optind - 1]);
        default: return fine_cli_usage(TOOL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    int npos = argc - optind;
    if (o.list && npos != 0)
        return fine_cli_usage(TOOL, "--list takes no PRED REF arguments");
    if (!o.list && npos != 2)
        return fine_cli_usage(TOOL, "expected PRED and REF, got %d argument%s", npos, npos == 1 ? "" : "s");
    if (o.csv && o.json && strcmp(o.csv, "-") == 0 && strcmp(o.json, "-") == 0)
        return fine_cli_usage(TOOL, "--csv and --json cannot both be stdout");
    const char *pred = o.list ? NULL : argv[optind], *ref = o.list ? NULL : argv[optind + 1];
    if (pred && kind_of(ref) != SRC_DIR && kind_of(ref) != SRC_STREAM && kind_of(pred) == SRC_DIR)
        return fine_cli_usage(TOOL, "PRED is a folder: REF must be a folder or a stream, not one file");
    return evaluate(&o, pred, ref);
}
