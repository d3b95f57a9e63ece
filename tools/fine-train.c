/* fine-train: train a FINE model on a stream of training batches (fine-reference B 5.2-5.3). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "nn/checkpoint.h"
#include "nn/fine_model.h"
#include "nn/ops.h"
#include "nn/train.h"
#include "stream.h"

static const char *TOOL = "fine-train";
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(void)
{
    printf("Usage: fine-train (--preset NAME [--set K=V ...] | --resume CKPT) [options] -o DIR [IN]\n"
           "Train on the `patch` records of IN (default '-': e.g. fine-patch --train ... | fine-train),\n"
           "each with an f32 image [C,z,y,x], a u8 `label` [z,y,x] and `pos`, --batch patches per\n"
           "iteration. Loss: Dice + CE (batch Dice, background excluded) on the full-resolution and\n"
           "the 64^3 head with the configuration's ds_weights; SGD with Nesterov momentum, weight\n"
           "decay, global gradient-norm clipping, lr poly 0.9 per epoch (fine-reference B 5.2, 5.3).\n"
           "Writes DIR/latest.fst every --save-every epochs and DIR/final.fst at the end (atomically);\n"
           "SIGINT or SIGTERM saves DIR/latest.fst and stops. --resume continues exactly: it skips\n"
           "the batches of IN that the checkpoint has already seen.\n\n"
           "Options:\n"
           "  --preset NAME, --set K=V   the model (as fine-model; --set overrides one key)\n"
           "  --resume CKPT        continue from a checkpoint written by fine-train\n"
           "  -o, --outdir DIR     where checkpoints go (created)\n"
           "  --epochs E           default 1000\n"
           "  --iters-per-epoch N  default 250\n"
           "  --batch B            patches per iteration (default 2)\n"
           "  --lr LR              initial learning rate (default 0.01)\n"
           "  --momentum M         default 0.99 (Nesterov)\n"
           "  --weight-decay W     default 3e-5\n"
           "  --clip C             global gradient-norm clipping (default 12)\n"
           "  --seed S             init and drop-path seed (default 12345)\n"
           "  --save-every N       epochs between latest.fst (default 50)\n"
           "  --log FILE           one JSON object per epoch\n"
           "  --threads N, --quiet, --progress, -f/--force, -h/--help, --version\n\n"
           "Example:\n"
           "  fine-patch --train --cases train.txt norm.fst | fine-train --preset bcv -o run/\n");
}

static int save(const char *dir, const char *name, const fine_model *m, const fine_trainer *t,
                const fine_train_opts *o, int epoch, int argc, char **argv, fine_err *e)
{
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

/* Reads B patches (image, label, pos) into x, labels, pos; skips *skip patches first.
 * Returns 1, 0 at the end of the input, -1. */
static int read_batch(fine_reader *r, const fine_config *c, int B, float *x, uint8_t *labels, int64_t *pos,
                      int64_t *skip, fine_err *e)
{
    int64_t L = (int64_t)c->crop[0] * c->crop[1] * c->crop[2], vox = L * c->in_chans;
    fine_record rec;
    int nb = 0, rc = 0;
    while (nb < B && (rc = fine_reader_next(r, &rec, e)) == 1) {
        if (strcmp(rec.type, "patch") != 0)
            continue;
        if (*skip > 0) {
            (*skip)--;
            continue;
        }
        fine_tensor img, lab;
        if (fine_record_tensor_view(&rec, NULL, &img, e) < 0)
            goto bad;
        int ok = img.dtype == FINE_F32 && img.ndim == 4 && img.shape[0] == c->in_chans &&
                 img.shape[1] == c->crop[0] && img.shape[2] == c->crop[1] && img.shape[3] == c->crop[2];
        if (!ok) {
            fine_tensor_free(&img);
            fine_err_set(e, "patch image is %s with another shape than the model's f32 [%d, %d, %d, %d] "
                         "(in_chans and crop)", fine_dtype_name(img.dtype), c->in_chans, c->crop[0], c->crop[1],
                         c->crop[2]);
            goto bad;
        }
        memcpy(x + nb * vox, img.data, (size_t)vox * sizeof(float));
        fine_tensor_free(&img);
        if (fine_record_tensor_view(&rec, "label", &lab, e) < 0)
            goto bad;
        ok = lab.dtype == FINE_U8 && fine_tensor_numel(&lab) == L;
        for (int64_t i = 0; ok && i < L; i++)
            ok = ((const uint8_t *)lab.data)[i] < c->num_classes;
        if (ok)
            memcpy(labels + nb * L, lab.data, (size_t)L);
        fine_tensor_free(&lab);
        if (!ok) {
            fine_err_set(e, "patch label is not u8 of the crop's size with classes below %d", c->num_classes);
            goto bad;
        }
        if (fine_record_i64s(&rec, "pos", pos + nb * 3, 3, e) < 0)
            goto bad;
        nb++;
    }
    if (rc < 0)
        return -1;
    return nb == B ? 1 : 0;
bad:
    fine_err_prefix(e, fine_reader_name(r));
    return -1;
}

static int run(fine_model *m, fine_trainer *t, fine_train_opts *o, const char *in, const char *outdir,
               const char *logpath, int B, int epoch, int save_every, int quiet, int progress, int argc,
               char **argv, fine_err *e)
{
    const fine_config *c = &m->cfg;
    struct stat st;
    if (mkdir(outdir, 0777) < 0 && !(stat(outdir, &st) == 0 && S_ISDIR(st.st_mode)))
        return fine_err_set(e, "%s: cannot create the output folder", outdir);
    fine_reader *r = fine_reader_open(in, e);
    if (!r)
        return -1;
    FILE *log = NULL;
    if (logpath && !(log = fopen(logpath, t->iteration ? "a" : "w"))) {
        fine_reader_close(r);
        return fine_err_set(e, "%s: cannot open the log", logpath);
    }
    int64_t L = (int64_t)c->crop[0] * c->crop[1] * c->crop[2];
    float *x = aligned_alloc(64, (size_t)(L * c->in_chans * B) * sizeof(float));
    uint8_t *labels = malloc((size_t)(L * B));
    int64_t *pos = calloc((size_t)B * 3, sizeof(int64_t));
    int rc = x && labels && pos ? 0 : fine_err_set(e, "out of memory");
    int64_t skip = t->iteration * B, total = (int64_t)o->epochs * o->iters_per_epoch;
    fine_progress prog;
    fine_progress_init(&prog, TOOL, quiet, progress);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double loss_sum = 0, t0 = fine_now(), t_epoch = t0;
    int64_t start = t->iteration, n = 0;
    if (!quiet)
        fprintf(stderr, "%s: %zu parameters, activations %.2f GB, %lld iterations to go\n", TOOL,
                fine_model_live_params(m), (double)fine_net_bytes(t->net) / 1e9, (long long)(total - t->iteration));
    while (rc == 0 && t->iteration < total && !stop_requested) {
        int got = read_batch(r, c, B, x, labels, pos, &skip, e);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got == 0) {
            rc = fine_err_set(e, "%s: the input ended after %lld iterations (%lld planned)", fine_reader_name(r),
                              (long long)t->iteration, (long long)total);
            break;
        }
        epoch = (int)(t->iteration / o->iters_per_epoch);
        double lr = fine_poly_lr(o->lr, epoch, o->epochs), gnorm;
        double loss = fine_train_step(t, m, o, x, labels, pos, lr, &gnorm);
        loss_sum += loss;
        n++;
        char what[160];
        double rate = (double)(t->iteration - start) / (fine_now() - t0);
        snprintf(what, sizeof what, "epoch %d  loss %.4f  lr %.5f  %.2f it/s", epoch, loss, lr, rate);
        fine_progress_update(&prog, t->iteration, total, what);
        if (t->iteration % o->iters_per_epoch == 0) {
            int done = (int)(t->iteration / o->iters_per_epoch);
            double dice = fine_trainer_dice(t, c->num_classes, 1), now = fine_now();
            if (log) {
                fprintf(log, "{\"epoch\": %d, \"iteration\": %lld, \"loss\": %.6g, \"train_dice\": %.6g, \"lr\": %.6g, "
                        "\"grad_norm\": %.6g, \"seconds\": %.3f}\n", done, (long long)t->iteration, loss_sum / n,
                        dice == dice ? dice : -1.0, lr, gnorm, now - t_epoch);
                fflush(log);
            }
            loss_sum = 0;
            n = 0;
            t_epoch = now;
            if (done % save_every == 0 && done < o->epochs)
                rc = save(outdir, "latest.fst", m, t, o, done, argc, argv, e);
        }
    }
    fine_progress_done(&prog);
    if (rc == 0) {
        epoch = (int)(t->iteration / o->iters_per_epoch);
        if (stop_requested) {
            rc = save(outdir, "latest.fst", m, t, o, epoch, argc, argv, e);
            if (rc == 0)
                fprintf(stderr, "%s: stopped at iteration %lld; resume with --resume %s/latest.fst\n", TOOL,
                        (long long)t->iteration, outdir);
        } else {
            rc = save(outdir, "final.fst", m, t, o, epoch, argc, argv, e);
        }
    }
    if (log)
        fclose(log);
    free(x);
    free(labels);
    free(pos);
    fine_reader_close(r);
    return rc;
}

int main(int argc, char **argv)
{
    fine_cli_init();
    const char *preset = NULL, *resume = NULL, *outdir = NULL, *logpath = NULL;
    char *sets[64];
    int nsets = 0, B = 2, threads = 0, quiet = 0, progress = 0, save_every = 50;
    fine_train_opts o;
    fine_train_opts_init(&o);
    static const struct option opts[] = {
        {"preset", required_argument, 0, 'p'},
        {"set", required_argument, 0, 's'},    {"resume", required_argument, 0, 'r'},
        {"outdir", required_argument, 0, 'o'}, {"epochs", required_argument, 0, 'E'},
        {"iters-per-epoch", required_argument, 0, 'I'}, {"batch", required_argument, 0, 'b'},
        {"lr", required_argument, 0, 'l'},     {"momentum", required_argument, 0, 'M'},
        {"weight-decay", required_argument, 0, 'W'}, {"clip", required_argument, 0, 'C'},
        {"seed", required_argument, 0, 'S'},   {"save-every", required_argument, 0, 'v'},
        {"log", required_argument, 0, 'L'},    {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},        {"progress", no_argument, 0, 'P'},
        {"force", no_argument, 0, 'f'},        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},      {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
        int64_t v;
        double d[1];
        switch (ch) {
        case 'p': preset = optarg; break;
        case 's':
            if (nsets == 64)
                return fine_cli_usage(TOOL, "too many --set");
            sets[nsets++] = optarg;
            break;
        case 'r': resume = optarg; break;
        case 'o': outdir = optarg; break;
        case 'L': logpath = optarg; break;
        case 'E':
        case 'I':
        case 'b':
        case 'v':
        case 't':
        case 'S':
            if (fine_parse_i64(optarg, &v) < 0 || (ch != 't' && ch != 'S' && v < 1) || (ch != 'S' && v > 100000000))
                return fine_cli_usage(TOOL, "--%s: expected a positive integer, got '%s'",
                                      ch == 'E' ? "epochs" : ch == 'I' ? "iters-per-epoch" : ch == 'b' ? "batch"
                                      : ch == 'v' ? "save-every" : ch == 't' ? "threads" : "seed", optarg);
            if (ch == 'E')
                o.epochs = (int)v;
            else if (ch == 'I')
                o.iters_per_epoch = (int)v;
            else if (ch == 'b')
                B = (int)v;
            else if (ch == 'v')
                save_every = (int)v;
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
                o.lr = d[0];
            else if (ch == 'M')
                o.momentum = d[0];
            else if (ch == 'W')
                o.weight_decay = d[0];
            else
                o.clip = d[0];
            break;
        case 'q': quiet = 1; break;
        case 'P': progress = 1; break;
        case 'f': break;
        case 'h': usage(); return 0;
        case 'V': fine_cli_version(TOOL); return 0;
        default: return fine_cli_usage(TOOL, "unknown option");
        }
    }
    if (!outdir)
        return fine_cli_usage(TOOL, "-o DIR is required (checkpoints go there)");
    if (!!preset + !!resume != 1)
        return fine_cli_usage(TOOL, "give one of --preset or --resume");
    if (resume && nsets)
        return fine_cli_usage(TOOL, "--set applies to a new model, not to --resume");
    if (optind < argc - 1)
        return fine_cli_usage(TOOL, "expected at most one input");
    const char *in = optind < argc ? argv[optind] : "-";
    fine_nn_set_threads(threads);
    fine_err e = {0};
    fine_model m;
    fine_trainer t;
    int epoch = 0;
    resume_ctx rc_ctx = {0};
    msgpack_sbuffer_init(&state_buf);
    if (resume) {
        if (fine_checkpoint_load(resume, &m, keep_state, &rc_ctx, &e) < 0)
            return fine_cli_fail(TOOL, &e);
        if (!rc_ctx.found) {
            fine_model_free(&m);
            fine_err_set(&e, "%s: no train_state record (a model from fine-model init? use --preset)", resume);
            return fine_cli_fail(TOOL, &e);
        }
    } else {
        fine_config c;
        if (preset && fine_config_preset(&c, preset) < 0)
            return fine_cli_usage(TOOL, "unknown preset '%s'", preset);
        for (int i = 0; i < nsets; i++)
            if (fine_config_set(&c, sets[i], &e) < 0)
                return fine_cli_usage(TOOL, "%s", e.msg);
        if (fine_model_build(&m, &c, &e) < 0)
            return fine_cli_fail(TOOL, &e);
        fine_model_init(&m, o.seed);
    }
    if (fine_trainer_init(&t, &m, B, &e) < 0) {
        fine_model_free(&m);
        return fine_cli_fail(TOOL, &e);
    }
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
            return fine_cli_fail(TOOL, &e);
        }
        msgpack_unpacked_destroy(&up);
    }
    msgpack_sbuffer_destroy(&state_buf);
    int rc = run(&m, &t, &o, in, outdir, logpath, B, epoch, save_every, quiet, progress, argc, argv, &e);
    fine_trainer_free(&t);
    fine_model_free(&m);
    return rc < 0 ? fine_cli_fail(TOOL, &e) : 0;
}
