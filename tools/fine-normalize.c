/* fine-normalize: CT intensity normalisation (fine-reference A7, B §6.1 step 5). --fit pools
 * the foreground statistics of the training cases into a `stats` record; the apply mode clips
 * and z-scores the `image` volumes of a stream with them. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "cli.h"
#include "crop.h"
#include "dataset.h"
#include "normalize.h"
#include "stream.h"
#include "volume.h"
#include "volume_check.h"

static const char *TOOL = "fine-normalize";

static void usage(void)
{
    printf("Usage: fine-normalize --fit [options] IN|DIR... -o STATS\n"
           "       fine-normalize [--stats STATS | --scheme zscore|none] [options] [IN [OUT]]\n"
           "Intensity normalisation of CT volumes as nnU-Net v1 (scheme \"CT\").\n\n"
           "--fit reads the training cases, from streams of `image` and `label` volume records\n"
           "(each case's two records consecutive, in either order) or data set folders (BCV\n"
           "img/ + label/, or nnU-Net imagesTr/ + labelsTr/), and writes one `stats` record:\n"
           "scheme ct, lower = 0.5th and upper = 99.5th percentile (numpy's linear method,\n"
           "exact), mean and std of every 10th foreground voxel (label > 0, C order) of each\n"
           "case cropped to its non-zero box, pooled over the cases. nnU-Net collects these at\n"
           "the original spacing after cropping, so give original or cropped volumes, not\n"
           "resampled ones (the record says `grid: resampled` and a warning is printed if so;\n"
           "cropping again is a no-op). Only the training split: the cases of --cases, else\n"
           "those of a `plan` record met before the volumes, else every case of the input.\n\n"
           "The apply mode clips each `image` volume to [lower, upper] and maps x to\n"
           "(x - mean) / std (f32 arithmetic, as nnU-Net), writing f32 volumes whose `meta`\n"
           "notes the normalisation; every other record (labels too) passes through. The\n"
           "statistics come from --stats, or from a `stats` record met in IN before the images.\n"
           "--scheme zscore maps each image to (x - its mean) / (its std + 1e-8); none only\n"
           "converts to f32.\n"
           "IN and OUT default to '-' (stdin, stdout); a stream is never written to a terminal.\n\n"
           "Options:\n"
           "  --fit              fit the statistics (writes a stream holding the stats record)\n"
           "  -o, --output FILE  --fit: the stats stream (default '-')\n"
           "  --scheme S         ct (default for --fit), zscore or none\n"
           "  --cases LIST       --fit: only these cases (comma-separated, or @FILE with one\n"
           "                     id per line); each must be in the input\n"
           "  --stats FILE       apply: the stats record to apply (a stream, e.g. from --fit)\n"
           "  --threads N        accepted for uniformity (the work is one pass over memory)\n"
           "  --max-label N      labels must be in 0..N (default 13, the BCV organs)\n"
           "  -f, --force        overwrite outputs that exist\n"
           "  -q, --quiet        no progress line or warning\n"
           "  --progress         progress line even when stderr is not a terminal\n"
           "  -h, --help         this help\n"
           "  --version          print the version\n\n"
           "Exit status: 0 success, 1 bad input or failure, 2 usage error.\n\n"
           "Examples:\n"
           "  fine-normalize --fit --cases @train.txt data/bcv -o stats.fst\n"
           "  cat img1.fst lab1.fst img2.fst lab2.fst | fine-normalize --fit -o stats.fst\n"
           "  fine-resample --plan plan.fst case.fst | fine-normalize --stats stats.fst \\\n"
           "      | fine-patch --grid | fine-info -\n");
}

typedef struct options {
    int fit;
    int have_scheme;
    fine_norm_scheme scheme;
    const char *out, *stats_path;
    char **cases; /* --cases, NULL-terminated; NULL when not given */
    int force, quiet, progress;
    int max_label; /* labels must be in 0..max_label */
} options;

/* ---------------------------------------------------------------- case lists */

static void free_list(char **l)
{
    for (char **p = l; p && *p; p++)
        free(*p);
    free(l);
}

static int list_push(char ***l, int *n, const char *s, size_t len)
{
    char **nl = realloc(*l, (size_t)(*n + 2) * sizeof *nl);
    if (!nl)
        return -1;
    *l = nl;
    if (!(nl[*n] = strndup(s, len)))
        return -1;
    nl[++*n] = NULL;
    return 0;
}

/* A --cases entry as a case id ("5", "img0005" -> ABD_005, as lib/dataset.h). */
static int push_id(char ***l, int *n, const char *s, size_t len)
{
    char raw[FINE_CASE_MAX], id[FINE_CASE_MAX];
    snprintf(raw, sizeof raw, "%.*s", (int)len, s);
    fine_case_id_normalize(raw, id, sizeof id);
    return list_push(l, n, id, strlen(id));
}

/* "a,b,c" or "@file" (one id per line, blank lines and '#' comments ignored). */
static int parse_cases(const char *arg, char ***out, fine_err *e)
{
    char **l = calloc(1, sizeof *l);
    int n = 0;
    if (!l)
        return fine_err_set(e, "out of memory");
    if (arg[0] == '@') {
        FILE *f = fopen(arg + 1, "r");
        if (!f) {
            free_list(l);
            return fine_err_set(e, "%s: %s", arg + 1, strerror(errno));
        }
        char line[1024];
        while (fgets(line, sizeof line, f)) {
            char *s = line;
            while (*s == ' ' || *s == '\t')
                s++;
            size_t len = strcspn(s, " \t\r\n#");
            if (len && push_id(&l, &n, s, len) < 0) {
                fclose(f);
                free_list(l);
                return fine_err_set(e, "out of memory");
            }
        }
        fclose(f);
    } else {
        for (const char *s = arg; *s;) {
            size_t len = strcspn(s, ",");
            if (len && push_id(&l, &n, s, len) < 0) {
                free_list(l);
                return fine_err_set(e, "out of memory");
            }
            s += len + (s[len] == ',');
        }
    }
    if (!n) {
        free_list(l);
        return fine_err_set(e, "--cases lists no case");
    }
    *out = l;
    return 0;
}

static int list_has(char *const *l, const char *s)
{
    for (; l && *l; l++)
        if (strcmp(*l, s) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- --fit */

typedef struct fit_state {
    const options *o;
    char **filter;     /* the cases to fit (NULL: all) */
    int filter_owned;  /* came from a plan record */
    char **seen;       /* cases fitted, in order */
    int nseen;
    fine_volume image, label;
    int has_image, has_label;
    fine_fg_sample sample;
    int64_t fg_voxels;
    int resampled, original;
} fit_state;

static const char *fit_held(const fit_state *s)
{
    return s->has_image ? s->image.case_id : s->has_label ? s->label.case_id : NULL;
}

static void fit_drop(fit_state *s)
{
    fine_volume_free(&s->image);
    fine_volume_free(&s->label);
    s->has_image = s->has_label = 0;
}

/* "case ID: " before e's message */
static void prefix_case(fine_err *e, const char *cid)
{
    char where[FINE_CASE_MAX + 8];
    snprintf(where, sizeof where, "case %s", cid);
    fine_err_prefix(e, where);
}

static int fit_case(fit_state *s, fine_err *e)
{
    const char *cid = fit_held(s);
    if (list_has(s->seen, cid))
        return fine_err_set(e, "case %s: appears twice (its image and label must be consecutive)", cid);
    if ((s->has_image && fine_check_image(&s->image.data, cid, e) < 0) ||
        (s->has_label && fine_check_label(&s->label.data, s->o->max_label, cid, e) < 0) ||
        (s->has_image && s->has_label &&
         (fine_check_same_shape(&s->image.data, &s->label.data, cid, e) < 0 ||
          fine_check_same_spacing(s->image.geom.spacing, s->label.geom.spacing, cid, e) < 0)))
        return -1;
    if (s->o->scheme == FINE_NORM_CT) {
        if (!s->has_image || !s->has_label)
            return fine_err_set(e, "case %s: %s volume missing (fitting ct statistics needs both image "
                                   "and label)",
                                cid, s->has_image ? "label" : "image");
        if (s->image.data.ndim != 3 || s->label.data.ndim != 3 ||
            memcmp(s->image.data.shape, s->label.data.shape, 3 * sizeof(int64_t)) != 0)
            return fine_err_set(e, "case %s: label shape differs from image shape", cid);
        /* nnU-Net samples the arrays cropped to the image's non-zero box (a no-op on a volume
         * that is already cropped) */
        int64_t lo[3], hi[3], n = -1;
        fine_tensor ci = {0}, cl = {0};
        if (fine_crop_box(&s->image.data, lo, hi, e) == 0 &&
            fine_crop_tensor(&s->image.data, lo, hi, s->image.data.dtype, &ci, e) == 0 &&
            fine_crop_tensor(&s->label.data, lo, hi, s->label.data.dtype, &cl, e) == 0)
            n = fine_fg_sample_add(&s->sample, &ci, &cl, e);
        fine_tensor_free(&ci);
        fine_tensor_free(&cl);
        if (n < 0) {
            prefix_case(e, cid);
            return -1;
        }
        s->fg_voxels += n;
        const fine_geometry *g = &s->image.geom;
        int res = 0;
        for (int d = 0; d < 3; d++)
            if (g->size[d] != g->crop_hi[d] - g->crop_lo[d])
                res = 1;
        if (res)
            s->resampled++;
        else
            s->original++;
    } else if (!s->has_image) {
        return fine_err_set(e, "case %s: no image volume", cid);
    }
    if (list_push(&s->seen, &s->nseen, cid, strlen(cid)) < 0)
        return fine_err_set(e, "out of memory");
    return 0;
}

static int write_stats(fine_writer *w, fit_state *s, const fine_norm_stats *st, fine_err *e)
{
    fine_map *m = fine_map_new("stats");
    fine_map_str(m, "scheme", fine_norm_scheme_name(st->scheme));
    if (st->scheme == FINE_NORM_CT) {
        fine_map_f64(m, "lower", st->lower);
        fine_map_f64(m, "upper", st->upper);
        fine_map_f64(m, "mean", st->mean);
        fine_map_f64(m, "std", st->std);
        fine_map_f64(m, "median", st->median);
        fine_map_f64(m, "min", st->min);
        fine_map_f64(m, "max", st->max);
        fine_map_i64(m, "samples", st->count);
        fine_map_i64(m, "foreground_voxels", s->fg_voxels);
        fine_map_str(m, "grid", s->resampled ? (s->original ? "mixed" : "resampled") : "original");
    }
    fine_map_strs(m, "cases", (const char *const *)s->seen, s->nseen);
    int rc = fine_writer_put(w, m, e);
    fine_map_free(m);
    return rc;
}

/* A plan's case list as the filter. */
static int plan_cases(fit_state *s, const fine_record *rec, fine_err *e)
{
    const msgpack_object *c = fine_record_get(rec, "cases");
    if (!c || c->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    char **l = calloc(1, sizeof *l);
    int n = 0;
    if (!l)
        return fine_err_set(e, "out of memory");
    for (uint32_t i = 0; i < c->via.array.size; i++) {
        const msgpack_object *v = &c->via.array.ptr[i];
        if (v->type != MSGPACK_OBJECT_STR) {
            free_list(l);
            return fine_err_set(e, "plan record: cases must be strings");
        }
        if (list_push(&l, &n, v->via.str.ptr, v->via.str.size) < 0) {
            free_list(l);
            return fine_err_set(e, "out of memory");
        }
    }
    s->filter = l;
    s->filter_owned = 1;
    return 0;
}

static int fit_stream(fit_state *s, const char *path, fine_writer **w, int argc, char **argv, fine_err *e)
{
    fine_reader *r = fine_reader_open(path, e);
    if (!r)
        return -1;
    int rc = 0;
    if (!*w) { /* the output's provenance is that of the first input */
        *w = fine_writer_open(s->o->out, s->o->force, e);
        if (!*w || fine_writer_header(*w, fine_reader_provenance(r), TOOL, argc, argv, e) < 0)
            rc = -1;
    }
    fine_record rec;
    while (rc == 0 && (rc = fine_reader_next(r, &rec, e)) == 1) {
        rc = 0;
        if (strcmp(rec.type, "plan") == 0 && !s->filter && !s->nseen && !fit_held(s)) {
            rc = plan_cases(s, &rec, e);
            continue;
        }
        int is_img = fine_volume_record_matches(&rec, NULL, "image");
        int is_lab = fine_volume_record_matches(&rec, NULL, "label");
        if (!is_img && !is_lab)
            continue;
        char cid[FINE_CASE_MAX];
        if (fine_record_str(&rec, "case", cid, sizeof cid, e) < 0) {
            rc = -1;
            break;
        }
        if (s->filter && !list_has(s->filter, cid))
            continue;
        if (fit_held(s) && strcmp(fit_held(s), cid) != 0) {
            rc = fit_case(s, e);
            fit_drop(s);
            if (rc < 0)
                break;
        }
        if ((is_img && s->has_image) || (is_lab && s->has_label)) {
            rc = fine_err_set(e, "case %s: a second %s volume", cid, is_img ? "image" : "label");
            break;
        }
        if (is_lab && s->o->scheme != FINE_NORM_CT)
            continue;
        rc = fine_volume_from_record(&rec, is_img ? &s->image : &s->label, e);
        if (rc < 0)
            break;
        if (is_img)
            s->has_image = 1;
        else
            s->has_label = 1;
    }
    if (rc < 0 && e->code != FINE_ERR_PIPE && !fine_err_names_file(e->msg, fine_reader_name(r)) &&
        !fine_err_names_file(e->msg, s->o->out))
        fine_err_prefix(e, fine_reader_name(r));
    fine_reader_close(r);
    return rc < 0 ? -1 : 0;
}

/* A data set folder (lib/dataset.h layouts): each selected case's image and label NIfTI. */
static int fit_folder(fit_state *s, const char *dir, fine_writer **w, int argc, char **argv, fine_err *e)
{
    fine_dataset ds;
    if (fine_dataset_scan(dir, &ds, e) < 0)
        return -1;
    int rc = 0;
    if (s->o->scheme == FINE_NORM_CT)
        rc = fine_dataset_require_labels(&ds, e);
    if (rc == 0 && !*w) {
        *w = fine_writer_open(s->o->out, s->o->force, e);
        if (!*w || fine_writer_header(*w, NULL, TOOL, argc, argv, e) < 0)
            rc = -1;
    }
    for (int i = 0; rc == 0 && i < ds.n; i++) {
        const fine_case_files *c = &ds.cases[i];
        if (s->filter && !list_has(s->filter, c->id))
            continue;
        if (fit_held(s)) { /* a case left from a stream input */
            rc = fit_case(s, e);
            fit_drop(s);
            if (rc < 0)
                break;
        }
        rc = fine_volume_from_nifti(c->image, c->id, "image", -1, &s->image, e);
        if (rc == 0) {
            s->has_image = 1;
            if (s->o->scheme == FINE_NORM_CT) {
                rc = fine_volume_from_nifti(c->label, c->id, "label", -1, &s->label, e);
                s->has_label = rc == 0;
            }
        }
        if (rc == 0)
            rc = fit_case(s, e);
        fit_drop(s);
    }
    fine_dataset_free(&ds);
    return rc;
}

static int run_fit(const options *o, char **inputs, int nin, int argc, char **argv)
{
    fine_err e = {0};
    fit_state s;
    memset(&s, 0, sizeof s);
    s.o = o;
    s.filter = o->cases;
    fine_writer *w = NULL;
    fine_progress pr;
    fine_progress_init(&pr, TOOL, o->quiet, o->progress);
    int rc = 0;
    for (int i = 0; rc == 0 && i < nin; i++) {
        fine_progress_update(&pr, i, nin, inputs[i]);
        struct stat sb;
        if (stat(inputs[i], &sb) == 0 && S_ISDIR(sb.st_mode))
            rc = fit_folder(&s, inputs[i], &w, argc, argv, &e);
        else
            rc = fit_stream(&s, inputs[i], &w, argc, argv, &e);
    }
    fine_progress_done(&pr);
    if (rc == 0 && fit_held(&s))
        rc = fit_case(&s, &e);
    fit_drop(&s);
    for (char **p = s.filter; rc == 0 && p && *p; p++)
        if (!list_has(s.seen, *p))
            rc = fine_err_set(&e, "case %s (of %s) is not in the input", *p,
                              s.filter_owned ? "the plan's cases" : "--cases");
    if (rc == 0 && !s.nseen)
        rc = fine_err_set(&e, "no image volumes in the input");
    fine_norm_stats st;
    memset(&st, 0, sizeof st);
    st.scheme = o->scheme;
    if (rc == 0 && o->scheme == FINE_NORM_CT && fine_fg_sample_stats(&s.sample, &st, &e) < 0)
        rc = -1;
    if (rc == 0 && s.resampled && !o->quiet)
        fprintf(stderr, "%s: warning: %d of %d cases were resampled; nnU-Net fits at the original "
                        "spacing (fit on cropped volumes)\n",
                TOOL, s.resampled, s.resampled + s.original);
    if (rc == 0)
        rc = write_stats(w, &s, &st, &e);
    fine_fg_sample_free(&s.sample);
    free_list(s.seen);
    if (s.filter_owned)
        free_list(s.filter);
    if (rc == 0 && fine_writer_close(w, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    if (rc < 0) {
        if (w)
            fine_writer_abort(w);
        return fine_cli_fail(TOOL, &e);
    }
    return FINE_EXIT_OK;
}

/* ---------------------------------------------------------------- apply */

static int stats_from_record(const fine_record *rec, fine_norm_stats *st, fine_err *e)
{
    memset(st, 0, sizeof *st);
    char scheme[32];
    if (fine_record_str(rec, "scheme", scheme, sizeof scheme, e) < 0)
        return -1;
    if (fine_norm_scheme_parse(scheme, &st->scheme) < 0)
        return fine_err_set(e, "stats record: unknown scheme '%s' (ct, zscore, none)", scheme);
    if (st->scheme == FINE_NORM_CT &&
        (fine_record_f64(rec, "lower", &st->lower, e) < 0 || fine_record_f64(rec, "upper", &st->upper, e) < 0 ||
         fine_record_f64(rec, "mean", &st->mean, e) < 0 || fine_record_f64(rec, "std", &st->std, e) < 0))
        return -1;
    if (st->scheme == FINE_NORM_CT && (!(st->std > 0) || !(st->lower <= st->upper)))
        return fine_err_set(e, "stats record: invalid ct statistics (lower %g, upper %g, std %g)", st->lower,
                            st->upper, st->std);
    return 0;
}

static int read_stats_file(const char *path, fine_norm_stats *st, fine_err *e)
{
    fine_reader *r = fine_reader_open(path, e);
    if (!r)
        return -1;
    fine_record rec;
    int rc, found = 0;
    while ((rc = fine_reader_next(r, &rec, e)) == 1)
        if (!found && strcmp(rec.type, "stats") == 0) {
            if (stats_from_record(&rec, st, e) < 0) {
                rc = -1;
                break;
            }
            found = 1;
        }
    if (rc == 0 && !found)
        rc = fine_err_set(e, "no stats record (make one with fine-normalize --fit)");
    if (rc < 0 && !fine_err_names_file(e->msg, fine_reader_name(r)))
        fine_err_prefix(e, fine_reader_name(r));
    fine_reader_close(r);
    return rc < 0 ? -1 : 0;
}

/* Copies the record's meta map (but an earlier normalization) into m's meta, adds ours. */
static void put_meta(fine_map *m, const fine_record *rec, const fine_norm_stats *st, double mean, double std)
{
    fine_map *meta = fine_map_map(m, "meta");
    const msgpack_object *old = fine_record_get(rec, "meta");
    if (old && old->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < old->via.map.size; i++) {
            const msgpack_object_kv *kv = &old->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                continue;
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)kv->key.via.str.size, kv->key.via.str.ptr);
            if (strcmp(key, "normalization") != 0)
                fine_map_object(meta, key, &kv->val);
        }
    fine_map *n = fine_map_map(meta, "normalization");
    fine_map_str(n, "scheme", fine_norm_scheme_name(st->scheme));
    if (st->scheme == FINE_NORM_CT) {
        fine_map_f64(n, "lower", st->lower);
        fine_map_f64(n, "upper", st->upper);
    }
    if (st->scheme != FINE_NORM_NONE) {
        fine_map_f64(n, "mean", mean);
        fine_map_f64(n, "std", std);
    }
}

/* The last image or label volume apply mode saw: a label (passed through) is checked on its own
 * and against its case's image when the two are neighbours in the stream, in either order. */
typedef struct last_volume {
    char cid[FINE_CASE_MAX];
    int valid, is_img;
    int64_t shape[3];
    double spacing[3];
} last_volume;

static int check_pair(const fine_record *rec, int is_img, int max_label, last_volume *last, fine_err *e)
{
    char cid[FINE_CASE_MAX];
    fine_tensor t;
    fine_geometry g;
    if (fine_record_str(rec, "case", cid, sizeof cid, e) < 0)
        return -1;
    if (fine_record_tensor_view(rec, NULL, &t, e) < 0) {
        prefix_case(e, cid);
        return -1;
    }
    if (fine_record_geometry(rec, &g, e) < 0) {
        fine_tensor_free(&t);
        prefix_case(e, cid);
        return -1;
    }
    int rc = is_img ? 0 : fine_check_label(&t, max_label, cid, e);
    if (rc == 0 && t.ndim < 3)
        rc = fine_err_set(e, "case %s: the %s volume has %d dimensions", cid, is_img ? "image" : "label", t.ndim);
    int64_t shape[3] = {0, 0, 0};
    if (rc == 0)
        memcpy(shape, t.shape + t.ndim - 3, sizeof shape);
    if (rc == 0 && last->valid && last->is_img != is_img && strcmp(last->cid, cid) == 0) {
        const int64_t *si = is_img ? shape : last->shape, *sl = is_img ? last->shape : shape;
        if (memcmp(si, sl, sizeof shape) != 0)
            rc = fine_err_set(e, "case %s: label shape %lldx%lldx%lld differs from image shape %lldx%lldx%lld", cid,
                              (long long)sl[0], (long long)sl[1], (long long)sl[2], (long long)si[0],
                              (long long)si[1], (long long)si[2]);
        else
            rc = fine_check_same_spacing(is_img ? g.spacing : last->spacing, is_img ? last->spacing : g.spacing,
                                         cid, e);
    }
    fine_tensor_free(&t);
    snprintf(last->cid, sizeof last->cid, "%s", cid);
    last->valid = 1;
    last->is_img = is_img;
    memcpy(last->shape, shape, sizeof shape);
    memcpy(last->spacing, g.spacing, sizeof last->spacing);
    return rc;
}

static int apply_image(fine_writer *w, const fine_record *rec, const fine_norm_stats *st, fine_err *e)
{
    char cid[FINE_CASE_MAX];
    if (fine_record_str(rec, "case", cid, sizeof cid, e) < 0)
        return -1;
    fine_tensor in, out;
    fine_geometry g;
    if (fine_record_tensor_view(rec, NULL, &in, e) < 0 || fine_record_geometry(rec, &g, e) < 0) {
        prefix_case(e, cid);
        return -1;
    }
    double mean, std;
    if (fine_check_image(&in, cid, e) < 0) { /* the message names the case */
        fine_tensor_free(&in);
        return -1;
    }
    int rc = fine_norm_apply(&in, st, &out, &mean, &std, e);
    fine_tensor_free(&in);
    if (rc < 0) {
        prefix_case(e, cid);
        return -1;
    }
    fine_map *m = fine_map_new("volume");
    fine_map_str(m, "case", cid);
    fine_map_str(m, "name", "image");
    fine_map_tensor_fields(m, &out);
    fine_map_geometry(m, &g);
    put_meta(m, rec, st, mean, std);
    rc = fine_writer_put(w, m, e);
    fine_map_free(m);
    fine_tensor_free(&out);
    return rc;
}

static int run_apply(const options *o, const char *in, const char *out, int argc, char **argv)
{
    fine_err e = {0};
    fine_norm_stats st;
    memset(&st, 0, sizeof st);
    int have = 0;
    if (o->stats_path) {
        if (read_stats_file(o->stats_path, &st, &e) < 0)
            return fine_cli_fail(TOOL, &e);
        have = 1;
    } else if (o->have_scheme) {
        st.scheme = o->scheme;
        have = 1;
    }
    fine_reader *r = fine_reader_open(in, &e);
    if (!r)
        return fine_cli_fail(TOOL, &e);
    fine_writer *w = fine_writer_open(out, o->force, &e);
    if (!w) {
        fine_reader_close(r);
        return fine_cli_fail(TOOL, &e);
    }
    fine_progress pr;
    fine_progress_init(&pr, TOOL, o->quiet, o->progress);
    int64_t n = 0;
    last_volume last = {0};
    int rc = fine_writer_header(w, fine_reader_provenance(r), TOOL, argc, argv, &e);
    fine_record rec;
    while (rc == 0 && (rc = fine_reader_next(r, &rec, &e)) == 1) {
        rc = 0;
        if (!have && strcmp(rec.type, "stats") == 0) {
            if (stats_from_record(&rec, &st, &e) < 0) {
                rc = -1;
                break;
            }
            have = 1;
        }
        int is_img = fine_volume_record_matches(&rec, NULL, "image");
        int is_lab = !is_img && fine_volume_record_matches(&rec, NULL, "label");
        if ((is_img || is_lab) && check_pair(&rec, is_img, o->max_label, &last, &e) < 0) {
            rc = -1;
            break;
        }
        if (!is_img) {
            rc = fine_writer_put_record(w, &rec, &e);
            continue;
        }
        if (!have) {
            rc = fine_err_set(&e, "an image volume before any statistics: give --stats FILE or --scheme "
                                  "zscore|none");
            break;
        }
        char cid[FINE_CASE_MAX] = "";
        fine_record_str(&rec, "case", cid, sizeof cid, NULL);
        fine_progress_update(&pr, n, 0, cid);
        rc = apply_image(w, &rec, &st, &e);
        n++;
    }
    fine_progress_done(&pr);
    if (rc < 0 && e.code != FINE_ERR_PIPE && !fine_err_names_file(e.msg, fine_reader_name(r)) && !fine_err_names_file(e.msg, out))
        fine_err_prefix(&e, fine_reader_name(r));
    fine_reader_close(r);
    if (rc < 0) {
        fine_writer_abort(w);
        return fine_cli_fail(TOOL, &e);
    }
    if (fine_writer_close(w, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    return FINE_EXIT_OK;
}

int main(int argc, char **argv)
{
    fine_cli_init();
    enum { O_FIT = 256, O_SCHEME, O_CASES, O_STATS, O_THREADS, O_PROGRESS, O_VERSION, O_MAXLABEL };
    static const struct option opts[] = {
        {"fit", no_argument, NULL, O_FIT},           {"output", required_argument, NULL, 'o'},
        {"scheme", required_argument, NULL, O_SCHEME}, {"cases", required_argument, NULL, O_CASES},
        {"stats", required_argument, NULL, O_STATS}, {"threads", required_argument, NULL, O_THREADS},
        {"force", no_argument, NULL, 'f'},           {"quiet", no_argument, NULL, 'q'},
        {"progress", no_argument, NULL, O_PROGRESS}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VERSION},   {"max-label", required_argument, NULL, O_MAXLABEL},
        {NULL, 0, NULL, 0},
    };
    options o;
    memset(&o, 0, sizeof o);
    o.scheme = FINE_NORM_CT;
    o.max_label = FINE_MAX_LABEL_DEFAULT;
    const char *cases_arg = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:fqh", opts, NULL)) != -1) {
        switch (c) {
        case O_FIT: o.fit = 1; break;
        case 'o': o.out = optarg; break;
        case O_SCHEME:
            if (fine_norm_scheme_parse(optarg, &o.scheme) < 0)
                return fine_cli_usage(TOOL, "--scheme must be ct, zscore or none, not '%s'", optarg);
            o.have_scheme = 1;
            break;
        case O_CASES: cases_arg = optarg; break;
        case O_STATS: o.stats_path = optarg; break;
        case O_THREADS: {
            int64_t n;
            if (fine_parse_i64(optarg, &n) < 0 || n < 1)
                return fine_cli_usage(TOOL, "--threads needs a positive integer, not '%s'", optarg);
            break;
        }
        case O_MAXLABEL: {
            int64_t n;
            if (fine_parse_i64(optarg, &n) < 0 || n < 1 || n > 255)
                return fine_cli_usage(TOOL, "--max-label needs a number in 1..255, not '%s'", optarg);
            o.max_label = (int)n;
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
    if (o.fit) {
        if (o.stats_path)
            return fine_cli_usage(TOOL, "--stats applies statistics; it does not go with --fit");
        if (!o.out)
            o.out = "-";
        char *dash[] = {"-"};
        fine_err e = {0};
        if (cases_arg && parse_cases(cases_arg, &o.cases, &e) < 0)
            return fine_cli_usage(TOOL, "%s", e.msg);
        int rc = run_fit(&o, npos ? argv + optind : dash, npos ? npos : 1, argc, argv);
        free_list(o.cases);
        return rc;
    }
    if (cases_arg)
        return fine_cli_usage(TOOL, "--cases selects the cases to fit; it goes with --fit");
    if (o.stats_path && o.have_scheme)
        return fine_cli_usage(TOOL, "give --stats or --scheme, not both");
    if (o.have_scheme && o.scheme == FINE_NORM_CT)
        return fine_cli_usage(TOOL, "--scheme ct needs fitted statistics: use --stats FILE");
    if (npos > 2)
        return fine_cli_usage(TOOL, "expected at most IN and OUT, got %d arguments", npos);
    if (o.out && npos == 2)
        return fine_cli_usage(TOOL, "give OUT either as an argument or with -o, not both");
    const char *in = npos >= 1 ? argv[optind] : "-";
    const char *out = npos == 2 ? argv[optind + 1] : o.out ? o.out : "-";
    return run_apply(&o, in, out, argc, argv);
}
