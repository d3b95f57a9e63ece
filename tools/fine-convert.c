/* fine-convert: NIfTI (.nii, .nii.gz) -> a stream holding one volume record, or a stream's
 * volume record -> NIfTI, keeping the data and the geometry exactly. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "nifti_io.h"
#include "stream.h"
#include "volume.h"

static const char *TOOL = "fine-convert";

static void usage(void)
{
    printf("Usage: fine-convert [options] IN OUT\n"
           "Convert a NIfTI image into a fine stream holding one volume record, or a volume\n"
           "record of a stream back into a NIfTI image, keeping data and geometry exactly.\n"
           "The direction follows the names: a .nii or .nii.gz IN is read and a stream written\n"
           "to OUT; otherwise IN is a stream and OUT must be a .nii or .nii.gz file.\n"
           "'-' is stdin (IN) or stdout (OUT) for streams; a stream is never written to a terminal.\n\n"
           "Options:\n"
           "  --case ID      NIfTI -> stream: the case id (default: IN's file name without\n"
           "                 .nii/.nii.gz, e.g. img0001.nii.gz -> img0001);\n"
           "                 stream -> NIfTI: convert the volume of this case\n"
           "  --name NAME    NIfTI -> stream: image (default) or label; a label must hold\n"
           "                 integers and is stored as u8 (0..255), else i16, else i32;\n"
           "                 stream -> NIfTI: convert the volume of this name (image, label,\n"
           "                 seg, ...; default: the first volume record)\n"
           "  --dtype T      store the data as T (u8 i8 i16 u16 i32 i64 f16 f32 f64); images\n"
           "                 are rounded and saturated, labels must fit exactly\n"
           "  -f, --force    overwrite OUT if it exists\n"
           "  -h, --help     this help\n"
           "  --version      print the version\n\n"
           "Exit status: 0 success, 1 bad input or failure, 2 usage error.\n\n"
           "Examples:\n"
           "  fine-convert img0001.nii.gz img0001.fst\n"
           "  fine-convert --name label labels/img0001.nii.gz - | fine-info -\n"
           "  fine-convert ct.nii.gz - | fine-convert - ct_copy.nii.gz\n");
}

/* NIfTI -> stream. */
static int to_stream(const char *in, const char *out, const char *case_id, const char *name, int dtype,
                     int force, int argc, char **argv)
{
    fine_err e = {0};
    char derived[FINE_CASE_MAX];
    if (!case_id) {
        fine_case_id_from_path(in, derived, sizeof derived);
        case_id = derived;
    }
    fine_volume v;
    if (fine_volume_from_nifti(in, case_id, name, dtype, &v, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    fine_writer *w = fine_writer_open(out, force, &e);
    if (!w) {
        fine_volume_free(&v);
        return fine_cli_fail(TOOL, &e);
    }
    fine_map *rec = fine_volume_record(&v);
    if (rec)
        fine_map_str(fine_map_map(rec, "meta"), "source", in);
    if (!rec || fine_writer_header(w, NULL, TOOL, argc, argv, &e) < 0 || fine_writer_put(w, rec, &e) < 0) {
        if (!rec)
            fine_err_set(&e, "out of memory");
        fine_map_free(rec);
        fine_volume_free(&v);
        fine_writer_abort(w);
        return fine_cli_fail(TOOL, &e);
    }
    fine_map_free(rec);
    fine_volume_free(&v);
    if (fine_writer_close(w, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    return FINE_EXIT_OK;
}

/* Stream -> NIfTI: the first volume record matching case and name; the rest of the stream is
 * read to its end, so that a truncated or corrupt stream is reported. */
static int to_nifti(const char *in, const char *out, const char *case_id, const char *name, int dtype,
                    int force)
{
    fine_err e = {0};
    struct stat st;
    if (!force && stat(out, &st) == 0) { /* before reading a whole stream */
        fine_err_set(&e, "%s: exists (use --force to overwrite)", out);
        return fine_cli_fail(TOOL, &e);
    }
    fine_reader *r = fine_reader_open(in, &e);
    if (!r)
        return fine_cli_fail(TOOL, &e);
    fine_volume v;
    memset(&v, 0, sizeof v);
    int found = 0, rc;
    fine_record rec;
    while ((rc = fine_reader_next(r, &rec, &e)) == 1) {
        if (found || !fine_volume_record_matches(&rec, case_id, name))
            continue;
        if (fine_volume_from_record(&rec, &v, &e) < 0) {
            fine_err_prefix(&e, fine_reader_name(r));
            rc = -1;
            break;
        }
        found = 1;
    }
    if (rc == 0 && !found) {
        fine_err_set(&e, "%s: no volume record%s%s%s%s%s", fine_reader_name(r),
                     case_id || name ? " with" : "", case_id ? " case " : "", case_id ? case_id : "",
                     name ? " name " : "", name ? name : "");
        rc = -1;
    }
    fine_reader_close(r);
    if (rc == 0 && dtype >= 0 && fine_volume_set_dtype(&v, (fine_dtype)dtype, &e) < 0)
        rc = -1;
    if (rc == 0 && fine_nifti_write(out, &v.data, &v.geom, force, &e) < 0)
        rc = -1;
    fine_volume_free(&v);
    return rc == 0 ? FINE_EXIT_OK : fine_cli_fail(TOOL, &e);
}

int main(int argc, char **argv)
{
    fine_cli_init();
    static const struct option opts[] = {
        {"case", required_argument, NULL, 'c'}, {"name", required_argument, NULL, 'n'},
        {"dtype", required_argument, NULL, 'd'}, {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *case_id = NULL, *name = NULL;
    int dtype = -1, force = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":fh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (!optarg[0])
                return fine_cli_usage(TOOL, "--case needs a non-empty id");
            case_id = optarg;
            break;
        case 'n':
            if (!optarg[0])
                return fine_cli_usage(TOOL, "--name needs a non-empty name");
            name = optarg;
            break;
        case 'd': {
            fine_dtype dt;
            if (fine_dtype_parse(optarg, &dt) < 0)
                return fine_cli_usage(TOOL, "unknown dtype '%s' (u8 i8 i16 u16 i32 i64 f16 f32 f64)", optarg);
            dtype = (int)dt;
            break;
        }
        case 'f': force = 1; break;
        case 'h': usage(); return FINE_EXIT_OK;
        case 'V': fine_cli_version(TOOL); return FINE_EXIT_OK;
        case ':': return fine_cli_usage(TOOL, "option '%s' needs an argument", argv[optind - 1]);
        default: return fine_cli_usage(TOOL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return fine_cli_usage(TOOL, "expected IN and OUT, got %d argument%s", argc - optind,
                              argc - optind == 1 ? "" : "s");
    const char *in = argv[optind], *out = argv[optind + 1];
    if (fine_nifti_is_path(in)) {
        if (fine_nifti_is_path(out))
            return fine_cli_usage(TOOL, "IN and OUT are both NIfTI; one of them must be a stream");
        if (!name)
            name = "image";
        if (strcmp(name, "image") != 0 && strcmp(name, "label") != 0)
            return fine_cli_usage(TOOL, "--name must be image or label, not '%s'", name);
        if (strcmp(name, "label") == 0 && dtype >= 0 && !fine_dtype_is_int((fine_dtype)dtype))
            return fine_cli_usage(TOOL, "a label needs an integer --dtype, not %s",
                                  fine_dtype_name((fine_dtype)dtype));
        return to_stream(in, out, case_id, name, dtype, force, argc, argv);
    }
    if (!fine_nifti_is_path(out))
        return fine_cli_usage(TOOL, "one of IN and OUT must be a NIfTI file (.nii or .nii.gz)");
    return to_nifti(in, out, case_id, name, dtype, force);
}
