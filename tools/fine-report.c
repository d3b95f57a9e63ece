/* fine-report: one self-contained HTML page from the outputs of the BCV pipeline: fine-dice's
 * --json scores (tables, a bar chart), fine-train's --log (training curves) and, per case, the CT
 * with the reference and the predicted labels overlaid (PNG slices embedded as data: URIs).
 *
 * main() parses the options; the page is assembled in memory (lib/report.h), the slices drawn
 * case by case (volumes are freed after each case) and encoded with libpng (lib/png_write.h);
 * the file is written once at the end, through a temporary file renamed into place. */
#include <errno.h>
#include <fcntl.h>
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
#include "png_write.h"
#include "report.h"
#include "volume.h"

static const char *TOOL = "fine-report";

static void usage(void)
{
    printf("Usage: fine-report [options] -o REPORT.html --dice DICE.json [CASE...]\n"
           "Write one self-contained HTML page (no network needed to view it) from the outputs of\n"
           "the pipeline:\n"
           "  - the Dice and HD95 (mm) of every organ (rows) and case (columns) of a fine-dice\n"
           "    --json summary, with its means over cases, its 13-organ and 8-organ means (taken\n"
           "    from the file as written), and a bar chart of each organ's mean Dice;\n"
           "  - with --log, the training curves of a fine-train --log file: loss, training and\n"
           "    validation Dice with its moving average, learning rate, over epochs;\n"
           "  - for each CASE, an axial, a coronal and a sagittal slice through the centroid of\n"
           "    the reference foreground: the CT in grey (--window), once with the reference and\n"
           "    once with the predicted labels overlaid in a fixed colour per organ (legend), as\n"
           "    PNG images embedded in the page. Radiological orientation from the NIfTI affine\n"
           "    (patient's right on the left, superior at the top, anterior on the left of the\n"
           "    sagittal view); square pixels, the volume's longest extent over --size pixels\n"
           "    (nearest neighbour: a coarse axis is stretched to its true length).\n\n"
           "CASE is ID=IMAGE,REF,PRED: a name for the case and three NIfTI files on one grid (the\n"
           "CT in HU, the reference labels, the predicted labels); paths may not hold commas.\n\n"
           "Options:\n"
           "  -o, --output FILE   the HTML page to write ('-': stdout); required\n"
           "  --dice FILE         scores: fine-dice --json output (or nnU-Net's summary.json);\n"
           "                      required\n"
           "  --log FILE          training log: fine-train --log output (one JSON object a line)\n"
           "  --title TEXT        the page's title (default \"fine: segmentation report\")\n"
           "  --window LO,HI      CT grey window in HU (default -160,240)\n"
           "  --alpha A           opacity of the label overlay, 0 to 1 (default 0.45)\n"
           "  --size N            slice images of a case at most N pixels wide or high: the\n"
           "                      volume's longest extent spans N pixels (default 512, 16 to 8192)\n"
           "  --threads N         cases drawn in parallel (default: the number of CPUs; each\n"
           "                      holds its three volumes in memory); the page does not depend\n"
           "                      on it\n"
           "  -f, --force         overwrite the output file\n"
           "  -q, --quiet         no progress line\n"
           "  --progress          a progress line even when stderr is not a terminal\n"
           "  -h, --help          this help\n"
           "  --version           print the version\n\n"
           "Exit status: 0 success, 1 bad input or failure, 2 usage error.\n\n"
           "Examples:\n"
           "  fine-dice -q --json out/dice.json out/pred data/label\n"
           "  fine-report -o out/report.html --dice out/dice.json --log out/model/log.jsonl \\\n"
           "      ABD_007=data/img/img0007.nii.gz,data/label/label0007.nii.gz,out/pred/ABD_007.nii.gz\n"
           "  fine-report -o - --dice summary.json --title 'fold 0' | gzip > report.html.gz\n");
}

/* ---------------------------------------------------------------- options */

typedef struct case_spec {
    char id[FINE_CASE_MAX];
    char *img, *ref, *pred; /* one malloc'ed block, at img */
} case_spec;

typedef struct opts {
    const char *out, *dice, *log, *title;
    double lo, hi, alpha;
    int size, threads, force, quiet, progress;
    case_spec *cases;
    int ncases;
} opts;

/* Parses "ID=IMAGE,REF,PRED" into c. Returns 0, or -1 with a reason in why. */
static int parse_case(const char *arg, case_spec *c, char *why, size_t cap)
{
    memset(c, 0, sizeof *c);
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        snprintf(why, cap, "'%s' is not ID=IMAGE,REF,PRED", arg);
        return -1;
    }
    if ((size_t)(eq - arg) >= sizeof c->id) {
        snprintf(why, cap, "case id too long in '%.40s...'", arg);
        return -1;
    }
    memcpy(c->id, arg, (size_t)(eq - arg));
    char *paths = strdup(eq + 1);
    if (!paths) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    char *p[3] = {paths, NULL, NULL};
    for (int k = 1; k < 3 && p[k - 1]; k++) {
        char *comma = strchr(p[k - 1], ',');
        if (comma) {
            *comma = '\0';
            p[k] = comma + 1;
        }
    }
    if (!p[1] || !p[2] || strchr(p[2], ',') || !*p[0] || !*p[1] || !*p[2]) {
        snprintf(why, cap, "case %s: expected three paths IMAGE,REF,PRED after '=', got '%s'", c->id, eq + 1);
        free(paths);
        return -1;
    }
    c->img = p[0], c->ref = p[1], c->pred = p[2];
    return 0;
}

/* ---------------------------------------------------------------- the page */

static const char *CSS =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1280px;"
    "padding:0 16px;color:#222;background:#fff}\n"
    "h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;"
    "padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}\n"
    ".meta{color:#666;font-size:13px}.meta code{font-size:12px}nav a{margin-right:14px}\n"
    "table.scores{border-collapse:collapse;font-size:13px;margin:12px 0}\n"
    "table.scores caption{caption-side:top;text-align:left;color:#555;padding:4px 0}\n"
    "table.scores th,table.scores td{border:1px solid #ddd;padding:3px 7px;text-align:right;"
    "font-variant-numeric:tabular-nums;white-space:nowrap}\n"
    "table.scores th.organ{text-align:left;font-weight:normal}table.scores thead th{background:#f3f3f3;text-align:center}\n"
    "table.scores tr.summary th,table.scores tr.summary td{font-weight:bold;border-top:2px solid #999}\n"
    "td.na{color:#999}\n"
    ".sw{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px;border:1px solid #555}\n"
    ".legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:13px;margin:8px 0 16px}\n"
    ".legend .item{white-space:nowrap}\n"
    "svg.chart{display:block;margin:8px 0 16px;max-width:100%;height:auto}\n"
    ".views{display:grid;grid-template-columns:max-content minmax(0,max-content) minmax(0,max-content);gap:6px;"
    "align-items:start}\n"
    ".views .head,.views .view{color:#555;font-size:13px}.views .head{text-align:center}\n"
    ".views .view{padding-right:6px;text-align:right}\n"
    ".views img{display:block;max-width:100%;height:auto;image-rendering:pixelated;background:#000}\n"
    ".scroll{overflow-x:auto}\n"
    ".note{color:#555;font-size:13px}\n";

/* Sets data-images-loaded / data-images-total on <body> once the page has loaded, for tests that
 * read the DOM of a headless browser. */
static const char *SCRIPT =
    "<script>\nwindow.addEventListener('load', function () {\n"
    "  var imgs = document.getElementsByTagName('img'), ok = 0;\n"
    "  for (var i = 0; i < imgs.length; i++)\n"
    "    if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;\n"
    "  document.body.setAttribute('data-images-loaded', String(ok));\n"
    "  document.body.setAttribute('data-images-total', String(imgs.length));\n"
    "});\n</script>\n";

static void page_scores(fine_buf *b, const fine_report_scores *s, const char *path)
{
    fine_buf_puts(b, "<h2 id=\"scores\">Scores</h2>\n<p class=\"note\">From <code>");
    fine_buf_html(b, path);
    fine_buf_printf(b, "</code>: %d case%s, %d label%s. ", s->ncases, s->ncases == 1 ? "" : "s", s->nlabels,
                    s->nlabels == 1 ? "" : "s");
    for (int r = 0; r < s->nrows; r++) {
        fine_buf_puts(b, "<b>");
        fine_buf_html(b, s->row_names[r]);
        if (isfinite(s->row_dice[r]))
            fine_buf_printf(b, ": Dice %.4f", s->row_dice[r]);
        else
            fine_buf_puts(b, ": Dice n/a");
        if (isfinite(s->row_hd95[r]))
            fine_buf_printf(b, ", HD95 %.2f mm", s->row_hd95[r]);
        fine_buf_puts(b, "</b>. ");
    }
    fine_buf_puts(b, "n/a: not defined (an empty reference and prediction, or HD95 with an empty mask).</p>\n");
    fine_buf_puts(b, "<div class=\"scroll\">\n");
    fine_report_table(b, s, 0, "dice-table");
    fine_buf_puts(b, "</div>\n<div class=\"scroll\">\n");
    fine_report_table(b, s, 1, "hd95-table");
    fine_buf_puts(b, "</div>\n");

    fine_buf_puts(b, "<h2 id=\"organs\">Mean Dice per organ</h2>\n");
    double mark = NAN;
    const char *mark_name = NULL;
    if (s->nrows > 0)
        mark = s->row_dice[0], mark_name = s->row_names[0];
    fine_svg_bar_chart(b, "Mean Dice over cases per organ", (const char *const *)s->organs, s->labels, s->mean_dice,
                       s->nlabels, mark_name, mark);
}

static void page_training(fine_buf *b, const char *path, const fine_report_epoch *ep, int n)
{
    fine_buf_puts(b, "<h2 id=\"training\">Training</h2>\n");
    if (!path) {
        fine_buf_puts(b, "<p class=\"note\">No training log was given (fine-report --log FILE, the file "
                         "fine-train --log writes): no training curves.</p>\n");
        return;
    }
    if (n == 0) {
        fine_buf_puts(b, "<p class=\"note\">The training log <code>");
        fine_buf_html(b, path);
        fine_buf_puts(b, "</code> has no epochs yet.</p>\n");
        return;
    }
    double *x = malloc((size_t)n * 6 * sizeof *x);
    if (!x) {
        b->failed = 1;
        return;
    }
    double *loss = x + n, *tdice = x + 2 * n, *vdice = x + 3 * n, *ema = x + 4 * n, *lr = x + 5 * n;
    int nval = 0, best = -1;
    for (int i = 0; i < n; i++) {
        x[i] = (double)ep[i].epoch;
        loss[i] = ep[i].loss, tdice[i] = ep[i].train_dice, vdice[i] = ep[i].val_dice;
        ema[i] = ep[i].val_dice_ema, lr[i] = ep[i].lr;
        nval += isfinite(vdice[i]);
        if (isfinite(ema[i]) && (best < 0 || ema[i] > ema[best]))
            best = i;
    }
    const fine_report_epoch *last = &ep[n - 1];
    fine_buf_puts(b, "<p class=\"note\">From <code>");
    fine_buf_html(b, path);
    fine_buf_printf(b, "</code>: %d epoch%s logged (%lld to %lld). Last epoch: loss %.4f, training Dice %.4f", n,
                    n == 1 ? "" : "s", (long long)ep[0].epoch, (long long)last->epoch, last->loss, last->train_dice);
    if (isfinite(last->val_dice))
        fine_buf_printf(b, ", validation Dice %.4f (moving average %.4f)", last->val_dice, last->val_dice_ema);
    fine_buf_puts(b, ".");
    if (best >= 0)
        fine_buf_printf(b, " Best moving average of the validation Dice: %.4f at epoch %lld.", ema[best],
                        (long long)ep[best].epoch);
    if (nval == 0)
        fine_buf_puts(b, " No validation Dice in the log (trained without --val).");
    fine_buf_puts(b, "</p>\n");

    fine_svg_series sl[1] = {{"training loss (mean over the epoch)", "#1f77b4", x, loss, n, 0}};
    fine_svg_line_chart(b, "Loss", "epoch", "loss", sl, 1, NAN, NAN);
    fine_svg_series sd[3] = {{"validation Dice", "#d62728", x, vdice, n, 0},
                             {"validation Dice, moving average", "#2ca02c", x, ema, n, 0},
                             {"training Dice", "#7f7f7f", x, tdice, n, 1}};
    fine_svg_line_chart(b, "Dice", "epoch", "Dice", nval ? sd : sd + 2, nval ? 3 : 1, 0, 1);
    fine_svg_series sr[1] = {{"learning rate", "#9467bd", x, lr, n, 0}};
    fine_svg_line_chart(b, "Learning rate", "epoch", "learning rate", sr, 1, NAN, NAN);
    free(x);
}

static const char *const VIEW_NAME[3] = {"axial", "coronal", "sagittal"};

/* Draws one view with one label volume, encodes it and appends an <img>. */
static int add_image(fine_buf *b, const fine_volume *img, const fine_volume *lab, const fine_slice_plan *p,
                     const opts *o, const char *alt, uint8_t *rgb, fine_err *e)
{
    fine_slice_render(&img->data, &lab->data, p, o->lo, o->hi, o->alpha, rgb);
    uint8_t *png;
    size_t n;
    if (fine_png_encode_rgb(rgb, p->width, p->height, &png, &n, e) < 0)
        return -1;
    fine_buf_printf(b, "<div><img width=\"%d\" height=\"%d\" alt=\"", p->width, p->height);
    fine_buf_html(b, alt);
    fine_buf_puts(b, "\" src=\"data:image/png;base64,");
    fine_buf_base64(b, png, n);
    fine_buf_puts(b, "\"></div>");
    free(png);
    return 0;
}

/* Loads one case, checks its grids and appends its section with six images. */
static int page_case(fine_buf *b, const case_spec *c, const opts *o, fine_err *e)
{
    fine_volume img, ref, pred;
    memset(&img, 0, sizeof img), memset(&ref, 0, sizeof ref), memset(&pred, 0, sizeof pred);
    fine_slice_plan plan[3];
    uint8_t *rgb = NULL;
    int rc = 0;
    char pre[FINE_CASE_MAX + 8];
    snprintf(pre, sizeof pre, "case %s", c->id);
    if (fine_volume_from_nifti(c->img, c->id, "image", -1, &img, e) < 0 ||
        fine_volume_from_nifti(c->ref, c->id, "label", -1, &ref, e) < 0 ||
        fine_volume_from_nifti(c->pred, c->id, "seg", -1, &pred, e) < 0) {
        fine_err_prefix(e, pre);
        rc = -1;
    } else if (img.data.ndim != 3) {
        rc = fine_err_set(e, "case %s: %s: not a 3-D image", c->id, c->img);
    } else if (fine_check_same_grid(&img, c->img, &ref, c->ref, 0.01, e) < 0 ||
               fine_check_same_grid(&pred, c->pred, &ref, c->ref, 0.01, e) < 0) {
        rc = -1;
    }
    int64_t centre[3] = {0, 0, 0}, nfg = 0;
    if (rc == 0) {
        nfg = fine_foreground_centre(&ref.data, centre);
        size_t most = 0;
        for (int v = 0; v < 3 && rc == 0; v++) {
            if (fine_slice_plan_make(&ref.geom, (fine_view)v, centre, o->size, &plan[v], e) < 0) {
                fine_err_prefix(e, pre);
                rc = -1;
            } else if ((size_t)plan[v].width * (size_t)plan[v].height > most) {
                most = (size_t)plan[v].width * (size_t)plan[v].height;
            }
        }
        if (rc == 0 && !(rgb = malloc(most * 3)))
            rc = fine_err_set(e, "case %s: out of memory", c->id);
    }
    if (rc == 0) {
        static const char AX[3] = {'z', 'y', 'x'};
        fine_buf_printf(b, "<section class=\"case\" id=\"case-");
        fine_buf_html(b, c->id);
        fine_buf_puts(b, "\">\n<h3>");
        fine_buf_html(b, c->id);
        fine_buf_printf(b, "</h3>\n<p class=\"note\">Grid %lld&times;%lld&times;%lld (z, y, x) at %.3g&times;%.3g&times;"
                        "%.3g mm; slices through voxel (z, y, x) = (%lld, %lld, %lld), the centroid of the %lld "
                        "reference foreground voxels%s. Image <code>", (long long)ref.data.shape[0],
                        (long long)ref.data.shape[1], (long long)ref.data.shape[2], fabs(ref.geom.spacing[0]),
                        fabs(ref.geom.spacing[1]), fabs(ref.geom.spacing[2]), (long long)centre[0],
                        (long long)centre[1], (long long)centre[2], (long long)nfg,
                        nfg ? "" : " (none: the centre of the grid)");
        fine_buf_html(b, c->img);
        fine_buf_puts(b, "</code>, reference <code>");
        fine_buf_html(b, c->ref);
        fine_buf_puts(b, "</code>, prediction <code>");
        fine_buf_html(b, c->pred);
        fine_buf_puts(b, "</code>.</p>\n<div class=\"views\"><div></div><div class=\"head\">reference</div>"
                         "<div class=\"head\">prediction</div>\n");
        for (int v = 0; v < 3 && rc == 0; v++) {
            fine_buf_printf(b, "<div class=\"view\">%s<br>%c = %lld</div>", VIEW_NAME[v], AX[plan[v].fixed_axis],
                            (long long)plan[v].index);
            for (int which = 0; which < 2 && rc == 0; which++) {
                char alt[FINE_CASE_MAX + 64];
                snprintf(alt, sizeof alt, "%s %s %s", c->id, VIEW_NAME[v], which ? "prediction" : "reference");
                rc = add_image(b, &img, which ? &pred : &ref, &plan[v], o, alt, rgb, e);
                if (rc < 0)
                    fine_err_prefix(e, pre);
            }
            fine_buf_puts(b, "\n");
        }
        fine_buf_puts(b, "</div>\n</section>\n");
    }
    free(rgb);
    fine_volume_free(&img);
    fine_volume_free(&ref);
    fine_volume_free(&pred);
    return rc;
}

/* ---------------------------------------------------------------- cases in parallel */

/* Workers take the next case, draw its section into its own buffer and record the outcome; the
 * sections are joined in the order of the command line, so the page does not depend on the
 * thread count. */
typedef struct case_work {
    const opts *o;
    pthread_mutex_t mu;
    int next, done, failed;
    fine_buf *parts;
    fine_err *errs;
    int *rcs;
    fine_progress pr;
} case_work;

static void *case_worker(void *arg)
{
    case_work *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int i = w->failed ? w->o->ncases : w->next++;
        pthread_mutex_unlock(&w->mu);
        if (i >= w->o->ncases)
            break;
        w->rcs[i] = page_case(&w->parts[i], &w->o->cases[i], w->o, &w->errs[i]);
        pthread_mutex_lock(&w->mu);
        w->done++;
        if (w->rcs[i] < 0)
            w->failed = 1;
        else
            fine_progress_update(&w->pr, w->done, w->o->ncases, w->o->cases[i].id);
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

/* Appends every case's section to b; on failure the error of the first failed case (in command
 * line order) is in e. */
static int render_cases(fine_buf *b, const opts *o, fine_err *e)
{
    int n = o->ncases, threads = o->threads;
    if (threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (int)cpus : 1;
    }
    if (threads > n)
        threads = n;
    case_work w;
    memset(&w, 0, sizeof w);
    w.o = o;
    w.parts = calloc((size_t)n, sizeof *w.parts);
    w.errs = calloc((size_t)n, sizeof *w.errs);
    w.rcs = calloc((size_t)n, sizeof *w.rcs);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    int rc = 0, started = 0;
    if (!w.parts || !w.errs || !w.rcs || !tid)
        rc = fine_err_set(e, "out of memory");
    if (rc == 0) {
        pthread_mutex_init(&w.mu, NULL);
        fine_progress_init(&w.pr, TOOL, o->quiet, o->progress);
        fine_progress_update(&w.pr, 0, n, NULL);
        for (int t = 0; t < threads; t++) {
            if (pthread_create(&tid[t], NULL, case_worker, &w) != 0)
                break;
            started++;
        }
        if (started == 0) /* no thread: do the work here */
            case_worker(&w);
        for (int t = 0; t < started; t++)
            pthread_join(tid[t], NULL);
        fine_progress_done(&w.pr);
        pthread_mutex_destroy(&w.mu);
        for (int i = 0; i < n && rc == 0; i++) {
            if (w.rcs[i] < 0) {
                *e = w.errs[i];
                rc = -1;
            } else if (w.parts[i].failed) {
                rc = fine_err_set(e, "case %s: out of memory", o->cases[i].id);
            } else if (w.parts[i].len) {
                fine_buf_add(b, w.parts[i].data, w.parts[i].len);
            }
        }
    }
    for (int i = 0; w.parts && i < n; i++)
        fine_buf_free(&w.parts[i]);
    free(w.parts);
    free(w.errs);
    free(w.rcs);
    free(tid);
    return rc;
}

/* ---------------------------------------------------------------- output */

static int make_report(const opts *o)
{
    fine_err e = {0};
    struct stat st;
    if (strcmp(o->out, "-") != 0 && !o->force && stat(o->out, &st) == 0) { /* before any work */
        fine_err_set(&e, "%s: exists (use --force to overwrite)", o->out);
        return fine_cli_fail(TOOL, &e);
    }
    fine_report_scores s;
    if (fine_report_scores_load(o->dice, &s, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    fine_report_epoch *ep = NULL;
    int nep = 0;
    if (o->log && fine_report_log_load(o->log, &ep, &nep, &e) < 0) {
        fine_report_scores_free(&s);
        return fine_cli_fail(TOOL, &e);
    }
    fine_buf b = {0};
    fine_buf_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    fine_buf_html(&b, o->title);
    fine_buf_printf(&b, "</title>\n<meta name=\"generator\" content=\"%s %s\">\n<style>\n%s</style>\n</head>\n<body>\n"
                    "<h1>", TOOL, FINE_VERSION, CSS);
    fine_buf_html(&b, o->title);
    fine_buf_printf(&b, "</h1>\n<p class=\"meta\">Made by %s %s from <code>", TOOL, FINE_VERSION);
    fine_buf_html(&b, o->dice);
    fine_buf_puts(&b, "</code>");
    if (o->log) {
        fine_buf_puts(&b, " and <code>");
        fine_buf_html(&b, o->log);
        fine_buf_puts(&b, "</code>");
    }
    fine_buf_printf(&b, "; %d case image set%s.</p>\n<nav><a href=\"#scores\">Scores</a><a href=\"#organs\">Per "
                    "organ</a><a href=\"#training\">Training</a><a href=\"#cases\">Cases</a></nav>\n", o->ncases,
                    o->ncases == 1 ? "" : "s");
    page_scores(&b, &s, o->dice);
    page_training(&b, o->log, ep, nep);

    fine_buf_printf(&b, "<h2 id=\"cases\">Cases</h2>\n");
    int rc = 0;
    if (o->ncases == 0) {
        fine_buf_puts(&b, "<p class=\"note\">No cases were given (CASE arguments ID=IMAGE,REF,PRED): no "
                          "images.</p>\n");
    } else {
        fine_buf_printf(&b, "<p class=\"note\">The CT windowed to [%g, %g] HU; labels overlaid at opacity %g. "
                        "Axial: anterior at the top; coronal and sagittal: superior at the top; the patient's "
                        "right on the image's left; sagittal: anterior on the left.</p>\n", o->lo, o->hi, o->alpha);
        fine_report_legend(&b, &s);
        rc = render_cases(&b, o, &e);
    }
    fine_buf_puts(&b, SCRIPT);
    fine_buf_puts(&b, "</body>\n</html>\n");
    if (rc == 0 && b.failed)
        rc = fine_err_set(&e, "%s: out of memory assembling the page", o->out);
    if (rc == 0)
        rc = fine_write_file(o->out, o->force, b.data, b.len, &e);
    fine_buf_free(&b);
    free(ep);
    fine_report_scores_free(&s);
    return rc < 0 ? fine_cli_fail(TOOL, &e) : FINE_EXIT_OK;
}

static void free_cases(opts *o)
{
    for (int i = 0; i < o->ncases; i++)
        free(o->cases[i].img);
    free(o->cases);
}

int main(int argc, char **argv)
{
    fine_cli_init();
    enum { O_DICE = 256, O_LOG, O_TITLE, O_WINDOW, O_ALPHA, O_SIZE, O_THREADS, O_PROGRESS, O_VERSION };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},  {"dice", required_argument, NULL, O_DICE},
        {"log", required_argument, NULL, O_LOG},   {"title", required_argument, NULL, O_TITLE},
        {"window", required_argument, NULL, O_WINDOW}, {"alpha", required_argument, NULL, O_ALPHA},
        {"size", required_argument, NULL, O_SIZE}, {"threads", required_argument, NULL, O_THREADS},
        {"force", no_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},         {"progress", no_argument, NULL, O_PROGRESS},
        {"help", no_argument, NULL, 'h'},          {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    opts o;
    memset(&o, 0, sizeof o);
    o.title = "fine: segmentation report";
    o.lo = -160, o.hi = 240, o.alpha = 0.45, o.size = 512;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":o:fqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': o.out = optarg; break;
        case O_DICE: o.dice = optarg; break;
        case O_LOG: o.log = optarg; break;
        case O_TITLE: o.title = optarg; break;
        case O_WINDOW: {
            double w[2];
            if (fine_parse_f64s(optarg, w, 2, 0) < 0 || !isfinite(w[0]) || !isfinite(w[1]) || !(w[0] < w[1]))
                return fine_cli_usage(TOOL, "--window: '%s' is not LO,HI with LO < HI", optarg);
            o.lo = w[0], o.hi = w[1];
            break;
        }
        case O_ALPHA: {
            char *end;
            errno = 0;
            o.alpha = strtod(optarg, &end);
            if (end == optarg || *end || errno || !(o.alpha >= 0 && o.alpha <= 1))
                return fine_cli_usage(TOOL, "--alpha: '%s' is not a number from 0 to 1", optarg);
            break;
        }
        case O_SIZE: {
            int64_t n;
            if (fine_parse_i64(optarg, &n) < 0 || n < 16 || n > 8192)
                return fine_cli_usage(TOOL, "--size: '%s' is not a pixel count from 16 to 8192", optarg);
            o.size = (int)n;
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
    if (!o.out)
        return fine_cli_usage(TOOL, "no output file (-o REPORT.html)");
    if (!o.dice)
        return fine_cli_usage(TOOL, "no scores (--dice DICE.json, from fine-dice --json)");
    int n = argc - optind;
    o.cases = calloc((size_t)n + 1, sizeof *o.cases);
    if (!o.cases) {
        fine_err e;
        fine_err_set(&e, "out of memory");
        return fine_cli_fail(TOOL, &e);
    }
    for (int i = 0; i < n; i++) {
        char why[FINE_CASE_MAX + 128];
        if (parse_case(argv[optind + i], &o.cases[i], why, sizeof why) < 0) {
            free_cases(&o);
            return fine_cli_usage(TOOL, "%s", why);
        }
        o.ncases++;
        for (int k = 0; k < i; k++)
            if (strcmp(o.cases[k].id, o.cases[i].id) == 0) {
                snprintf(why, sizeof why, "case %s given twice", o.cases[i].id);
                free_cases(&o);
                return fine_cli_usage(TOOL, "%s", why);
            }
    }
    int rc = make_report(&o);
    free_cases(&o);
    return rc;
}
