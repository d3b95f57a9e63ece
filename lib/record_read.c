/* record_read.c: typed access to the fields of a record read from a stream. */
#include "stream.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const msgpack_object *fine_obj_get(const msgpack_object *map, const char *path)
{
    const msgpack_object *cur = map;
    const char *p = path;
    while (cur && *p) {
        if (cur->type != MSGPACK_OBJECT_MAP)
            return NULL;
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        const msgpack_object *found = NULL;
        for (uint32_t i = 0; i < cur->via.map.size; i++) {
            const msgpack_object *k = &cur->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == len &&
                memcmp(k->via.str.ptr, p, len) == 0) {
                found = &cur->via.map.ptr[i].val;
                break;
            }
        }
        cur = found;
        p = dot ? dot + 1 : p + len;
    }
    return cur;
}

const msgpack_object *fine_record_get(const fine_record *r, const char *path)
{
    return fine_obj_get(r->map, path);
}

static int missing(const fine_record *r, const char *path, const char *what, fine_err *e)
{
    if (fine_record_get(r, path))
        return fine_err_set(e, "%s record: key '%s' is not %s", r->type, path, what);
    return fine_err_set(e, "%s record: key '%s' is missing", r->type, path);
}

int fine_record_str(const fine_record *r, const char *path, char *out, size_t cap, fine_err *e)
{
    const msgpack_object *o = fine_record_get(r, path);
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return missing(r, path, "a string", e);
    if (o->via.str.size >= cap)
        return fine_err_set(e, "%s record: key '%s' is too long (%u bytes)", r->type, path,
                            o->via.str.size);
    memcpy(out, o->via.str.ptr, o->via.str.size);
    out[o->via.str.size] = 0;
    return 0;
}

static int obj_i64(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX)
            return -1;
        *out = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    /* integral floats are accepted: writers in other languages may emit 3.0 for 3 */
    if ((o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) &&
        o->via.f64 == floor(o->via.f64) && fabs(o->via.f64) < 9e15) {
        *out = (int64_t)o->via.f64;
        return 0;
    }
    return -1;
}

static int obj_f64(const msgpack_object *o, double *out)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return 0;
    default: return -1;
    }
}

int fine_record_i64(const fine_record *r, const char *path, int64_t *out, fine_err *e)
{
    const msgpack_object *o = fine_record_get(r, path);
    if (!o || obj_i64(o, out) < 0)
        return missing(r, path, "an integer", e);
    return 0;
}

int fine_record_f64(const fine_record *r, const char *path, double *out, fine_err *e)
{
    const msgpack_object *o = fine_record_get(r, path);
    if (!o || obj_f64(o, out) < 0)
        return missing(r, path, "a number", e);
    return 0;
}

int fine_record_i64s(const fine_record *r, const char *path, int64_t *out, int n, fine_err *e)
{
    const msgpack_object *o = fine_record_get(r, path);
    char what[48];
    snprintf(what, sizeof what, "an array of %d integers", n);
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != (uint32_t)n)
        return missing(r, path, what, e);
    for (int i = 0; i < n; i++)
        if (obj_i64(&o->via.array.ptr[i], &out[i]) < 0)
            return missing(r, path, what, e);
    return 0;
}

int fine_record_f64s(const fine_record *r, const char *path, double *out, int n, fine_err *e)
{
    const msgpack_object *o = fine_record_get(r, path);
    char what[48];
    snprintf(what, sizeof what, "an array of %d numbers", n);
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != (uint32_t)n)
        return missing(r, path, what, e);
    for (int i = 0; i < n; i++)
        if (obj_f64(&o->via.array.ptr[i], &out[i]) < 0)
            return missing(r, path, what, e);
    return 0;
}

/* Validates the tensor map at path and fills dtype and shape of t; *src points at the data. */
static int tensor_header(const fine_record *r, const char *path, fine_tensor *t,
                         const char **src_out, fine_err *e)
{
    memset(t, 0, sizeof *t);
    const msgpack_object *m = path && path[0] ? fine_record_get(r, path) : r->map;
    const char *where = path && path[0] ? path : "tensor";
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return fine_err_set(e, "%s record: no tensor '%s'", r->type, where);
    const msgpack_object *dt = fine_obj_get(m, "dtype");
    const msgpack_object *sh = fine_obj_get(m, "shape");
    const msgpack_object *da = fine_obj_get(m, "data");
    if (!dt || dt->type != MSGPACK_OBJECT_STR || !sh || sh->type != MSGPACK_OBJECT_ARRAY || !da ||
        da->type != MSGPACK_OBJECT_BIN)
        return fine_err_set(e, "%s record: %s lacks a valid dtype, shape or data", r->type, where);
    char name[8] = {0};
    fine_dtype dtype;
    if (dt->via.str.size >= sizeof name ||
        (memcpy(name, dt->via.str.ptr, dt->via.str.size), fine_dtype_parse(name, &dtype) < 0))
        return fine_err_set(e, "%s record: %s has an unknown dtype '%.*s'", r->type, where,
                            (int)(dt->via.str.size > 16 ? 16 : dt->via.str.size), dt->via.str.ptr);
    if (sh->via.array.size > FINE_MAX_DIMS)
        return fine_err_set(e, "%s record: %s has %u dimensions (at most %d)", r->type, where,
                            sh->via.array.size, FINE_MAX_DIMS);
    int64_t shape[FINE_MAX_DIMS];
    uint64_t numel = 1;
    int ndim = (int)sh->via.array.size;
    for (int i = 0; i < ndim; i++) {
        if (obj_i64(&sh->via.array.ptr[i], &shape[i]) < 0 || shape[i] < 0)
            return fine_err_set(e, "%s record: %s has an invalid shape", r->type, where);
        if (shape[i] && numel > ((uint64_t)1 << 56) / (uint64_t)shape[i])
            return fine_err_set(e, "%s record: %s shape is too large", r->type, where);
        numel *= (uint64_t)shape[i];
    }
    uint32_t bytes = da->via.bin.size;
    const char *src = da->via.bin.ptr;
    if ((uint64_t)bytes != numel * fine_dtype_size(dtype))
        return fine_err_set(e, "%s record: %s holds %u bytes, its shape and dtype need %llu",
                            r->type, where, bytes,
                            (unsigned long long)(numel * fine_dtype_size(dtype)));
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    *src_out = src;
    return 0;
}

int fine_record_tensor(const fine_record *r, const char *path, fine_tensor *t, fine_err *e)
{
    const char *src;
    fine_tensor h;
    memset(t, 0, sizeof *t); /* empty on failure: fine_tensor_free may follow either way */
    if (tensor_header(r, path, &h, &src, e) < 0)
        return -1;
    if (fine_tensor_alloc(t, h.dtype, h.ndim, h.shape, e) < 0)
        return -1;
    memcpy(t->data, src, fine_tensor_nbytes(t));
    return 0;
}

int fine_record_tensor_view(const fine_record *r, const char *path, fine_tensor *t, fine_err *e)
{
    const char *src;
    memset(t, 0, sizeof *t);
    if (tensor_header(r, path, t, &src, e) < 0) {
        memset(t, 0, sizeof *t);
        return -1;
    }
    if ((uintptr_t)src % 64 == 0) {
        t->data = (void *)src;
        t->owns_data = 0;
        return 0;
    }
    fine_tensor h = *t;
    if (fine_tensor_alloc(t, h.dtype, h.ndim, h.shape, e) < 0)
        return -1;
    memcpy(t->data, src, fine_tensor_nbytes(t));
    return 0;
}



int fine_record_geometry(const fine_record *r, fine_geometry *g, fine_err *e)
{
    memset(g, 0, sizeof *g);
    int64_t shape[FINE_MAX_DIMS];
    const msgpack_object *sh = fine_record_get(r, "shape");
    if (!sh || sh->type != MSGPACK_OBJECT_ARRAY || sh->via.array.size < 3 ||
        sh->via.array.size > FINE_MAX_DIMS)
        return fine_err_set(e, "%s record: shape must have at least 3 dimensions", r->type);
    int nd = (int)sh->via.array.size;
    if (fine_record_i64s(r, "shape", shape, nd, e) < 0)
        return -1;
    for (int d = 0; d < 3; d++)
        g->size[d] = shape[nd - 3 + d];
    if (fine_record_f64s(r, "geometry.spacing", g->spacing, 3, e) < 0 ||
        fine_record_i64s(r, "geometry.original_size", g->original_size, 3, e) < 0 ||
        fine_record_f64s(r, "geometry.original_spacing", g->original_spacing, 3, e) < 0 ||
        fine_record_i64s(r, "geometry.crop_lo", g->crop_lo, 3, e) < 0 ||
        fine_record_i64s(r, "geometry.crop_hi", g->crop_hi, 3, e) < 0)
        return -1;
    for (int d = 0; d < 3; d++) {
        if (!(g->spacing[d] > 0) || !(g->original_spacing[d] > 0))
            return fine_err_set(e, "%s record: spacing must be positive", r->type);
        if (g->crop_lo[d] < 0 || g->crop_hi[d] > g->original_size[d] || g->crop_lo[d] >= g->crop_hi[d])
            return fine_err_set(e, "%s record: crop box [%lld, %lld) does not fit the original size %lld",
                                r->type, (long long)g->crop_lo[d], (long long)g->crop_hi[d],
                                (long long)g->original_size[d]);
    }
    g->qfac = 1;
    if (!fine_record_get(r, "geometry.nifti"))
        return 0;
    int64_t v;
    const msgpack_object *srow = fine_record_get(r, "geometry.nifti.srow");
    if (fine_record_i64(r, "geometry.nifti.version", &v, e) < 0)
        return -1;
    g->nifti_version = (int)v;
    if (fine_record_i64(r, "geometry.nifti.qform_code", &v, e) < 0)
        return -1;
    g->qform_code = (int)v;
    if (fine_record_i64(r, "geometry.nifti.sform_code", &v, e) < 0)
        return -1;
    g->sform_code = (int)v;
    if (fine_record_f64s(r, "geometry.nifti.quatern", g->quatern, 3, e) < 0 ||
        fine_record_f64s(r, "geometry.nifti.qoffset", g->qoffset, 3, e) < 0 ||
        fine_record_f64(r, "geometry.nifti.qfac", &g->qfac, e) < 0 ||
        fine_record_f64s(r, "geometry.nifti.pixdim", g->pixdim, 8, e) < 0)
        return -1;
    if (!srow || srow->type != MSGPACK_OBJECT_ARRAY || srow->via.array.size != 3)
        return fine_err_set(e, "%s record: geometry.nifti.srow must be 3 rows of 4", r->type);
    for (int i = 0; i < 3; i++) {
        const msgpack_object *row = &srow->via.array.ptr[i];
        if (row->type != MSGPACK_OBJECT_ARRAY || row->via.array.size != 4)
            return fine_err_set(e, "%s record: geometry.nifti.srow must be 3 rows of 4", r->type);
        for (int j = 0; j < 4; j++)
            if (obj_f64(&row->via.array.ptr[j], &g->srow[i][j]) < 0)
                return fine_err_set(e, "%s record: geometry.nifti.srow must be numbers", r->type);
    }
    if (fine_record_i64(r, "geometry.nifti.xyz_units", &v, e) < 0)
        return -1;
    g->xyz_units = (int)v;
    if (fine_record_i64(r, "geometry.nifti.time_units", &v, e) < 0)
        return -1;
    g->time_units = (int)v;
    const msgpack_object *d = fine_record_get(r, "geometry.nifti.descrip");
    if (d && d->type == MSGPACK_OBJECT_STR) {
        size_t n = d->via.str.size < 80 ? d->via.str.size : 80;
        memcpy(g->descrip, d->via.str.ptr, n);
        g->descrip[n] = 0;
    }
    return 0;
}
