/* fine-train: train a FINE model on a stream of training batches (fine-reference B 5.2-5.3). */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "dataset.h"
#include "nn/checkpoint.h"
#include "nn/fine_model.h"
#include "nn/ops.h"
#include "nn/backend.h"
#include "nn/backend_profile.h"
#include "nn/train.h"
#include "stream.h"

static const char *TOOL = "fine-train";
static volatile sig_atomic_t stop_requested; /* the signal number */

static void on_signal(int sig)
{
    stop_requested = sig;
}

static void usage(void)
{
    printf("Usage: fine-train (--preset NAME | --config FILE) [--set K=V ...] [--plan PLAN] -o DIR [options] [IN]\n"
           "       fine-train --resume CKPT -o DIR [options] [IN]\n"
           "Train on the `patch` records of IN (default '-': e.g. fine-patch --train ... | fine-train),\n"
           "each with an f32 image [C,z,y,x], a u8 `label` [z,y,x] and `pos`, --batch patches per\n"
           "iteration. Loss: Dice + CE (batch Dice, background excluded) on the full-resolution and\n"
           "the 64^3 head with the configuration's ds_weights; SGD with Nesterov momentum, weight\n"
           "decay, global gradient-norm clipping, lr poly 0.9 per epoch (fine-reference B 5.2, 5.3).\n"
           "--optimizer adamw replaces SGD by AdamW (betas 0.9, 0.999, eps 1e-8, decoupled weight\n"
           "decay; default lr 0.001): not the reference's recipe, but it learns the small organs in\n"
           "far fewer iterations (README, Training results).\n"
           "The volume-token grid comes from the plan (A2): max_imsize = the plan's, vt_map =\n"
           "max(2, max_imsize / crop); from --plan, else from a `plan` record of IN met before the\n"
           "first patch (fine-resample --plan passes it down the pipe); --set wins over both.\n"
           "--val: after each epoch, the online global Dice per class of the validation patches\n"
           "(evaluation mode, argmax of the full-resolution head, B 5.3); DIR/best.fst is written\n"
           "when its moving average (alpha 0.9) improves. DIR/latest.fst every --save-every\n"
           "epochs, DIR/final.fst at the end, all written atomically; SIGINT or SIGTERM saves\n"
           "DIR/latest.fst and stops. --resume continues exactly: it skips the batches of IN that\n"
           "the checkpoint has already seen, and keeps the options the run started with.\n\n"
           "Options:\n"
           "  --preset NAME        bcv, small or tiny (as fine-model)\n"
           "  --config FILE        key=value lines (as fine-model describe prints them)\n"
           "  --set K=V            override one configuration key (repeatable)\n"
           "  --plan PLAN          the preprocessing plan (fine-resample --plan-out)\n"
           "  --resume CKPT        continue from a checkpoint written by fine-train\n"
           "  -o, --outdir DIR     where checkpoints go (created)\n"
           "  --val STREAM         validation patches (fine-patch --train --augment none on the\n"
           "                       validation cases, a finite --count), read once into memory\n"
           "  --epochs E           default 1000\n"
           "  --iters-per-epoch N  default 250\n"
           "  --batch B            patches per iteration (default 2)\n"
           "  --optimizer O        sgd (default, the reference's) or adamw\n"
           "  --lr LR              initial learning rate (default 0.01 for sgd, 0.001 for adamw)\n"
           "  --momentum M         default 0.99 (Nesterov; sgd only)\n"
           "  --weight-decay W     default 3e-5\n"
           "  --clip C             global gradient-norm clipping (default 12)\n"
           "  --seed S             init and drop-path seed (default 12345)\n"
           "  --save-every N       epochs between latest.fst (default 50)\n"
           "  --log FILE           one JSON object per epoch (appended to on --resume)\n"
           "  --threads N          CPU threads (default: OMP_NUM_THREADS, else all cores); when N\n"
           "                       divides the batch, each thread trains B/N samples of it\n"
           "  --device D           cpu (default), cuda or cuda:N (builds with the CUDA backend)\n"
           "  --precision P        auto (default: bf16 on a GPU with bf16 tensor cores, else fp32),\n"
           "                       fp32, or on cuda tf32, bf16, fp16 (fp16 with dynamic loss scaling)\n"
           "  --recompute R        what the backward recomputes instead of keeping (memory for time,\n"
           "                       the same gradients): none, gelu, mlp, all, or auto (default:\n"
           "                       gelu on cuda, none on the CPU, more while it does not fit)\n"
           "  -q, --quiet          no progress line and no epoch lines\n"
           "  --progress           a progress line even when stderr is not a terminal\n"
           "  --profile            at the end, the time spent in each layer function of the engine\n"
           "                       (stderr; each call is waited for, so a profiled run is slower)\n"
           "  -f, --force          accepted (checkpoints in DIR are always replaced)\n"
           "  -h, --help, --version\n\n"
           "Exit status: 0 success, 1 bad input or failure, 2 usage error, 128 + the signal number\n"
           "when SIGINT or SIGTERM stopped it (latest.fst saved).\n\n"
           "Examples:\n"
           "  fine-patch --train --cases train.txt norm.fst | fine-train --preset bcv --val val.fst -o run/\n"
           "  fine-patch --train --augment none --cases val.txt --count 50 norm.fst -o val.fst\n"
           "  fine-train --resume run/latest.fst -o run/ batches.fst\n");
}

static int save(const char *dir, const char *name, fine_model *m, fine_trainer *t,
                const fine_train_opts *o, int epoch, int argc, char **argv, fine_err *e)
{
    if (fine_trainer_pull(t, m, e) < 0)
        return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fine_writer *w = fine_writer_open(path, 1, e);
    if (!w)
        return -1;
    if (fine_writer_header(w, NULL, TOOL, argc, argv, e) < 0 || fine_checkpoint_write(w, m, e) < 0 ||
        fine_trainer_write_state(w, t, m, o, epoch, e) < 0) {
        fine_writer_abort(w);
        return -1;
    }
    return fine_writer_close(w, e);
}

typedef struct resume_ctx {
    int found;
} resume_ctx;

/* The train_state record is read after the model is built, so it is kept as raw bytes first. */
static msgpack_sbuffer state_buf;
static int keep_state(const fine_record *r, void *ctx, fine_err *e)
{
    (void)e;
    resume_ctx *c = ctx;
    if (strcmp(r->type, "train_state") != 0)
        return 0;
    msgpack_packer pk;
    msgpack_sbuffer_clear(&state_buf);
    msgpack_packer_init(&pk, &state_buf, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *r->map);
    c->found = 1;
    return 0;
}

/* Copies one patch record's image, label and pos into x, labels, pos after checking them
 * against the model. 0 or -1. */
static int parse_patch(const fine_record *rec, const fine_config *c, float *x, uint8_t *labels, int64_t *pos,
                       fine_err *e)
{
    int64_t L = (int64_t)c->crop[0] * c->crop[1] * c->crop[2], vox = L * c->in_chans;
    fine_tensor img, lab;
    if (fine_record_tensor_view(rec, NULL, &img, e) < 0)
        return -1;
    int ok = img.dtype == FINE_F32 && img.ndim == 4 && img.shape[0] == c->in_chans && img.shape[1] == c->crop[0] &&
             img.shape[2] == c->crop[1] && img.shape[3] == c->crop[2];
    if (!ok) {
        fine_tensor_free(&img);
        return fine_err_set(e, "patch image is %s with another shape than the model's f32 [%d, %d, %d, %d] "
                            "(in_chans and crop)", fine_dtype_name(img.dtype), c->in_chans, c->crop[0], c->crop[1],
                            c->crop[2]);
    }
    memcpy(x, img.data, (size_t)vox * sizeof(float));
    fine_tensor_free(&img);
    if (fine_record_tensor_view(rec, "label", &lab, e) < 0)
        return -1;
    ok = lab.dtype == FINE_U8 && fine_tensor_numel(&lab) == L;
    for (int64_t i = 0; ok && i < L; i++)
        ok = ((const uint8_t *)lab.data)[i] < c->num_classes;
    if (ok)
        memcpy(labels, lab.data, (size_t)L);
    fine_tensor_free(&lab);
    if (!ok)
        return fine_err_set(e, "patch label is not u8 of the crop's size with classes below %d", c->num_classes);
    return fine_record_i64s(rec, "pos", pos, 3, e);
}

/* The training input: a reader and, after the plan scan, the first patch record already read. */
typedef struct batch_src {
    fine_reader *r;
    fine_record pending;
    int has_pending;
} batch_src;

/* Reads records up to the first patch (kept pending); a plan record met before it fills
 * *plan (once). Returns 0 or -1. */
static int scan_plan(batch_src *s, fine_plan *plan, int *have_plan, fine_err *e)
{
    fine_record rec;
    int rc;
    while ((rc = fine_reader_next(s->r, &rec, e)) == 1) {
        if (strcmp(rec.type, "patch") == 0) {
            s->pending = rec;
            s->has_pending = 1;
            return 0;
        }
        if (!*have_plan && strcmp(rec.type, "plan") == 0) {
            if (fine_plan_from_record(&rec, plan, e) < 0) {
                fine_err_prefix(e, fine_reader_name(s->r));
                return -1;
            }
            *have_plan = 1;
        }
    }
    return rc < 0 ? -1 : 0;
}

/* Reads B patches into x, labels, pos; skips *skip patches first. Returns 1, 0 at the end of
 * the input, -1. */
static int read_batch(batch_src *s, const fine_config *c, int B, float *x, uint8_t *labels, int64_t *pos,
                      int64_t *skip, fine_err *e)
{
    int64_t L = (int64_t)c->crop[0] * c->crop[1] * c->crop[2], vox = L * c->in_chans;
    fine_record rec;
    int nb = 0, rc = 1;
    while (nb < B) {
        if (s->has_pending) {
            rec = s->pending;
            s->has_pending = 0;
        } else if ((rc = fine_reader_next(s->r, &rec, e)) != 1) {
            break;
        }
        if (strcmp(rec.type, "patch") != 0)
            continue;
        if (*skip > 0) {
            (*skip)--;
            continue;
        }
        if (parse_patch(&rec, c, x + nb * vox, labels + nb * L, pos + nb * 3, e) < 0) {
            fine_err_prefix(e, fine_reader_name(s->r));
            return -1;
        }
        nb++;
    }
    if (rc < 0)
        return -1;
    return nb == B ? 1 : 0;
}

/* The validation patches, all in memory. */
typedef struct val_set {
    int64_t n;
    float *x;
    uint8_t *labels;
    int64_t *pos;
} val_set;

static void val_free(val_set *v)
{
    free(v->x);
    free(v->labels);
    free(v->pos);
    memset(v, 0, sizeof *v);
}

static int val_load(const char *path, const fine_config *c, val_set *v, fine_err *e)
{
    memset(v, 0, sizeof *v);
    int64_t L = (int64_t)c->crop[0] * c->crop[1] * c->crop[2], vox = L * c->in_chans, cap = 0;
    fine_reader *r = fine_reader_open(path, e);
    if (!r)
        return -1;
    fine_record rec;
    int rc;
    while ((rc = fine_reader_next(r, &rec, e)) == 1) {
        if (strcmp(rec.type, "patch") != 0)
            continue;
        if (v->n == cap) {
            cap = cap ? 2 * cap : 16;
            float *nx = realloc(v->x, (size_t)(cap * vox) * sizeof(float));
            if (nx)
                v->x = nx;
            uint8_t *nl = realloc(v->labels, (size_t)(cap * L));
            if (nl)
                v->labels = nl;
            int64_t *np = realloc(v->pos, (size_t)cap * 3 * sizeof(int64_t));
            if (np)
                v->pos = np;
            if (!nx || !nl || !np) {
                rc = fine_err_set(e, "out of memory for %lld validation patches", (long long)cap);
                break;
            }
        }
        if (parse_patch(&rec, c, v->x + v->n * vox, v->labels + v->n * L, v->pos + v->n * 3, e) < 0) {
            rc = -1;
            break;
        }
        v->n++;
    }
    if (rc == 0 && v->n == 0)
        rc = fine_err_set(e, "no patch records");
    if (rc < 0) {
        fine_err_prefix(e, fine_reader_name(r));
        val_free(v);
    }
    fine_reader_close(r);
    return rc < 0 ? -1 : 0;
}

/* Online evaluation of every validation patch in batches of the trainer's size (the last
 * batch is filled up with copies of its first patch, which are not counted). */
static double validate(fine_trainer *t, fine_model *m, const val_set *v, float *x, uint8_t *labels,
                       int64_t *pos, double *per_class)
{
    const fine_config *c = &m->cfg;
    int64_t L = (int64_t)c->crop[0] * c->crop[1] * c->crop[2], vox = L * c->in_chans;
    fine_dice_counts s;
    memset(&s, 0, sizeof s);
    for (int64_t i0 = 0; i0 < v->n; i0 += t->B) {
        int nb = (int)(v->n - i0 < t->B ? v->n - i0 : t->B);
        for (int b = 0; b < t->B; b++) {
            int64_t j = i0 + (b < nb ? b : 0);
            memcpy(x + b * vox, v->x + j * vox, (size_t)vox * sizeof(float));
            memcpy(labels + b * L, v->labels + j * L, (size_t)L);
            memcpy(pos + b * 3, v->pos + j * 3, 3 * sizeof(int64_t));
        }
        fine_trainer_eval(t, m, x, labels, pos, nb, &s);
    }
    return fine_dice_global(&s, c->num_classes, per_class);
}

static void json_number(FILE *f, double v)
{
    if (v == v)
        fprintf(f, "%.6g", v);
    else
        fputs("null", f);
}

typedef struct run_args {
    double t_start; /* fine_now() when this process started */
    const char *outdir, *logpath;
    int B, save_every, quiet, progress, argc;
    char **argv;
} run_args;

static int run(fine_model *m, fine_trainer *t, fine_train_opts *o, batch_src *src, const val_set *val,
               int epoch, const run_args *a, fine_err *e)
{
    const fine_config *c = &m->cfg;
    int B = a->B;
    struct stat st;
    if (mkdir(a->outdir, 0777) < 0 && !(stat(a->outdir, &st) == 0 && S_ISDIR(st.st_mode)))
        return fine_err_set(e, "%s: cannot create the output folder", a->outdir);
    FILE *log = NULL;
    if (a->logpath && !(log = fopen(a->logpath, t->iteration ? "a" : "w")))
        return fine_err_set(e, "%s: cannot open the log", a->logpath);
    int64_t L = (int64_t)c->crop[0] * c->crop[1] * c->crop[2];
    float *x = aligned_alloc(64, (size_t)(L * c->in_chans * B) * sizeof(float));
    uint8_t *labels = malloc((size_t)(L * B));
    int64_t *pos = calloc((size_t)B * 3, sizeof(int64_t));
    double *per_class = calloc((size_t)c->num_classes, sizeof(double));
    int rc = x && labels && pos && per_class ? 0 : fine_err_set(e, "out of memory");
    int64_t skip = t->iteration * B, total = (int64_t)o->epochs * o->iters_per_epoch;
    fine_progress prog;
    fine_progress_init(&prog, TOOL, a->quiet, a->progress);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double loss_sum = 0, t0 = fine_now(), t_epoch = t0, last_dice = NAN;
    int64_t start = t->iteration, n = 0;
    if (!a->quiet) {
        double mb = (double)m->nfloats * sizeof(float) / 1e6;
        fprintf(stderr, "%s: %s, precision %s%s, %zu parameters, %s lr %g, %lld iterations to go%s\n", TOOL,
                t->be->name, t->be->precision(t->be->ctx), t->loss_scale > 0 ? " (loss scaling)" : "",
                fine_model_live_params(m), fine_optimizer_name(o->optimizer), o->lr,
                (long long)(total - t->iteration), val ? "" : " (no --val: no best.fst)");
        /* one flat buffer each (fine_trainer), the activations planned once */
        size_t act = 0;
        for (int s = 0; s < t->shards; s++)
            act += fine_net_bytes(t->part[s]);
        fprintf(stderr, "%s: memory: parameters %.1f MB, gradients %.1f MB, %s %.1f MB, activations %.1f MB "
                        "(recompute %s)\n",
                TOOL, mb, mb * t->shards, t->moment2 ? "first and second moments" : "momentum",
                t->moment2 ? 2 * mb : mb, (double)act / 1e6, fine_recompute_name(fine_net_recompute(t->net)));
        if (t->shards > 1)
            fprintf(stderr, "%s: the batch of %d runs as %d shards of %d, one per thread\n", TOOL, t->B, t->shards,
                    t->B / t->shards);
    }
    while (rc == 0 && t->iteration < total && !stop_requested) {
        int got = read_batch(src, c, B, x, labels, pos, &skip, e);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got == 0) {
            rc = fine_err_set(e, "%s: the input ended after %lld iterations (%lld planned)", fine_reader_name(src->r),
                              (long long)t->iteration, (long long)total);
            break;
        }
        epoch = (int)(t->iteration / o->iters_per_epoch);
        double lr = fine_poly_lr(o->lr, epoch, o->epochs), gnorm;
        double loss = fine_train_step(t, m, o, x, labels, pos, lr, &gnorm);
        if (fine_trainer_check(t, e) < 0) {
            rc = -1;
            break;
        }
        loss_sum += loss;
        n++;
        char what[160];
        double rate = (double)(t->iteration - start) / (fine_now() - t0);
        snprintf(what, sizeof what, "iteration %lld  epoch %d  loss %.4f  Dice %.3f  lr %.5f  %.2f it/s",
                 (long long)t->iteration, epoch, loss, last_dice, lr, rate);
        fine_progress_update(&prog, t->iteration - start, total - start, what);
        if (t->iteration % o->iters_per_epoch != 0)
            continue;
        int done = (int)(t->iteration / o->iters_per_epoch);
        double dice = fine_trainer_dice(t, c->num_classes, 1), vdice = NAN;
        last_dice = val ? NAN : dice;
        int best = 0;
        if (val) {
            vdice = validate(t, m, val, x, labels, pos, per_class);
            best = fine_trainer_val_update(t, vdice);
            last_dice = vdice;
        }
        double now = fine_now();
        if (log) {
            fprintf(log, "{\"epoch\": %d, \"iteration\": %lld, \"loss\": ", done, (long long)t->iteration);
            json_number(log, loss_sum / n);
            fputs(", \"train_dice\": ", log);
            json_number(log, dice);
            fprintf(log, ", \"lr\": %.6g, \"grad_norm\": ", lr);
            json_number(log, gnorm);
            if (t->loss_scale > 0)
                fprintf(log, ", \"loss_scale\": %.6g, \"skipped_steps\": %lld", t->loss_scale, (long long)t->skipped);
            if (val) {
                fputs(", \"val_dice\": ", log);
                json_number(log, vdice);
                fputs(", \"val_dice_ema\": ", log);
                json_number(log, t->val_ema);
                fputs(", \"val_dice_per_class\": [", log);
                for (int k = 1; k < c->num_classes; k++) {
                    json_number(log, per_class[k - 1]);
                    fputs(k + 1 < c->num_classes ? ", " : "", log);
                }
                fprintf(log, "], \"best\": %s", best ? "true" : "false");
            }
            fprintf(log, ", \"seconds\": %.3f, \"elapsed\": %.3f}\n", now - t_epoch, now - a->t_start);
            fflush(log);
        }
        if (!a->quiet) {
            fine_progress_done(&prog);
            fprintf(stderr, "%s: epoch %d/%d  loss %.4f  train Dice %.4f", TOOL, done, o->epochs, loss_sum / n, dice);
            if (val)
                fprintf(stderr, "  val Dice %.4f (average %.4f%s)", vdice, t->val_ema, best ? ", best" : "");
            fprintf(stderr, "  lr %.5f  %.1f s\n", lr, now - t_epoch);
        }
        loss_sum = 0;
        n = 0;
        t_epoch = now;
        if (best)
            rc = save(a->outdir, "best.fst", m, t, o, done, a->argc, a->argv, e);
        if (rc == 0 && done % a->save_every == 0 && done < o->epochs)
            rc = save(a->outdir, "latest.fst", m, t, o, done, a->argc, a->argv, e);
    }
    fine_progress_done(&prog);
    if (rc == 0) {
        epoch = (int)(t->iteration / o->iters_per_epoch);
        if (stop_requested) {
            rc = save(a->outdir, "latest.fst", m, t, o, epoch, a->argc, a->argv, e);
            if (rc == 0)
                fprintf(stderr, "%s: stopped at iteration %lld; resume with --resume %s/latest.fst\n", TOOL,
                        (long long)t->iteration, a->outdir);
        } else {
            rc = save(a->outdir, "final.fst", m, t, o, epoch, a->argc, a->argv, e);
        }
    }
    if (log)
        fclose(log);
    free(x);
    free(labels);
    free(pos);
    free(per_class);
    return rc;
}

/* A2: the volume-token grid of a new model from the plan. */
static void apply_plan(fine_config *c, const fine_plan *p)
{
    for (int d = 0; d < 3; d++) {
        c->max_imsize[d] = (int)p->max_imsize[d];
        int v = (int)(p->max_imsize[d] / c->crop[d]);
        c->vt_map[d] = v > 2 ? v : 2;
    }
}

/* Builds a new model: preset or config file, then the plan, then every --set. */
static int build_model(fine_model *m, const char *preset, const char *config, const fine_plan *plan, char **sets,
                       int nsets, uint64_t seed, fine_err *e)
{
    fine_config c;
    if (preset && fine_config_preset(&c, preset) < 0)
        return fine_err_set(e, "unknown preset '%s'", preset);
    if (config && fine_config_read(config, &c, e) < 0)
        return -1;
    if (plan)
        apply_plan(&c, plan);
    for (int i = 0; i < nsets; i++)
        if (fine_config_set(&c, sets[i], e) < 0)
            return -1;
    if (fine_model_build(m, &c, e) < 0)
        return -1;
    fine_model_init(m, seed);
    return 0;
}

int main(int argc, char **argv)
{
    fine_cli_omp_passive(argv);
    fine_cli_init();
    const char *preset = NULL, *config = NULL, *planpath = NULL, *resume = NULL, *valpath = NULL;
    const char *device = "cpu", *precision = "auto";
    char *sets[64];
    int nsets = 0, threads = 0, lr_given = 0, recompute = -1, profile = 0;
    run_args a = {.t_start = fine_now(), .B = 2, .save_every = 50, .argc = argc, .argv = argv};
    fine_train_opts o;
    fine_train_opts_init(&o);
    static const struct option opts[] = {
        {"preset", required_argument, 0, 'p'}, {"config", required_argument, 0, 'c'},
        {"plan", required_argument, 0, 'n'},   {"val", required_argument, 0, 'w'},
        {"set", required_argument, 0, 's'},    {"resume", required_argument, 0, 'r'},
        {"outdir", required_argument, 0, 'o'}, {"epochs", required_argument, 0, 'E'},
        {"iters-per-epoch", required_argument, 0, 'I'}, {"batch", required_argument, 0, 'b'},
        {"lr", required_argument, 0, 'l'},     {"momentum", required_argument, 0, 'M'},
        {"weight-decay", required_argument, 0, 'W'}, {"clip", required_argument, 0, 'C'},
        {"seed", required_argument, 0, 'S'},   {"save-every", required_argument, 0, 'v'},
        {"log", required_argument, 0, 'L'},    {"threads", required_argument, 0, 't'},
        {"device", required_argument, 0, 'D'}, {"precision", required_argument, 0, 'R'},
        {"optimizer", required_argument, 0, 'O'}, {"recompute", required_argument, 0, 'K'},
        {"quiet", no_argument, 0, 'q'},        {"progress", no_argument, 0, 'P'},
        {"profile", no_argument, 0, 'Z'},
        {"force", no_argument, 0, 'f'},        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},      {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "o:fqh", opts, NULL)) != -1) {
        int64_t v;
        double d[1];
        switch (ch) {
        case 'p': preset = optarg; break;
        case 'c': config = optarg; break;
        case 'n': planpath = optarg; break;
        case 'w': valpath = optarg; break;
        case 's':
            if (nsets == 64)
                return fine_cli_usage(TOOL, "too many --set");
            sets[nsets++] = optarg;
            break;
        case 'r': resume = optarg; break;
        case 'O':
            o.optimizer = fine_optimizer_parse(optarg);
            if (o.optimizer < 0)
                return fine_cli_usage(TOOL, "--optimizer must be sgd or adamw, not '%s'", optarg);
            break;
        case 'o': a.outdir = optarg; break;
        case 'Z': profile = 1; break;
        case 'L': a.logpath = optarg; break;
        case 'D':
            if (strcmp(optarg, "cpu") != 0 && strcmp(optarg, "cuda") != 0 && strncmp(optarg, "cuda:", 5) != 0)
                return fine_cli_usage(TOOL, "--device must be cpu or cuda[:N], not '%s'", optarg);
            device = optarg;
            break;
        case 'R':
            if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "fp32") != 0 && strcmp(optarg, "tf32") != 0 &&
                strcmp(optarg, "bf16") != 0 && strcmp(optarg, "fp16") != 0)
                return fine_cli_usage(TOOL, "--precision must be auto, fp32, tf32, bf16 or fp16, not '%s'", optarg);
            precision = optarg;
            break;
        case 'K':
            recompute = strcmp(optarg, "auto") == 0 ? -1 : fine_recompute_parse(optarg);
            if (recompute < 0 && strcmp(optarg, "auto") != 0)
                return fine_cli_usage(TOOL, "--recompute must be auto, none, gelu, mlp or all, not '%s'", optarg);
            break;
        case 'E':
        case 'I':
        case 'b':
        case 'v':
        case 't':
        case 'S':
            if (fine_parse_i64(optarg, &v) < 0 || (ch != 't' && ch != 'S' && v < 1) || v < 0 ||
                (ch != 'S' && v > 100000000))
                return fine_cli_usage(TOOL, "--%s: expected a positive integer, got '%s'",
                                      ch == 'E' ? "epochs" : ch == 'I' ? "iters-per-epoch" : ch == 'b' ? "batch"
                                      : ch == 'v' ? "save-every" : ch == 't' ? "threads" : "seed", optarg);
            if (ch == 'E')
                o.epochs = (int)v;
            else if (ch == 'I')
                o.iters_per_epoch = (int)v;
            else if (ch == 'b')
                a.B = (int)v;
            else if (ch == 'v')
                a.save_every = (int)v;
            else if (ch == 't')
                threads = (int)v;
            else
                o.seed = (uint64_t)v;
            break;
        case 'l':
        case 'M':
        case 'W':
        case 'C':
            if (fine_parse_f64s(optarg, d, 1, 0) < 0 || d[0] < 0)
                return fine_cli_usage(TOOL, "expected a non-negative number, got '%s'", optarg);
            if (ch == 'l')
                o.lr = d[0], lr_given = 1;
            else if (ch == 'M')
                o.momentum = d[0];
            else if (ch == 'W')
                o.weight_decay = d[0];
            else
                o.clip = d[0];
            break;
        case 'q': a.quiet = 1; break;
        case 'P': a.progress = 1; break;
        case 'f': break;
        case 'h': usage(); return 0;
        case 'V': fine_cli_version(TOOL); return 0;
        default: return fine_cli_usage(TOOL, "unknown option");
        }
    }
    if (!a.outdir)
        return fine_cli_usage(TOOL, "-o DIR is required (checkpoints go there)");
    if (!!preset + !!config + !!resume != 1)
        return fine_cli_usage(TOOL, "give one of --preset, --config or --resume");
    if (resume && (nsets || planpath))
        return fine_cli_usage(TOOL, "--set and --plan apply to a new model, not to --resume");
    if (o.optimizer == FINE_OPT_ADAMW && !lr_given)
        o.lr = 0.001;
    if (preset) {
        fine_config tmp;
        if (fine_config_preset(&tmp, preset) < 0)
            return fine_cli_usage(TOOL, "unknown preset '%s' (bcv, small, tiny)", preset);
    }
    if (optind < argc - 1)
        return fine_cli_usage(TOOL, "expected at most one input");
    const char *in = optind < argc ? argv[optind] : "-";
    fine_nn_set_threads(threads);
    fine_err e = {0};
    fine_model m;
    fine_trainer t;
    int epoch = 0;
    resume_ctx rc_ctx = {0};
    batch_src src = {0};
    val_set val = {0};
    fine_plan plan = {0};
    int have_plan = 0;
    msgpack_sbuffer_init(&state_buf);
    if (planpath) {
        if (fine_plan_read(planpath, &plan, &e) < 0)
            return fine_cli_fail(TOOL, &e);
        have_plan = 1;
    }
    if (!(src.r = fine_reader_open(in, &e))) {
        fine_plan_free(&plan);
        return fine_cli_fail(TOOL, &e);
    }
    int rc = 0;
    if (resume) {
        if (fine_checkpoint_load(resume, &m, keep_state, &rc_ctx, &e) < 0)
            goto fail_early;
        if (!rc_ctx.found) {
            fine_model_free(&m);
            fine_err_set(&e, "%s: no train_state record (a model from fine-model init? use --preset)", resume);
            goto fail_early;
        }
    } else {
        if (scan_plan(&src, &plan, &have_plan, &e) < 0 ||
            build_model(&m, preset, config, have_plan ? &plan : NULL, sets, nsets, o.seed, &e) < 0)
            goto fail_early;
    }
    if (valpath && val_load(valpath, &m.cfg, &val, &e) < 0) {
        fine_model_free(&m);
        goto fail_early;
    }
    fine_backend *be = fine_backend_open(device, &e);
    if (!be || be->set_precision(be->ctx, precision, &e) < 0) {
        fine_backend_close(be);
        fine_model_free(&m);
        goto fail_early;
    }
    if (profile) {
        fine_backend *p = fine_backend_profile_open(be, &e);
        if (!p) {
            fine_backend_close(be);
            fine_model_free(&m);
            goto fail_early;
        }
        be = p;
    }
    if (fine_trainer_init_ex(&t, be, &m, a.B, recompute, &e) < 0) {
        fine_model_free(&m);
        fine_backend_close(be);
        goto fail_early;
    }
    if (!resume && fine_trainer_set_optimizer(&t, &m, o.optimizer, &e) < 0) {
        fine_trainer_free(&t);
        fine_model_free(&m);
        fine_backend_close(be);
        goto fail_early;
    }
    /* fp16 products lose small gradients below 6e-8: scale the loss (bf16 has fp32's range) */
    if (strcmp(be->precision(be->ctx), "fp16") == 0)
        fine_trainer_set_loss_scaling(&t, 1);
    if (resume) {
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        int ok = msgpack_unpack_next(&up, state_buf.data, state_buf.size, NULL) == MSGPACK_UNPACK_SUCCESS;
        fine_record r = {.map = &up.data, .type = "train_state"};
        if (!ok || fine_trainer_read_state(&r, &t, &m, &o, &epoch, &e) < 0) {
            fine_err_prefix(&e, resume);
            msgpack_unpacked_destroy(&up);
            fine_trainer_free(&t);
            fine_model_free(&m);
            fine_backend_close(be);
            goto fail_early;
        }
        msgpack_unpacked_destroy(&up);
    }
    if (fine_trainer_push(&t, &m, &e) < 0) {
        fine_trainer_free(&t);
        fine_model_free(&m);
        fine_backend_close(be);
        goto fail_early;
    }
    msgpack_sbuffer_destroy(&state_buf);
    rc = run(&m, &t, &o, &src, valpath ? &val : NULL, epoch, &a, &e);
    fine_trainer_free(&t);
    if (rc == 0 && profile)
        fine_profile_print(be, stderr, TOOL);
    fine_backend_close(be);
    fine_model_free(&m);
    val_free(&val);
    fine_plan_free(&plan);
    fine_reader_close(src.r);
    if (rc < 0)
        return fine_cli_fail(TOOL, &e);
    /* stopped by a signal: latest.fst is saved but the run is not finished (make must see it) */
    return stop_requested ? 128 + stop_requested : 0;
fail_early:
    msgpack_sbuffer_destroy(&state_buf);
    val_free(&val);
    fine_plan_free(&plan);
    fine_reader_close(src.r);
    return fine_cli_fail(TOOL, &e);
}
