/* test_report: the pieces of fine-report's page (lib/report.h): base64 against RFC 4648's
 * vectors, HTML escaping, the JSON reader (valid documents, every kind of malformed one and its
 * position), fine-dice summaries and training logs read from files, the slice planner's
 * orientation for hand-made affines, slice pixels computed by hand, and the SVG and table
 * output. The PNG encoder and the whole page are checked from Python and in Chromium by
 * tests/bats/report.bats. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report.h"
#include "tap.h"

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void test_buf(tap *t)
{
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        fine_buf b = {0};
        fine_buf_puts(&b, "");
        fine_buf_base64(&b, (const uint8_t *)in[i], strlen(in[i]));
        tap_ok(t, b.len == strlen(out[i]) && strcmp(b.data, out[i]) == 0, "base64(\"%s\") = \"%s\"", in[i], out[i]);
        fine_buf_free(&b);
    }
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    fine_buf b = {0};
    fine_buf_base64(&b, all, 256);
    tap_ok(t, b.len == 344 && strncmp(b.data, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", 44) == 0 &&
                  strcmp(b.data + 336, "/P3+/w==") == 0,
           "base64 of bytes 0..255: length 344, start and end as Python's base64");
    fine_buf_free(&b);

    fine_buf_html(&b, "a<b>&\"c'd");
    tap_ok(t, strcmp(b.data, "a&lt;b&gt;&amp;&quot;c&#39;d") == 0, "HTML escaping of & < > \" '");
    fine_buf_free(&b);

    for (int i = 0; i < 1000; i++)
        fine_buf_printf(&b, "%04d,", i);
    tap_ok(t, !b.failed && b.len == 5000 && strncmp(b.data + 4995, "0999,", 5) == 0 && b.data[5000] == '\0',
           "buffer grows over many printf calls and stays NUL-terminated");
    fine_buf_free(&b);
}

static int parses(const char *text, fine_json *v)
{
    fine_err e = {0};
    return fine_json_parse(text, strlen(text), v, &e) == 0;
}

/* 1 when text fails to parse with a message containing want. */
static int fails_with(const char *text, const char *want, char *msg, size_t cap)
{
    fine_err e = {0};
    fine_json v;
    int rc = fine_json_parse(text, strlen(text), &v, &e);
    snprintf(msg, cap, "%s", e.msg);
    return rc < 0 && strstr(e.msg, want) != NULL;
}

static void test_json(tap *t)
{
    fine_json v;
    const char *doc = " {\"a\": [1, -0.5e3, 0, 1E+2, 2.5E-1], \"s\": \"x\\n\\\"\\\\\\/\\u00e9\\ud83d\\ude00\\t\",\n"
                      "  \"t\": true, \"f\": false, \"n\": null, \"o\": {\"k\": {}}, \"e\": [], \"a\": 7} ";
    int ok = parses(doc, &v);
    tap_ok(t, ok && v.type == FINE_JSON_OBJECT && v.n == 8, "an object of 8 members parses");
    const fine_json *a = fine_json_get(&v, "a");
    tap_ok(t, a && a->type == FINE_JSON_ARRAY && a->n == 5 && a->items[0].number == 1 && a->items[1].number == -500 &&
                  a->items[2].number == 0 && a->items[3].number == 100 && a->items[4].number == 0.25,
           "numbers: 1, -0.5e3, 0, 1E+2, 2.5E-1; a repeated key gives the first");
    const fine_json *s = fine_json_get(&v, "s");
    tap_ok(t, s && s->type == FINE_JSON_STRING && strcmp(s->string, "x\n\"\\/\xc3\xa9\xf0\x9f\x98\x80\t") == 0,
           "string escapes, \\u00e9 and a surrogate pair to UTF-8");
    const fine_json *tt = fine_json_get(&v, "t"), *ff = fine_json_get(&v, "f"), *nn = fine_json_get(&v, "n");
    tap_ok(t, tt && tt->type == FINE_JSON_BOOL && tt->boolean == 1 && ff && ff->boolean == 0 && nn &&
                  nn->type == FINE_JSON_NULL,
           "true, false, null");
    const fine_json *o = fine_json_get(&v, "o");
    tap_ok(t, o && fine_json_get(o, "k") && fine_json_get(o, "k")->type == FINE_JSON_OBJECT &&
                  fine_json_get(o, "k")->n == 0 && fine_json_get(&v, "e")->n == 0 && !fine_json_get(&v, "zz") &&
                  !fine_json_get(a, "x"),
           "nested and empty containers; a missing key and a non-object give NULL");
    fine_json_free(&v);

    ok = parses("[NaN, -nan, Infinity, -inf, 1e999]", &v);
    tap_ok(t, ok && v.n == 5 && isnan(v.items[0].number) && isnan(v.items[1].number) &&
                  v.items[2].number == INFINITY && v.items[3].number == -INFINITY && v.items[4].number == INFINITY,
           "the printf leniency: NaN, -nan, Infinity, -inf; 1e999 overflows to inf");
    fine_json_free(&v);

    char deep[200];
    memset(deep, '[', 64);
    memset(deep + 64, ']', 64);
    deep[128] = '\0';
    ok = parses(deep, &v);
    tap_ok(t, ok, "64 nested arrays parse");
    fine_json_free(&v);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"", "empty"},
        {"   \n ", "empty"},
        {"[1,]", "line 1, column 4: expected a value"},
        {"[1 2]", "line 1, column 4: expected ',' or ']'"},
        {"{\"a\" 1}", "line 1, column 6: expected ':'"},
        {"{\"a\": 1,}", "line 1, column 9: expected a string key"},
        {"{1: 2}", "expected a string key"},
        {"01", "malformed number"},
        {"1.", "digit after the decimal point"},
        {"1e", "digit in the exponent"},
        {"-", "expected a value"},
        {"+1", "expected a value"},
        {".5", "expected a value"},
        {"tru", "expected a value"},
        {"nulls", "expected a value"},
        {"\"abc", "unterminated string"},
        {"\"a\tb\"", "control character"},
        {"\"\\x\"", "invalid escape"},
        {"\"\\u12G4\"", "four hex digits"},
        {"\"\\udc00\"", "lone low surrogate"},
        {"\"\\ud800x\"", "without its low surrogate"},
        {"\"\\u0000\"", "\\u0000"},
        {"{} x", "unexpected text after the JSON value"},
        {"[1]\n\n  ]", "line 3, column 3: unexpected text"},
        {"{\"a\": [1,\n  2,\n  oops]}", "line 3, column 3: expected a value"},
        {"[[[", "the text ends here"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char msg[FINE_ERR_MAX];
        tap_ok(t, fails_with(bad[i].text, bad[i].want, msg, sizeof msg), "malformed JSON %zu refused: %s", i, msg);
    }
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = '\0';
    char msg[FINE_ERR_MAX];
    tap_ok(t, fails_with(deep, "deeper than 64", msg, sizeof msg), "65 nested arrays refused: %s", msg);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_scores(tap *t, const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/dice.json", dir);
    write_text(path,
               "{\"name\": \"fine-dice\", \"labels\": {\"1\": \"spleen\", \"6\": \"liver\"},\n"
               " \"results\": {\"all\": [\n"
               "   {\"case\": \"c1\", \"1\": {\"Dice\": 0.5, \"Hausdorff Distance 95\": 2},"
               "    \"6\": {\"Dice\": null, \"Hausdorff Distance 95\": null}},\n"
               "   {\"test\": \"pred/img0002.nii.gz\", \"1\": {\"Dice\": 1, \"Hausdorff Distance 95\": 0}}],\n"
               "  \"mean\": {\"1\": {\"Dice\": 0.75, \"Hausdorff Distance 95\": 1}, \"6\": {\"Dice\": null}},\n"
               "  \"mean (13 organs)\": {\"Dice\": 0.75, \"Hausdorff Distance 95\": 1},\n"
               "  \"mean (8 Synapse organs)\": {\"Dice\": 0.7, \"Hausdorff Distance 95\": 1.5}}}\n");
    fine_report_scores s;
    fine_err e = {0};
    int rc = fine_report_scores_load(path, &s, &e);
    tap_ok(t, rc == 0, "a fine-dice summary loads (%s)", e.msg);
    if (rc == 0) {
        tap_ok(t, s.nlabels == 2 && s.labels[0] == 1 && s.labels[1] == 6 && strcmp(s.organs[1], "liver") == 0,
               "labels and organ names from \"labels\"");
        tap_ok(t, s.ncases == 2 && strcmp(s.cases[0], "c1") == 0 && strcmp(s.cases[1], "img0002") == 0,
               "case names from \"case\", else the base name of \"test\"");
        tap_ok(t, s.dice[0] == 0.5 && isnan(s.dice[1]) && s.dice[2] == 1 && isnan(s.dice[3]) && s.hd95[0] == 2 &&
                      isnan(s.hd95[3]),
               "per-case values; null and missing are NaN");
        tap_ok(t, s.mean_dice[0] == 0.75 && isnan(s.mean_dice[1]) && s.mean_hd95[0] == 1 && isnan(s.mean_hd95[1]),
               "per-label means as written");
        tap_ok(t, s.nrows == 2 && strcmp(s.row_names[0], "mean (13 organs)") == 0 && s.row_dice[1] == 0.7 &&
                      s.row_hd95[1] == 1.5,
               "summary rows as written");
        fine_buf b = {0};
        fine_report_table(&b, &s, 0, "dice-table");
        tap_ok(t, b.data && strstr(b.data, "id=\"dice-table\"") && strstr(b.data, ">liver</th>") &&
                      strstr(b.data, ">0.5000</td>") && strstr(b.data, ">n/a</td>") &&
                      strstr(b.data, "mean (8 Synapse organs)</th>") && strstr(b.data, ">0.7000</td>") &&
                      count(b.data, "<tr") == 5,
               "the Dice table: organs, values, n/a, summary rows");
        fine_buf_free(&b);
        fine_report_table(&b, &s, 1, "hd95-table");
        tap_ok(t, b.data && strstr(b.data, ">2.00</td>") && strstr(b.data, ">1.50</td>"), "the HD95 table");
        fine_buf_free(&b);
        fine_report_scores_free(&s);
    }

    write_text(path, "{\"results\": {\"all\": [{\"1\": {\"Dice\": \"high\"}}], \"mean\": {\"1\": {}}}}");
    rc = fine_report_scores_load(path, &s, &e);
    tap_ok(t, rc < 0 && strstr(e.msg, path) && strstr(e.msg, "\"Dice\" is not a number"),
           "a string where a number belongs is refused: %s", e.msg);
    write_text(path, "{\"results\": {\"mean\": {}}}");
    rc = fine_report_scores_load(path, &s, &e);
    tap_ok(t, rc < 0 && strstr(e.msg, "\"all\""), "no results.all is refused: %s", e.msg);
    write_text(path, "{\"results\": {\"all\": [], \"mean\": {\"3\": {\"Dice\": 0.1}, \"x\": 2}}}");
    rc = fine_report_scores_load(path, &s, &e);
    tap_ok(t, rc == 0 && s.nlabels == 1 && s.labels[0] == 3 && strcmp(s.organs[0], "left kidney") == 0 &&
                  s.ncases == 0 && s.mean_dice[0] == 0.1,
           "an nnU-Net summary without \"labels\": labels from results.mean, BCV names");
    if (rc == 0)
        fine_report_scores_free(&s);
    write_text(path, "{\"results\": [1, 2");
    rc = fine_report_scores_load(path, &s, &e);
    tap_ok(t, rc < 0 && strncmp(e.msg, path, strlen(path)) == 0 && strstr(e.msg, "line 1, column"),
           "truncated JSON: the file and the position: %s", e.msg);
    snprintf(path, sizeof path, "%s/missing.json", dir);
    rc = fine_report_scores_load(path, &s, &e);
    tap_ok(t, rc < 0 && strstr(e.msg, "missing.json: No such file"), "a missing file: %s", e.msg);
}

static void test_log(tap *t, const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    write_text(path, "{\"epoch\": 1, \"loss\": 1.5, \"train_dice\": 0.1, \"lr\": 0.01}\n"
                     "\n"
                     "{\"epoch\": 2, \"loss\": 1.0, \"lr\": 0.009, \"val_dice\": 0.3, \"val_dice_ema\": 0.03}\n"
                     "{\"epoch\": 3, \"loss\": 0.9, \"lr\": 0.008, \"val_dice\": null, \"grad_norm\": inf}\n"
                     "{\"epoch\": 2, \"loss\": 0.95, \"lr\": 0.009, \"val_dice\": 0.4, \"val_dice_ema\": 0.04}\n"
                     "  {\"epoch\": 0, \"loss\": 2}  \n");
    fine_report_epoch *ep;
    int n;
    fine_err e = {0};
    int rc = fine_report_log_load(path, &ep, &n, &e);
    tap_ok(t, rc == 0 && n == 4, "a log of 5 lines with a repeated epoch and a blank line: 4 epochs (%s)", e.msg);
    if (rc == 0 && n == 4) {
        tap_ok(t, ep[0].epoch == 0 && ep[1].epoch == 1 && ep[2].epoch == 2 && ep[3].epoch == 3, "sorted by epoch");
        tap_ok(t, ep[2].loss == 0.95 && ep[2].val_dice == 0.4 && ep[2].val_dice_ema == 0.04,
               "the later line of a repeated epoch wins (a resumed run)");
        tap_ok(t, isnan(ep[1].val_dice) && isnan(ep[3].val_dice) && isnan(ep[0].lr) && ep[1].train_dice == 0.1,
               "missing and null fields are NaN");
    }
    free(ep);
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"{\"epoch\": 1}\n{\"epoch\": 2, \"loss\": }\n", "line 2, column 22: expected a value"},
        {"{\"epoch\": 1}\n[1]\n", "line 2: not a JSON object"},
        {"{\"loss\": 1}\n", "line 1: no \"epoch\""},
        {"{\"epoch\": -1}\n", "line 1: \"epoch\" is not a whole number"},
        {"{\"epoch\": 1.5}\n", "not a whole number"},
        {"{\"epoch\": 1, \"lr\": \"fast\"}\n", "line 1: \"lr\" is not a number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(path, bad[i].text);
        rc = fine_report_log_load(path, &ep, &n, &e);
        tap_ok(t, rc < 0 && strncmp(e.msg, path, strlen(path)) == 0 && strstr(e.msg, bad[i].want),
               "bad log %zu refused: %s", i, e.msg);
    }
    write_text(path, "");
    rc = fine_report_log_load(path, &ep, &n, &e);
    tap_ok(t, rc == 0 && n == 0 && ep == NULL, "an empty log has no epochs");
}

/* A geometry whose sform maps NIfTI (i, j, k) to world with the 3x3 matrix m. */
static void geom_with(fine_geometry *g, const int64_t size[3], const double sp[3], const double m[3][3])
{
    fine_geometry_init(g, size, sp);
    g->sform_code = 1;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++)
            g->srow[r][c] = m[r][c];
}

static void test_plan(tap *t)
{
    /* fine-synth's layout: i toward the patient's left (-R), j toward posterior (-A), k superior */
    int64_t size[3] = {20, 64, 50}; /* z, y, x */
    double sp[3] = {5, 1, 2};       /* extents 100, 64, 100 mm */
    double lps[3][3] = {{-2, 0, 0}, {0, -1, 0}, {0, 0, 5}};
    fine_geometry g;
    geom_with(&g, size, sp, lps);
    int64_t c[3] = {10, 30, 25};
    fine_slice_plan p[3];
    fine_err e = {0};
    int ok = 1;
    for (int v = 0; v < 3; v++)
        ok &= fine_slice_plan_make(&g, (fine_view)v, c, 200, &p[v], &e) == 0;
    tap_ok(t, ok, "plans for the three views");
    tap_ok(t, p[0].fixed_axis == 0 && p[0].index == 10 && p[0].col_axis == 2 && p[0].row_axis == 1 && !p[0].col_flip &&
                  !p[0].row_flip && p[0].width == 200 && p[0].height == 128,
           "LPS axial: x along columns, y down, no flips, 2 px per mm... %dx%d", p[0].width, p[0].height);
    tap_ok(t, p[1].fixed_axis == 1 && p[1].index == 30 && p[1].col_axis == 2 && p[1].row_axis == 0 && !p[1].col_flip &&
                  p[1].row_flip && p[1].width == 200 && p[1].height == 200,
           "LPS coronal: superior at the top (z flipped), 100 mm of 5 mm slices stretched to 200 px");
    tap_ok(t, p[2].fixed_axis == 2 && p[2].index == 25 && p[2].col_axis == 1 && p[2].row_axis == 0 && !p[2].col_flip &&
                  p[2].row_flip && p[2].width == 128 && p[2].height == 200,
           "LPS sagittal: posterior to the right, superior at the top");

    /* RAS (nibabel's default): i toward right, j anterior, k superior: columns and rows flip */
    double ras[3][3] = {{2, 0, 0}, {0, 1, 0}, {0, 0, 5}};
    geom_with(&g, size, sp, ras);
    fine_slice_plan_make(&g, FINE_VIEW_AXIAL, c, 200, &p[0], &e);
    fine_slice_plan_make(&g, FINE_VIEW_SAGITTAL, c, 200, &p[2], &e);
    tap_ok(t, p[0].col_flip && p[0].row_flip && p[2].col_flip && p[2].row_flip,
           "RAS: columns and rows run backwards to keep the same picture");

    /* axes permuted: array z (k) runs anterior, array y (j) superior, x (i) left */
    double perm[3][3] = {{-2, 0, 0}, {0, 0, 5}, {0, 1, 0}};
    geom_with(&g, size, sp, perm);
    fine_slice_plan_make(&g, FINE_VIEW_AXIAL, c, 200, &p[0], &e);
    fine_slice_plan_make(&g, FINE_VIEW_CORONAL, c, 200, &p[1], &e);
    tap_ok(t, p[0].fixed_axis == 1 && p[0].index == 30 && p[0].col_axis == 2 && p[0].row_axis == 0 && p[0].row_flip &&
                  p[1].fixed_axis == 0 && p[1].row_axis == 1 && p[1].row_flip,
           "permuted axes found from the affine: axial holds array y, coronal array z");

    /* a slightly oblique affine still picks the dominant axes */
    double obl[3][3] = {{-2, 0.1, 0}, {0.2, -1, 0.3}, {0, 0.05, 5}};
    geom_with(&g, size, sp, obl);
    fine_slice_plan_make(&g, FINE_VIEW_AXIAL, c, 200, &p[0], &e);
    tap_ok(t, p[0].fixed_axis == 0 && p[0].col_axis == 2 && !p[0].col_flip, "an oblique affine: dominant axes");

    c[0] = 20;
    tap_ok(t, fine_slice_plan_make(&g, FINE_VIEW_AXIAL, c, 200, &p[0], &e) < 0 && strstr(e.msg, "outside"),
           "a slice outside the grid is refused: %s", e.msg);
    c[0] = 0;
    tap_ok(t, fine_slice_plan_make(&g, FINE_VIEW_AXIAL, c, 8, &p[0], &e) < 0, "a size below 16 is refused");
}

static void test_render(tap *t)
{
    /* a 2x3x4 (z, y, x) CT and labels, LPS; axial slice z = 1 */
    int64_t shape[3] = {2, 3, 4};
    fine_tensor img = {0}, lab = {0};
    fine_err e = {0};
    fine_tensor_alloc(&img, FINE_I16, 3, shape, &e);
    fine_tensor_alloc(&lab, FINE_U8, 3, shape, &e);
    int16_t *v = img.data;
    uint8_t *l = lab.data;
    for (int i = 0; i < 24; i++)
        v[i] = (int16_t)(-200 + 20 * i); /* z = 1 holds 40 .. 260 */
    l[12 + 0] = 1;                       /* z 1, y 0, x 0: spleen */
    l[12 + 7] = 6;                       /* z 1, y 1, x 3: liver */
    fine_slice_plan p = {.fixed_axis = 0, .col_axis = 2, .row_axis = 1, .index = 1, .width = 8, .height = 6};
    uint8_t rgb[8 * 6 * 3];
    fine_slice_render(&img, &lab, &p, -160, 240, 0.5, rgb);
    /* pixel (row 2, col 4) is voxel y 1, x 2: value -200 + 20 * 18 = 160 -> (160 + 160) / 400 * 255 = 204 */
    const uint8_t *px = rgb + (2 * 8 + 4) * 3;
    tap_ok(t, px[0] == 204 && px[1] == 204 && px[2] == 204, "grey: window -160..240 maps 160 HU to 204 (%d)", px[0]);
    /* pixel (0, 0): voxel y 0 x 0 = 40 HU -> 127.5 grey, spleen (230, 25, 75) at alpha 0.5 */
    px = rgb;
    uint8_t col[3];
    fine_label_color(1, col);
    tap_ok(t, px[0] == (uint8_t)lround(0.5 * 127.5 + 0.5 * col[0]) && px[1] == (uint8_t)lround(0.5 * 127.5 + 0.5 * col[1]) &&
                  px[2] == (uint8_t)lround(0.5 * 127.5 + 0.5 * col[2]),
           "a label blended over grey at alpha 0.5");
    /* nearest neighbour: 2x up-sampling repeats each voxel; (row 3, col 7) is voxel y 1, x 3 (liver) */
    tap_ok(t, memcmp(rgb + (2 * 8 + 6) * 3, rgb + (3 * 8 + 7) * 3, 3) == 0 && memcmp(rgb, rgb + (1 * 8 + 1) * 3, 3) == 0,
           "nearest-neighbour up-sampling repeats voxels");
    /* the last row is y 2, x 3: 40 + 20 * 11 = 260 HU, clipped to 255 */
    px = rgb + (5 * 8 + 7) * 3;
    tap_ok(t, px[0] == 255, "values above the window clip to white");
    /* flips: with col_flip the first column shows x 3 */
    p.col_flip = 1;
    uint8_t rgb2[8 * 6 * 3];
    fine_slice_render(&img, NULL, &p, -160, 240, 0.5, rgb2);
    tap_ok(t, rgb2[(2 * 8 + 0) * 3] == (uint8_t)lround((40 + 20 * 7 + 160) / 400.0 * 255),
           "col_flip: the first column is the last x; no labels without lab");
    int64_t centre[3];
    tap_ok(t, fine_foreground_centre(&lab, centre) == 2 && centre[0] == 1 && centre[1] == 1 && centre[2] == 2,
           "foreground centroid (1, 0.5, 1.5) rounds to voxel (1, 1, 2)");
    memset(l, 0, 24);
    tap_ok(t, fine_foreground_centre(&lab, centre) == 0 && centre[0] == 1 && centre[1] == 1 && centre[2] == 2,
           "no foreground: the grid's centre");
    fine_tensor_free(&img);
    fine_tensor_free(&lab);
}

static void test_svg(tap *t)
{
    double x[5] = {1, 2, 3, 4, 5}, y[5] = {0.5, NAN, 0.7, 0.8, 0.9}, z[5] = {1, 2, 3, 4, 5};
    fine_svg_series s[2] = {{"val <Dice>", "#d62728", x, y, 5, 0}, {"loss", "#1f77b4", x, z, 5, 1}};
    fine_buf b = {0};
    fine_svg_line_chart(&b, "Dice & loss", "epoch", "value", s, 2, NAN, NAN);
    tap_ok(t, b.data && count(b.data, "<svg") == 1 && count(b.data, "</svg>") == 1 &&
                  count(b.data, "<polyline") == 3 && strstr(b.data, "val &lt;Dice&gt;") &&
                  strstr(b.data, "Dice &amp; loss") && strstr(b.data, "stroke-dasharray"),
           "line chart: a NaN breaks a curve (3 polylines), names escaped, dashed series");
    tap_ok(t, count(b.data, "<circle") == 9, "few points: each finite point marked (%d)", count(b.data, "<circle"));
    fine_buf_free(&b);
    const char *names[3] = {"spleen", "liver", "x&y"};
    int64_t labels[3] = {1, 6, 14};
    double vals[3] = {0.9, NAN, 1.2};
    fine_svg_bar_chart(&b, "Mean Dice", names, labels, vals, 3, "mean (13 organs)", 0.8);
    tap_ok(t, b.data && count(b.data, "<rect") == 2 && strstr(b.data, "n/a") && strstr(b.data, "x&amp;y") &&
                  strstr(b.data, "fill=\"#e6194b\"") && strstr(b.data, "mean (13 organs) 0.800") &&
                  strstr(b.data, "width=\"400.0\""),
           "bar chart: bars in organ colours, n/a for NaN, values above 1 clipped, the mean line");
    fine_buf_free(&b);
    fine_report_legend(&b, NULL);
    tap_ok(t, b.data && count(b.data, "class=\"item\"") == 13 && strstr(b.data, "13 left adrenal gland"),
           "the default legend lists the 13 BCV organs");
    fine_buf_free(&b);
    uint8_t c1[3], c14[3], c0[3];
    fine_label_color(1, c1);
    fine_label_color(14, c14);
    fine_label_color(0, c0);
    int distinct = 1;
    for (int a = 1; a <= 13; a++)
        for (int bb = a + 1; bb <= 13; bb++) {
            uint8_t ca[3], cb[3];
            fine_label_color(a, ca);
            fine_label_color(bb, cb);
            distinct &= memcmp(ca, cb, 3) != 0;
        }
    tap_ok(t, distinct && memcmp(c1, c14, 3) == 0 && c0[0] == 0, "13 distinct organ colours; label 14 cycles");
}

int main(void)
{
    tap t = {0, 0};
    char dir[] = "/tmp/test_report.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_buf(&t);
    test_json(&t);
    test_scores(&t, dir);
    test_log(&t, dir);
    test_plan(&t);
    test_render(&t);
    test_svg(&t);
    char path[600];
    snprintf(path, sizeof path, "%s/dice.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    unlink(path);
    rmdir(dir);
    return tap_done(&t);
}
