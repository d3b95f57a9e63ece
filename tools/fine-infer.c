/* fine-infer: patch records -> `pred` records of class probabilities from a FINE model
 * (fine-reference B 5.6, A4, A10); the sliding window and Gaussian weighting are fine-stitch's. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "infer.h"
#include "nn/backend.h"
#include "nn/backend_profile.h"
#include "nn/checkpoint.h"
#include "nn/fine_model.h"
#include "nn/ops.h"
#include "stream.h"

static const char *TOOL = "fine-infer";

static void usage(void)
{
    printf("Usage: fine-infer --model CKPT [options] [IN [OUT]]\n\n"
           "Run a FINE model on each `patch` record (image [C, z, y, x] f32 of the model's crop,\n"
           "with its `pos`) and write one `pred` record per patch, in input order: name `prob`,\n"
           "the softmax over the classes of the full-resolution head's logits, [K, z, y, x],\n"
           "with `case`, `origin`, `pos`, `volume_size` and `index` copied from the patch.\n"
           "The model runs in evaluation mode (no drop path), --batch patches per pass; a short\n"
           "last batch is padded and only its real patches are written. --tta averages the\n"
           "softmax of 8 passes that mirror the patch over every subset of the axes (z, y, x),\n"
           "each mirrored back, weight 1/8, all with the patch's unmirrored pos (nnU-Net v1\n"
           "validation, fine-reference B 5.6). Every other record (case_begin, case_end, ...)\n"
           "passes through unchanged and in order. IN and OUT default to - (stdin, stdout).\n\n"
           "Options:\n"
           "  --model CKPT       the checkpoint (fine-model init, fine-train)\n"
           "  --batch N          patches per forward pass, 1..64 (default 1)\n"
           "  --tta              mirroring test-time augmentation (8 passes per patch)\n"
           "  --dtype f16|f32    probability dtype (default f16, as nnU-Net's npz)\n"
           "  --device D         cpu (default), cuda or cuda:N (builds with the CUDA backend)\n"
           "  --precision P      auto (default: bf16 on a GPU with bf16 tensor cores, else fp32),\n"
           "                     fp32, or on cuda tf32, bf16, fp16\n"
           "  --threads N        threads (default: OMP_NUM_THREADS, else all cores)\n"
           "  -f, --force        overwrite OUT\n"
           "  -q, --quiet        no progress line\n"
           "      --progress     progress line (patches/s) even when stderr is not a terminal\n"
           "      --profile      at the end, the time spent in each layer function of the engine\n"
           "                     (stderr; each call is waited for, so a profiled run is slower)\n"
           "  -h, --help, --version\n\n"
           "Examples:\n"
           "  fine-patch --grid --patch 32,64,64 case.fst | fine-infer --model tiny.fst --tta \\\n"
           "      | fine-stitch -o seg.nii.gz\n"
           "  fine-infer --model best.fst --batch 2 patches.fst preds.fst\n");
}

typedef struct options {
    const char *model, *in, *out, *device, *precision;
    int batch, tta, force, quiet, progress, threads, profile;
    fine_dtype dtype;
} options;

/* What a pred record copies from its patch (the patch record is gone when the batch runs). */
typedef struct slot {
    char case_id[256];
    int64_t pos[3], origin[3], vs[3], index;
    int has_case, has_origin, has_vs, has_index;
} slot;

typedef struct state {
    const options *o;
    fine_model *m;
    fine_infer *inf;
    fine_reader *r;
    fine_writer *w;
    slot *slots;
    uint16_t *half; /* one patch's probabilities in f16 */
    int nb;         /* patches waiting in the batch */
    int64_t done, seen;
    fine_progress pg;
} state;

static int opt_i64s(const fine_record *rec, const char *key, int64_t *out, int n, int *has, fine_err *e)
{
    *has = 0;
    if (!fine_record_get(rec, key))
        return 0;
    if (fine_record_i64s(rec, key, out, n, e) < 0)
        return -1;
    *has = 1;
    return 0;
}

/* Takes a patch record into the next slot of the batch. */
static int take_patch(state *s, const fine_record *rec, fine_err *e)
{
    const fine_config *c = &s->m->cfg;
    slot *sl = &s->slots[s->nb];
    memset(sl, 0, sizeof *sl);
    sl->has_case = fine_record_get(rec, "case") != NULL;
    if (sl->has_case && fine_record_str(rec, "case", sl->case_id, sizeof sl->case_id, e) < 0)
        return -1;
    char what[320];
    snprintf(what, sizeof what, "patch %lld%s%s", (long long)s->seen, sl->has_case ? " of case " : "",
             sl->has_case ? sl->case_id : "");
    if (fine_record_i64s(rec, "pos", sl->pos, 3, e) < 0 ||
        opt_i64s(rec, "origin", sl->origin, 3, &sl->has_origin, e) < 0 ||
        opt_i64s(rec, "volume_size", sl->vs, 3, &sl->has_vs, e) < 0 ||
        ((sl->has_index = fine_record_get(rec, "index") != NULL) && fine_record_i64(rec, "index", &sl->index, e) < 0)) {
        fine_err_prefix(e, what);
        return -1;
    }
    fine_tensor t;
    if (fine_record_tensor_view(rec, NULL, &t, e) < 0) {
        fine_err_prefix(e, what);
        return -1;
    }
    int ok = t.dtype == FINE_F32 && t.ndim == 4 && t.shape[0] == c->in_chans && t.shape[1] == c->crop[0] &&
             t.shape[2] == c->crop[1] && t.shape[3] == c->crop[2];
    if (!ok) {
        char shape[128] = "";
        int len = 0;
        for (int d = 0; d < t.ndim && len < 100; d++)
            len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%lld", d ? ", " : "", (long long)t.shape[d]);
        fine_err_set(e, "%s is %s [%s], the model takes f32 [%d, %d, %d, %d] (its in_chans and crop)", what,
                     fine_dtype_name(t.dtype), shape, c->in_chans, c->crop[0], c->crop[1], c->crop[2]);
        fine_tensor_free(&t);
        return -1;
    }
    memcpy(fine_infer_input(s->inf, s->nb), t.data, (size_t)fine_infer_in_numel(s->inf) * sizeof(float));
    fine_tensor_free(&t);
    memcpy(fine_infer_pos(s->inf, s->nb), sl->pos, sizeof sl->pos);
    s->nb++;
    s->seen++;
    return 0;
}

/* Runs the patches waiting in the batch and writes their pred records. */
static int flush(state *s, fine_err *e)
{
    if (s->nb == 0)
        return 0;
    if (fine_infer_run(s->inf, s->nb, e) < 0)
        return -1;
    const fine_config *c = &s->m->cfg;
    int64_t n = fine_infer_prob_numel(s->inf);
    for (int b = 0; b < s->nb; b++) {
        const slot *sl = &s->slots[b];
        const float *p = fine_infer_prob(s->inf, b);
        fine_tensor t = {.dtype = s->o->dtype, .ndim = 4,
                         .shape = {c->num_classes, c->crop[0], c->crop[1], c->crop[2]}, .data = (void *)p};
        if (s->o->dtype == FINE_F16) {
            for (int64_t i = 0; i < n; i++)
                s->half[i] = fine_f32_to_f16(p[i]);
            t.data = s->half;
        }
        fine_map *m = fine_map_new("pred");
        if (sl->has_case)
            fine_map_str(m, "case", sl->case_id);
        fine_map_str(m, "name", "prob");
        fine_map_tensor_fields(m, &t);
        if (sl->has_origin)
            fine_map_i64s(m, "origin", sl->origin, 3);
        fine_map_i64s(m, "pos", sl->pos, 3);
        if (sl->has_vs)
            fine_map_i64s(m, "volume_size", sl->vs, 3);
        if (sl->has_index)
            fine_map_i64(m, "index", sl->index);
        int rc = fine_writer_put(s->w, m, e);
        fine_map_free(m);
        if (rc < 0)
            return -1;
    }
    s->done += s->nb;
    s->nb = 0;
    double dt = fine_now() - s->pg.start;
    char what[64];
    snprintf(what, sizeof what, "patches  %.2f patches/s", dt > 0 ? s->done / dt : 0.0);
    fine_progress_update(&s->pg, s->done, 0, what);
    return 0;
}

static int run(fine_model *m, const options *o, int argc, char **argv)
{
    fine_err e = {0};
    state s;
    memset(&s, 0, sizeof s);
    s.o = o;
    s.m = m;
    s.r = fine_reader_open(o->in, &e);
    if (!s.r)
        return fine_cli_fail(TOOL, &e);
    s.w = fine_writer_open(o->out, o->force, &e);
    if (!s.w) {
        fine_reader_close(s.r);
        return fine_cli_fail(TOOL, &e);
    }
    int rc = fine_writer_header(s.w, fine_reader_provenance(s.r), TOOL, argc, argv, &e);
    fine_backend *be = NULL;
    if (rc == 0 && (!(be = fine_backend_open(o->device, &e)) || be->set_precision(be->ctx, o->precision, &e) < 0))
        rc = -1;
    if (rc == 0 && o->profile) {
        fine_backend *p = fine_backend_profile_open(be, &e);
        if (p)
            be = p;
        else
            rc = -1;
    }
    if (rc == 0 && !(s.inf = fine_infer_new_on(be, m, o->batch, o->tta, &e)))
        rc = -1;
    if (rc == 0) {
        s.slots = calloc((size_t)o->batch, sizeof *s.slots);
        s.half = o->dtype == FINE_F16 ? malloc((size_t)fine_infer_prob_numel(s.inf) * sizeof(uint16_t)) : NULL;
        if (!s.slots || (o->dtype == FINE_F16 && !s.half))
            rc = fine_err_set(&e, "out of memory");
    }
    fine_progress_init(&s.pg, TOOL, o->quiet, o->progress);
    fine_record rec;
    while (rc == 0) {
        int got = fine_reader_next(s.r, &rec, &e);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got == 0) {
            rc = flush(&s, &e);
            break;
        }
        if (strcmp(rec.type, "patch") == 0) {
            if (take_patch(&s, &rec, &e) < 0) {
                fine_err_prefix(&e, fine_reader_name(s.r));
                rc = -1;
            } else if (s.nb == o->batch) {
                rc = flush(&s, &e);
            }
        } else {
            /* order is kept: the patches before this record are written before it */
            rc = flush(&s, &e);
            if (rc == 0)
                rc = fine_writer_put_record(s.w, &rec, &e);
        }
    }
    fine_progress_done(&s.pg);
    fine_infer_free(s.inf);
    if (rc == 0 && fine_backend_is_profile(be))
        fine_profile_print(be, stderr, TOOL);
    fine_backend_close(be);
    free(s.slots);
    free(s.half);
    fine_reader_close(s.r);
    if (rc < 0) {
        fine_writer_abort(s.w);
        return fine_cli_fail(TOOL, &e);
    }
    if (fine_writer_close(s.w, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    return FINE_EXIT_OK;
}

int main(int argc, char **argv)
{
    fine_cli_omp_passive(argv);
    fine_cli_init();
    enum { O_MODEL = 256, O_BATCH, O_TTA, O_DTYPE, O_DEVICE, O_PRECISION, O_THREADS, O_PROGRESS, O_PROFILE, O_VERSION };
    static const struct option opts[] = {
        {"model", required_argument, NULL, O_MODEL},     {"batch", required_argument, NULL, O_BATCH},
        {"tta", no_argument, NULL, O_TTA},               {"dtype", required_argument, NULL, O_DTYPE},
        {"device", required_argument, NULL, O_DEVICE},   {"precision", required_argument, NULL, O_PRECISION},   {"threads", required_argument, NULL, O_THREADS},
        {"force", no_argument, NULL, 'f'},               {"quiet", no_argument, NULL, 'q'},
        {"progress", no_argument, NULL, O_PROGRESS},     {"profile", no_argument, NULL, O_PROFILE},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VERSION},       {NULL, 0, NULL, 0},
    };
    options o;
    memset(&o, 0, sizeof o);
    o.batch = 1;
    o.dtype = FINE_F16;
    o.device = "cpu";
    o.precision = "auto";
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":fqh", opts, NULL)) != -1) {
        int64_t v;
        switch (c) {
        case O_MODEL: o.model = optarg; break;
        case O_BATCH:
            if (fine_parse_i64(optarg, &v) < 0 || v < 1 || v > 64)
                return fine_cli_usage(TOOL, "--batch needs an integer from 1 to 64, not '%s'", optarg);
            o.batch = (int)v;
            break;
        case O_TTA: o.tta = 1; break;
        case O_DTYPE:
            if (strcmp(optarg, "f16") == 0)
                o.dtype = FINE_F16;
            else if (strcmp(optarg, "f32") == 0)
                o.dtype = FINE_F32;
            else
                return fine_cli_usage(TOOL, "--dtype must be f16 or f32, not '%s'", optarg);
            break;
        case O_DEVICE:
            if (strcmp(optarg, "cpu") != 0 && strcmp(optarg, "cuda") != 0 && strncmp(optarg, "cuda:", 5) != 0)
                return fine_cli_usage(TOOL, "--device must be cpu or cuda[:N], not '%s'", optarg);
            o.device = optarg;
            break;
        case O_PRECISION: o.precision = optarg; break;
        case O_THREADS:
            if (fine_parse_i64(optarg, &v) < 0 || v > 1024)
                return fine_cli_usage(TOOL, "--threads needs an integer from 0 (all cores) to 1024, not '%s'",
                                      optarg);
            o.threads = (int)v;
            break;
        case 'f': o.force = 1; break;
        case 'q': o.quiet = 1; break;
        case O_PROGRESS: o.progress = 1; break;
        case O_PROFILE: o.profile = 1; break;
        case 'h': usage(); return FINE_EXIT_OK;
        case O_VERSION: fine_cli_version(TOOL); return FINE_EXIT_OK;
        case ':': return fine_cli_usage(TOOL, "option '%s' needs an argument", argv[optind - 1]);
        default: return fine_cli_usage(TOOL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    int npos = argc - optind;
    if (npos > 2)
        return fine_cli_usage(TOOL, "expected at most IN and OUT, got %d arguments", npos);
    if (!o.model)
        return fine_cli_usage(TOOL, "--model CKPT is required");
    o.in = npos >= 1 ? argv[optind] : "-";
    o.out = npos == 2 ? argv[optind + 1] : "-";
    fine_nn_set_threads(o.threads);
    fine_err e = {0};
    fine_model m;
    if (fine_checkpoint_load(o.model, &m, NULL, NULL, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    int rc = run(&m, &o, argc, argv);
    fine_model_free(&m);
    return rc;
}
