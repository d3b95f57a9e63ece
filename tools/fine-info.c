/* fine-info: what is in a stream or a NIfTI file, like mrinfo. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "nifti_io.h"
#include "record_print.h"
#include "stream.h"

static const char *TOOL = "fine-info";

static void usage(void)
{
    printf("Usage: fine-info [options] FILE|-\n"
           "Print every record of a fine stream (type, name, case, dtype, shape, spacing, value\n"
           "range and metadata), or the header and value range of a NIfTI file.\n\n"
           "Options:\n"
           "  --json        one JSON document for scripts instead of text\n"
           "  --no-range    do not decode tensors to compute value ranges (faster)\n"
           "  -h, --help    this help\n"
           "  --version     print the version\n\n"
           "Examples:\n"
           "  fine-info case.fst\n"
           "  fine-convert img0001.nii.gz - | fine-info -\n"
           "  fine-info --json img0001.nii.gz | jq .records[0].shape\n");
}

static void print_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.9g", v);
    else
        fputs("null", f);
}

/* Value range of the tensor at path (NULL: the record itself). */
static int tensor_range(const fine_record *rec, const char *path, double *lo, double *hi, fine_err *e)
{
    fine_tensor t;
    if (fine_record_tensor(rec, path, &t, e) < 0)
        return -1;
    fine_tensor_range(&t, lo, hi);
    fine_tensor_free(&t);
    return 0;
}

static int is_tensor_map(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_MAP && fine_obj_get(o, "dtype") && fine_obj_get(o, "shape") &&
           fine_obj_get(o, "data");
}

static int text_record(const fine_record *rec, long idx, int ranges, fine_err *e)
{
    printf("record %ld: %s\n", idx, rec->type);
    const msgpack_object *m = rec->map;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            continue;
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.via.str.size, kv->key.via.str.ptr);
        if (strcmp(key, "type") == 0 || strcmp(key, "data") == 0)
            continue;
        printf("  %-16s ", key);
        if (is_tensor_map(&kv->val)) {
            printf("tensor ");
            fine_obj_print_json(stdout, fine_obj_get(&kv->val, "dtype"));
            printf(" ");
            fine_obj_print_json(stdout, fine_obj_get(&kv->val, "shape"));
            double lo, hi;
            if (ranges) {
                if (tensor_range(rec, key, &lo, &hi, e) < 0)
                    return -1;
                printf("  range [%.6g, %.6g]", lo, hi);
            }
        } else {
            fine_obj_print_json(stdout, &kv->val);
        }
        printf("\n");
    }
    if (is_tensor_map(m) && ranges) {
        double lo, hi;
        if (tensor_range(rec, NULL, &lo, &hi, e) < 0)
            return -1;
        printf("  %-16s [%.6g, %.6g]\n", "range", lo, hi);
    }
    return 0;
}

static int json_record(const fine_record *rec, long idx, int ranges, fine_err *e)
{
    printf("%s\n    {\"index\": %ld, \"record\": ", idx > 1 ? "," : "", idx);
    fine_obj_print_json(stdout, rec->map);
    if (is_tensor_map(rec->map) && ranges) {
        double lo, hi;
        if (tensor_range(rec, NULL, &lo, &hi, e) < 0)
            return -1;
        printf(", \"range\": [");
        print_num(stdout, lo);
        printf(", ");
        print_num(stdout, hi);
        printf("]");
    }
    printf("}");
    return 0;
}

static int info_stream(const char *path, int json, int ranges)
{
    fine_err e = {0};
    fine_reader *r = fine_reader_open(path, &e);
    if (!r)
        return fine_cli_fail(TOOL, &e);
    int major, minor;
    fine_reader_version(r, &major, &minor);
    const msgpack_object *prov = fine_reader_provenance(r);
    if (json) {
        printf("{\"file\": ");
        msgpack_object name = {.type = MSGPACK_OBJECT_STR,
                               .via.str = {(uint32_t)strlen(fine_reader_name(r)), fine_reader_name(r)}};
        fine_obj_print_json(stdout, &name);
        printf(", \"kind\": \"stream\", \"version\": [%d, %d], \"provenance\": ", major, minor);
        if (prov)
            fine_obj_print_json(stdout, prov);
        else
            printf("[]");
        printf(", \"records\": [");
    } else {
        printf("%s: fine stream %d.%d\n", fine_reader_name(r), major, minor);
        for (uint32_t i = 0; prov && i < prov->via.array.size; i++) {
            printf("  stage %u: ", i + 1);
            fine_obj_print_json(stdout, &prov->via.array.ptr[i]);
            printf("\n");
        }
    }
    fine_record rec;
    long n = 0;
    int rc;
    while ((rc = fine_reader_next(r, &rec, &e)) == 1) {
        n++;
        if ((json ? json_record(&rec, n, ranges, &e) : text_record(&rec, n, ranges, &e)) < 0) {
            fine_err_prefix(&e, fine_reader_name(r));
            rc = -1;
            break;
        }
    }
    if (rc == 0) {
        if (json)
            printf("\n  ]}\n");
        else
            printf("%ld record%s, stream complete\n", n, n == 1 ? "" : "s");
    }
    fflush(stdout);
    fine_reader_close(r);
    return rc < 0 ? fine_cli_fail(TOOL, &e) : 0;
}

static int info_nifti(const char *path, int json, int ranges)
{
    fine_err e = {0};
    fine_tensor t;
    fine_geometry g;
    if (fine_nifti_read(path, &t, &g, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    double lo = NAN, hi = NAN;
    if (ranges)
        fine_tensor_range(&t, &lo, &hi);
    double a[4][4];
    fine_geometry_original_affine(&g, a);
    if (json) {
        printf("{\"file\": \"%s\", \"kind\": \"nifti\", \"nifti_version\": %d, \"dtype\": \"%s\", "
               "\"shape\": [%lld, %lld, %lld], \"spacing\": [%.9g, %.9g, %.9g], "
               "\"qform_code\": %d, \"sform_code\": %d, \"affine\": [",
               path, g.nifti_version, fine_dtype_name(t.dtype), (long long)t.shape[0],
               (long long)t.shape[1], (long long)t.shape[2], g.spacing[0], g.spacing[1],
               g.spacing[2], g.qform_code, g.sform_code);
        for (int i = 0; i < 4; i++)
            printf("%s[%.9g, %.9g, %.9g, %.9g]", i ? ", " : "", a[i][0], a[i][1], a[i][2], a[i][3]);
        printf("], \"range\": [");
        print_num(stdout, lo);
        printf(", ");
        print_num(stdout, hi);
        printf("]}\n");
    } else {
        printf("%s: NIfTI-%d\n", path, g.nifti_version);
        printf("  %-16s %s\n", "dtype", fine_dtype_name(t.dtype));
        printf("  %-16s [%lld, %lld, %lld] (z, y, x)\n", "shape", (long long)t.shape[0],
               (long long)t.shape[1], (long long)t.shape[2]);
        printf("  %-16s %.6g x %.6g x %.6g mm (z, y, x)\n", "spacing", g.spacing[0], g.spacing[1],
               g.spacing[2]);
        printf("  %-16s qform %d, sform %d\n", "codes", g.qform_code, g.sform_code);
        for (int i = 0; i < 3; i++)
            printf("  %-16s [%10.4f %10.4f %10.4f %10.4f]\n", i ? "" : "affine (i,j,k)", a[i][0],
                   a[i][1], a[i][2], a[i][3]);
        if (ranges)
            printf("  %-16s [%.6g, %.6g]\n", "range", lo, hi);
        if (g.descrip[0])
            printf("  %-16s %s\n", "description", g.descrip);
    }
    fine_tensor_free(&t);
    return 0;
}

int main(int argc, char **argv)
{
    fine_cli_init();
    int json = 0, ranges = 1;
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'}, {"no-range", no_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'r': ranges = 0; break;
        case 'h': usage(); return 0;
        case 'V': fine_cli_version(TOOL); return 0;
        default: return fine_cli_usage(TOOL, "unknown option");
        }
    }
    if (optind != argc - 1)
        return fine_cli_usage(TOOL, "expected one input (a stream, a NIfTI file, or -)");
    const char *path = argv[optind];
    if (strcmp(path, "-") != 0 && fine_nifti_is_path(path) && !fine_path_is_stream(path))
        return info_nifti(path, json, ranges);
    return info_stream(path, json, ranges);
}
