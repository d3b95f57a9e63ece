/* report.c: the pieces of fine-report's HTML page (report.h): the scores and the training log,
 * tables, SVG charts. The text buffer and JSON reader are json.c, the slices report_slices.c. */
#include "report.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"

/* ---------------------------------------------------------------- the scores */

/* The number under key of obj into *out: NaN when obj is NULL or the key is missing or null.
 * Fails when the value is of another type. */
static int json_num(const fine_json *obj, const char *key, double *out, const char *path, const char *where,
                    fine_err *e)
{
    const fine_json *v = obj ? fine_json_get(obj, key) : NULL;
    *out = NAN;
    if (!v || v->type == FINE_JSON_NULL)
        return 0;
    if (v->type != FINE_JSON_NUMBER)
        return fine_err_set(e, "%s: %s: \"%s\" is not a number", path, where, key);
    *out = v->number;
    return 0;
}

/* 1 when s is a label id: decimal digits, no sign, value < 2^31. */
static int label_key(const char *s, int64_t *out)
{
    if (!*s || strlen(s) > 10)
        return 0;
    int64_t v = 0;
    for (const char *c = s; *c; c++) {
        if (!isdigit((unsigned char)*c))
            return 0;
        v = v * 10 + (*c - '0');
    }
    if (v > 2147483647)
        return 0;
    *out = v;
    return 1;
}

static char *dup_or(const char *s, int *oom)
{
    char *d = strdup(s);
    if (!d)
        *oom = 1;
    return d;
}

void fine_report_scores_free(fine_report_scores *s)
{
    fine_free_strings(s->organs, s->nlabels);
    fine_free_strings(s->cases, s->ncases);
    fine_free_strings(s->row_names, s->nrows);
    free(s->labels);
    free(s->dice);
    free(s->hd95);
    free(s->mean_dice);
    free(s->mean_hd95);
    free(s->row_dice);
    free(s->row_hd95);
    memset(s, 0, sizeof *s);
}

/* The labels and organ names of the summary. */
static int scores_labels(const fine_json *root, const fine_json *results, const char *path, fine_report_scores *s,
                         fine_err *e)
{
    const fine_json *names = fine_json_get(root, "labels");
    const fine_json *src = names;
    if (names && names->type != FINE_JSON_OBJECT)
        return fine_err_set(e, "%s: \"labels\" is not an object", path);
    if (!names) { /* an nnU-Net summary: the numeric keys of results.mean */
        src = fine_json_get(results, "mean");
        if (!src || src->type != FINE_JSON_OBJECT)
            return fine_err_set(e, "%s: neither \"labels\" nor \"results\".\"mean\" (not a fine-dice --json summary)",
                                path);
    }
    s->labels = calloc(src->n + 1, sizeof *s->labels);
    s->organs = calloc(src->n + 1, sizeof *s->organs);
    if (!s->labels || !s->organs)
        return fine_err_set(e, "%s: out of memory", path);
    int oom = 0;
    for (size_t i = 0; i < src->n; i++) {
        int64_t id;
        if (!label_key(src->keys[i], &id)) {
            if (names)
                return fine_err_set(e, "%s: \"labels\": key \"%s\" is not a label id", path, src->keys[i]);
            continue;
        }
        for (int k = 0; k < s->nlabels; k++)
            if (s->labels[k] == id)
                return fine_err_set(e, "%s: label %lld appears twice", path, (long long)id);
        char fallback[32];
        const char *organ = fine_bcv_organ(id);
        if (names) {
            if (src->items[i].type != FINE_JSON_STRING)
                return fine_err_set(e, "%s: \"labels\": the name of label %lld is not a string", path, (long long)id);
            organ = src->items[i].string;
        } else if (!organ) {
            snprintf(fallback, sizeof fallback, "label %lld", (long long)id);
            organ = fallback;
        }
        s->labels[s->nlabels] = id;
        s->organs[s->nlabels++] = dup_or(organ, &oom);
    }
    if (oom)
        return fine_err_set(e, "%s: out of memory", path);
    if (s->nlabels == 0)
        return fine_err_set(e, "%s: no labels", path);
    return 0;
}

/* A case's name: "case", else the base name of "test" without .nii/.nii.gz, else its number. */
static char *case_name(const fine_json *c, size_t i, int *oom)
{
    const fine_json *v = fine_json_get(c, "case");
    if (v && v->type == FINE_JSON_STRING)
        return dup_or(v->string, oom);
    v = fine_json_get(c, "test");
    char buf[FINE_CASE_MAX];
    if (v && v->type == FINE_JSON_STRING)
        fine_case_id_from_path(v->string, buf, sizeof buf);
    else
        snprintf(buf, sizeof buf, "%zu", i + 1);
    return dup_or(buf, oom);
}

int fine_report_scores_load(const char *path, fine_report_scores *s, fine_err *e)
{
    memset(s, 0, sizeof *s);
    char *text;
    size_t len;
    if (fine_read_file(path, &text, &len, e) < 0)
        return -1;
    fine_json root;
    int rc = fine_json_parse(text, len, &root, e);
    free(text);
    if (rc < 0) {
        fine_err_prefix(e, path);
        return -1;
    }
    const fine_json *results = fine_json_get(&root, "results");
    const fine_json *all = results ? fine_json_get(results, "all") : NULL;
    const fine_json *mean = results ? fine_json_get(results, "mean") : NULL;
    char where[FINE_CASE_MAX + 64];
    int oom = 0;
    if (root.type != FINE_JSON_OBJECT)
        rc = fine_err_set(e, "%s: not a JSON object (not a fine-dice --json summary)", path);
    else if (!results || results->type != FINE_JSON_OBJECT)
        rc = fine_err_set(e, "%s: no \"results\" object (not a fine-dice --json summary)", path);
    else if (!all || all->type != FINE_JSON_ARRAY)
        rc = fine_err_set(e, "%s: no \"results\".\"all\" array (not a fine-dice --json summary)", path);
    else if (mean && mean->type != FINE_JSON_OBJECT)
        rc = fine_err_set(e, "%s: \"results\".\"mean\" is not an object", path);
    else
        rc = scores_labels(&root, results, path, s, e);
    if (rc == 0) {
        int L = s->nlabels;
        s->ncases = (int)all->n;
        s->cases = calloc(all->n + 1, sizeof *s->cases);
        s->dice = calloc(all->n * (size_t)L + 1, sizeof *s->dice);
        s->hd95 = calloc(all->n * (size_t)L + 1, sizeof *s->hd95);
        s->mean_dice = calloc((size_t)L, sizeof *s->mean_dice);
        s->mean_hd95 = calloc((size_t)L, sizeof *s->mean_hd95);
        s->row_names = calloc(results->n + 1, sizeof *s->row_names);
        s->row_dice = calloc(results->n + 1, sizeof *s->row_dice);
        s->row_hd95 = calloc(results->n + 1, sizeof *s->row_hd95);
        if (!s->cases || !s->dice || !s->hd95 || !s->mean_dice || !s->mean_hd95 || !s->row_names || !s->row_dice ||
            !s->row_hd95)
            rc = fine_err_set(e, "%s: out of memory", path);
    }
    for (size_t c = 0; rc == 0 && c < all->n; c++) {
        const fine_json *cj = &all->items[c];
        if (cj->type != FINE_JSON_OBJECT) {
            rc = fine_err_set(e, "%s: \"results\".\"all\"[%zu] is not an object", path, c);
            break;
        }
        s->cases[c] = case_name(cj, c, &oom);
        for (int k = 0; rc == 0 && k < s->nlabels; k++) {
            char key[24];
            snprintf(key, sizeof key, "%lld", (long long)s->labels[k]);
            const fine_json *m = fine_json_get(cj, key);
            snprintf(where, sizeof where, "case %s, label %s", s->cases[c] ? s->cases[c] : "?", key);
            if (m && m->type != FINE_JSON_OBJECT && m->type != FINE_JSON_NULL)
                rc = fine_err_set(e, "%s: %s is not an object", path, where);
            else if (json_num(m, "Dice", &s->dice[c * (size_t)s->nlabels + (size_t)k], path, where, e) < 0 ||
                     json_num(m, "Hausdorff Distance 95", &s->hd95[c * (size_t)s->nlabels + (size_t)k], path, where,
                              e) < 0)
                rc = -1;
        }
    }
    for (int k = 0; rc == 0 && k < s->nlabels; k++) {
        char key[24];
        snprintf(key, sizeof key, "%lld", (long long)s->labels[k]);
        const fine_json *m = mean ? fine_json_get(mean, key) : NULL;
        snprintf(where, sizeof where, "mean, label %s", key);
        if (m && m->type != FINE_JSON_OBJECT && m->type != FINE_JSON_NULL)
            rc = fine_err_set(e, "%s: %s is not an object", path, where);
        else if (json_num(m, "Dice", &s->mean_dice[k], path, where, e) < 0 ||
                 json_num(m, "Hausdorff Distance 95", &s->mean_hd95[k], path, where, e) < 0)
            rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < results->n; i++) {
        const char *key = results->keys[i];
        if (strncmp(key, "mean (", 6) != 0)
            continue;
        if (results->items[i].type != FINE_JSON_OBJECT) {
            rc = fine_err_set(e, "%s: \"results\".\"%s\" is not an object", path, key);
            break;
        }
        snprintf(where, sizeof where, "%s", key);
        s->row_names[s->nrows] = dup_or(key, &oom);
        if (json_num(&results->items[i], "Dice", &s->row_dice[s->nrows], path, where, e) < 0 ||
            json_num(&results->items[i], "Hausdorff Distance 95", &s->row_hd95[s->nrows], path, where, e) < 0)
            rc = -1;
        s->nrows++;
    }
    if (rc == 0 && oom)
        rc = fine_err_set(e, "%s: out of memory", path);
    fine_json_free(&root);
    if (rc < 0)
        fine_report_scores_free(s);
    return rc;
}

/* ---------------------------------------------------------------- the training log */

typedef struct epoch_line {
    fine_report_epoch ep;
    size_t line;
} epoch_line;

static int cmp_epoch_line(const void *a, const void *b)
{
    const epoch_line *x = a, *y = b;
    if (x->ep.epoch != y->ep.epoch)
        return x->ep.epoch < y->ep.epoch ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

int fine_report_log_load(const char *path, fine_report_epoch **ep, int *n, fine_err *e)
{
    *ep = NULL;
    *n = 0;
    char *text;
    size_t len;
    if (fine_read_file(path, &text, &len, e) < 0)
        return -1;
    epoch_line *a = NULL;
    size_t na = 0, cap = 0, lineno = 0;
    int rc = 0;
    for (size_t pos = 0; pos < len && rc == 0;) {
        size_t end = pos;
        while (end < len && text[end] != '\n')
            end++;
        lineno++;
        size_t b = pos;
        while (b < end && isspace((unsigned char)text[b]))
            b++;
        char where[64];
        snprintf(where, sizeof where, "line %zu", lineno);
        if (b < end) {
            fine_json j;
            epoch_line el;
            memset(&el, 0, sizeof el);
            el.line = lineno;
            double epoch = NAN;
            if (fine_json_parse(text + pos, end - pos, &j, e) < 0) {
                char pre[600];
                snprintf(pre, sizeof pre, "%s: line %zu", path, lineno);
                /* the parser's "line 1, column C" is about this line alone: keep the column */
                char *col = strstr(e->msg, "column ");
                char msg[FINE_ERR_MAX];
                snprintf(msg, sizeof msg, "%s", col ? col : e->msg);
                fine_err_set(e, "%s, %s", pre, msg);
                rc = -1;
                break;
            }
            if (j.type != FINE_JSON_OBJECT)
                rc = fine_err_set(e, "%s: %s: not a JSON object", path, where);
            else if (!fine_json_get(&j, "epoch"))
                rc = fine_err_set(e, "%s: %s: no \"epoch\" (not a fine-train --log file)", path, where);
            else if (json_num(&j, "epoch", &epoch, path, where, e) < 0)
                rc = -1;
            else if (!(epoch >= 0 && epoch <= 1e15 && epoch == floor(epoch)))
                rc = fine_err_set(e, "%s: %s: \"epoch\" is not a whole number >= 0", path, where);
            else if (json_num(&j, "loss", &el.ep.loss, path, where, e) < 0 ||
                     json_num(&j, "train_dice", &el.ep.train_dice, path, where, e) < 0 ||
                     json_num(&j, "lr", &el.ep.lr, path, where, e) < 0 ||
                     json_num(&j, "val_dice", &el.ep.val_dice, path, where, e) < 0 ||
                     json_num(&j, "val_dice_ema", &el.ep.val_dice_ema, path, where, e) < 0)
                rc = -1;
            fine_json_free(&j);
            if (rc == 0) {
                el.ep.epoch = (int64_t)epoch;
                if (na == cap) {
                    size_t c = cap ? cap * 2 : 64;
                    epoch_line *g = realloc(a, c * sizeof *g);
                    if (!g) {
                        rc = fine_err_set(e, "%s: out of memory", path);
                        break;
                    }
                    a = g;
                    cap = c;
                }
                a[na++] = el;
            }
        }
        pos = end + 1;
    }
    free(text);
    if (rc == 0 && na > (size_t)1 << 30)
        rc = fine_err_set(e, "%s: too many epochs", path);
    if (rc < 0) {
        free(a);
        return -1;
    }
    if (na > 1)
        qsort(a, na, sizeof *a, cmp_epoch_line);
    fine_report_epoch *out = na ? malloc(na * sizeof *out) : NULL;
    if (na && !out) {
        free(a);
        return fine_err_set(e, "%s: out of memory", path);
    }
    int m = 0;
    for (size_t i = 0; i < na; i++) {
        if (i + 1 < na && a[i + 1].ep.epoch == a[i].ep.epoch)
            continue; /* a later line of the same epoch (a resumed run) wins */
        out[m++] = a[i].ep;
    }
    free(a);
    *ep = out;
    *n = m;
    return 0;
}

/* ---------------------------------------------------------------- colours, tables, legend */

static const uint8_t PALETTE[13][3] = {
    {230, 25, 75},   /* 1 spleen */
    {60, 180, 75},   /* 2 right kidney */
    {255, 225, 25},  /* 3 left kidney */
    {67, 99, 216},   /* 4 gallbladder */
    {245, 130, 49},  /* 5 esophagus */
    {154, 99, 36},   /* 6 liver */
    {70, 240, 240},  /* 7 stomach */
    {240, 50, 230},  /* 8 aorta */
    {188, 246, 12},  /* 9 inferior vena cava */
    {250, 190, 190}, /* 10 portal vein and splenic vein */
    {0, 128, 128},   /* 11 pancreas */
    {230, 190, 255}, /* 12 right adrenal gland */
    {145, 30, 180},  /* 13 left adrenal gland */
};

void fine_label_color(int64_t label, uint8_t rgb[3])
{
    if (label <= 0) {
        rgb[0] = rgb[1] = rgb[2] = 0;
        return;
    }
    const uint8_t *c = PALETTE[(label - 1) % 13];
    rgb[0] = c[0], rgb[1] = c[1], rgb[2] = c[2];
}

static void put_hex_color(fine_buf *b, int64_t label)
{
    uint8_t c[3];
    fine_label_color(label, c);
    fine_buf_printf(b, "#%02x%02x%02x", c[0], c[1], c[2]);
}

static void table_cell(fine_buf *b, double v, int metric)
{
    if (!isfinite(v)) {
        fine_buf_puts(b, "<td class=\"na\">n/a</td>");
        return;
    }
    if (metric == 0) {
        double t = v < 0 ? 0 : v > 1 ? 1 : v;
        fine_buf_printf(b, "<td style=\"background:hsl(%d,70%%,86%%)\">%.4f</td>", (int)lround(120 * t), v);
    } else {
        fine_buf_printf(b, "<td>%.2f</td>", v);
    }
}

void fine_report_table(fine_buf *b, const fine_report_scores *s, int metric, const char *id)
{
    fine_buf_printf(b, "<table class=\"scores\" id=\"%s\">\n<caption>%s per organ and case; the last column is the "
                    "mean over cases as fine-dice computed it (NaN ignored)</caption>\n<thead><tr><th>label</th>"
                    "<th>organ</th>", id, metric == 0 ? "Dice" : "HD95 (mm)");
    for (int c = 0; c < s->ncases; c++) {
        fine_buf_puts(b, "<th>");
        fine_buf_html(b, s->cases[c]);
        fine_buf_puts(b, "</th>");
    }
    fine_buf_puts(b, "<th>mean</th></tr></thead>\n<tbody>\n");
    for (int k = 0; k < s->nlabels; k++) {
        fine_buf_printf(b, "<tr><td>%lld</td><th class=\"organ\"><span class=\"sw\" style=\"background:",
                        (long long)s->labels[k]);
        put_hex_color(b, s->labels[k]);
        fine_buf_puts(b, "\"></span>");
        fine_buf_html(b, s->organs[k]);
        fine_buf_puts(b, "</th>");
        for (int c = 0; c < s->ncases; c++) {
            size_t i = (size_t)c * (size_t)s->nlabels + (size_t)k;
            table_cell(b, metric == 0 ? s->dice[i] : s->hd95[i], metric);
        }
        table_cell(b, metric == 0 ? s->mean_dice[k] : s->mean_hd95[k], metric);
        fine_buf_puts(b, "</tr>\n");
    }
    for (int r = 0; r < s->nrows; r++) {
        fine_buf_puts(b, "<tr class=\"summary\"><td></td><th class=\"organ\">");
        fine_buf_html(b, s->row_names[r]);
        fine_buf_puts(b, "</th>");
        for (int c = 0; c < s->ncases; c++)
            fine_buf_puts(b, "<td></td>");
        table_cell(b, metric == 0 ? s->row_dice[r] : s->row_hd95[r], metric);
        fine_buf_puts(b, "</tr>\n");
    }
    fine_buf_puts(b, "</tbody>\n</table>\n");
}

void fine_report_legend(fine_buf *b, const fine_report_scores *s)
{
    fine_buf_puts(b, "<div class=\"legend\">");
    int n = s ? s->nlabels : 13;
    for (int k = 0; k < n; k++) {
        int64_t label = s ? s->labels[k] : k + 1;
        if (label <= 0)
            continue;
        fine_buf_puts(b, "<span class=\"item\"><span class=\"sw\" style=\"background:");
        put_hex_color(b, label);
        fine_buf_printf(b, "\"></span>%lld ", (long long)label);
        fine_buf_html(b, s ? s->organs[k] : fine_bcv_organ(label));
        fine_buf_puts(b, "</span>");
    }
    fine_buf_puts(b, "</div>\n");
}

/* ---------------------------------------------------------------- SVG charts */

static double nice_step(double range, int target)
{
    double raw = range / target;
    if (!(raw > 0) || !isfinite(raw))
        return 1;
    double mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/* An axis range widened to round ticks; fixed when lo, hi are given (finite, lo < hi). */
typedef struct axis {
    double lo, hi, step;
} axis;

static axis make_axis(double dlo, double dhi, double flo, double fhi, int integer)
{
    axis a;
    if (isfinite(flo) && isfinite(fhi) && flo < fhi) {
        a.lo = flo, a.hi = fhi, a.step = nice_step(fhi - flo, 5);
        return a;
    }
    if (!isfinite(dlo) || !isfinite(dhi))
        dlo = 0, dhi = 1;
    if (!(dhi > dlo)) {
        double d = dlo != 0 ? fabs(dlo) * 0.1 : 1;
        if (integer && d < 1)
            d = 1;
        dlo -= d, dhi += d;
    }
    a.step = nice_step(dhi - dlo, 5);
    if (integer && a.step < 1)
        a.step = 1;
    a.lo = floor(dlo / a.step) * a.step;
    a.hi = ceil(dhi / a.step) * a.step;
    if (!(a.hi > a.lo))
        a.hi = a.lo + a.step;
    return a;
}

static void tick_label(char *out, size_t cap, double v, double step)
{
    if (fabs(v) < step * 1e-9)
        v = 0;
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 4 || fabs(v) >= 1e6)
        snprintf(out, cap, "%.2g", v);
    else
        snprintf(out, cap, "%.*f", dec, v);
}

enum { LW = 680, LH = 300, LX0 = 70, LX1 = 660, LY0 = 50, LY1 = 250 };

void fine_svg_line_chart(fine_buf *b, const char *title, const char *xlabel, const char *ylabel,
                         const fine_svg_series *s, int ns, double ylo, double yhi)
{
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int total = 0;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            if (!isfinite(s[k].x[i]) || !isfinite(s[k].y[i]))
                continue;
            xmin = fmin(xmin, s[k].x[i]), xmax = fmax(xmax, s[k].x[i]);
            ymin = fmin(ymin, s[k].y[i]), ymax = fmax(ymax, s[k].y[i]);
            total++;
        }
    axis ax = make_axis(xmin, xmax, NAN, NAN, 1), ay = make_axis(ymin, ymax, ylo, yhi, 0);
    fine_buf_printf(b, "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"", LW, LH, LW, LH);
    fine_buf_html(b, title);
    fine_buf_printf(b, "\" font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"%d\" y=\"18\" font-size=\"14\" "
                    "font-weight=\"bold\">", LX0);
    fine_buf_html(b, title);
    fine_buf_puts(b, "</text>\n");
    /* legend, one row under the title */
    double lx = LX0;
    for (int k = 0; k < ns; k++) {
        fine_buf_printf(b, "<line x1=\"%.1f\" y1=\"32\" x2=\"%.1f\" y2=\"32\" stroke=\"%s\" stroke-width=\"2\"%s/>"
                        "<text x=\"%.1f\" y=\"36\">", lx, lx + 20, s[k].color,
                        s[k].dashed ? " stroke-dasharray=\"5,3\"" : "", lx + 24);
        fine_buf_html(b, s[k].name);
        fine_buf_puts(b, "</text>\n");
        lx += 40 + 6.5 * (double)strlen(s[k].name);
    }
    /* grid, ticks and tick labels */
    char lab[48];
    for (double v = ay.lo; v <= ay.hi + ay.step * 1e-6; v += ay.step) {
        double y = LY1 - (v - ay.lo) / (ay.hi - ay.lo) * (LY1 - LY0);
        tick_label(lab, sizeof lab, v, ay.step);
        fine_buf_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>"
                        "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", LX0, y, LX1, y, LX0 - 6, y + 4, lab);
    }
    for (double v = ax.lo; v <= ax.hi + ax.step * 1e-6; v += ax.step) {
        double x = LX0 + (v - ax.lo) / (ax.hi - ax.lo) * (LX1 - LX0);
        tick_label(lab, sizeof lab, v, ax.step);
        fine_buf_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e3e3e3\"/>"
                        "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x, LY0, x, LY1 + 4, x, LY1 + 17,
                        lab);
    }
    fine_buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", LX0, LY0,
                    LX1 - LX0, LY1 - LY0);
    fine_buf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (LX0 + LX1) / 2, LH - 12);
    fine_buf_html(b, xlabel);
    fine_buf_printf(b, "</text>\n<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">",
                    (LY0 + LY1) / 2, (LY0 + LY1) / 2);
    fine_buf_html(b, ylabel);
    fine_buf_puts(b, "</text>\n");
    /* the curves: one polyline per run of finite points */
    for (int k = 0; k < ns; k++) {
        int open = 0, run = 0;
        double px = 0, py = 0;
        for (int i = 0; i <= s[k].n; i++) {
            int ok = i < s[k].n && isfinite(s[k].x[i]) && isfinite(s[k].y[i]);
            if (ok) {
                double yv = fmin(fmax(s[k].y[i], ay.lo), ay.hi);
                px = LX0 + (s[k].x[i] - ax.lo) / (ax.hi - ax.lo) * (LX1 - LX0);
                py = LY1 - (yv - ay.lo) / (ay.hi - ay.lo) * (LY1 - LY0);
                if (!open)
                    fine_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s points=\"",
                                    s[k].color, s[k].dashed ? " stroke-dasharray=\"5,3\"" : "");
                fine_buf_printf(b, "%s%.1f,%.1f", open ? " " : "", px, py);
                open = 1, run++;
            } else if (open) {
                fine_buf_puts(b, "\"/>\n");
                if (run == 1 && total > 60) /* a lone point; with few points every one is marked below */
                    fine_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", px, py, s[k].color);
                open = 0, run = 0;
            }
        }
        if (total <= 60) /* few points: mark each one */
            for (int i = 0; i < s[k].n; i++)
                if (isfinite(s[k].x[i]) && isfinite(s[k].y[i])) {
                    double yv = fmin(fmax(s[k].y[i], ay.lo), ay.hi);
                    fine_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                                    LX0 + (s[k].x[i] - ax.lo) / (ax.hi - ax.lo) * (LX1 - LX0),
                                    LY1 - (yv - ay.lo) / (ay.hi - ay.lo) * (LY1 - LY0), s[k].color);
                }
    }
    fine_buf_puts(b, "</svg>\n");
}

void fine_svg_bar_chart(fine_buf *b, const char *title, const char *const *names, const int64_t *labels,
                        const double *values, int n, const char *mark_name, double mark)
{
    const int W = 680, X0 = 220, X1 = 620, Y0 = 48, ROW = 22;
    int Y1 = Y0 + ROW * n, H = Y1 + 40;
    fine_buf_printf(b, "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"", W, H, W, H);
    fine_buf_html(b, title);
    fine_buf_printf(b, "\" font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"10\" y=\"18\" font-size=\"14\" "
                    "font-weight=\"bold\">");
    fine_buf_html(b, title);
    fine_buf_puts(b, "</text>\n");
    for (int t = 0; t <= 10; t += 2) {
        double x = X0 + (X1 - X0) * t / 10.0;
        fine_buf_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e3e3e3\"/>"
                        "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.1f</text>\n", x, Y0 - 4, x, Y1 + 4, x, Y1 + 17,
                        t / 10.0);
    }
    for (int k = 0; k < n; k++) {
        double y = Y0 + ROW * k, v = values[k];
        fine_buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", X0 - 8, y + ROW / 2.0 + 4);
        fine_buf_html(b, names[k]);
        fine_buf_puts(b, "</text>");
        if (isfinite(v)) {
            double t = v < 0 ? 0 : v > 1 ? 1 : v, w = t * (X1 - X0);
            fine_buf_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"", X0, y + 3, w, ROW - 6);
            put_hex_color(b, labels[k]);
            fine_buf_printf(b, "\" stroke=\"#555\" stroke-width=\"0.5\"/><text x=\"%.1f\" y=\"%.1f\">%.3f</text>\n",
                            X0 + w + 4, y + ROW / 2.0 + 4, v);
        } else {
            fine_buf_printf(b, "<text x=\"%d\" y=\"%.1f\" fill=\"#888\">n/a</text>\n", X0 + 4, y + ROW / 2.0 + 4);
        }
    }
    fine_buf_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888\"/>\n", X0, Y0 - 4, X0, Y1 + 4);
    if (isfinite(mark)) {
        double t = mark < 0 ? 0 : mark > 1 ? 1 : mark, x = X0 + t * (X1 - X0);
        fine_buf_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#222\" stroke-dasharray=\"5,3\"/>"
                        "<text x=\"%.1f\" y=\"%d\" text-anchor=\"%s\">", x, Y0 - 12, x, Y1 + 4, x, Y0 - 16,
                        t > 0.6 ? "end" : "start");
        fine_buf_html(b, mark_name ? mark_name : "mean");
        fine_buf_printf(b, " %.3f</text>\n", mark);
    }
    fine_buf_puts(b, "</svg>\n");
}
