/* nifti_io.c: NIfTI-1/NIfTI-2 files <-> a (z, y, x) tensor and its geometry.
 *
 * nifti_clib provides the header layouts and constants, the byte swapping, the datatype
 * names and the matrix -> quaternion conversion. The header and the voxels are read and
 * written here, with zlib's gz* calls (which read plain files as they are), rather than
 * through nifti_image_read / nifti_image_write, because those change what they read
 * (non-finite quaternion or offset values become 0, zero pixdim becomes 1, the quaternion is
 * dropped when qform_code is 0, NaN voxels become 0), print to stderr, and report write errors
 * to nobody; and znzlib hides zlib's error state, so a .nii.gz without its end would read as
 * complete. Here every header field we keep is taken from the file as stored and written back
 * as stored, and every failure becomes one line in a fine_err. */
#include "nifti_io.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nifti2_io.h>
#include <zlib.h>

/* gzip level of .nii.gz outputs: 1 (as nibabel), the files are written in pipelines. */
#define NII_GZ_MODE "wb1"

_Static_assert(sizeof(nifti_1_header) == 348, "nifti_1_header is not 348 bytes");
_Static_assert(sizeof(nifti_2_header) == 540, "nifti_2_header is not 540 bytes");

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

int fine_nifti_is_path(const char *path)
{
    return path && (ends_with(path, ".nii") || ends_with(path, ".nii.gz"));
}

/* ---------------------------------------------------------------- datatypes */

typedef struct nii_type {
    int code;       /* NIfTI DT_* */
    int size;       /* bytes per voxel on disk */
    fine_dtype out; /* dtype of the array read */
} nii_type;

static const nii_type nii_types[] = {
    {DT_UINT8, 1, FINE_U8},    {DT_INT8, 1, FINE_I8},     {DT_INT16, 2, FINE_I16},
    {DT_UINT16, 2, FINE_U16},  {DT_INT32, 4, FINE_I32},   {DT_UINT32, 4, FINE_I64},
    {DT_INT64, 8, FINE_I64},   {DT_UINT64, 8, FINE_I64},  {DT_FLOAT32, 4, FINE_F32},
    {DT_FLOAT64, 8, FINE_F32},
};

static const nii_type *nii_type_find(int code)
{
    for (size_t i = 0; i < sizeof nii_types / sizeof nii_types[0]; i++)
        if (nii_types[i].code == code)
            return &nii_types[i];
    return NULL;
}

/* The NIfTI datatype a tensor of dtype dt is written as (f16 is written as f32). */
static int nii_code_for(fine_dtype dt)
{
    switch (dt) {
    case FINE_U8: return DT_UINT8;
    case FINE_I8: return DT_INT8;
    case FINE_I16: return DT_INT16;
    case FINE_U16: return DT_UINT16;
    case FINE_I32: return DT_INT32;
    case FINE_I64: return DT_INT64;
    case FINE_F16: return DT_FLOAT32;
    case FINE_F32: return DT_FLOAT32;
    case FINE_F64: return DT_FLOAT64;
    default: return DT_UNKNOWN;
    }
}

/* ---------------------------------------------------------------- the header, version-free */

typedef struct nii_hdr {
    int version; /* 1 or 2 */
    int64_t dim[8];
    int datatype;
    double pixdim[8];
    double vox_offset;
    double scl_slope, scl_inter;
    int qform_code, sform_code;
    double quatern[3], qoffset[3], srow[3][4];
    int xyzt_units;
    char descrip[81];
} nii_hdr;

static void from_n1(const nifti_1_header *h, nii_hdr *o)
{
    o->version = 1;
    for (int i = 0; i < 8; i++) {
        o->dim[i] = h->dim[i];
        o->pixdim[i] = h->pixdim[i];
    }
    o->datatype = h->datatype;
    o->vox_offset = h->vox_offset;
    o->scl_slope = h->scl_slope;
    o->scl_inter = h->scl_inter;
    o->qform_code = h->qform_code;
    o->sform_code = h->sform_code;
    o->quatern[0] = h->quatern_b;
    o->quatern[1] = h->quatern_c;
    o->quatern[2] = h->quatern_d;
    o->qoffset[0] = h->qoffset_x;
    o->qoffset[1] = h->qoffset_y;
    o->qoffset[2] = h->qoffset_z;
    for (int j = 0; j < 4; j++) {
        o->srow[0][j] = h->srow_x[j];
        o->srow[1][j] = h->srow_y[j];
        o->srow[2][j] = h->srow_z[j];
    }
    o->xyzt_units = (unsigned char)h->xyzt_units;
    memcpy(o->descrip, h->descrip, 80);
    o->descrip[80] = 0;
}

static void from_n2(const nifti_2_header *h, nii_hdr *o)
{
    o->version = 2;
    for (int i = 0; i < 8; i++) {
        o->dim[i] = h->dim[i];
        o->pixdim[i] = h->pixdim[i];
    }
    o->datatype = h->datatype;
    o->vox_offset = (double)h->vox_offset;
    o->scl_slope = h->scl_slope;
    o->scl_inter = h->scl_inter;
    o->qform_code = h->qform_code;
    o->sform_code = h->sform_code;
    o->quatern[0] = h->quatern_b;
    o->quatern[1] = h->quatern_c;
    o->quatern[2] = h->quatern_d;
    o->qoffset[0] = h->qoffset_x;
    o->qoffset[1] = h->qoffset_y;
    o->qoffset[2] = h->qoffset_z;
    for (int j = 0; j < 4; j++) {
        o->srow[0][j] = h->srow_x[j];
        o->srow[1][j] = h->srow_y[j];
        o->srow[2][j] = h->srow_z[j];
    }
    o->xyzt_units = h->xyzt_units;
    memcpy(o->descrip, h->descrip, 80);
    o->descrip[80] = 0;
}

static int32_t bswap32(int32_t v)
{
    uint32_t u = (uint32_t)v;
    return (int32_t)((u >> 24) | ((u >> 8) & 0xff00u) | ((u << 8) & 0xff0000u) | (u << 24));
}

/* Reads up to n bytes; returns how many, or -1 on a zlib error. */
static int64_t gz_read(gzFile f, void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        unsigned chunk = n - done > (1u << 30) ? (1u << 30) : (unsigned)(n - done);
        int r = gzread(f, (char *)buf + done, chunk);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (int64_t)done;
}

/* zlib's message when it met a problem ("unexpected end of file", "incorrect data check"),
 * NULL when none. */
static const char *gz_problem(gzFile f)
{
    int err = Z_OK;
    const char *m = gzerror(f, &err);
    if (err == Z_OK)
        return NULL;
    if (!m || !m[0])
        return "gzip error";
    for (const char *p = strstr(m, ": "); p; p = strstr(p + 2, ": ")) /* after "path: " */
        m = p + 2;
    return m;
}

/* Reads and checks the header at the start of fp. On success *swapped says whether the file
 * is big-endian (other than this host). Returns 0 or -1 with e set (without the file name). */
static int read_header(gzFile fp, nii_hdr *h, int *swapped, fine_err *e)
{
    union {
        nifti_1_header n1;
        nifti_2_header n2;
        unsigned char bytes[sizeof(nifti_2_header)];
    } u;
    memset(&u, 0, sizeof u);
    int64_t r = gz_read(fp, u.bytes, sizeof(nifti_1_header));
    if (r < 0)
        return fine_err_set(e, "damaged gzip data in the header (%s)", gz_problem(fp));
    size_t got = (size_t)r;
    if (got == 0)
        return fine_err_set(e, "empty file, not a NIfTI image");

    int32_t sizeof_hdr = 0;
    if (got >= 4)
        memcpy(&sizeof_hdr, u.bytes, 4);
    int version = 0;
    *swapped = 0;
    if (sizeof_hdr == 348 || sizeof_hdr == 540) {
        version = sizeof_hdr == 348 ? 1 : 2;
    } else if (bswap32(sizeof_hdr) == 348 || bswap32(sizeof_hdr) == 540) {
        version = bswap32(sizeof_hdr) == 348 ? 1 : 2;
        *swapped = 1;
    }

    /* The magic decides whether this is NIfTI at all; sizeof_hdr must then agree. */
    int magic1 = got >= 348 && (memcmp(u.n1.magic, "n+1", 4) == 0 || memcmp(u.n1.magic, "ni1", 4) == 0);
    int magic2 = got >= 12 && (memcmp(u.n2.magic, "n+2", 4) == 0 || memcmp(u.n2.magic, "ni2", 4) == 0);
    if (version == 0) {
        if (magic1 || magic2)
            return fine_err_set(e, "bad NIfTI header: sizeof_hdr is %d (expected %d)", (int)sizeof_hdr,
                                magic1 ? 348 : 540);
        return fine_err_set(e, "not a NIfTI file");
    }
    if (version == 1 && got < 348)
        return fine_err_set(e, "truncated NIfTI header (%zu of 348 bytes)", got);
    if (version == 1 && !magic1) {
        if (magic2)
            return fine_err_set(e, "bad NIfTI header: sizeof_hdr is 348 but the magic is NIfTI-2's");
        return fine_err_set(e, "not a NIfTI file (no NIfTI magic; an Analyze 7.5 image?)");
    }
    if (version == 2) {
        if (!magic2)
            return fine_err_set(e, magic1 ? "bad NIfTI header: sizeof_hdr is 540 but the magic is NIfTI-1's"
                                          : "not a NIfTI file");
        int64_t r2 = gz_read(fp, u.bytes + 348, sizeof(nifti_2_header) - 348);
        if (r2 < 0)
            return fine_err_set(e, "damaged gzip data in the header (%s)", gz_problem(fp));
        size_t more = (size_t)r2;
        if (more < sizeof(nifti_2_header) - 348)
            return fine_err_set(e, "truncated NIfTI-2 header (%zu of 540 bytes)", got + more);
        if (memcmp(u.n2.magic + 4, "\r\n\032\n", 4) != 0)
            return fine_err_set(e, "bad NIfTI-2 header: the magic signature is damaged (text-mode transfer?)");
    }
    const char *magic = version == 1 ? u.n1.magic : u.n2.magic;
    if (magic[1] == 'i')
        return fine_err_set(e, "a two-file NIfTI header (.hdr/.img pair); only single-file .nii is supported");

    if (*swapped)
        swap_nifti_header(&u, version);
    if (version == 1)
        from_n1(&u.n1, h);
    else
        from_n2(&u.n2, h);
    return 0;
}

/* Checks dims, datatype and vox_offset; sets the voxel count per axis (i, j, k). */
static int check_header(const nii_hdr *h, int64_t n[3], const nii_type **type, fine_err *e)
{
    int64_t nd = h->dim[0];
    if (nd < 1 || nd > 7)
        return fine_err_set(e, "bad NIfTI header: dim[0] is %lld (must be 1 to 7)", (long long)nd);
    for (int i = 1; i <= nd; i++)
        if (h->dim[i] < 1)
            return fine_err_set(e, "bad NIfTI header: dim[%d] is %lld", i, (long long)h->dim[i]);
    for (int i = 4; i <= nd; i++) {
        if (h->dim[i] == 1)
            continue;
        if (i == 4)
            return fine_err_set(e, "4-D image with %lld volumes; only a single 3-D volume is supported",
                                (long long)h->dim[4]);
        return fine_err_set(e, "%lld-D image (dim[%d] is %lld); only a single 3-D volume is supported",
                            (long long)nd, i, (long long)h->dim[i]);
    }
    for (int i = 0; i < 3; i++)
        n[i] = i + 1 <= nd ? h->dim[i + 1] : 1;
    *type = nii_type_find(h->datatype);
    if (!*type)
        return fine_err_set(e, "unsupported NIfTI datatype %s (%d)", nifti_datatype_string(h->datatype),
                            h->datatype);
    int64_t hdr_size = h->version == 1 ? 348 : 540;
    if (!(h->vox_offset >= (double)hdr_size) || h->vox_offset != floor(h->vox_offset) || h->vox_offset > 1e15)
        return fine_err_set(e, "bad NIfTI header: vox_offset is %g (must be a whole number >= %lld)",
                            h->vox_offset, (long long)hdr_size);
    if (n[0] > INT64_MAX / 16 / n[1] || n[0] * n[1] > INT64_MAX / 16 / n[2])
        return fine_err_set(e, "bad NIfTI header: dimensions %lldx%lldx%lld are too large", (long long)n[0],
                            (long long)n[1], (long long)n[2]);
    return 0;
}

static void fill_geometry(const nii_hdr *h, const int64_t n[3], fine_geometry *g)
{
    memset(g, 0, sizeof *g);
    g->nifti_version = h->version;
    g->qform_code = h->qform_code;
    g->sform_code = h->sform_code;
    for (int i = 0; i < 3; i++) {
        g->quatern[i] = h->quatern[i];
        g->qoffset[i] = h->qoffset[i];
        for (int j = 0; j < 4; j++)
            g->srow[i][j] = h->srow[i][j];
    }
    g->qfac = h->pixdim[0] < 0 ? -1.0 : 1.0;
    for (int i = 0; i < 8; i++)
        g->pixdim[i] = h->pixdim[i];
    g->xyz_units = XYZT_TO_SPACE(h->xyzt_units);
    g->time_units = XYZT_TO_TIME(h->xyzt_units);
    memcpy(g->descrip, h->descrip, sizeof g->descrip);
    for (int d = 0; d < 3; d++) {
        int a = 2 - d; /* NIfTI axis of array axis d */
        double s = h->pixdim[a + 1];
        if (!(s > 0) || !isfinite(s)) /* as NIfTI's method 1: unusable spacings count as 1 */
            s = 1.0;
        g->size[d] = g->original_size[d] = g->crop_hi[d] = n[a];
        g->crop_lo[d] = 0;
        g->spacing[d] = g->original_spacing[d] = s;
    }
}

/* ---------------------------------------------------------------- reading the voxels */

/* Converts n raw voxels of NIfTI type `code` (host byte order) into dst of dtype `out`,
 * applying y = slope * x + inter when scale (dst is then f32). */
#define CONVERT_LOOP(T)                                                                   \
    do {                                                                                  \
        const T *s = (const T *)src;                                                      \
        if (scale) {                                                                      \
            float *d = (float *)dst;                                                      \
            for (int64_t i = 0; i < n; i++)                                               \
                d[i] = (float)((double)s[i] * slope + inter);                             \
        } else if (out == FINE_F32) {                                                     \
            float *d = (float *)dst;                                                      \
            for (int64_t i = 0; i < n; i++)                                               \
                d[i] = (float)s[i];                                                       \
        } else {                                                                          \
            int64_t *d = (int64_t *)dst;                                                  \
            for (int64_t i = 0; i < n; i++)                                               \
                d[i] = (int64_t)s[i];                                                     \
        }                                                                                 \
    } while (0)

static int convert_voxels(const void *src, int code, int64_t n, void *dst, fine_dtype out, int scale,
                          double slope, double inter, fine_err *e)
{
    switch (code) {
    case DT_UINT8: CONVERT_LOOP(uint8_t); break;
    case DT_INT8: CONVERT_LOOP(int8_t); break;
    case DT_INT16: CONVERT_LOOP(int16_t); break;
    case DT_UINT16: CONVERT_LOOP(uint16_t); break;
    case DT_INT32: CONVERT_LOOP(int32_t); break;
    case DT_UINT32: CONVERT_LOOP(uint32_t); break;
    case DT_INT64: CONVERT_LOOP(int64_t); break;
    case DT_FLOAT32: CONVERT_LOOP(float); break;
    case DT_FLOAT64: CONVERT_LOOP(double); break;
    case DT_UINT64: {
        const uint64_t *s = (const uint64_t *)src;
        if (!scale)
            for (int64_t i = 0; i < n; i++)
                if (s[i] > (uint64_t)INT64_MAX)
                    return fine_err_set(e, "uint64 voxel value %llu does not fit int64",
                                        (unsigned long long)s[i]);
        CONVERT_LOOP(uint64_t);
        break;
    }
    default: return fine_err_set(e, "unsupported NIfTI datatype %d", code);
    }
    return 0;
}

int fine_nifti_read(const char *path, fine_tensor *vol, fine_geometry *g, fine_err *e)
{
    memset(vol, 0, sizeof *vol);
    memset(g, 0, sizeof *g);
    struct stat st;
    if (stat(path, &st) != 0)
        return fine_err_set(e, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return fine_err_set(e, "%s: is a directory", path);
    /* gzip mode reads plain files as they are, so a misnamed .nii/.nii.gz still opens. */
    errno = 0;
    gzFile fp = gzopen(path, "rb");
    if (!fp)
        return fine_err_set(e, "%s: %s", path, errno ? strerror(errno) : "cannot open");

    nii_hdr h;
    int swapped = 0;
    int64_t n[3];
    const nii_type *type = NULL;
    void *raw = NULL;
    if (read_header(fp, &h, &swapped, e) < 0 || check_header(&h, n, &type, e) < 0)
        goto fail;

    int64_t numel = n[0] * n[1] * n[2];
    size_t nbytes = (size_t)numel * (size_t)type->size;
    int scale = h.scl_slope != 0 && isfinite(h.scl_slope) && !(h.scl_slope == 1 && h.scl_inter == 0);
    double slope = h.scl_slope, inter = isfinite(h.scl_inter) ? h.scl_inter : 0.0;
    fine_dtype out = scale ? FINE_F32 : type->out;
    int64_t shape[3] = {n[2], n[1], n[0]}; /* (z, y, x) = (k, j, i): no transposition */
    if (fine_tensor_alloc(vol, out, 3, shape, e) < 0) {
        fine_err_prefix(e, path);
        gzclose(fp);
        return -1;
    }
    /* Same bytes in and out: read straight into the tensor. */
    int direct = !scale && fine_dtype_size(out) == (size_t)type->size &&
                 (type->code == DT_FLOAT32) == (out == FINE_F32) && type->code != DT_UINT64;
    if (!direct && !(raw = malloc(nbytes ? nbytes : 1))) {
        fine_err_set(e, "out of memory reading %zu bytes", nbytes);
        goto fail;
    }
    void *buf = direct ? vol->data : raw;

    z_off_t pos = gztell(fp);
    if (pos < 0 || (double)pos > h.vox_offset ||
        ((double)pos < h.vox_offset && gzseek(fp, (z_off_t)h.vox_offset, SEEK_SET) != (z_off_t)h.vox_offset)) {
        fine_err_set(e, "truncated: the file ends before the voxel data (vox_offset %.0f)", h.vox_offset);
        goto fail;
    }
    int64_t r = gz_read(fp, buf, nbytes);
    if (r < 0) {
        fine_err_set(e, "damaged gzip data in the voxels (%s)", gz_problem(fp));
        goto fail;
    }
    size_t got = (size_t)r;
    if (got < nbytes) {
        fine_err_set(e, "truncated voxel data (%zu of %zu bytes for %lldx%lldx%lld %s)", got, nbytes,
                     (long long)n[0], (long long)n[1], (long long)n[2], nifti_datatype_string(type->code));
        goto fail;
    }
    /* Read past the voxels: a gzip stream is checked (CRC, length) only at its end, and
     * zlib reports a missing end only through gzerror. */
    unsigned char extra;
    if (gz_read(fp, &extra, 1) < 0 || gz_problem(fp)) {
        fine_err_set(e, "damaged gzip data at the end of the file (%s)", gz_problem(fp));
        goto fail;
    }
    if (swapped && type->size > 1)
        nifti_swap_Nbytes(numel, type->size, buf);
    if (!direct && convert_voxels(raw, type->code, numel, vol->data, out, scale, slope, inter, e) < 0)
        goto fail;
    free(raw);
    gzclose(fp);
    fill_geometry(&h, n, g);
    return 0;

fail:
    fine_err_prefix(e, path);
    free(raw);
    gzclose(fp);
    fine_tensor_free(vol);
    memset(g, 0, sizeof *g);
    return -1;
}

/* ---------------------------------------------------------------- writing */

static int on_original_grid(const fine_geometry *g)
{
    if (g->nifti_version <= 0)
        return 0;
    for (int d = 0; d < 3; d++)
        if (g->size[d] != g->original_size[d] || g->crop_lo[d] != 0 || g->crop_hi[d] != g->original_size[d])
            return 0;
    return 1;
}

/* The header fields to write, from g: the original ones on the original grid, otherwise the
 * current affine as both sform and qform and the current spacing as pixdim. */
static void header_for(const fine_geometry *g, const int64_t n[3], int datatype, nii_hdr *h)
{
    memset(h, 0, sizeof *h);
    h->version = g->nifti_version == 2 ? 2 : 1;
    h->dim[0] = 3;
    for (int i = 1; i < 8; i++)
        h->dim[i] = i <= 3 ? n[i - 1] : 1;
    h->datatype = datatype;
    h->vox_offset = h->version == 1 ? 352 : 544;
    if (on_original_grid(g)) {
        for (int i = 0; i < 8; i++)
            h->pixdim[i] = g->pixdim[i];
        h->qform_code = g->qform_code;
        h->sform_code = g->sform_code;
        for (int i = 0; i < 3; i++) {
            h->quatern[i] = g->quatern[i];
            h->qoffset[i] = g->qoffset[i];
            for (int j = 0; j < 4; j++)
                h->srow[i][j] = g->srow[i][j];
        }
        h->xyzt_units = SPACE_TIME_TO_XYZT(g->xyz_units, g->time_units);
    } else {
        double a[4][4];
        fine_geometry_current_affine(g, a);
        nifti_dmat44 m;
        memcpy(m.m, a, sizeof m.m);
        double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
        nifti_dmat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
        h->quatern[0] = qb;
        h->quatern[1] = qc;
        h->quatern[2] = qd;
        h->qoffset[0] = qx;
        h->qoffset[1] = qy;
        h->qoffset[2] = qz;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                h->srow[i][j] = a[i][j];
        h->pixdim[0] = qfac;
        for (int i = 1; i <= 3; i++)
            h->pixdim[i] = g->spacing[3 - i];
        for (int i = 4; i < 8; i++)
            h->pixdim[i] = g->nifti_version > 0 ? g->pixdim[i] : 1.0;
        /* Keep the codes; when the original had neither form (or there was no NIfTI header),
         * the crop and resampling can only be expressed by a form that readers use. */
        h->qform_code = g->qform_code;
        h->sform_code = g->sform_code;
        if (h->qform_code <= 0 && h->sform_code <= 0)
            h->qform_code = h->sform_code = NIFTI_XFORM_SCANNER_ANAT;
        int space = g->nifti_version > 0 ? g->xyz_units : NIFTI_UNITS_MM;
        h->xyzt_units = SPACE_TIME_TO_XYZT(space, g->time_units);
    }
    memcpy(h->descrip, g->descrip, 80);
    h->descrip[80] = 0;
}

static void to_n1(const nii_hdr *h, nifti_1_header *o)
{
    memset(o, 0, sizeof *o);
    o->sizeof_hdr = 348;
    o->regular = 'r';
    for (int i = 0; i < 8; i++) {
        o->dim[i] = (short)h->dim[i];
        o->pixdim[i] = (float)h->pixdim[i];
    }
    o->datatype = (short)h->datatype;
    int nbyper, swapsize;
    nifti_datatype_sizes(h->datatype, &nbyper, &swapsize);
    o->bitpix = (short)(8 * nbyper);
    o->vox_offset = (float)h->vox_offset;
    o->scl_slope = 0; /* no scaling */
    o->scl_inter = 0;
    o->xyzt_units = (char)h->xyzt_units;
    memcpy(o->descrip, h->descrip, 80);
    o->qform_code = (short)h->qform_code;
    o->sform_code = (short)h->sform_code;
    o->quatern_b = (float)h->quatern[0];
    o->quatern_c = (float)h->quatern[1];
    o->quatern_d = (float)h->quatern[2];
    o->qoffset_x = (float)h->qoffset[0];
    o->qoffset_y = (float)h->qoffset[1];
    o->qoffset_z = (float)h->qoffset[2];
    for (int j = 0; j < 4; j++) {
        o->srow_x[j] = (float)h->srow[0][j];
        o->srow_y[j] = (float)h->srow[1][j];
        o->srow_z[j] = (float)h->srow[2][j];
    }
    memcpy(o->magic, "n+1", 4);
}

static void to_n2(const nii_hdr *h, nifti_2_header *o)
{
    memset(o, 0, sizeof *o);
    o->sizeof_hdr = 540;
    memcpy(o->magic, "n+2\0\r\n\032\n", 8);
    for (int i = 0; i < 8; i++) {
        o->dim[i] = h->dim[i];
        o->pixdim[i] = h->pixdim[i];
    }
    o->datatype = (int16_t)h->datatype;
    int nbyper, swapsize;
    nifti_datatype_sizes(h->datatype, &nbyper, &swapsize);
    o->bitpix = (int16_t)(8 * nbyper);
    o->vox_offset = (int64_t)h->vox_offset;
    o->scl_slope = 0;
    o->scl_inter = 0;
    o->xyzt_units = h->xyzt_units;
    memcpy(o->descrip, h->descrip, 80);
    o->qform_code = h->qform_code;
    o->sform_code = h->sform_code;
    o->quatern_b = h->quatern[0];
    o->quatern_c = h->quatern[1];
    o->quatern_d = h->quatern[2];
    o->qoffset_x = h->qoffset[0];
    o->qoffset_y = h->qoffset[1];
    o->qoffset_z = h->qoffset[2];
    for (int j = 0; j < 4; j++) {
        o->srow_x[j] = h->srow[0][j];
        o->srow_y[j] = h->srow[1][j];
        o->srow_z[j] = h->srow[2][j];
    }
}

/* An output file, plain or gzip. */
typedef struct out_file {
    FILE *f;
    gzFile z;
} out_file;

/* Writes n bytes; returns 0 or -1 (errno set where the system set it). */
static int put(out_file *o, const void *p, size_t n)
{
    if (o->f)
        return n == 0 || fwrite(p, 1, n, o->f) == n ? 0 : -1;
    for (size_t done = 0; done < n;) {
        unsigned chunk = n - done > (1u << 30) ? (1u << 30) : (unsigned)(n - done);
        if (gzwrite(o->z, (const char *)p + done, chunk) != (int)chunk)
            return -1;
        done += chunk;
    }
    return 0;
}

/* Flushes to disk and closes; returns 0 or -1. */
static int out_close(out_file *o)
{
    if (o->f) {
        int rc = fflush(o->f) == 0 && fsync(fileno(o->f)) == 0 ? 0 : -1;
        int saved = errno;
        if (fclose(o->f) != 0)
            rc = -1;
        else if (rc)
            errno = saved;
        return rc;
    }
    return gzclose(o->z) == Z_OK ? 0 : -1;
}

/* Creates an empty temporary file next to path (mode 0666 less the umask); returns its name
 * (malloc'd) or NULL with e set. */
static char *make_temp(const char *path, fine_err *e)
{
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    const char *base = slash ? slash + 1 : path;
    size_t cap = strlen(path) + 64;
    char *tmp = malloc(cap);
    if (!tmp) {
        fine_err_set(e, "%s: out of memory", path);
        return NULL;
    }
    for (int attempt = 0; attempt < 100; attempt++) {
        snprintf(tmp, cap, "%.*s.%s.tmp%ld.%d", (int)dirlen, path, base, (long)getpid(), attempt);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd >= 0) {
            close(fd);
            return tmp;
        }
        if (errno != EEXIST)
            break;
    }
    fine_err_set(e, "%s: cannot create a temporary file next to it: %s", path, strerror(errno));
    free(tmp);
    return NULL;
}

/* Moves tmp to path; without force an existing path is kept and reported. */
static int move_into_place(const char *tmp, const char *path, int force, fine_err *e)
{
    if (!force) {
        if (link(tmp, path) == 0) {
            unlink(tmp);
            return 0;
        }
        if (errno == EEXIST)
            return fine_err_set(e, "%s: exists (use --force to overwrite)", path);
        if (access(path, F_OK) == 0)
            return fine_err_set(e, "%s: exists (use --force to overwrite)", path);
        /* link() unsupported here (some file systems): fall back to rename */
    }
    if (rename(tmp, path) != 0)
        return fine_err_set(e, "%s: %s", path, strerror(errno));
    return 0;
}

int fine_nifti_write(const char *path, const fine_tensor *vol, const fine_geometry *g, int force,
                     fine_err *e)
{
    if (vol->ndim != 3)
        return fine_err_set(e, "%s: a NIfTI volume must be 3-D (the array has %d dimensions)", path, vol->ndim);
    for (int d = 0; d < 3; d++) {
        if (vol->shape[d] != g->size[d])
            return fine_err_set(e, "%s: array shape %lldx%lldx%lld differs from the geometry's size %lldx%lldx%lld",
                                path, (long long)vol->shape[0], (long long)vol->shape[1],
                                (long long)vol->shape[2], (long long)g->size[0], (long long)g->size[1],
                                (long long)g->size[2]);
        if (vol->shape[d] < 1)
            return fine_err_set(e, "%s: cannot write an empty volume", path);
    }
    int code = nii_code_for(vol->dtype);
    if (code == DT_UNKNOWN)
        return fine_err_set(e, "%s: invalid dtype %d", path, (int)vol->dtype);
    int64_t n[3] = {vol->shape[2], vol->shape[1], vol->shape[0]}; /* (i, j, k) */
    nii_hdr h;
    header_for(g, n, code, &h);
    if (h.version == 1)
        for (int i = 0; i < 3; i++)
            if (n[i] > 32767)
                return fine_err_set(e, "%s: dimension %lld is too large for NIfTI-1 (at most 32767)", path,
                                    (long long)n[i]);
    if (!force && access(path, F_OK) == 0)
        return fine_err_set(e, "%s: exists (use --force to overwrite)", path);

    char *tmp = make_temp(path, e);
    if (!tmp)
        return -1;
    int gz = ends_with(path, ".gz");
    errno = 0;
    out_file fp = {NULL, NULL};
    if (gz)
        fp.z = gzopen(tmp, NII_GZ_MODE);
    else
        fp.f = fopen(tmp, "wb");
    if (!fp.f && !fp.z) {
        fine_err_set(e, "%s: cannot write: %s", path, errno ? strerror(errno) : "open failed");
        goto fail;
    }
    union {
        nifti_1_header n1;
        nifti_2_header n2;
    } hdr;
    const unsigned char extender[4] = {0, 0, 0, 0};
    int bad = 0;
    if (h.version == 1) {
        to_n1(&h, &hdr.n1);
        bad |= put(&fp, &hdr.n1, sizeof hdr.n1);
    } else {
        to_n2(&h, &hdr.n2);
        bad |= put(&fp, &hdr.n2, sizeof hdr.n2);
    }
    bad |= put(&fp, extender, sizeof extender);
    if (vol->dtype == FINE_F16) { /* f16 is written as f32, a block at a time */
        float block[4096];
        int64_t numel = fine_tensor_numel(vol);
        const uint16_t *src = (const uint16_t *)vol->data;
        for (int64_t i = 0; i < numel && !bad; i += 4096) {
            int64_t m = numel - i < 4096 ? numel - i : 4096;
            for (int64_t k = 0; k < m; k++)
                block[k] = fine_f16_to_f32(src[i + k]);
            bad |= put(&fp, block, (size_t)m * sizeof(float));
        }
    } else {
        bad |= put(&fp, vol->data, fine_tensor_nbytes(vol));
    }
    int saved = errno;
    int closed = out_close(&fp);
    if (bad || closed != 0) {
        if (!saved)
            saved = errno;
        fine_err_set(e, "%s: write failed: %s", path, saved ? strerror(saved) : "I/O error");
        goto fail;
    }
    if (move_into_place(tmp, path, force, e) < 0)
        goto fail;
    free(tmp);
    return 0;

fail:
    unlink(tmp);
    free(tmp);
    return -1;
}
