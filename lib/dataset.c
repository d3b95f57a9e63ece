#include "dataset.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "resample.h"

/* ---------------------------------------------------------------- names */

/* The length of name without a .nii.gz or .nii extension, or 0 when it has neither. */
static size_t nifti_stem(const char *name)
{
    size_t n = strlen(name);
    if (n > 7 && strcasecmp(name + n - 7, ".nii.gz") == 0)
        return n - 7;
    if (n > 4 && strcasecmp(name + n - 4, ".nii") == 0)
        return n - 4;
    return 0;
}

/* The serial of "<prefix><digits>" (stem of length n), or -1. */
static long serial_of(const char *stem, size_t n, const char *prefix)
{
    size_t p = strlen(prefix);
    if (n <= p || n > p + 9 || strncmp(stem, prefix, p) != 0)
        return -1;
    long v = 0;
    for (size_t i = p; i < n; i++) {
        if (!isdigit((unsigned char)stem[i]))
            return -1;
        v = v * 10 + (stem[i] - '0');
    }
    return v;
}

void fine_case_id_from_file(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = nifti_stem(base);
    long s;
    if (n && ((s = serial_of(base, n, "img")) >= 0 || (s = serial_of(base, n, "label")) >= 0)) {
        snprintf(out, cap, "ABD_%03ld", s);
    } else if (n > 5 && strncmp(base + n - 5, "_0000", 5) == 0) {
        snprintf(out, cap, "%.*s", (int)(n - 5), base);
    } else {
        fine_case_id_from_path(path, out, cap);
    }
}

void fine_case_id_normalize(const char *s, char *out, size_t cap)
{
    size_t n = strlen(s);
    long v;
    if ((v = serial_of(s, n, "")) >= 0 || (v = serial_of(s, n, "img")) >= 0 || (v = serial_of(s, n, "ABD_")) >= 0)
        snprintf(out, cap, "ABD_%03ld", v);
    else
        snprintf(out, cap, "%s", s);
}

/* ---------------------------------------------------------------- the case table */

void fine_dataset_free(fine_dataset *ds)
{
    for (int i = 0; i < ds->n; i++) {
        free(ds->cases[i].image);
        free(ds->cases[i].label);
    }
    free(ds->cases);
    memset(ds, 0, sizeof *ds);
}

static int find_case(const fine_dataset *ds, const char *id)
{
    for (int i = 0; i < ds->n; i++)
        if (strcmp(ds->cases[i].id, id) == 0)
            return i;
    return -1;
}

int fine_dataset_add(fine_dataset *ds, const char *id, const char *image, const char *label, fine_err *e)
{
    char derived[FINE_CASE_MAX];
    if (!id) {
        fine_case_id_from_file(image, derived, sizeof derived);
        id = derived;
    }
    if (strlen(id) >= FINE_CASE_MAX)
        return fine_err_set(e, "case id '%.40s...' is too long", id);
    int k = find_case(ds, id);
    if (k >= 0)
        return fine_err_set(e, "%s and %s both give case %s", ds->cases[k].image, image, id);
    if (ds->n == ds->cap) {
        int cap = ds->cap ? 2 * ds->cap : 32;
        fine_case_files *c = realloc(ds->cases, (size_t)cap * sizeof *c);
        if (!c)
            return fine_err_set(e, "out of memory");
        ds->cases = c;
        ds->cap = cap;
    }
    fine_case_files *c = &ds->cases[ds->n];
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    c->image = strdup(image);
    c->label = label ? strdup(label) : NULL;
    if (!c->image || (label && !c->label)) {
        free(c->image);
        free(c->label);
        return fine_err_set(e, "out of memory");
    }
    ds->n++;
    return 0;
}

int fine_dataset_require_labels(const fine_dataset *ds, fine_err *e)
{
    for (int i = 0; i < ds->n; i++)
        if (!ds->cases[i].label)
            return fine_err_set(e, "case %s (%s): no label file", ds->cases[i].id, ds->cases[i].image);
    return 0;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_case(const void *a, const void *b)
{
    const fine_case_files *x = a, *y = b;
    return strcmp(x->id, y->id);
}

/* The images of one folder: for BCV names imgXXXX, for nnU-Net names NAME_0000; with a label
 * folder, each image's label (labelXXXX or NAME) when present. */
static int scan_images(fine_dataset *ds, const char *imgdir, const char *labdir, int nnunet, fine_err *e)
{
    DIR *d = opendir(imgdir);
    if (!d)
        return fine_err_set(e, "%s: %s", imgdir, strerror(errno));
    struct dirent *ent;
    int rc = 0;
    char img[8192], lab[8192];
    while (rc == 0 && (ent = readdir(d)) != NULL) {
        const char *name = ent->d_name;
        size_t n = nifti_stem(name);
        if (!n)
            continue;
        const char *ext = name + n;
        char id[FINE_CASE_MAX];
        snprintf(img, sizeof img, "%s/%s", imgdir, name);
        if (nnunet) {
            if (n <= 5 || name[n - 5] != '_' || !isdigit((unsigned char)name[n - 1]))
                continue;
            if (strncmp(name + n - 5, "_0000", 5) != 0) {
                rc = fine_err_set(e, "%s: more than one modality (%s); fine reads single-channel CT", imgdir, name);
                break;
            }
            snprintf(id, sizeof id, "%.*s", (int)(n - 5), name);
            snprintf(lab, sizeof lab, "%s/%s%s", labdir, id, ext);
        } else {
            long s = serial_of(name, n, "img");
            if (s < 0)
                continue;
            snprintf(id, sizeof id, "ABD_%03ld", s);
            snprintf(lab, sizeof lab, "%s/label%.*s%s", labdir, (int)(n - 3), name + 3, ext);
        }
        rc = fine_dataset_add(ds, id, img, is_file(lab) ? lab : NULL, e);
    }
    closedir(d);
    if (rc == 0 && ds->n == 0)
        rc = fine_err_set(e, "%s: no %s image", imgdir, nnunet ? "NAME_0000.nii.gz" : "imgXXXX.nii.gz");
    if (rc == 0)
        qsort(ds->cases, (size_t)ds->n, sizeof *ds->cases, cmp_case);
    return rc;
}

int fine_dataset_scan(const char *dir, fine_dataset *ds, fine_err *e)
{
    memset(ds, 0, sizeof *ds);
    char a[4096], b[4096];
    int rc;
    if (!is_dir(dir))
        return fine_err_set(e, "%s: not a folder", dir);
    snprintf(ds->root, sizeof ds->root, "%s", dir);
    snprintf(a, sizeof a, "%s/imagesTr", dir);
    if (is_dir(a)) {
        snprintf(ds->layout, sizeof ds->layout, "nnunet");
        snprintf(b, sizeof b, "%s/labelsTr", dir);
        rc = scan_images(ds, a, b, 1, e);
    } else {
        static const char *const sub[] = {"", "/RawData/Training", "/Training"};
        int found = -1;
        for (int i = 0; i < 3 && found < 0; i++) {
            snprintf(a, sizeof a, "%s%s/img", dir, sub[i]);
            if (is_dir(a))
                found = i;
        }
        if (found < 0)
            return fine_err_set(e, "%s: not a data set folder (expected img/ and label/, RawData/Training/img/, "
                                "Training/img/, or nnU-Net's imagesTr/ and labelsTr/)", dir);
        snprintf(ds->layout, sizeof ds->layout, "bcv");
        snprintf(b, sizeof b, "%s%s/label", dir, sub[found]);
        rc = scan_images(ds, a, b, 0, e);
    }
    if (rc < 0)
        fine_dataset_free(ds);
    return rc;
}

/* ---------------------------------------------------------------- selections */

void fine_case_list_free(fine_case_list *list)
{
    free(list->ids);
    memset(list, 0, sizeof *list);
}

int fine_case_list_has(const fine_case_list *list, const char *id)
{
    for (int i = 0; i < list->n; i++)
        if (strcmp(list->ids[i], id) == 0)
            return 1;
    return 0;
}

int fine_case_list_read(const char *path, fine_case_list *list, fine_err *e)
{
    memset(list, 0, sizeof *list);
    FILE *f = fopen(path, "r");
    if (!f)
        return fine_err_set(e, "%s: %s", path, strerror(errno));
    char line[1024];
    int lineno = 0, cap = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        char *end = s + strlen(s);
        while (end > s && isspace((unsigned char)end[-1]))
            *--end = 0;
        if (!*s)
            continue;
        for (char *c = s; *c; c++)
            if (isspace((unsigned char)*c)) {
                rc = fine_err_set(e, "%s:%d: one case id per line, got '%s'", path, lineno, s);
                break;
            }
        if (rc)
            break;
        char id[FINE_CASE_MAX];
        fine_case_id_normalize(s, id, sizeof id);
        if (fine_case_list_has(list, id)) {
            rc = fine_err_set(e, "%s:%d: case %s is listed twice", path, lineno, id);
            break;
        }
        if (list->n == cap) {
            cap = cap ? 2 * cap : 64;
            void *p = realloc(list->ids, (size_t)cap * sizeof *list->ids);
            if (!p) {
                rc = fine_err_set(e, "out of memory");
                break;
            }
            list->ids = p;
        }
        snprintf(list->ids[list->n++], FINE_CASE_MAX, "%s", id);
    }
    if (rc == 0 && ferror(f))
        rc = fine_err_set(e, "%s: read error", path);
    fclose(f);
    if (rc == 0 && list->n == 0)
        rc = fine_err_set(e, "%s: no case id in the file", path);
    if (rc < 0)
        fine_case_list_free(list);
    return rc;
}

int fine_dataset_select(fine_dataset *ds, const fine_case_list *list, const char *what, fine_err *e)
{
    fine_case_files *sel = malloc((size_t)(list->n ? list->n : 1) * sizeof *sel);
    if (!sel)
        return fine_err_set(e, "out of memory");
    for (int i = 0; i < list->n; i++) {
        int k = find_case(ds, list->ids[i]);
        if (k < 0) {
            free(sel);
            return fine_err_set(e, "%s: case %s is not in %s", what, list->ids[i],
                                ds->root[0] ? ds->root : "the inputs");
        }
        sel[i] = ds->cases[k];
        ds->cases[k].image = ds->cases[k].label = NULL; /* moved */
    }
    for (int i = 0; i < ds->n; i++) {
        free(ds->cases[i].image);
        free(ds->cases[i].label);
    }
    free(ds->cases);
    ds->cases = sel;
    ds->n = ds->cap = list->n;
    return 0;
}

/* ---------------------------------------------------------------- plan */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* numpy.percentile(v, q) with the default linear method (v is not modified). */
static double percentile(const double *v, int n, double q)
{
    if (n <= 0)
        return NAN;
    double *s = malloc((size_t)n * sizeof *s);
    if (!s)
        return NAN;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    /* numpy 'linear': virtual index (n - 1) * q/100, then _lerp(a, b, t), which computes
     * b - (b - a) * (1 - t) when t >= 0.5 */
    double vi = (double)(n - 1) * (q / 100.0), f = floor(vi), t = vi - f;
    int64_t i = (int64_t)f, j = i + 1 < n ? i + 1 : n - 1;
    double a = s[i], b = s[j], d = b - a;
    double r = t >= 0.5 ? b - d * (1.0 - t) : a + d * t;
    free(s);
    return r;
}

void fine_plan_target_spacing(const double *spacings, const int64_t *crop_sizes, int n, double target[3])
{
    double tsize[3];
    double *col = malloc((size_t)(n > 0 ? n : 1) * sizeof *col);
    if (!col || n <= 0) {
        free(col);
        target[0] = target[1] = target[2] = NAN;
        return;
    }
    for (int d = 0; d < 3; d++) {
        for (int i = 0; i < n; i++)
            col[i] = spacings[3 * i + d];
        target[d] = percentile(col, n, 50);
        for (int i = 0; i < n; i++)
            col[i] = (double)crop_sizes[3 * i + d];
        tsize[d] = percentile(col, n, 50);
    }
    int worst = 0; /* np.argmax: the first maximum */
    for (int d = 1; d < 3; d++)
        if (target[d] > target[worst])
            worst = d;
    double max_other = -INFINITY, min_other_size = INFINITY;
    for (int d = 0; d < 3; d++)
        if (d != worst) {
            max_other = target[d] > max_other ? target[d] : max_other;
            min_other_size = tsize[d] < min_other_size ? tsize[d] : min_other_size;
        }
    int aniso_spacing = target[worst] > FINE_SEPARATE_Z_THRESHOLD * max_other;
    int aniso_voxels = tsize[worst] * FINE_SEPARATE_Z_THRESHOLD < min_other_size;
    if (aniso_spacing && aniso_voxels) {
        for (int i = 0; i < n; i++)
            col[i] = spacings[3 * i + worst];
        double t = percentile(col, n, 10);
        if (t < max_other)
            t = (max_other > t ? max_other : t) + 1e-5;
        target[worst] = t;
    }
    free(col);
}

void fine_plan_free(fine_plan *p)
{
    free(p->cases);
    free(p->spacings);
    free(p->crop_sizes);
    free(p->sizes);
    memset(p, 0, sizeof *p);
}

static int plan_alloc(fine_plan *p, int n, fine_err *e)
{
    size_t m = (size_t)(n > 0 ? n : 1);
    p->n = n;
    p->cases = calloc(m, sizeof *p->cases);
    p->spacings = calloc(3 * m, sizeof *p->spacings);
    p->crop_sizes = calloc(3 * m, sizeof *p->crop_sizes);
    p->sizes = calloc(3 * m, sizeof *p->sizes);
    if (!p->cases || !p->spacings || !p->crop_sizes || !p->sizes) {
        fine_plan_free(p);
        return fine_err_set(e, "out of memory");
    }
    return 0;
}

static void plan_grid(fine_plan *p)
{
    for (int d = 0; d < 3; d++) {
        p->max_imsize[d] = p->max_size[d];
        int64_t v = p->crop[d] > 0 ? p->max_imsize[d] / p->crop[d] : 0;
        p->vt_map[d] = v > 2 ? v : 2;
    }
}

int fine_plan_make(fine_plan *p, int n, const char (*ids)[FINE_CASE_MAX], const double *spacings,
                   const int64_t *crop_sizes, const int64_t crop[3], const double *target, fine_err *e)
{
    memset(p, 0, sizeof *p);
    if (n <= 0)
        return fine_err_set(e, "a plan needs at least one case");
    for (int d = 0; d < 3; d++)
        if (crop[d] < 1)
            return fine_err_set(e, "invalid crop %lldx%lldx%lld", (long long)crop[0], (long long)crop[1],
                                (long long)crop[2]);
    for (int i = 0; i < 3 * n; i++)
        if (!(spacings[i] > 0) || !isfinite(spacings[i]) || crop_sizes[i] < 1)
            return fine_err_set(e, "case %s: invalid spacing or size", ids[i / 3]);
    if (plan_alloc(p, n, e) < 0)
        return -1;
    memcpy(p->cases, ids, (size_t)n * sizeof *p->cases);
    memcpy(p->spacings, spacings, 3 * (size_t)n * sizeof *p->spacings);
    memcpy(p->crop_sizes, crop_sizes, 3 * (size_t)n * sizeof *p->crop_sizes);
    memcpy(p->crop, crop, sizeof p->crop);
    if (target)
        memcpy(p->target_spacing, target, sizeof p->target_spacing);
    else
        fine_plan_target_spacing(spacings, crop_sizes, n, p->target_spacing);
    double *col = malloc((size_t)n * sizeof *col);
    if (!col) {
        fine_plan_free(p);
        return fine_err_set(e, "out of memory");
    }
    for (int i = 0; i < n; i++)
        fine_resample_size(crop_sizes + 3 * i, spacings + 3 * i, p->target_spacing, p->sizes + 3 * i);
    for (int d = 0; d < 3; d++) {
        p->max_size[d] = 0;
        for (int i = 0; i < n; i++) {
            col[i] = (double)p->sizes[3 * i + d];
            if (p->sizes[3 * i + d] > p->max_size[d])
                p->max_size[d] = p->sizes[3 * i + d];
        }
        p->median_size[d] = percentile(col, n, 50);
    }
    free(col);
    plan_grid(p);
    return 0;
}

fine_map *fine_plan_record(const fine_plan *p)
{
    fine_map *m = fine_map_new("plan");
    if (!m)
        return NULL;
    fine_map_f64s(m, "target_spacing", p->target_spacing, 3);
    fine_map_f64s(m, "median_size", p->median_size, 3);
    fine_map_i64s(m, "max_size", p->max_size, 3);
    fine_map_i64s(m, "crop", p->crop, 3);
    fine_map_i64s(m, "vt_map", p->vt_map, 3);
    fine_map_i64s(m, "max_imsize", p->max_imsize, 3);
    const char **ids = malloc((size_t)(p->n > 0 ? p->n : 1) * sizeof *ids);
    if (!ids) {
        fine_map_free(m);
        return NULL;
    }
    for (int i = 0; i < p->n; i++)
        ids[i] = p->cases[i];
    fine_map_strs(m, "cases", ids, p->n);
    free(ids);
    fine_map_f64s(m, "case_spacing", p->spacings, 3 * p->n);
    fine_map_i64s(m, "case_crop_size", p->crop_sizes, 3 * p->n);
    fine_map_i64s(m, "case_size", p->sizes, 3 * p->n);
    fine_map_str(m, "rule", "nnunet-v2.1");
    fine_map_f64(m, "separate_z_threshold", FINE_SEPARATE_Z_THRESHOLD);
    return m;
}

int fine_plan_from_record(const fine_record *r, fine_plan *p, fine_err *e)
{
    memset(p, 0, sizeof *p);
    if (strcmp(r->type, "plan") != 0)
        return fine_err_set(e, "expected a plan record, got '%s'", r->type);
    if (fine_record_f64s(r, "target_spacing", p->target_spacing, 3, e) < 0 ||
        fine_record_i64s(r, "crop", p->crop, 3, e) < 0 || fine_record_i64s(r, "vt_map", p->vt_map, 3, e) < 0 ||
        fine_record_i64s(r, "max_imsize", p->max_imsize, 3, e) < 0)
        return -1;
    for (int d = 0; d < 3; d++)
        if (!(p->target_spacing[d] > 0) || !isfinite(p->target_spacing[d]))
            return fine_err_set(e, "plan: invalid target_spacing %gx%gx%g", p->target_spacing[0],
                                p->target_spacing[1], p->target_spacing[2]);
    if (fine_record_get(r, "median_size"))
        fine_record_f64s(r, "median_size", p->median_size, 3, NULL);
    if (fine_record_get(r, "max_size"))
        fine_record_i64s(r, "max_size", p->max_size, 3, NULL);
    const msgpack_object *cases = fine_record_get(r, "cases");
    if (cases && cases->type == MSGPACK_OBJECT_ARRAY && cases->via.array.size > 0) {
        int n = (int)cases->via.array.size;
        if (plan_alloc(p, n, e) < 0)
            return -1;
        for (int i = 0; i < n; i++) {
            const msgpack_object *o = &cases->via.array.ptr[i];
            if (o->type != MSGPACK_OBJECT_STR) {
                fine_plan_free(p);
                return fine_err_set(e, "plan: cases[%d] is not a string", i);
            }
            snprintf(p->cases[i], FINE_CASE_MAX, "%.*s", (int)o->via.str.size, o->via.str.ptr);
        }
        if (fine_record_get(r, "case_spacing"))
            fine_record_f64s(r, "case_spacing", p->spacings, 3 * n, NULL);
        if (fine_record_get(r, "case_crop_size"))
            fine_record_i64s(r, "case_crop_size", p->crop_sizes, 3 * n, NULL);
        if (fine_record_get(r, "case_size"))
            fine_record_i64s(r, "case_size", p->sizes, 3 * n, NULL);
    }
    return 0;
}

int fine_plan_read(const char *path, fine_plan *p, fine_err *e)
{
    memset(p, 0, sizeof *p);
    fine_reader *r = fine_reader_open(path, e);
    if (!r)
        return -1;
    fine_record rec;
    int rc, found = 0;
    while ((rc = fine_reader_next(r, &rec, e)) == 1) {
        if (!found && strcmp(rec.type, "plan") == 0) {
            if (fine_plan_from_record(&rec, p, e) < 0) {
                fine_err_prefix(e, fine_reader_name(r));
                rc = -1;
                break;
            }
            found = 1;
        }
    }
    if (rc == 0 && !found)
        rc = fine_err_set(e, "%s: no plan record", fine_reader_name(r));
    fine_reader_close(r);
    if (rc < 0)
        fine_plan_free(p);
    return rc < 0 ? -1 : 0;
}
