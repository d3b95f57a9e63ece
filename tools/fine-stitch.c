/* fine-stitch: the predictions of a case's sliding-window tiles -> its segmentation on the
 * original grid (fine-reference A10, B §5.6, §5.7): Gaussian-weighted aggregation, resampling
 * back to the original spacing, argmax, pasting into the crop box, optional largest-component
 * postprocessing. One case in memory at a time. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "components.h"
#include "nifti_io.h"
#include "resample.h"
#include "stitch.h"
#include "stream.h"
#include "volume.h"

static const char *TOOL = "fine-stitch";

static void usage(void)
{
    printf("Usage: fine-stitch [options] [IN [OUT]]\n"
           "Put the predictions of each case's sliding-window tiles (from fine-patch --grid and a\n"
           "model) back together, as nnU-Net v1 inference does: each `pred` record's\n"
           "probabilities [K, z, y, x] (f16 or f32; name `logits` gets a softmax first) are\n"
           "weighted by a Gaussian importance map (sigma = patch/8, maximum 1) and averaged,\n"
           "sum(p * g) / sum(g), over the case volume (the padding of small cases dropped);\n"
           "then resampled back to the original spacing when the case was resampled (order 1,\n"
           "nearest along z when anisotropic), argmax, and pasted into the crop box of the\n"
           "original grid (0 outside). A case is framed by the `case_begin` (its geometry) and\n"
           "`case_end` records fine-patch writes; only one case is held in memory.\n"
           "OUT is a NIfTI file (.nii, .nii.gz) for an input holding one case, or a stream of\n"
           "`seg` volume records (u8) ('-' or a .fst file; other records pass through).\n"
           "IN defaults to '-', OUT to '-' (a stream is never written to a terminal).\n\n"
           "Options:\n"
           "  -o, --output OUT        the output (instead of the second argument)\n"
           "  --outdir DIR            one DIR/CASE.nii.gz per case (DIR is created if missing)\n"
           "  --probabilities FILE    also write the probabilities on the original grid, a stream\n"
           "                          of `prob` volume records [K, z, y, x] (channel 0 = 1\n"
           "                          outside the crop box)\n"
           "  --prob-dtype T          f16 (default, as nnU-Net's npz) or f32\n"
           "  --lcc                   keep only the largest 6-connected component of each\n"
           "                          foreground class (nnU-Net postprocessing, ties all kept)\n"
           "  --lcc-classes LIST      the same for these classes only (e.g. 1,2,6)\n"
           "  --lcc-foreground        first keep only the largest component of all foreground\n"
           "                          classes together\n"
           "  --threads N             threads for aggregation and resampling (default 1)\n"
           "  -f, --force             overwrite existing outputs\n"
           "  -q, --quiet             no progress line\n"
           "  --progress              progress line even when stderr is not a terminal\n"
           "  -h, --help              this help\n"
           "  --version               print the version\n\n"
           "Exit status: 0 success, 1 bad input or failure, 2 usage error.\n\n"
           "Examples:\n"
           "  fine-patch --grid case.fst | fine-infer --model best.fst | fine-stitch - seg.nii.gz\n"
           "  fine-patch --grid val.fst | fine-infer --model best.fst \\\n"
           "      | fine-stitch --lcc --outdir pred/ --probabilities prob.fst\n");
}

typedef struct options {
    const char *out, *outdir, *prob_path;
    fine_dtype prob_dtype;
    int lcc_fg, lcc_any;
    uint8_t lcc_keep[256];
    int threads, force, quiet, progress;
} options;

typedef struct state {
    const options *o;
    fine_writer *seg_w, *prob_w; /* stream outputs, or NULL */
    fine_volume held;            /* the single case of a NIfTI OUT, written at the end */
    int have_held;
    /* the open case */
    int open;
    char case_id[FINE_CASE_MAX];
    fine_geometry geom;
    int64_t declared; /* case_begin's patch count */
    int64_t preds, patches;
    fine_stitch st;
    int64_t cases;
    fine_progress pr;
} state;

/* ---------------------------------------------------------------- one finished case */

static int postprocess(state *s, fine_volume *seg, fine_err *e)
{
    if (s->o->lcc_fg && fine_cc_keep_largest_foreground(seg->data.data, seg->data.shape, NULL, e) < 0)
        return -1;
    if (s->o->lcc_any &&
        fine_cc_keep_largest_per_class(seg->data.data, seg->data.shape, s->o->lcc_keep, NULL, e) < 0)
        return -1;
    return 0;
}

static int write_seg(state *s, fine_volume *seg, fine_err *e)
{
    const options *o = s->o;
    if (s->seg_w) {
        fine_map *m = fine_volume_record(seg);
        if (!m)
            return fine_err_set(e, "out of memory");
        fine_map *meta = fine_map_map(m, "meta");
        fine_map_str(meta, "source", TOOL);
        if (o->lcc_fg || o->lcc_any)
            fine_map_str(meta, "postprocessing", o->lcc_fg ? "largest foreground component, then per class"
                                                           : "largest component per class");
        int rc = fine_writer_put(s->seg_w, m, e);
        fine_map_free(m);
        return rc;
    }
    if (o->outdir) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s.nii.gz", o->outdir, seg->case_id) >= (int)sizeof path)
            return fine_err_set(e, "output path for case %s is too long", seg->case_id);
        return fine_nifti_write(path, &seg->data, &seg->geom, o->force, e);
    }
    if (s->have_held)
        return fine_err_set(e, "case %s: the input holds several cases and %s is one NIfTI file (use "
                               "--outdir DIR or a stream output)",
                            seg->case_id, o->out);
    s->held = *seg; /* moved */
    memset(seg, 0, sizeof *seg);
    s->have_held = 1;
    return 0;
}

static int write_prob(state *s, fine_volume *prob, fine_err *e)
{
    if (s->o->prob_dtype != prob->data.dtype && fine_volume_set_dtype(prob, s->o->prob_dtype, e) < 0)
        return -1;
    fine_map *m = fine_volume_record(prob);
    if (!m)
        return fine_err_set(e, "out of memory");
    fine_map_str(fine_map_map(m, "meta"), "source", TOOL);
    int rc = fine_writer_put(s->prob_w, m, e);
    fine_map_free(m);
    return rc;
}

/* From the aggregated probabilities (owned, moved in) to the outputs. */
static int export_case(state *s, fine_tensor *prob, fine_err *e)
{
    fine_volume pv, seg, porig;
    memset(&pv, 0, sizeof pv);
    memset(&seg, 0, sizeof seg);
    memset(&porig, 0, sizeof porig);
    snprintf(pv.case_id, sizeof pv.case_id, "%s", s->case_id);
    snprintf(pv.name, sizeof pv.name, "prob");
    pv.data = *prob;
    memset(prob, 0, sizeof *prob);
    pv.geom = s->geom;
    if (pv.data.shape[0] > 256) {
        fine_volume_free(&pv);
        return fine_err_set(e, "%lld classes: a u8 segmentation holds at most 256",
                            (long long)pv.data.shape[0]);
    }
    int resampled = !fine_stitch_is_unresampled(&s->geom), rc = 0;
    snprintf(seg.case_id, sizeof seg.case_id, "%s", s->case_id);
    snprintf(seg.name, sizeof seg.name, "seg");
    fine_stitch_original_geometry(&s->geom, &seg.geom);
    if (s->prob_w) {
        /* probabilities on the original grid, then their argmax */
        if (resampled) {
            rc = fine_resample_to_original(&pv, s->o->threads, &porig, e);
        } else {
            porig = pv;
            porig.data = (fine_tensor){0};
            rc = fine_paste_crop(&pv.data, &s->geom, 1.0, &porig.data, e);
            fine_stitch_original_geometry(&s->geom, &porig.geom);
        }
        fine_volume_free(&pv);
        if (rc == 0)
            rc = fine_argmax_u8(&porig.data, &seg.data, e);
    } else if (resampled) {
        rc = fine_resample_to_original_argmax(&pv, s->o->threads, &seg, e);
        fine_volume_free(&pv);
    } else {
        fine_tensor crop = {0};
        rc = fine_argmax_u8(&pv.data, &crop, e);
        fine_volume_free(&pv);
        if (rc == 0)
            rc = fine_paste_crop(&crop, &s->geom, 0, &seg.data, e);
        fine_tensor_free(&crop);
    }
    if (rc == 0)
        rc = postprocess(s, &seg, e);
    if (rc == 0)
        rc = write_seg(s, &seg, e);
    if (rc == 0 && s->prob_w)
        rc = write_prob(s, &porig, e);
    fine_volume_free(&seg);
    fine_volume_free(&porig);
    return rc;
}

/* ---------------------------------------------------------------- the records of a case */

static int on_case_begin(state *s, const fine_record *rec, fine_err *e)
{
    char cid[FINE_CASE_MAX];
    if (fine_record_str(rec, "case", cid, sizeof cid, e) < 0)
        return -1;
    if (s->open)
        return fine_err_set(e, "case %s: case_begin of case %s before its case_end", s->case_id, cid);
    if (fine_record_geometry(rec, &s->geom, e) < 0) {
        fine_err_prefix(e, cid);
        fine_err_prefix(e, "case");
        return -1;
    }
    s->declared = -1;
    if (fine_record_get(rec, "patches") && fine_record_i64(rec, "patches", &s->declared, e) < 0)
        return -1;
    snprintf(s->case_id, sizeof s->case_id, "%s", cid);
    /* nnU-Net weighs a lone tile by ones, several by the Gaussian */
    if (fine_stitch_begin(&s->st, s->geom.size, s->declared != 1, s->o->threads, e) < 0)
        return -1;
    s->open = 1;
    s->preds = s->patches = 0;
    fine_progress_update(&s->pr, s->cases, 0, s->case_id);
    return 0;
}

static int on_pred(state *s, const fine_record *rec, fine_err *e)
{
    char cid[FINE_CASE_MAX], name[FINE_NAME_MAX];
    if (fine_record_str(rec, "case", cid, sizeof cid, e) < 0 ||
        fine_record_str(rec, "name", name, sizeof name, e) < 0)
        return -1;
    if (!s->open)
        return fine_err_set(e, "case %s: a pred record before the case's case_begin (fine-patch --grid "
                               "writes one; keep it in the stream)",
                            cid);
    if (strcmp(cid, s->case_id) != 0)
        return fine_err_set(e, "case %s: a pred record of case %s before %s's case_end", s->case_id, cid,
                            s->case_id);
    int logits = strcmp(name, "logits") == 0;
    if (!logits && strcmp(name, "prob") != 0)
        return fine_err_set(e, "case %s: pred record named '%s' (expected prob or logits)", cid, name);
    int64_t origin[3], vs[3];
    if (fine_record_i64s(rec, "origin", origin, 3, e) < 0)
        return -1;
    if (fine_record_get(rec, "volume_size")) {
        if (fine_record_i64s(rec, "volume_size", vs, 3, e) < 0)
            return -1;
        if (memcmp(vs, s->geom.size, sizeof vs) != 0)
            return fine_err_set(e, "case %s: pred volume_size %lldx%lldx%lld differs from the case's "
                                   "%lldx%lldx%lld",
                                cid, (long long)vs[0], (long long)vs[1], (long long)vs[2],
                                (long long)s->geom.size[0], (long long)s->geom.size[1],
                                (long long)s->geom.size[2]);
    }
    fine_tensor t;
    if (fine_record_tensor_view(rec, NULL, &t, e) < 0)
        return -1;
    int rc = fine_stitch_add(&s->st, &t, origin, logits, e);
    fine_tensor_free(&t);
    if (rc < 0) {
        int64_t idx = -1;
        const msgpack_object *io = fine_record_get(rec, "index");
        if (io && (io->type == MSGPACK_OBJECT_POSITIVE_INTEGER))
            idx = (int64_t)io->via.u64;
        char where[FINE_CASE_MAX + 64];
        snprintf(where, sizeof where, "case %s: pred %lld", cid, (long long)(idx >= 0 ? idx : s->preds));
        fine_err_prefix(e, where);
        return -1;
    }
    s->preds++;
    return 0;
}

static int on_case_end(state *s, const fine_record *rec, fine_err *e)
{
    char cid[FINE_CASE_MAX];
    if (fine_record_str(rec, "case", cid, sizeof cid, e) < 0)
        return -1;
    if (!s->open || strcmp(cid, s->case_id) != 0)
        return fine_err_set(e, "case %s: case_end without its case_begin", cid);
    int64_t n = -1;
    if (fine_record_get(rec, "patches") && fine_record_i64(rec, "patches", &n, e) < 0)
        return -1;
    if (!s->preds && s->patches)
        return fine_err_set(e, "case %s: %lld patch records but no predictions (run a model between "
                               "fine-patch and fine-stitch)",
                            cid, (long long)s->patches);
    if (n >= 0 && n != s->preds)
        return fine_err_set(e, "case %s: %lld predictions, but case_end says %lld patches", cid,
                            (long long)s->preds, (long long)n);
    if (s->declared >= 0 && s->declared != s->preds)
        return fine_err_set(e, "case %s: %lld predictions, but case_begin announced %lld", cid,
                            (long long)s->preds, (long long)s->declared);
    fine_tensor prob;
    int rc = fine_stitch_finish(&s->st, &prob, e);
    s->open = 0;
    if (rc == 0)
        rc = export_case(s, &prob, e);
    if (rc < 0) {
        fine_tensor_free(&prob);
        if (e->code != FINE_ERR_PIPE && strncmp(e->msg, "case ", 5) != 0) {
            fine_err_prefix(e, cid);
            fine_err_prefix(e, "case");
        }
        return -1;
    }
    s->cases++;
    return 0;
}

static int run(const char *in, const options *o, int argc, char **argv)
{
    fine_err e = {0};
    state s;
    memset(&s, 0, sizeof s);
    s.o = o;
    int nifti_out = !o->outdir && fine_nifti_is_path(o->out);
    struct stat sb;
    if (nifti_out && !o->force && stat(o->out, &sb) == 0) {
        fine_err_set(&e, "%s: exists (use --force to overwrite)", o->out);
        return fine_cli_fail(TOOL, &e);
    }
    if (o->outdir && mkdir(o->outdir, 0777) < 0 && errno != EEXIST) {
        fine_err_set(&e, "%s: cannot create the folder: %s", o->outdir, strerror(errno));
        return fine_cli_fail(TOOL, &e);
    }
    fine_reader *r = fine_reader_open(in, &e);
    if (!r)
        return fine_cli_fail(TOOL, &e);
    int rc = 0;
    if (!o->outdir && !nifti_out) {
        s.seg_w = fine_writer_open(o->out, o->force, &e);
        if (!s.seg_w || fine_writer_header(s.seg_w, fine_reader_provenance(r), TOOL, argc, argv, &e) < 0)
            rc = -1;
    }
    if (rc == 0 && o->prob_path) {
        s.prob_w = fine_writer_open(o->prob_path, o->force, &e);
        if (!s.prob_w || fine_writer_header(s.prob_w, fine_reader_provenance(r), TOOL, argc, argv, &e) < 0)
            rc = -1;
    }
    fine_progress_init(&s.pr, TOOL, o->quiet, o->progress);
    fine_record rec;
    while (rc == 0 && (rc = fine_reader_next(r, &rec, &e)) == 1) {
        if (strcmp(rec.type, "case_begin") == 0)
            rc = on_case_begin(&s, &rec, &e);
        else if (strcmp(rec.type, "pred") == 0)
            rc = on_pred(&s, &rec, &e);
        else if (strcmp(rec.type, "case_end") == 0)
            rc = on_case_end(&s, &rec, &e);
        else {
            if (strcmp(rec.type, "patch") == 0 && s.open)
                s.patches++;
            rc = s.seg_w ? fine_writer_put_record(s.seg_w, &rec, &e) : 0;
        }
    }
    fine_progress_done(&s.pr);
    if (rc == 0 && s.open)
        rc = fine_err_set(&e, "case %s: the input ends before the case's case_end", s.case_id);
    if (rc == 0 && nifti_out && !s.have_held)
        rc = fine_err_set(&e, "no case in the input (expected case_begin, pred and case_end records)");
    if (rc == 0 && nifti_out)
        rc = fine_nifti_write(o->out, &s.held.data, &s.held.geom, o->force, &e);
    if (rc < 0 && e.code != FINE_ERR_PIPE && !fine_err_names_file(e.msg, fine_reader_name(r)) &&
        !fine_err_names_file(e.msg, o->outdir ? o->outdir : o->out) && !fine_err_names_file(e.msg, o->prob_path))
        fine_err_prefix(&e, fine_reader_name(r));
    fine_stitch_free(&s.st);
    fine_volume_free(&s.held);
    fine_reader_close(r);
    if (rc == 0 && s.seg_w && fine_writer_close(s.seg_w, &e) < 0)
        rc = -1, s.seg_w = NULL;
    else if (rc == 0)
        s.seg_w = NULL;
    if (rc == 0 && s.prob_w && fine_writer_close(s.prob_w, &e) < 0)
        rc = -1, s.prob_w = NULL;
    else if (rc == 0)
        s.prob_w = NULL;
    if (rc < 0) {
        if (s.seg_w)
            fine_writer_abort(s.seg_w);
        if (s.prob_w)
            fine_writer_abort(s.prob_w);
        return fine_cli_fail(TOOL, &e);
    }
    return FINE_EXIT_OK;
}

/* "1,2,6" -> keep[1] = keep[2] = keep[6] = 1. */
static int parse_classes(const char *s, uint8_t keep[256])
{
    const char *p = s;
    if (!*p)
        return -1;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > 255)
            return -1;
        keep[v] = 1;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    fine_cli_init();
    enum { O_OUTDIR = 256, O_PROB, O_PROBDT, O_LCC, O_LCCC, O_LCCFG, O_THREADS, O_PROGRESS, O_VERSION };
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},     {"outdir", required_argument, NULL, O_OUTDIR},
        {"probabilities", required_argument, NULL, O_PROB},
        {"prob-dtype", required_argument, NULL, O_PROBDT},
        {"lcc", no_argument, NULL, O_LCC},            {"lcc-classes", required_argument, NULL, O_LCCC},
        {"lcc-foreground", no_argument, NULL, O_LCCFG},
        {"threads", required_argument, NULL, O_THREADS},
        {"force", no_argument, NULL, 'f'},            {"quiet", no_argument, NULL, 'q'},
        {"progress", no_argument, NULL, O_PROGRESS},  {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VERSION},    {NULL, 0, NULL, 0},
    };
    options o;
    memset(&o, 0, sizeof o);
    o.prob_dtype = FINE_F16;
    o.threads = 1;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:fqh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': o.out = optarg; break;
        case O_OUTDIR: o.outdir = optarg; break;
        case O_PROB: o.prob_path = optarg; break;
        case O_PROBDT:
            if (strcmp(optarg, "f16") == 0)
                o.prob_dtype = FINE_F16;
            else if (strcmp(optarg, "f32") == 0)
                o.prob_dtype = FINE_F32;
            else
                return fine_cli_usage(TOOL, "--prob-dtype must be f16 or f32, not '%s'", optarg);
            break;
        case O_LCC:
            memset(o.lcc_keep + 1, 1, 255);
            o.lcc_any = 1;
            break;
        case O_LCCC:
            if (parse_classes(optarg, o.lcc_keep) < 0)
                return fine_cli_usage(TOOL, "--lcc-classes needs class numbers 1..255 like 1,2,6, not '%s'",
                                      optarg);
            o.lcc_any = 1;
            break;
        case O_LCCFG: o.lcc_fg = 1; break;
        case O_THREADS: {
            int64_t n;
            if (fine_parse_i64(optarg, &n) < 0 || n < 1 || n > 64)
                return fine_cli_usage(TOOL, "--threads needs an integer from 1 to 64, not '%s'", optarg);
            o.threads = (int)n;
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
    if (npos > 2)
        return fine_cli_usage(TOOL, "expected at most IN and OUT, got %d arguments", npos);
    const char *in = npos >= 1 ? argv[optind] : "-";
    if (npos == 2) {
        if (o.out || o.outdir)
            return fine_cli_usage(TOOL, "give OUT either as an argument or with -o/--outdir, not both");
        o.out = argv[optind + 1];
    }
    if (o.out && o.outdir)
        return fine_cli_usage(TOOL, "-o and --outdir exclude each other");
    if (!o.out)
        o.out = "-";
    if (o.prob_path && fine_nifti_is_path(o.prob_path))
        return fine_cli_usage(TOOL, "--probabilities writes a stream (.fst or -), not NIfTI");
    if (o.prob_path && strcmp(o.prob_path, "-") == 0 && !o.outdir && !fine_nifti_is_path(o.out) &&
        strcmp(o.out, "-") == 0)
        return fine_cli_usage(TOOL, "the segmentation stream and --probabilities cannot both go to stdout");
    return run(in, &o, argc, argv);
}
