/* record_build.c: fine_map, a record under construction, and its msgpack packing.
 * Bulk data is referenced, not copied, so a 200 MB volume goes from the caller's tensor
 * straight into the compressor. */
#include "stream_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum entry_kind { E_STR, E_I64, E_F64, E_BOOL, E_I64S, E_F64S, E_F64MAT, E_STRS, E_BIN, E_MAP, E_OBJ };

typedef struct entry {
    char *key;
    enum entry_kind kind;
    int64_t i;
    double f;
    char *s;
    void *arr;   /* int64_t[] / double[] / char*[] (owned) */
    int n, cols; /* element count; columns for E_F64MAT */
    const void *bin;
    size_t bin_len;
    fine_map *map;
    const msgpack_object *obj;
} entry;

struct fine_map {
    entry *e;
    int n, cap;
    int oom;
};

fine_map *fine_map_new(const char *type)
{
    fine_map *m = calloc(1, sizeof *m);
    if (m && type)
        fine_map_str(m, "type", type);
    return m;
}

void fine_map_free(fine_map *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n; i++) {
        entry *e = &m->e[i];
        free(e->key);
        free(e->s);
        if (e->kind == E_STRS)
            for (int j = 0; j < e->n; j++)
                free(((char **)e->arr)[j]);
        free(e->arr);
        fine_map_free(e->map);
    }
    free(m->e);
    free(m);
}

/* Appends an entry (replacing an earlier one with the same key would hide bugs: keys are
 * expected once). Returns NULL and marks the map on allocation failure. */
static entry *add(fine_map *m, const char *key, enum entry_kind kind)
{
    if (!m)
        return NULL;
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        entry *ne = realloc(m->e, (size_t)cap * sizeof *ne);
        if (!ne) {
            m->oom = 1;
            return NULL;
        }
        m->e = ne;
        m->cap = cap;
    }
    entry *e = &m->e[m->n];
    memset(e, 0, sizeof *e);
    e->key = strdup(key);
    if (!e->key) {
        m->oom = 1;
        return NULL;
    }
    e->kind = kind;
    m->n++;
    return e;
}

static void *dup_mem(fine_map *m, const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (!q) {
        m->oom = 1;
        return NULL;
    }
    if (n)
        memcpy(q, p, n);
    return q;
}

void fine_map_str(fine_map *m, const char *key, const char *val)
{
    entry *e = add(m, key, E_STR);
    if (e && !(e->s = strdup(val ? val : "")))
        m->oom = 1;
}

void fine_map_i64(fine_map *m, const char *key, int64_t val)
{
    entry *e = add(m, key, E_I64);
    if (e)
        e->i = val;
}

void fine_map_f64(fine_map *m, const char *key, double val)
{
    entry *e = add(m, key, E_F64);
    if (e)
        e->f = val;
}

void fine_map_bool(fine_map *m, const char *key, int val)
{
    entry *e = add(m, key, E_BOOL);
    if (e)
        e->i = val != 0;
}

void fine_map_i64s(fine_map *m, const char *key, const int64_t *vals, int n)
{
    entry *e = add(m, key, E_I64S);
    if (e) {
        e->n = n;
        e->arr = dup_mem(m, vals, (size_t)n * sizeof *vals);
    }
}

void fine_map_f64s(fine_map *m, const char *key, const double *vals, int n)
{
    entry *e = add(m, key, E_F64S);
    if (e) {
        e->n = n;
        e->arr = dup_mem(m, vals, (size_t)n * sizeof *vals);
    }
}

/* rows x cols doubles, row-major, packed as an array of rows */
static void map_f64mat(fine_map *m, const char *key, const double *vals, int rows, int cols)
{
    entry *e = add(m, key, E_F64MAT);
    if (e) {
        e->n = rows;
        e->cols = cols;
        e->arr = dup_mem(m, vals, (size_t)rows * (size_t)cols * sizeof *vals);
    }
}

void fine_map_strs(fine_map *m, const char *key, const char *const *vals, int n)
{
    entry *e = add(m, key, E_STRS);
    if (!e)
        return;
    char **a = calloc((size_t)(n ? n : 1), sizeof *a);
    if (!a) {
        m->oom = 1;
        return;
    }
    e->arr = a;
    for (int i = 0; i < n; i++) {
        a[i] = strdup(vals[i] ? vals[i] : "");
        if (!a[i])
            m->oom = 1;
        e->n = i + 1;
    }
}

static void map_bin(fine_map *m, const char *key, const void *data, size_t len)
{
    entry *e = add(m, key, E_BIN);
    if (e) {
        e->bin = data;
        e->bin_len = len;
    }
}

void fine_map_tensor_fields(fine_map *m, const fine_tensor *t)
{
    fine_map_str(m, "dtype", fine_dtype_name(t->dtype));
    fine_map_i64s(m, "shape", t->shape, t->ndim);
    map_bin(m, "data", t->data, fine_tensor_nbytes(t));
}

void fine_map_tensor(fine_map *m, const char *key, const fine_tensor *t)
{
    fine_map *c = fine_map_map(m, key);
    if (c)
        fine_map_tensor_fields(c, t);
}

fine_map *fine_map_map(fine_map *m, const char *key)
{
    entry *e = add(m, key, E_MAP);
    if (!e)
        return NULL;
    e->map = fine_map_new(NULL);
    if (!e->map)
        m->oom = 1;
    return e->map;
}

void fine_map_object(fine_map *m, const char *key, const msgpack_object *val)
{
    entry *e = add(m, key, E_OBJ);
    if (e)
        e->obj = val;
}

void fine_map_geometry(fine_map *m, const fine_geometry *g)
{
    fine_map *gm = fine_map_map(m, "geometry");
    if (!gm)
        return;
    double a[4][4];
    fine_geometry_current_affine(g, a);
    double origin[3] = {a[0][3], a[1][3], a[2][3]};
    double dir[3][3];
    for (int c = 0; c < 3; c++) {
        double n = 0;
        for (int r = 0; r < 3; r++)
            n += a[r][c] * a[r][c];
        n = n > 0 ? 1.0 / sqrt(n) : 0;
        for (int r = 0; r < 3; r++)
            dir[r][c] = a[r][c] * n;
    }
    fine_map_f64s(gm, "spacing", g->spacing, 3);
    fine_map_f64s(gm, "origin", origin, 3);
    map_f64mat(gm, "direction", &dir[0][0], 3, 3);
    fine_map_i64s(gm, "original_size", g->original_size, 3);
    fine_map_f64s(gm, "original_spacing", g->original_spacing, 3);
    fine_map_i64s(gm, "crop_lo", g->crop_lo, 3);
    fine_map_i64s(gm, "crop_hi", g->crop_hi, 3);
    if (g->nifti_version > 0) {
        fine_map *n = fine_map_map(gm, "nifti");
        fine_map_i64(n, "version", g->nifti_version);
        fine_map_i64(n, "qform_code", g->qform_code);
        fine_map_i64(n, "sform_code", g->sform_code);
        fine_map_f64s(n, "quatern", g->quatern, 3);
        fine_map_f64s(n, "qoffset", g->qoffset, 3);
        fine_map_f64(n, "qfac", g->qfac);
        fine_map_f64s(n, "pixdim", g->pixdim, 8);
        map_f64mat(n, "srow", &g->srow[0][0], 3, 4);
        fine_map_i64(n, "xyz_units", g->xyz_units);
        fine_map_i64(n, "time_units", g->time_units);
        fine_map_str(n, "descrip", g->descrip);
    }
}

int fine_map_failed(const fine_map *m)
{
    if (!m)
        return 1;
    if (m->oom)
        return 1;
    for (int i = 0; i < m->n; i++)
        if (m->e[i].kind == E_MAP && fine_map_failed(m->e[i].map))
            return 1;
    return 0;
}

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

/* The packer's writer, wrapped to know the byte offset inside the record. */
typedef struct tracked {
    msgpack_packer_write fn;
    void *data;
    uint64_t off;
} tracked;

static int tracked_write(void *d, const char *buf, size_t len)
{
    tracked *t = d;
    t->off += len;
    return t->fn(t->data, buf, len);
}

static size_t str_bytes(size_t n)
{
    return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5);
}

static size_t bin_header_bytes(size_t n)
{
    return n < 256 ? 2 : n < 65536 ? 3 : 5;
}

/* Writes the entry "_pad_<key>": a string whose length puts the body of the bin that follows
 * (key, then bin header) on a 64-byte boundary of the record, so a reader can use tensor data
 * in place without copying it. Readers ignore the key. */
static int pack_pad(msgpack_packer *pk, const tracked *t, const entry *bin)
{
    char key[80];
    snprintf(key, sizeof key, "_pad_%s", bin->key);
    uint64_t base = t->off + str_bytes(strlen(key)) + str_bytes(strlen(bin->key)) +
                    bin_header_bytes(bin->bin_len);
    size_t r = (size_t)((64 - base % 64) % 64); /* bytes the pad value must take, mod 64 */
    size_t len;
    if (r >= 1 && r <= 32)
        len = r - 1; /* fixstr: 1 header byte */
    else if (r == 0)
        len = 62; /* str8: 64 bytes */
    else if (r == 33)
        len = 95; /* str8: 97 bytes */
    else
        len = r - 2; /* str8 */
    static const char zeros[128];
    return pack_str(pk, key) || msgpack_pack_str(pk, len) || msgpack_pack_str_body(pk, zeros, len);
}

static int pack_map(const fine_map *m, msgpack_packer *pk, const tracked *t)
{
    size_t count = (size_t)m->n;
    for (int i = 0; i < m->n; i++)
        count += m->e[i].kind == E_BIN;
    if (msgpack_pack_map(pk, count))
        return -1;
    for (int i = 0; i < m->n; i++) {
        const entry *e = &m->e[i];
        if (e->kind == E_BIN && pack_pad(pk, t, e))
            return -1;
        int rc = pack_str(pk, e->key);
        switch (e->kind) {
        case E_STR: rc = rc || pack_str(pk, e->s); break;
        case E_I64: rc = rc || msgpack_pack_int64(pk, e->i); break;
        case E_F64: rc = rc || msgpack_pack_double(pk, e->f); break;
        case E_BOOL: rc = rc || (e->i ? msgpack_pack_true(pk) : msgpack_pack_false(pk)); break;
        case E_I64S:
            rc = rc || msgpack_pack_array(pk, (size_t)e->n);
            for (int j = 0; j < e->n && !rc; j++)
                rc = msgpack_pack_int64(pk, ((const int64_t *)e->arr)[j]);
            break;
        case E_F64S:
            rc = rc || msgpack_pack_array(pk, (size_t)e->n);
            for (int j = 0; j < e->n && !rc; j++)
                rc = msgpack_pack_double(pk, ((const double *)e->arr)[j]);
            break;
        case E_F64MAT:
            rc = rc || msgpack_pack_array(pk, (size_t)e->n);
            for (int r = 0; r < e->n && !rc; r++) {
                rc = msgpack_pack_array(pk, (size_t)e->cols);
                for (int c = 0; c < e->cols && !rc; c++)
                    rc = msgpack_pack_double(pk, ((const double *)e->arr)[r * e->cols + c]);
            }
            break;
        case E_STRS:
            rc = rc || msgpack_pack_array(pk, (size_t)e->n);
            for (int j = 0; j < e->n && !rc; j++)
                rc = pack_str(pk, ((char *const *)e->arr)[j]);
            break;
        case E_BIN:
            rc = rc || msgpack_pack_bin(pk, e->bin_len) || msgpack_pack_bin_body(pk, e->bin, e->bin_len);
            break;
        case E_MAP: rc = rc || pack_map(e->map, pk, t); break;
        case E_OBJ: rc = rc || msgpack_pack_object(pk, *e->obj); break;
        }
        if (rc)
            return -1;
    }
    return 0;
}

int fine_map_pack(const fine_map *m, msgpack_packer_write fn, void *data)
{
    tracked t = {fn, data, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &t, tracked_write);
    return pack_map(m, &pk, &t);
}
