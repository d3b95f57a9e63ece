/* evaluate.c: case matching, grid checks, means and reports of an evaluation (evaluate.h). */
#include "evaluate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "nifti_io.h"

/* ---------------------------------------------------------------- labels */

static const char *const ORGANS[14] = {
    "background", "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver",
    "stomach", "aorta", "inferior vena cava", "portal vein and splenic vein", "pancreas",
    "right adrenal gland", "left adrenal gland",
};

const char *fine_bcv_organ(int64_t label)
{
    return label >= 0 && label < 14 ? ORGANS[label] : NULL;
}

int fine_bcv_is_synapse(int64_t label)
{
    return label == 1 || label == 2 || label == 3 || label == 4 || label == 6 || label == 7 || label == 8 ||
           label == 11;
}

static int parse_label_id(const char **p, int64_t *v)
{
    if (!isdigit((unsigned char)**p))
        return -1;
    int64_t x = 0;
    while (isdigit((unsigned char)**p)) {
        x = x * 10 + (**p - '0');
        if (x > 2147483647)
            return -1;
        (*p)++;
    }
    *v = x;
    return 0;
}

int fine_parse_labels(const char *s, int64_t *out, int max, fine_err *e)
{
    int n = 0;
    const char *p = s;
    if (!*p)
        return fine_err_set(e, "empty label list");
    while (*p) {
        int64_t a, b;
        if (parse_label_id(&p, &a) < 0)
            return fine_err_set(e, "label list '%s': expected a label id (0 to 2147483647) at '%s'", s, p);
        b = a;
        if (*p == '-') {
            p++;
            if (parse_label_id(&p, &b) < 0 || b < a)
                return fine_err_set(e, "label list '%s': bad range ending at '%s'", s, p);
        }
        for (int64_t v = a; v <= b; v++) {
            if (n == max)
                return fine_err_set(e, "label list '%s': more than %d labels", s, max);
            for (int k = 0; k < n; k++)
                if (out[k] == v)
                    return fine_err_set(e, "label list '%s': label %lld appears twice", s, (long long)v);
            out[n++] = v;
        }
        if (*p == ',') {
            p++;
            if (!*p)
                return fine_err_set(e, "label list '%s' ends with a comma", s);
        } else if (*p) {
            return fine_err_set(e, "label list '%s': unexpected '%c'", s, *p);
        }
    }
    return n;
}

/* ---------------------------------------------------------------- matching cases */

void fine_case_key(const char *case_id, char *key, size_t cap)
{
    if (cap == 0)
        return;
    char id[FINE_CASE_MAX];
    snprintf(id, sizeof id, "%s", case_id);
    size_t n = strlen(id);
    if (n > 5 && strcmp(id + n - 5, "_0000") == 0)
        id[n -= 5] = 0;
    static const char *const prefixes[] = {"ABD_", "img", "label"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t m = strlen(prefixes[i]);
        if (n <= m || strncmp(id, prefixes[i], m) != 0 || n - m > 9)
            continue;
        const char *d = id + m;
        int digits = 1;
        for (const char *c = d; *c; c++)
            digits &= isdigit((unsigned char)*c) != 0;
        if (digits) {
            snprintf(key, cap, "#%ld", strtol(d, NULL, 10));
            return;
        }
    }
    snprintf(key, cap, "%s", id);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void fine_free_strings(char **s, int n)
{
    for (int i = 0; s && i < n; i++)
        free(s[i]);
    free(s);
}

/* Appends a copy of str to *arr (of *n, capacity *cap). */
static int push_str(char ***arr, int *n, int *cap, const char *str)
{
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 16;
        char **a = realloc(*arr, (size_t)c * sizeof *a);
        if (!a)
            return -1;
        *arr = a;
        *cap = c;
    }
    char *copy = strdup(str);
    if (!copy)
        return -1;
    (*arr)[(*n)++] = copy;
    return 0;
}

int fine_list_nifti_dir(const char *dir, char ***paths, int *n, fine_err *e)
{
    *paths = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return fine_err_set(e, "%s: %s", dir, strerror(errno));
    int cap = 0;
    size_t dl = strlen(dir);
    int slash = dl > 0 && dir[dl - 1] == '/';
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (ent->d_name[0] == '.' || !fine_nifti_is_path(ent->d_name))
            continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s%s%s", dir, slash ? "" : "/", ent->d_name) >= (int)sizeof path)
            continue;
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (push_str(paths, n, &cap, path) < 0) {
            closedir(d);
            fine_free_strings(*paths, *n);
            *paths = NULL;
            *n = 0;
            return fine_err_set(e, "%s: out of memory", dir);
        }
    }
    closedir(d);
    if (*n > 1)
        qsort(*paths, (size_t)*n, sizeof **paths, cmp_str);
    return 0;
}

int fine_read_pair_list(const char *path, char ***pred, char ***ref, int *n, fine_err *e)
{
    *pred = *ref = NULL;
    *n = 0;
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f)
        return fine_err_set(e, "%s: %s", path, strerror(errno));
    int cap_p = 0, cap_r = 0, np = 0, nr = 0, lineno = 0, rc = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) >= 0) {
        lineno++;
        char *save = NULL, *a = strtok_r(line, " \t\r\n", &save);
        if (!a || a[0] == '#')
            continue;
        char *b = strtok_r(NULL, " \t\r\n", &save), *c = b ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        if (!b || c) {
            rc = fine_err_set(e, "%s: line %d: expected two paths 'PRED REF', found %s", path, lineno,
                              b ? "more" : "one");
            break;
        }
        if (push_str(pred, &np, &cap_p, a) < 0 || push_str(ref, &nr, &cap_r, b) < 0) {
            rc = fine_err_set(e, "%s: out of memory", path);
            break;
        }
    }
    if (rc == 0 && ferror(f))
        rc = fine_err_set(e, "%s: read error", path);
    free(line);
    if (f != stdin)
        fclose(f);
    if (rc == 0 && np == 0)
        rc = fine_err_set(e, "%s: no pairs", path);
    if (rc < 0) {
        fine_free_strings(*pred, np);
        fine_free_strings(*ref, nr);
        *pred = *ref = NULL;
        return -1;
    }
    *n = np;
    return 0;
}

/* ---------------------------------------------------------------- grids */

static void grid_text(const fine_volume *v, char *out, size_t cap)
{
    const int64_t *s = v->data.shape;
    const double *sp = v->geom.spacing;
    if (v->data.ndim == 3)
        snprintf(out, cap, "%lldx%lldx%lld at %gx%gx%g mm", (long long)s[0], (long long)s[1], (long long)s[2],
                 fabs(sp[0]), fabs(sp[1]), fabs(sp[2]));
    else
        snprintf(out, cap, "%d-D", v->data.ndim);
}

int fine_check_same_grid(const fine_volume *pred, const char *pred_name, const fine_volume *ref,
                         const char *ref_name, double tol, fine_err *e)
{
    char gp[128], gr[128], detail[96];
    grid_text(pred, gp, sizeof gp);
    grid_text(ref, gr, sizeof gr);
    const char *why = NULL;
    if (pred->data.ndim != 3 || ref->data.ndim != 3) {
        why = "not both 3-D label volumes";
    } else if (pred->data.shape[0] != ref->data.shape[0] || pred->data.shape[1] != ref->data.shape[1] ||
               pred->data.shape[2] != ref->data.shape[2]) {
        why = "shapes differ";
    } else {
        for (int d = 0; d < 3 && !why; d++) {
            double a = fabs(pred->geom.spacing[d]), b = fabs(ref->geom.spacing[d]);
            if (!(fabs(a - b) <= tol * fmax(a, b)))
                why = "spacings differ";
        }
        /* the voxel-to-world maps: the 8 corner voxels' centres must agree */
        double A[4][4], B[4][4], minsp = INFINITY, moved = 0;
        fine_geometry_current_affine(&pred->geom, A);
        fine_geometry_current_affine(&ref->geom, B);
        for (int d = 0; d < 3; d++)
            minsp = fmin(minsp, fabs(pred->geom.spacing[d]));
        for (int c = 0; c < 8 && !why; c++) {
            double ijk[3] = {c & 1 ? (double)(pred->data.shape[2] - 1) : 0, c & 2 ? (double)(pred->data.shape[1] - 1) : 0,
                             c & 4 ? (double)(pred->data.shape[0] - 1) : 0};
            for (int r = 0; r < 3; r++) {
                double wa = A[r][3], wb = B[r][3];
                for (int q = 0; q < 3; q++) {
                    wa += A[r][q] * ijk[q];
                    wb += B[r][q] * ijk[q];
                }
                moved = fmax(moved, fabs(wa - wb));
            }
        }
        if (!why && !(moved <= tol * minsp)) {
            snprintf(detail, sizeof detail, "voxel-to-world affines differ (a corner voxel moves by %.3g mm)", moved);
            why = detail;
        }
    }
    if (!why)
        return 0;
    return fine_err_set(e, "case %s: %s (%s) and %s (%s) are on different grids: %s", pred->case_id, pred_name,
                        gp, ref_name, gr, why);
}

/* ---------------------------------------------------------------- means */

/* NaN-ignoring mean (numpy.nanmean; NaN when every value is NaN). */
typedef struct nanmean {
    double sum;
    int n;
} nanmean;

static void nm_add(nanmean *m, double v)
{
    if (!isnan(v)) {
        m->sum += v;
        m->n++;
    }
}

static double nm_get(const nanmean *m)
{
    return m->n ? m->sum / m->n : NAN;
}

void fine_eval_summarize(const fine_eval_case *cases, int ncases, const int64_t *labels, int nlabels,
                         fine_eval_summary *s)
{
    memset(s, 0, sizeof *s);
    s->nlabels = nlabels;
    int n13 = 0, all13 = nlabels > 0, synapse = 0;
    nanmean row[2][3];
    memset(row, 0, sizeof row);
    for (int k = 0; k < nlabels; k++) {
        s->labels[k] = labels[k];
        nanmean d = {0, 0}, h = {0, 0}, a = {0, 0};
        for (int c = 0; c < ncases; c++) {
            nm_add(&d, cases[c].m[k].dice);
            nm_add(&h, cases[c].m[k].hd95);
            nm_add(&a, cases[c].m[k].assd);
        }
        s->dice[k] = nm_get(&d);
        s->hd95[k] = nm_get(&h);
        s->assd[k] = nm_get(&a);
        s->n_dice[k] = d.n;
        if (labels[k] != 0) {
            n13++;
            all13 &= labels[k] >= 1 && labels[k] <= 13;
            nm_add(&row[0][0], s->dice[k]);
            nm_add(&row[0][1], s->hd95[k]);
            nm_add(&row[0][2], s->assd[k]);
        }
        if (fine_bcv_is_synapse(labels[k])) {
            synapse++;
            nm_add(&row[1][0], s->dice[k]);
            nm_add(&row[1][1], s->hd95[k]);
            nm_add(&row[1][2], s->assd[k]);
        }
    }
    s->row_present[0] = n13 > 0;
    if (all13 && n13 == 13)
        snprintf(s->row_name[0], sizeof s->row_name[0], "mean (13 organs)");
    else
        snprintf(s->row_name[0], sizeof s->row_name[0], "mean (%d label%s)", n13, n13 == 1 ? "" : "s");
    s->row_present[1] = synapse == 8;
    snprintf(s->row_name[1], sizeof s->row_name[1], "mean (8 Synapse organs)");
    for (int r = 0; r < 2; r++) {
        s->row_dice[r] = nm_get(&row[r][0]);
        s->row_hd95[r] = nm_get(&row[r][1]);
        s->row_assd[r] = nm_get(&row[r][2]);
    }
}

/* ---------------------------------------------------------------- reports */

static void put_fixed(FILE *f, double v, int digits)
{
    if (isnan(v))
        fputs("NaN", f);
    else
        fprintf(f, "%.*f", digits, v);
}

static void put_num(FILE *f, double v, const char *nan_text)
{
    if (isnan(v) || isinf(v))
        fputs(nan_text, f);
    else
        fprintf(f, "%.17g", v);
}

static const char *organ_or(int64_t label, char *buf, size_t cap)
{
    const char *o = fine_bcv_organ(label);
    if (o)
        return o;
    snprintf(buf, cap, "label %lld", (long long)label);
    return buf;
}

void fine_eval_print_table(FILE *f, const fine_eval_case *cases, int ncases, const fine_eval_summary *s,
                           int per_case)
{
    char buf[32];
    if (per_case) {
        fprintf(f, "Dice per case and label; the means are over the case's labels (NaN ignored, "
                   "label 0 left out).\n\n| case |");
        for (int k = 0; k < s->nlabels; k++)
            fprintf(f, " %lld |", (long long)s->labels[k]);
        fprintf(f, " mean Dice | mean HD95 (mm) | mean ASSD (mm) |\n|---|");
        for (int k = 0; k < s->nlabels; k++)
            fprintf(f, "---:|");
        fprintf(f, "---:|---:|---:|\n");
        for (int c = 0; c < ncases; c++) {
            nanmean d = {0, 0}, h = {0, 0}, a = {0, 0};
            fprintf(f, "| %s |", cases[c].case_id);
            for (int k = 0; k < s->nlabels; k++) {
                const fine_label_metrics *m = &cases[c].m[k];
                fputc(' ', f);
                put_fixed(f, m->dice, 4);
                fputs(" |", f);
                if (m->label != 0) {
                    nm_add(&d, m->dice);
                    nm_add(&h, m->hd95);
                    nm_add(&a, m->assd);
                }
            }
            fputc(' ', f);
            put_fixed(f, nm_get(&d), 4);
            fputs(" | ", f);
            put_fixed(f, nm_get(&h), 2);
            fputs(" | ", f);
            put_fixed(f, nm_get(&a), 2);
            fputs(" |\n", f);
        }
        fputc('\n', f);
    }
    fprintf(f, "| label | organ | Dice | HD95 (mm) | ASSD (mm) | n |\n|---:|---|---:|---:|---:|---:|\n");
    for (int k = 0; k < s->nlabels; k++) {
        fprintf(f, "| %lld | %s | ", (long long)s->labels[k], organ_or(s->labels[k], buf, sizeof buf));
        put_fixed(f, s->dice[k], 4);
        fputs(" | ", f);
        put_fixed(f, s->hd95[k], 2);
        fputs(" | ", f);
        put_fixed(f, s->assd[k], 2);
        fprintf(f, " | %d |\n", s->n_dice[k]);
    }
    for (int r = 0; r < 2; r++) {
        if (!s->row_present[r])
            continue;
        fprintf(f, "| | %s | ", s->row_name[r]);
        put_fixed(f, s->row_dice[r], 4);
        fputs(" | ", f);
        put_fixed(f, s->row_hd95[r], 2);
        fputs(" | ", f);
        put_fixed(f, s->row_assd[r], 2);
        fprintf(f, " | %d |\n", ncases);
    }
}

/* A CSV field: quoted when it holds a comma, a quote or a line break. */
static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void fine_eval_print_csv(FILE *f, const fine_eval_case *cases, int ncases, const fine_eval_summary *s)
{
    char buf[32];
    fprintf(f, "case,label,organ,dice,hd95,assd,tp,fp,fn,pred_voxels,ref_voxels,pred,ref\n");
    for (int c = 0; c < ncases; c++)
        for (int k = 0; k < s->nlabels; k++) {
            const fine_label_metrics *m = &cases[c].m[k];
            csv_field(f, cases[c].case_id);
            fprintf(f, ",%lld,", (long long)m->label);
            csv_field(f, organ_or(m->label, buf, sizeof buf));
            fputc(',', f);
            put_num(f, m->dice, "NaN");
            fputc(',', f);
            put_num(f, m->hd95, "NaN");
            fputc(',', f);
            put_num(f, m->assd, "NaN");
            fprintf(f, ",%lld,%lld,%lld,%lld,%lld,", (long long)m->tp, (long long)m->fp, (long long)m->fn,
                    (long long)m->n_pred, (long long)m->n_ref);
            csv_field(f, cases[c].pred);
            fputc(',', f);
            csv_field(f, cases[c].ref);
            fputc('\n', f);
        }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_metrics(FILE *f, const char *indent, double dice, double hd95, double assd)
{
    fprintf(f, "%s\"Dice\": ", indent);
    put_num(f, dice, "null");
    fprintf(f, ",\n%s\"Hausdorff Distance 95\": ", indent);
    put_num(f, hd95, "null");
    fprintf(f, ",\n%s\"Avg. Symmetric Surface Distance\": ", indent);
    put_num(f, assd, "null");
}

void fine_eval_print_json(FILE *f, const fine_eval_case *cases, int ncases, const fine_eval_summary *s)
{
    char buf[32];
    fprintf(f, "{\n  \"name\": \"fine-dice\",\n  \"description\": \"per case and label: Dice, HD95 and ASSD "
               "in mm (medpy semantics, nnU-Net NaN conventions; NaN written as null); means ignore NaN\",\n"
               "  \"labels\": {");
    for (int k = 0; k < s->nlabels; k++) {
        fprintf(f, "%s\"%lld\": ", k ? ", " : "", (long long)s->labels[k]);
        json_str(f, organ_or(s->labels[k], buf, sizeof buf));
    }
    fprintf(f, "},\n  \"results\": {\n    \"all\": [");
    for (int c = 0; c < ncases; c++) {
        fprintf(f, "%s\n      {\n        \"case\": ", c ? "," : "");
        json_str(f, cases[c].case_id);
        fprintf(f, ",\n        \"reference\": ");
        json_str(f, cases[c].ref);
        fprintf(f, ",\n        \"test\": ");
        json_str(f, cases[c].pred);
        for (int k = 0; k < s->nlabels; k++) {
            const fine_label_metrics *m = &cases[c].m[k];
            fprintf(f, ",\n        \"%lld\": {\n", (long long)m->label);
            json_metrics(f, "          ", m->dice, m->hd95, m->assd);
            fprintf(f, ",\n          \"True Positives\": %lld,\n          \"False Positives\": %lld,\n"
                       "          \"False Negatives\": %lld,\n          \"Total Positives Test\": %lld,\n"
                       "          \"Total Positives Reference\": %lld\n        }",
                    (long long)m->tp, (long long)m->fp, (long long)m->fn, (long long)m->n_pred,
                    (long long)m->n_ref);
        }
        fprintf(f, "\n      }");
    }
    fprintf(f, "\n    ],\n    \"mean\": {");
    for (int k = 0; k < s->nlabels; k++) {
        fprintf(f, "%s\n      \"%lld\": {\n", k ? "," : "", (long long)s->labels[k]);
        json_metrics(f, "        ", s->dice[k], s->hd95[k], s->assd[k]);
        fprintf(f, ",\n        \"cases with Dice\": %d\n      }", s->n_dice[k]);
    }
    fprintf(f, "\n    }");
    for (int r = 0; r < 2; r++) {
        if (!s->row_present[r])
            continue;
        fprintf(f, ",\n    ");
        json_str(f, s->row_name[r]);
        fprintf(f, ": {\n      \"labels\": [");
        int first = 1;
        for (int k = 0; k < s->nlabels; k++)
            if (r == 0 ? s->labels[k] != 0 : fine_bcv_is_synapse(s->labels[k])) {
                fprintf(f, "%s%lld", first ? "" : ", ", (long long)s->labels[k]);
                first = 0;
            }
        fprintf(f, "],\n");
        json_metrics(f, "      ", s->row_dice[r], s->row_hd95[r], s->row_assd[r]);
        fprintf(f, "\n    }");
    }
    fprintf(f, "\n  }\n}\n");
}

int fine_eval_save(const char *path, int force, fine_eval_printer print, const fine_eval_case *cases,
                   int ncases, const fine_eval_summary *s, fine_err *e)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return fine_err_set(e, "%s: out of memory", path);
    print(f, cases, ncases, s);
    int bad = fclose(f) != 0;
    int rc = bad ? fine_err_set(e, "%s: out of memory", path) : fine_write_file(path, force, text, len, e);
    free(text);
    return rc;
}
