/* fine-resample: nnU-Net v1 preprocessing up to normalisation (fine-reference A7, B §6.1 steps
 * 1-4): crop each case to its non-zero box, resample image (cubic, separate z) and label
 * (per-label linear) to the plan's target spacing. Also makes the plan (--plan-out) and puts
 * predictions back on the original grid (--to-original). The work is in lib/crop.c,
 * lib/resample.c and lib/dataset.c. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "crop.h"
#include "dataset.h"
#include "nifti_io.h"
#include "resample.h"
#include "stream.h"
#include "volume.h"
#include "volume_check.h"

static const char *TOOL = "fine-resample";

static void usage(void)
{
    printf("Usage: fine-resample (--spacing Z,Y,X | --plan PLAN) [options] INPUT...\n"
           "       fine-resample --plan-out PLAN [options] INPUT...\n"
           "       fine-resample --to-original [options] [IN]\n"
           "Crop each case to its non-zero box and resample it to the target spacing as nnU-Net v1\n"
           "does: the image with cubic B-splines (order 3, spline prefilter, edge mode, pixel\n"
           "centres, each slice clipped to its input range) in-plane and nearest neighbour along\n"
           "the low-resolution axis when max/min spacing > 3 ('separate z'), in 3-D otherwise;\n"
           "the label per-label linear in-plane and nearest along z. Sizes are\n"
           "round(size x spacing / target). Writes a stream of volume records per case: `image`\n"
           "(f32) and `label` (u8), whose geometry keeps the crop box, the original size and\n"
           "spacing and the NIfTI header, so --to-original and fine-stitch can invert it.\n\n"
           "INPUT is one of:\n"
           "  IMAGE [LABEL]   NIfTI files (.nii, .nii.gz); more files pair up by case id\n"
           "                  (imgXXXX with labelXXXX, NAME_0000 with NAME)\n"
           "  FOLDER          a raw BCV folder (img/imgXXXX.nii.gz, label/labelXXXX.nii.gz, also\n"
           "                  under RawData/Training/ or Training/) or an nnU-Net raw folder\n"
           "                  (imagesTr/NAME_0000.nii.gz, labelsTr/NAME.nii.gz)\n"
           "  STREAM          '-' or a .fst of volume records (each case's image and optional\n"
           "                  label consecutive); other records pass through unchanged\n"
           "BCV serials become case ids ABD_%%03d (img0001 -> ABD_001).\n\n"
           "Modes and options:\n"
           "  --spacing Z,Y,X    the target spacing in mm\n"
           "  --plan PLAN        a stream holding a `plan` record: its target_spacing; the plan\n"
           "                     record is copied to the output before the volumes\n"
           "  --plan-out PLAN    make the plan instead of resampling: crop the cases (no\n"
           "                     resampling needed) and write one `plan` record: target_spacing\n"
           "                     by nnU-Net v2.1's rule (median spacing; the coarse axis's 10th\n"
           "                     percentile when anisotropic), median_size and max_size after\n"
           "                     resampling, crop, max_imsize = max_size, vt_map = max(2,\n"
           "                     floor(max_imsize / crop)), cases, and per case its spacing, size\n"
           "                     after cropping and after resampling (--spacing overrides the rule)\n"
           "  --crop Z,Y,X       --plan-out: the model crop (default 64,128,128)\n"
           "  --crop-only        crop to the non-zero box, do not resample (for fitting the\n"
           "                     normalisation at the original spacing, as nnU-Net does)\n"
           "  --to-original      put `prob` ([C,z,y,x] f32/f16), `seg` and `label` volume\n"
           "                     records back on their original grid: order 1 per channel (in-plane\n"
           "                     linear + nearest along z when anisotropic, as nnU-Net's export),\n"
           "                     labels per-label linear + nearest, pasted into the crop box; outside\n"
           "                     it labels are 0 and prob is 1 for class 0 and 0 for the others;\n"
           "                     other records (images too) pass through\n"
           "  --argmax           with --to-original: write each prob as its argmax `seg` (u8)\n"
           "  --cases LIST       only these cases: a file with one id a line ('#' comments),\n"
           "                     @FILE, or ids separated by commas; alias --split. With a stream\n"
           "                     input the volumes of other cases are dropped\n"
           "  --case ID          the case id of IMAGE [LABEL] (default: from the file name)\n"
           "  --max-label N      labels must be in 0..N (default 13, the BCV organs)\n"
           "  -o, --output OUT   the output stream (default '-': stdout)\n"
           "  --threads N        threads (default: the number of CPUs); the output does not\n"
           "                     depend on it\n"
           "  -f, --force        overwrite OUT if it exists\n"
           "  -q, --quiet        no progress line\n"
           "  --progress         a progress line even when stderr is not a terminal\n"
           "  -h, --help         this help\n"
           "  --version          print the version\n\n"
           "Bad input (a label whose shape or spacing differs from its image, NaN or infinite\n"
           "intensities, a label outside 0..N, an all-zero image) stops the run with a one-line\n"
           "error naming the case, exit status 1, and no output file.\n"
           "Exit status: 0 success, 1 bad input or failure, 2 usage error.\n\n"
           "Examples:\n"
           "  fine-resample --plan-out plan.fst --cases train.txt data/bcv\n"
           "  fine-resample --plan plan.fst data/bcv -o pre.fst\n"
           "  fine-resample --spacing 3,0.76,0.76 img0001.nii.gz label0001.nii.gz | fine-info -\n"
           "  fine-convert ct.nii.gz - | fine-resample --plan plan.fst - | fine-normalize --stats s.fst\n"
           "  fine-resample --to-original --argmax pred.fst | fine-convert - seg.nii.gz\n");
}

typedef struct options {
    const char *out, *plan_path, *plan_out, *cases_arg, *case_id;
    double spacing[3];
    int have_spacing, crop_only, to_original, argmax, force, quiet, progress, threads, max_label;
    int64_t crop[3];
    fine_case_list cases; /* n == 0: all */
} options;

/* ---------------------------------------------------------------- small helpers */

/* --cases: a file, @FILE, or a comma list. */
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
    list->ids = calloc((size_t)n, sizeof *list->ids);
    if (!list->ids)
        return fine_err_set(e, "out of memory");
    const char *s = arg;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        char tok[FINE_CASE_MAX];
        if (len == 0 || len >= sizeof tok) {
            fine_case_list_free(list);
            return fine_err_set(e, "--cases: '%s' is neither a file nor a list of case ids", arg);
        }
        memcpy(tok, s, len);
        tok[len] = 0;
        char id[FINE_CASE_MAX];
        fine_case_id_normalize(tok, id, sizeof id);
        if (!fine_case_list_has(list, id))
            snprintf(list->ids[list->n++], FINE_CASE_MAX, "%s", id);
        s += len + (end != NULL);
    }
    if (list->n == 0) {
        fine_case_list_free(list);
        return fine_err_set(e, "--cases: no case id in '%s'", arg);
    }
    return 0;
}

static int is_stream_arg(const char *a)
{
    size_t n = strlen(a);
    return strcmp(a, "-") == 0 || (n > 4 && strcmp(a + n - 4, ".fst") == 0) ||
           (!fine_nifti_is_path(a) && access(a, R_OK) == 0 && fine_path_is_stream(a));
}

static int is_dir(const char *a)
{
    struct stat st;
    return stat(a, &st) == 0 && S_ISDIR(st.st_mode);
}

/* An image file name: imgXXXX or NAME_0000. */
static int looks_like_image(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    return strncmp(b, "img", 3) == 0 || strstr(b, "_0000.nii") != NULL;
}

/* NIfTI arguments -> cases: IMAGE [LABEL] for one or two files (two images by name are two
 * cases), otherwise files grouped by case id: the first of an id is its image, the second its
 * label. */
static int cases_from_files(char **files, int n, const char *case_id, fine_dataset *ds, fine_err *e)
{
    memset(ds, 0, sizeof *ds);
    snprintf(ds->layout, sizeof ds->layout, "files");
    if (n <= 2) {
        char a[FINE_CASE_MAX], b[FINE_CASE_MAX];
        int two_images = 0;
        if (n == 2) {
            fine_case_id_from_file(files[0], a, sizeof a);
            fine_case_id_from_file(files[1], b, sizeof b);
            two_images = strcmp(a, b) != 0 && looks_like_image(files[0]) && looks_like_image(files[1]);
        }
        if (!two_images)
            return fine_dataset_add(ds, case_id, files[0], n == 2 ? files[1] : NULL, e);
    }
    if (case_id)
        return fine_err_set(e, "--case names one case; %d files were given", n);
    for (int i = 0; i < n; i++) {
        char id[FINE_CASE_MAX];
        fine_case_id_from_file(files[i], id, sizeof id);
        int k = -1;
        for (int j = 0; j < ds->n; j++)
            if (strcmp(ds->cases[j].id, id) == 0)
                k = j;
        if (k < 0) {
            if (fine_dataset_add(ds, id, files[i], NULL, e) < 0)
                return -1;
        } else if (!ds->cases[k].label) {
            ds->cases[k].label = strdup(files[i]);
            if (!ds->cases[k].label)
                return fine_err_set(e, "out of memory");
        } else {
            return fine_err_set(e, "%s: a third file for case %s (%s, %s)", files[i], id, ds->cases[k].image,
                                ds->cases[k].label);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- one case */

/* Checks a case's image and label; returns 0 or -1 with e naming the case. */
static int check_case(const fine_volume *img, const fine_volume *lab, const options *o, fine_err *e)
{
    const fine_geometry *g = &img->geom;
    if (img->data.ndim != 3)
        return fine_err_set(e, "case %s: image must be 3-D, not %d-D", img->case_id, img->data.ndim);
    for (int d = 0; d < 3; d++)
        if (!(g->spacing[d] > 0) || !isfinite(g->spacing[d]))
            return fine_err_set(e, "case %s: invalid image spacing %gx%gx%g", img->case_id, g->spacing[0],
                                g->spacing[1], g->spacing[2]);
    if (!lab)
        return 0;
    const int64_t *a = img->data.shape, *b = lab->data.shape;
    if (lab->data.ndim != 3 || a[0] != b[0] || a[1] != b[1] || a[2] != b[2])
        return fine_err_set(e, "case %s: label shape %lldx%lldx%lld differs from image shape %lldx%lldx%lld",
                            img->case_id, (long long)b[0], (long long)(lab->data.ndim > 1 ? b[1] : 0),
                            (long long)(lab->data.ndim > 2 ? b[2] : 0), (long long)a[0], (long long)a[1],
                            (long long)a[2]);
    if (fine_check_same_spacing(g->spacing, lab->geom.spacing, img->case_id, e) < 0)
        return -1;
    for (int d = 0; d < 3; d++)
        if (lab->geom.size[d] != lab->geom.crop_hi[d] - lab->geom.crop_lo[d] ||
            lab->geom.crop_lo[d] != g->crop_lo[d])
            return fine_err_set(e, "case %s: label and image cover different boxes of the original grid",
                                img->case_id);
    return fine_check_label(&lab->data, o->max_label, img->case_id, e);
}

static int put_volume(fine_writer *w, const fine_volume *v, const char *source, fine_err *e)
{
    fine_map *rec = fine_volume_record(v);
    if (!rec)
        return fine_err_set(e, "out of memory");
    fine_map *meta = fine_map_map(rec, "meta");
    if (source && source[0])
        fine_map_str(meta, "source", source);
    fine_map_str(meta, "stage", TOOL);
    int rc = fine_writer_put(w, rec, e);
    fine_map_free(rec);
    return rc;
}

/* Crops (and resamples) one case and writes its records. img and lab are consumed. */
static int process_case(fine_writer *w, fine_volume *img, fine_volume *lab, const char *src_img, const char *src_lab,
                        const options *o, fine_err *e)
{
    int64_t lo[3], hi[3];
    fine_volume ri = {0}, rl = {0};
    int rc = check_case(img, lab, o, e);
    if (rc == 0 && fine_crop_box(&img->data, lo, hi, e) < 0) {
        char prefix[FINE_CASE_MAX + 8];
        snprintf(prefix, sizeof prefix, "case %s", img->case_id);
        fine_err_prefix(e, prefix);
        rc = -1;
    }
    if (rc == 0)
        rc = fine_volume_crop(img, lo, hi, FINE_F32, e);
    if (rc == 0 && lab)
        rc = fine_volume_crop(lab, lo, hi, FINE_U8, e);
    if (rc == 0 && o->crop_only) {
        rc = put_volume(w, img, src_img, e);
        if (rc == 0 && lab)
            rc = put_volume(w, lab, src_lab, e);
    } else if (rc == 0) {
        rc = fine_volume_resample(img, o->spacing, o->threads, &ri, e);
        if (rc == 0)
            fine_tensor_free(&img->data); /* the cropped input is no longer needed */
        if (rc == 0)
            rc = put_volume(w, &ri, src_img, e);
        fine_volume_free(&ri);
        if (rc == 0 && lab) {
            rc = fine_volume_resample(lab, o->spacing, o->threads, &rl, e);
            if (rc == 0)
                rc = put_volume(w, &rl, src_lab, e);
            fine_volume_free(&rl);
        }
    }
    fine_volume_free(img);
    if (lab)
        fine_volume_free(lab);
    return rc;
}

/* ---------------------------------------------------------------- inputs: files and folders */

static int run_files(fine_writer *w, const fine_dataset *ds, const options *o, fine_progress *pr, fine_err *e)
{
    for (int i = 0; i < ds->n; i++) {
        const fine_case_files *c = &ds->cases[i];
        fine_progress_update(pr, i, ds->n, c->id);
        fine_volume img, lab;
        memset(&lab, 0, sizeof lab);
        char prefix[FINE_CASE_MAX + 8];
        snprintf(prefix, sizeof prefix, "case %s", c->id);
        if (fine_volume_from_nifti(c->image, c->id, "image", -1, &img, e) < 0) {
            fine_err_prefix(e, prefix);
            return -1;
        }
        if (c->label && fine_volume_from_nifti(c->label, c->id, "label", -1, &lab, e) < 0) {
            fine_err_prefix(e, prefix);
            fine_volume_free(&img);
            return -1;
        }
        if (process_case(w, &img, c->label ? &lab : NULL, c->image, c->label, o, e) < 0)
            return -1;
    }
    fine_progress_update(pr, ds->n, ds->n, NULL);
    return 0;
}

/* ---------------------------------------------------------------- inputs: a stream */

typedef struct held {
    fine_volume v;
    char source[1024];
    int full;
} held;

static int hold(held *h, const fine_record *rec, fine_err *e)
{
    if (fine_volume_from_record(rec, &h->v, e) < 0)
        return -1;
    h->source[0] = 0;
    fine_record_str(rec, "meta.source", h->source, sizeof h->source, NULL);
    h->full = 1;
    return 0;
}

static void drop(held *h)
{
    fine_volume_free(&h->v);
    h->full = 0;
}

/* The held image alone (no label followed it); a held label without image is an error. */
static int flush(fine_writer *w, held *img, held *lab, const options *o, fine_err *e)
{
    if (lab->full) {
        fine_err_set(e, "case %s: label without its image (a case's image and label must be consecutive)",
                     lab->v.case_id);
        drop(lab);
        return -1;
    }
    if (!img->full)
        return 0;
    img->full = 0;
    return process_case(w, &img->v, NULL, img->source, NULL, o, e);
}

static int run_stream(fine_writer *w, fine_reader *r, const options *o, fine_progress *pr, fine_err *e)
{
    held img = {0}, lab = {0};
    fine_record rec;
    int rc, ncase = 0;
    char name[FINE_NAME_MAX], id[FINE_CASE_MAX];
    while ((rc = fine_reader_next(r, &rec, e)) == 1) {
        int vol = strcmp(rec.type, "volume") == 0 && fine_record_str(&rec, "name", name, sizeof name, NULL) == 0 &&
                  fine_record_str(&rec, "case", id, sizeof id, NULL) == 0 &&
                  (strcmp(name, "image") == 0 || strcmp(name, "label") == 0);
        if (!vol) {
            if (flush(w, &img, &lab, o, e) < 0 || fine_writer_put_record(w, &rec, e) < 0)
                goto fail;
            continue;
        }
        if (o->cases.n && !fine_case_list_has(&o->cases, id))
            continue;
        int is_img = strcmp(name, "image") == 0;
        held *mine = is_img ? &img : &lab, *other = is_img ? &lab : &img;
        if (other->full && strcmp(other->v.case_id, id) == 0) { /* the pair is complete */
            if (hold(mine, &rec, e) < 0)
                goto fail;
            fine_progress_update(pr, ncase++, 0, id);
            img.full = lab.full = 0;
            if (process_case(w, &img.v, &lab.v, img.source, lab.source, o, e) < 0)
                goto fail;
            continue;
        }
        if (flush(w, &img, &lab, o, e) < 0) /* whatever was held belongs to another case */
            goto fail;
        if (hold(mine, &rec, e) < 0)
            goto fail;
        if (is_img)
            fine_progress_update(pr, ncase++, 0, id);
    }
    if (rc < 0 || flush(w, &img, &lab, o, e) < 0)
        goto fail;
    return 0;
fail:
    drop(&img);
    drop(&lab);
    return -1;
}

/* ---------------------------------------------------------------- --to-original */

static int run_to_original(fine_writer *w, fine_reader *r, const options *o, fine_progress *pr, fine_err *e)
{
    fine_record rec;
    int rc, n = 0;
    char name[FINE_NAME_MAX], id[FINE_CASE_MAX];
    while ((rc = fine_reader_next(r, &rec, e)) == 1) {
        int vol = strcmp(rec.type, "volume") == 0 && fine_record_str(&rec, "name", name, sizeof name, NULL) == 0 &&
                  fine_record_str(&rec, "case", id, sizeof id, NULL) == 0 &&
                  (strcmp(name, "prob") == 0 || strcmp(name, "seg") == 0 || strcmp(name, "label") == 0);
        if (!vol || (o->cases.n && !fine_case_list_has(&o->cases, id))) {
            if (fine_writer_put_record(w, &rec, e) < 0)
                return -1;
            continue;
        }
        fine_progress_update(pr, n++, 0, id);
        fine_volume in, out;
        if (fine_volume_from_record(&rec, &in, e) < 0)
            return -1;
        char source[1024] = "";
        fine_record_str(&rec, "meta.source", source, sizeof source, NULL);
        if (o->argmax && strcmp(name, "prob") == 0)
            rc = fine_resample_to_original_argmax(&in, o->threads, &out, e);
        else
            rc = fine_resample_to_original(&in, o->threads, &out, e);
        fine_volume_free(&in);
        if (rc == 0)
            rc = put_volume(w, &out, source, e);
        fine_volume_free(&out);
        if (rc < 0)
            return -1;
    }
    return rc < 0 ? -1 : 0;
}

/* ---------------------------------------------------------------- --plan-out */

/* The spacing and size after cropping of every case (NIfTI files or image records). */
typedef struct measured {
    int n, cap;
    char (*ids)[FINE_CASE_MAX];
    double *spacings;
    int64_t *sizes;
} measured;

static int measure_add(measured *m, const fine_volume *img, fine_err *e)
{
    int64_t lo[3], hi[3];
    if (img->data.ndim != 3)
        return fine_err_set(e, "case %s: image must be 3-D", img->case_id);
    if (fine_crop_box(&img->data, lo, hi, e) < 0) {
        char prefix[FINE_CASE_MAX + 8];
        snprintf(prefix, sizeof prefix, "case %s", img->case_id);
        fine_err_prefix(e, prefix);
        return -1;
    }
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->ids[i], img->case_id) == 0)
            return fine_err_set(e, "case %s: two images", img->case_id);
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 64;
        void *a = realloc(m->ids, (size_t)cap * sizeof *m->ids);
        if (a)
            m->ids = a;
        void *b = realloc(m->spacings, 3 * (size_t)cap * sizeof *m->spacings);
        if (b)
            m->spacings = b;
        void *c = realloc(m->sizes, 3 * (size_t)cap * sizeof *m->sizes);
        if (c)
            m->sizes = c;
        if (!a || !b || !c)
            return fine_err_set(e, "out of memory");
        m->cap = cap;
    }
    snprintf(m->ids[m->n], FINE_CASE_MAX, "%s", img->case_id);
    for (int d = 0; d < 3; d++) {
        m->spacings[3 * m->n + d] = img->geom.spacing[d];
        m->sizes[3 * m->n + d] = hi[d] - lo[d];
    }
    m->n++;
    return 0;
}

static int write_plan(const measured *m, int argc, char **argv, const options *o, fine_err *e)
{
    fine_plan plan;
    if (fine_plan_make(&plan, m->n, (const char (*)[FINE_CASE_MAX])m->ids, m->spacings, m->sizes, o->crop,
                       o->have_spacing ? o->spacing : NULL, e) < 0)
        return -1;
    fine_writer *w = fine_writer_open(o->plan_out, o->force, e);
    fine_map *rec = fine_plan_record(&plan);
    int rc = -1;
    if (w && rec && fine_writer_header(w, NULL, TOOL, argc, argv, e) == 0 && fine_writer_put(w, rec, e) == 0) {
        rc = fine_writer_close(w, e);
        w = NULL;
    } else if (!rec) {
        fine_err_set(e, "out of memory");
    }
    if (w)
        fine_writer_abort(w);
    fine_map_free(rec);
    if (rc == 0 && !o->quiet)
        fprintf(stderr, "%s: %d cases: target spacing %.6g x %.6g x %.6g mm, max size %lldx%lldx%lld, vt_map %lldx%lldx%lld\n",
                TOOL, plan.n, plan.target_spacing[0], plan.target_spacing[1], plan.target_spacing[2],
                (long long)plan.max_size[0], (long long)plan.max_size[1], (long long)plan.max_size[2],
                (long long)plan.vt_map[0], (long long)plan.vt_map[1], (long long)plan.vt_map[2]);
    fine_plan_free(&plan);
    return rc;
}

static int run_plan(const fine_dataset *ds, fine_reader *r, int argc, char **argv, const options *o,
                    fine_progress *pr, fine_err *e)
{
    measured m = {0};
    int rc = 0;
    if (ds) {
        for (int i = 0; i < ds->n && rc == 0; i++) {
            fine_progress_update(pr, i, ds->n, ds->cases[i].id);
            fine_volume img;
            rc = fine_volume_from_nifti(ds->cases[i].image, ds->cases[i].id, "image", -1, &img, e);
            if (rc == 0)
                rc = measure_add(&m, &img, e);
            fine_volume_free(&img);
        }
    } else {
        fine_record rec;
        char name[FINE_NAME_MAX], id[FINE_CASE_MAX];
        while ((rc = fine_reader_next(r, &rec, e)) == 1) {
            if (strcmp(rec.type, "volume") != 0 || fine_record_str(&rec, "name", name, sizeof name, NULL) < 0 ||
                strcmp(name, "image") != 0 || fine_record_str(&rec, "case", id, sizeof id, NULL) < 0 ||
                (o->cases.n && !fine_case_list_has(&o->cases, id)))
                continue;
            fine_progress_update(pr, m.n, 0, id);
            fine_volume img; /* only the data is needed: read in place */
            memset(&img, 0, sizeof img);
            snprintf(img.case_id, sizeof img.case_id, "%s", id);
            int ok = fine_record_tensor_view(&rec, NULL, &img.data, e) == 0 &&
                     fine_record_geometry(&rec, &img.geom, e) == 0;
            for (int d = 0; d < 3 && ok; d++)
                if (img.geom.size[d] != img.geom.crop_hi[d] - img.geom.crop_lo[d]) {
                    fine_err_set(e, "case %s: image already resampled; plan from images at their original spacing",
                                 id);
                    ok = 0;
                }
            ok = ok && measure_add(&m, &img, e) == 0;
            fine_tensor_free(&img.data);
            if (!ok) {
                rc = -1;
                break;
            }
        }
        if (rc == 0 && o->cases.n && m.n < o->cases.n)
            rc = fine_err_set(e, "%s: %d of the %d selected cases have no image record", fine_reader_name(r),
                              o->cases.n - m.n, o->cases.n);
    }
    if (rc == 0 && m.n == 0)
        rc = fine_err_set(e, "no image to plan from");
    if (rc == 0)
        rc = write_plan(&m, argc, argv, o, e);
    free(m.ids);
    free(m.spacings);
    free(m.sizes);
    return rc;
}

/* ---------------------------------------------------------------- main */

/* Copies the plan record of PLAN to the output, unchanged. */
static int copy_plan(fine_writer *w, const char *path, fine_err *e)
{
    fine_reader *r = fine_reader_open(path, e);
    if (!r)
        return -1;
    fine_record rec;
    int rc, done = 0;
    while ((rc = fine_reader_next(r, &rec, e)) == 1)
        if (!done && strcmp(rec.type, "plan") == 0) {
            if (fine_writer_put_record(w, &rec, e) < 0) {
                rc = -1;
                break;
            }
            done = 1;
        }
    fine_reader_close(r);
    return rc < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    fine_cli_init();
    enum { O_SPACING = 256, O_PLAN, O_PLAN_OUT, O_CROP, O_CROP_ONLY, O_TO_ORIG, O_ARGMAX, O_CASES, O_CASE,
           O_MAXLAB, O_THREADS, O_PROGRESS, O_VERSION };
    static const struct option opts[] = {
        {"spacing", required_argument, NULL, O_SPACING},   {"plan", required_argument, NULL, O_PLAN},
        {"plan-out", required_argument, NULL, O_PLAN_OUT}, {"make-plan", required_argument, NULL, O_PLAN_OUT},
        {"crop", required_argument, NULL, O_CROP},         {"crop-only", no_argument, NULL, O_CROP_ONLY},
        {"to-original", no_argument, NULL, O_TO_ORIG},     {"argmax", no_argument, NULL, O_ARGMAX},
        {"cases", required_argument, NULL, O_CASES},       {"split", required_argument, NULL, O_CASES},
        {"case", required_argument, NULL, O_CASE},         {"max-label", required_argument, NULL, O_MAXLAB},
        {"output", required_argument, NULL, 'o'},          {"threads", required_argument, NULL, O_THREADS},
        {"force", no_argument, NULL, 'f'},                 {"quiet", no_argument, NULL, 'q'},
        {"progress", no_argument, NULL, O_PROGRESS},       {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VERSION},         {NULL, 0, NULL, 0},
    };
    options o = {.out = "-", .crop = FINE_PLAN_DEFAULT_CROP, .max_label = 13};
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o.threads = ncpu > 0 ? (int)ncpu : 1;
    int c;
    int64_t v;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:fqh", opts, NULL)) != -1) {
        switch (c) {
        case O_SPACING:
            if (fine_parse_f64s(optarg, o.spacing, 3, 1) < 0 || !(o.spacing[0] > 0) || !(o.spacing[1] > 0) ||
                !(o.spacing[2] > 0) || !isfinite(o.spacing[0] + o.spacing[1] + o.spacing[2]))
                return fine_cli_usage(TOOL, "--spacing needs three positive numbers Z,Y,X (mm), not '%s'", optarg);
            o.have_spacing = 1;
            break;
        case O_PLAN: o.plan_path = optarg; break;
        case O_PLAN_OUT: o.plan_out = optarg; break;
        case O_CROP:
            if (fine_parse_i64s(optarg, o.crop, 3, 1) < 0 || o.crop[0] < 1 || o.crop[1] < 1 || o.crop[2] < 1)
                return fine_cli_usage(TOOL, "--crop needs three positive integers Z,Y,X, not '%s'", optarg);
            break;
        case O_CROP_ONLY: o.crop_only = 1; break;
        case O_TO_ORIG: o.to_original = 1; break;
        case O_ARGMAX: o.argmax = 1; break;
        case O_CASES: o.cases_arg = optarg; break;
        case O_CASE:
            if (!optarg[0] || strlen(optarg) >= FINE_CASE_MAX)
                return fine_cli_usage(TOOL, "--case needs a non-empty id");
            o.case_id = optarg;
            break;
        case O_MAXLAB:
            if (fine_parse_i64(optarg, &v) < 0 || v > 255)
                return fine_cli_usage(TOOL, "--max-label needs an integer 0..255, not '%s'", optarg);
            o.max_label = (int)v;
            break;
        case 'o': o.out = optarg; break;
        case O_THREADS:
            if (fine_parse_i64(optarg, &v) < 0 || v < 1 || v > 256)
                return fine_cli_usage(TOOL, "--threads needs an integer 1..256, not '%s'", optarg);
            o.threads = (int)v;
            break;
        case 'f': o.force = 1; break;
        case 'q': o.quiet = 1; break;
        case O_PROGRESS: o.progress = 1; break;
        case 'h': usage(); return FINE_EXIT_OK;
        case O_VERSION: fine_cli_version(TOOL); return FINE_EXIT_OK;
        case ':': return fine_cli_usage(TOOL, "option '%s' needs an argument", argv[optind - 1]);
        default: return fine_cli_usage(TOOL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    int nin = argc - optind;
    char **in = argv + optind;
    int modes = (o.plan_out != NULL) + o.to_original + o.crop_only;
    if (modes > 1)
        return fine_cli_usage(TOOL, "--plan-out, --to-original and --crop-only are separate modes");
    if (o.argmax && !o.to_original)
        return fine_cli_usage(TOOL, "--argmax goes with --to-original");
    if (o.to_original) {
        if (o.have_spacing || o.plan_path)
            return fine_cli_usage(TOOL, "--to-original takes the grid from each volume's geometry, not --spacing or --plan");
        if (nin > 1 || (nin == 1 && !is_stream_arg(in[0])))
            return fine_cli_usage(TOOL, "--to-original reads one stream (default '-')");
    } else if (o.plan_out) {
        if (o.plan_path)
            return fine_cli_usage(TOOL, "--plan-out makes a plan; --plan uses one");
        if (strcmp(o.out, "-") != 0)
            return fine_cli_usage(TOOL, "--plan-out writes the plan only; -o is not used");
    } else if (!o.crop_only) {
        if (o.have_spacing == !!o.plan_path)
            return fine_cli_usage(TOOL, "give the target spacing: --spacing Z,Y,X or --plan PLAN (exactly one)");
    }
    if (nin == 0 && !o.to_original)
        return fine_cli_usage(TOOL, "no input: give NIfTI files, a data set folder or a stream ('-')");

    /* classify the inputs */
    int kind = 0; /* 1 files, 2 folder, 3 stream */
    for (int i = 0; i < nin; i++) {
        int k = is_dir(in[i]) ? 2 : fine_nifti_is_path(in[i]) ? 1 : is_stream_arg(in[i]) ? 3 : 0;
        if (k == 0) {
            fine_err e;
            fine_err_set(&e, "%s: not a NIfTI file, a data set folder or a fine stream", in[i]);
            return fine_cli_fail(TOOL, &e);
        }
        if (kind && k != kind)
            return fine_cli_usage(TOOL, "inputs mix NIfTI files, folders and streams");
        kind = k;
    }
    if (o.to_original)
        kind = 3;
    if ((kind == 2 || kind == 3) && nin > 1)
        return fine_cli_usage(TOOL, "give one folder or one stream (got %d)", nin);
    if (o.case_id && kind != 1)
        return fine_cli_usage(TOOL, "--case goes with NIfTI files");

    fine_err e = {0};
    if (o.cases_arg && parse_cases(o.cases_arg, &o.cases, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    fine_plan plan = {0};
    if (o.plan_path) {
        if (fine_plan_read(o.plan_path, &plan, &e) < 0) {
            fine_case_list_free(&o.cases);
            return fine_cli_fail(TOOL, &e);
        }
        memcpy(o.spacing, plan.target_spacing, sizeof o.spacing);
        fine_plan_free(&plan);
    }

    fine_dataset ds = {0};
    fine_reader *r = NULL;
    fine_writer *w = NULL;
    int rc = 0;
    if (kind == 1)
        rc = cases_from_files(in, nin, o.case_id, &ds, &e);
    else if (kind == 2)
        rc = fine_dataset_scan(in[0], &ds, &e);
    if (rc == 0 && kind != 3 && o.cases.n)
        rc = fine_dataset_select(&ds, &o.cases, o.cases_arg, &e);
    if (rc == 0 && kind == 3 && !(r = fine_reader_open(nin ? in[0] : "-", &e)))
        rc = -1;

    fine_progress pr;
    fine_progress_init(&pr, TOOL, o.quiet, o.progress);
    if (rc == 0 && o.plan_out) {
        rc = run_plan(kind == 3 ? NULL : &ds, r, argc, argv, &o, &pr, &e);
    } else if (rc == 0) {
        if (!(w = fine_writer_open(o.out, o.force, &e)) ||
            fine_writer_header(w, r ? fine_reader_provenance(r) : NULL, TOOL, argc, argv, &e) < 0 ||
            (o.plan_path && copy_plan(w, o.plan_path, &e) < 0))
            rc = -1;
        else if (o.to_original)
            rc = run_to_original(w, r, &o, &pr, &e);
        else if (kind == 3)
            rc = run_stream(w, r, &o, &pr, &e);
        else
            rc = run_files(w, &ds, &o, &pr, &e);
        if (rc == 0) {
            rc = fine_writer_close(w, &e);
            w = NULL;
        }
    }
    fine_progress_done(&pr);
    if (w)
        fine_writer_abort(w);
    if (r)
        fine_reader_close(r);
    fine_dataset_free(&ds);
    fine_case_list_free(&o.cases);
    return rc == 0 ? FINE_EXIT_OK : fine_cli_fail(TOOL, &e);
}
