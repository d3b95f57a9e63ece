/* fine-patch: cases -> patch records for the network. --grid: the sliding-window tiles of each
 * case (fine-reference A4, A10, B §3.2, §5.6), framed by case_begin and case_end records that
 * fine-stitch uses to put the predictions back; --train: random training crops
 * (lib/train_patch.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "patch_grid.h"
#include "stream.h"
#include "train_patch.h"
#include "volume.h"
#include "volume_check.h"

static const char *TOOL = "fine-patch";

static void usage(void)
{
    printf("Usage: fine-patch --grid [options] [IN [OUT]]\n"
           "       fine-patch --train [options] ...   (random training crops; see --train --help)\n"
           "Cut each case of a stream (its `image` volume and, when present, its `label` volume,\n"
           "consecutive records of one case) into the sliding-window tiles of nnU-Net v1\n"
           "inference: patches of P voxels, n = ceil((L - P) / (P * step)) + 1 starts per axis\n"
           "spread evenly over [0, L - P] and rounded; a case smaller than the patch is first\n"
           "zero-padded to it, centred. For each case the output holds a `case_begin` record\n"
           "(case, geometry and shape of the volume, patch, padding, tile count), one `patch`\n"
           "record per tile ([1, z, y, x] f32 image; `label` tile when the case has a label;\n"
           "`origin` = the tile's first voxel in the case volume, negative inside the padding;\n"
           "`pos` = tile centre minus volume centre on the padded grid; `volume_size`; `index`),\n"
           "then a `case_end` record with the patch count. fine-stitch turns the predictions of\n"
           "these patches back into a segmentation on the original grid.\n"
           "Image and label volumes are consumed; every other record passes through.\n"
           "IN and OUT default to '-' (stdin, stdout); a stream is never written to a terminal.\n\n"
           "Options:\n"
           "  --grid             sliding-window tiles (this mode)\n"
           "  --patch Z,Y,X      patch size (default 64,128,128; one number for a cube)\n"
           "  --step F           step as a fraction of the patch, 0 < F <= 1 (default 0.5)\n"
           "  --no-label         leave the label tiles out\n"
           "  --max-label N      labels must be in 0..N (default 13, the BCV organs)\n"
           "  --threads N        accepted for uniformity (tiling is a memory copy)\n"
           "  -f, --force        overwrite OUT if it exists\n"
           "  -q, --quiet        no progress line\n"
           "  --progress         progress line even when stderr is not a terminal\n"
           "  -h, --help         this help\n"
           "  --version          print the version\n\n"
           "Exit status: 0 success, 1 bad input or failure, 2 usage error.\n\n"
           "Examples:\n"
           "  fine-normalize --stats stats.fst case.fst - | fine-patch --grid | fine-info -\n"
           "  fine-patch --grid --patch 64,128,128 case.fst - | fine-infer --model best.fst \\\n"
           "      | fine-stitch -o seg.nii.gz\n");
}

typedef struct options {
    int64_t patch[3];
    double step;
    int no_label;
    int max_label;
} options;

/* The volumes of the case being collected. */
typedef struct held_case {
    fine_volume image, label;
    int has_image, has_label;
} held_case;

static const char *held_id(const held_case *h)
{
    return h->has_image ? h->image.case_id : h->has_label ? h->label.case_id : NULL;
}

static void held_free(held_case *h)
{
    fine_volume_free(&h->image);
    fine_volume_free(&h->label);
    h->has_image = h->has_label = 0;
}

static int put_case_begin(fine_writer *w, const fine_volume *img, const fine_grid *g, const options *o,
                          fine_err *e)
{
    fine_map *m = fine_map_new("case_begin");
    fine_map_str(m, "case", img->case_id);
    fine_map_i64s(m, "shape", g->size, 3);
    fine_map_i64s(m, "volume_size", g->size, 3);
    fine_map_geometry(m, &img->geom);
    fine_map_i64s(m, "patch", g->patch, 3);
    fine_map_f64(m, "step", o->step);
    fine_map_i64s(m, "pad_lo", g->pad_lo, 3);
    fine_map_i64s(m, "padded_size", g->padded, 3);
    fine_map_i64s(m, "grid", g->n, 3);
    fine_map_i64(m, "patches", g->count);
    int rc = fine_writer_put(w, m, e);
    fine_map_free(m);
    return rc;
}

/* Writes the tiles of the held case, framed by case_begin and case_end. */
static int emit_case(fine_writer *w, held_case *h, const options *o, fine_err *e)
{
    if (!h->has_image)
        return fine_err_set(e, "case %s: a label volume but no image volume", h->label.case_id);
    fine_volume *img = &h->image;
    if (img->data.ndim != 3)
        return fine_err_set(e, "case %s: the image volume has %d dimensions, fine-patch needs 3",
                            img->case_id, img->data.ndim);
    if (fine_check_image(&img->data, img->case_id, e) < 0)
        return -1;
    char where[FINE_CASE_MAX + 8];
    snprintf(where, sizeof where, "case %s", img->case_id);
    if (img->data.dtype != FINE_F32 && fine_volume_set_dtype(img, FINE_F32, e) < 0) {
        fine_err_prefix(e, where);
        return -1;
    }
    int with_label = h->has_label && !o->no_label;
    if (with_label &&
        (fine_check_same_shape(&img->data, &h->label.data, img->case_id, e) < 0 ||
         fine_check_same_spacing(img->geom.spacing, h->label.geom.spacing, img->case_id, e) < 0 ||
         fine_check_label(&h->label.data, o->max_label, img->case_id, e) < 0))
        return -1;
    fine_grid g;
    if (fine_grid_plan(&g, img->data.shape, o->patch, o->step, e) < 0) {
        fine_err_prefix(e, where);
        return -1;
    }
    fine_tensor tile = {0}, ltile = {0};
    int64_t tshape[4] = {1, o->patch[0], o->patch[1], o->patch[2]};
    int rc = fine_tensor_alloc(&tile, FINE_F32, 4, tshape, e);
    if (rc == 0 && with_label)
        rc = fine_tensor_alloc(&ltile, h->label.data.dtype, 3, o->patch, e);
    if (rc == 0)
        rc = put_case_begin(w, img, &g, o, e);
    for (int64_t i = 0; rc == 0 && i < g.count; i++) {
        int64_t origin[3], pos[3];
        fine_grid_tile(&g, i, NULL, origin, pos);
        fine_grid_extract(&img->data, origin, o->patch, tile.data);
        fine_map *m = fine_map_new("patch");
        fine_map_str(m, "case", img->case_id);
        fine_map_str(m, "name", "image");
        fine_map_tensor_fields(m, &tile);
        fine_map_i64s(m, "origin", origin, 3);
        fine_map_i64s(m, "pos", pos, 3);
        fine_map_i64s(m, "volume_size", g.size, 3);
        fine_map_i64(m, "index", i);
        if (with_label) {
            fine_grid_extract(&h->label.data, origin, o->patch, ltile.data);
            fine_map_tensor(m, "label", &ltile);
        }
        rc = fine_writer_put(w, m, e);
        fine_map_free(m);
    }
    if (rc == 0) {
        fine_map *m = fine_map_new("case_end");
        fine_map_str(m, "case", img->case_id);
        fine_map_i64(m, "patches", g.count);
        rc = fine_writer_put(w, m, e);
        fine_map_free(m);
    }
    fine_tensor_free(&tile);
    fine_tensor_free(&ltile);
    fine_grid_free(&g);
    return rc;
}

static int run_grid(const char *in, const char *out, const options *o, int force, int quiet,
                    int progress, int argc, char **argv)
{
    fine_err e = {0};
    fine_reader *r = fine_reader_open(in, &e);
    if (!r)
        return fine_cli_fail(TOOL, &e);
    fine_writer *w = fine_writer_open(out, force, &e);
    if (!w) {
        fine_reader_close(r);
        return fine_cli_fail(TOOL, &e);
    }
    fine_progress pr;
    fine_progress_init(&pr, TOOL, quiet, progress);
    held_case h;
    memset(&h, 0, sizeof h);
    int64_t cases = 0;
    int rc = fine_writer_header(w, fine_reader_provenance(r), TOOL, argc, argv, &e);
    fine_record rec;
    while (rc == 0 && (rc = fine_reader_next(r, &rec, &e)) == 1) {
        rc = 0;
        int is_img = fine_volume_record_matches(&rec, NULL, "image");
        int is_lab = fine_volume_record_matches(&rec, NULL, "label");
        if (!is_img && !is_lab) {
            rc = fine_writer_put_record(w, &rec, &e);
            continue;
        }
        char cid[FINE_CASE_MAX];
        if (fine_record_str(&rec, "case", cid, sizeof cid, &e) < 0) {
            rc = -1;
            break;
        }
        if (held_id(&h) && strcmp(held_id(&h), cid) != 0) {
            fine_progress_update(&pr, cases, 0, held_id(&h));
            rc = emit_case(w, &h, o, &e);
            held_free(&h);
            cases++;
            if (rc < 0)
                break;
        }
        if ((is_img && h.has_image) || (is_lab && h.has_label)) {
            rc = fine_err_set(&e, "case %s: a second %s volume", cid, is_img ? "image" : "label");
            break;
        }
        if (is_lab && o->no_label) { /* only its case id matters */
            fine_volume *l = &h.label;
            memset(l, 0, sizeof *l);
            snprintf(l->case_id, sizeof l->case_id, "%s", cid);
            h.has_label = 1;
            continue;
        }
        rc = fine_volume_from_record(&rec, is_img ? &h.image : &h.label, &e);
        if (rc < 0) {
            fine_err_prefix(&e, cid);
            fine_err_prefix(&e, "case");
            break;
        }
        if (is_img)
            h.has_image = 1;
        else
            h.has_label = 1;
    }
    if (rc == 0 && held_id(&h)) {
        fine_progress_update(&pr, cases, 0, held_id(&h));
        rc = emit_case(w, &h, o, &e);
        cases++;
    }
    fine_progress_done(&pr);
    held_free(&h);
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
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--train") == 0)
            return fine_patch_train(argc, argv, TOOL);
    enum { O_GRID = 256, O_PATCH, O_STEP, O_NOLABEL, O_THREADS, O_PROGRESS, O_VERSION, O_MAXLABEL };
    static const struct option opts[] = {
        {"grid", no_argument, NULL, O_GRID},        {"patch", required_argument, NULL, O_PATCH},
        {"max-label", required_argument, NULL, O_MAXLABEL},
        {"step", required_argument, NULL, O_STEP},  {"no-label", no_argument, NULL, O_NOLABEL},
        {"threads", required_argument, NULL, O_THREADS},
        {"force", no_argument, NULL, 'f'},          {"quiet", no_argument, NULL, 'q'},
        {"progress", no_argument, NULL, O_PROGRESS}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, O_VERSION},  {NULL, 0, NULL, 0},
    };
    options o = {.patch = {64, 128, 128}, .step = 0.5, .no_label = 0, .max_label = FINE_MAX_LABEL_DEFAULT};
    int grid = 0, force = 0, quiet = 0, progress = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":fqh", opts, NULL)) != -1) {
        switch (c) {
        case O_GRID: grid = 1; break;
        case O_PATCH:
            if (fine_parse_i64s(optarg, o.patch, 3, 1) < 0 || o.patch[0] < 1 || o.patch[1] < 1 ||
                o.patch[2] < 1)
                return fine_cli_usage(TOOL, "--patch needs three positive sizes Z,Y,X, not '%s'", optarg);
            break;
        case O_STEP: {
            char *end;
            o.step = strtod(optarg, &end);
            if (!*optarg || *end || !(o.step > 0 && o.step <= 1))
                return fine_cli_usage(TOOL, "--step needs a number in (0, 1], not '%s'", optarg);
            break;
        }
        case O_NOLABEL: o.no_label = 1; break;
        case O_MAXLABEL: {
            int64_t n;
            if (fine_parse_i64(optarg, &n) < 0 || n < 1 || n > 255)
                return fine_cli_usage(TOOL, "--max-label needs a number in 1..255, not '%s'", optarg);
            o.max_label = (int)n;
            break;
        }
        case O_THREADS: {
            int64_t n;
            if (fine_parse_i64(optarg, &n) < 0 || n < 1)
                return fine_cli_usage(TOOL, "--threads needs a positive integer, not '%s'", optarg);
            break;
        }
        case 'f': force = 1; break;
        case 'q': quiet = 1; break;
        case O_PROGRESS: progress = 1; break;
        case 'h': usage(); return FINE_EXIT_OK;
        case O_VERSION: fine_cli_version(TOOL); return FINE_EXIT_OK;
        case ':': return fine_cli_usage(TOOL, "option '%s' needs an argument", argv[optind - 1]);
        default: return fine_cli_usage(TOOL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!grid)
        return fine_cli_usage(TOOL, "choose a mode: --grid (sliding-window tiles) or --train");
    if (argc - optind > 2)
        return fine_cli_usage(TOOL, "expected at most IN and OUT, got %d arguments", argc - optind);
    const char *in = argc - optind >= 1 ? argv[optind] : "-";
    const char *out = argc - optind >= 2 ? argv[optind + 1] : "-";
    return run_grid(in, out, &o, force, quiet, progress, argc, argv);
}
