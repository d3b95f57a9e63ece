/* stream_rt: the C half of the C <-> Python stream cross-check (tests/bats/python.bats).
 *
 *   stream_rt write OUT                    writes the test stream below
 *   stream_rt read IN                      reads every record of IN and decodes its tensor
 *                                          and a nested "label" tensor where present
 *   stream_rt check [-n COPIES] IN [TOOL...]
 *                                          reads IN and verifies it bit-exactly: COPIES
 *                                          concatenated copies of the test stream (default 1),
 *                                          and, when TOOLs are given, that the provenance names
 *                                          exactly these tools, oldest first
 *
 * tests/helpers/stream_rt.py builds and checks the same stream with formats/python/fine_stream.py;
 * the two files must agree on everything below. The test stream, in order:
 *
 *   1-9  volume  case "RT_001", name = the dtype's wire name, index k (0..8, in the order
 *                u8 i8 i16 u16 i32 i64 f16 f32 f64), tensor of shape [3, 4, 5], data pattern(k)
 *   10   param   name "scalar", f64 tensor of shape [] holding pi (bits 0x400921FB54442D18)
 *   11   param   name "empty", i16 tensor of shape [0, 4] (no data bytes)
 *   12   patch   case CASE, name "image", f32 tensor [1, 2, 3, 4] pattern(20), origin [-1, 0, 2],
 *                pos [0.5, -1.25, 3.0], volume_size [10, 20, 30], index 7,
 *                label: nested i16 tensor [2, 3, 4] pattern(21),
 *                meta: {source "stream_rt", tags ["a", "", "\u00fcn\u00ef"], scale 0.1,
 *                       tiny 5e-324, huge 1e300, negzero -0.0, inf +inf, nan NaN,
 *                       imin INT64_MIN, imax INT64_MAX, flag true, off false,
 *                       deep {level 2, more {x -3}}}
 *   13   case_end  case CASE, patches 1
 *   14   x-unknown note "pass me through", n 42
 *
 * CASE is "\u00c4BD_001 \u2713" (UTF-8). pattern(k) gives element i of a dtype of w bits as raw
 * bits: the dtype's special values first (below), then the top w bits of
 * (i + 1) * 0x9E3779B97F4A7C15 + k * 0xD1B54A32D192ED03 (mod 2^64); stored little-endian.
 * Integer specials: 0, 1, all ones, the sign bit alone, all but the sign bit, 2 (so min and
 * max of both signed and unsigned types, and -1). Float specials: +0, -0, +inf, -inf, quiet
 * NaN, a negative signalling NaN (payload 1), smallest subnormal, largest subnormal, minus the
 * smallest subnormal, smallest normal, largest finite, lowest finite, 1, -1. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"
#include "tensor.h"

#define NVOL 9
#define NREC 14
#define CASE "\xc3\x84" "BD_001 \xe2\x9c\x93"

static const fine_dtype vol_dtypes[NVOL] = {FINE_U8,  FINE_I8,  FINE_I16, FINE_U16, FINE_I32,
                                            FINE_I64, FINE_F16, FINE_F32, FINE_F64};

/* ---------------------------------------------------------------- the data pattern */

/* The special bit patterns of dt (see above); returns their count. */
static int specials(fine_dtype dt, uint64_t out[16])
{
    int w = (int)fine_dtype_size(dt) * 8;
    uint64_t sign = (uint64_t)1 << (w - 1);
    if (fine_dtype_is_int(dt)) {
        uint64_t ones = w == 64 ? UINT64_MAX : ((uint64_t)1 << w) - 1;
        uint64_t v[] = {0, 1, ones, sign, sign - 1, 2};
        memcpy(out, v, sizeof v);
        return 6;
    }
    int m = dt == FINE_F16 ? 10 : dt == FINE_F32 ? 23 : 52; /* mantissa bits */
    int ebits = w - 1 - m;
    uint64_t inf = (((uint64_t)1 << ebits) - 1) << m;
    uint64_t one = (((uint64_t)1 << (ebits - 1)) - 1) << m;
    uint64_t v[] = {0,
                    sign,
                    inf,
                    sign | inf,
                    inf | ((uint64_t)1 << (m - 1)),
                    sign | inf | 1,
                    1,
                    ((uint64_t)1 << m) - 1,
                    sign | 1,
                    (uint64_t)1 << m,
                    inf - 1,
                    sign | (inf - 1),
                    one,
                    sign | one};
    memcpy(out, v, sizeof v);
    return 14;
}

/* The bits of element i of pattern k for dtype dt. */
static uint64_t pattern_bits(fine_dtype dt, int k, int64_t i)
{
    uint64_t sp[16];
    int nsp = specials(dt, sp);
    if (i < nsp)
        return sp[i];
    int w = (int)fine_dtype_size(dt) * 8;
    uint64_t h = (uint64_t)(i + 1) * 0x9E3779B97F4A7C15u + (uint64_t)k * 0xD1B54A32D192ED03u;
    return h >> (64 - w);
}

/* Allocates t and fills it with pattern k. */
static void make_pattern(fine_tensor *t, fine_dtype dt, int ndim, const int64_t *shape, int k)
{
    fine_err e = {0};
    if (fine_tensor_alloc(t, dt, ndim, shape, &e) < 0) {
        fprintf(stderr, "stream_rt: %s\n", e.msg);
        exit(1);
    }
    size_t size = fine_dtype_size(dt);
    unsigned char *p = t->data;
    for (int64_t i = 0; i < fine_tensor_numel(t); i++) {
        uint64_t bits = pattern_bits(dt, k, i);
        for (size_t b = 0; b < size; b++)
            p[(size_t)i * size + b] = (unsigned char)(bits >> (8 * b));
    }
}

/* ---------------------------------------------------------------- write */

static int put(fine_writer *w, fine_map *m)
{
    fine_err e = {0};
    int rc = fine_writer_put(w, m, &e);
    fine_map_free(m);
    if (rc < 0)
        fprintf(stderr, "stream_rt: %s\n", e.msg);
    return rc;
}

static int do_write(const char *path, int argc, char **argv)
{
    fine_err e = {0};
    fine_writer *w = fine_writer_open(path, 1, &e);
    if (!w || fine_writer_header(w, NULL, "stream_rt", argc, argv, &e) < 0) {
        fprintf(stderr, "stream_rt: %s\n", e.msg);
        return 1;
    }
    int rc = 0;
    int64_t vshape[3] = {3, 4, 5};
    for (int k = 0; k < NVOL; k++) {
        fine_tensor t;
        make_pattern(&t, vol_dtypes[k], 3, vshape, k);
        fine_map *m = fine_map_new("volume");
        fine_map_str(m, "case", "RT_001");
        fine_map_str(m, "name", fine_dtype_name(vol_dtypes[k]));
        fine_map_i64(m, "index", k);
        fine_map_tensor_fields(m, &t);
        rc |= put(w, m);
        fine_tensor_free(&t);
    }

    fine_tensor scalar, empty;
    fine_tensor_alloc(&scalar, FINE_F64, 0, NULL, &e);
    uint64_t pi_bits = 0x400921FB54442D18u;
    memcpy(scalar.data, &pi_bits, 8);
    fine_map *m = fine_map_new("param");
    fine_map_str(m, "name", "scalar");
    fine_map_tensor_fields(m, &scalar);
    rc |= put(w, m);
    int64_t eshape[2] = {0, 4};
    fine_tensor_alloc(&empty, FINE_I16, 2, eshape, &e);
    m = fine_map_new("param");
    fine_map_str(m, "name", "empty");
    fine_map_tensor_fields(m, &empty);
    rc |= put(w, m);

    fine_tensor img, lab;
    int64_t ishape[4] = {1, 2, 3, 4}, lshape[3] = {2, 3, 4};
    make_pattern(&img, FINE_F32, 4, ishape, 20);
    make_pattern(&lab, FINE_I16, 3, lshape, 21);
    m = fine_map_new("patch");
    fine_map_str(m, "case", CASE);
    fine_map_str(m, "name", "image");
    fine_map_tensor_fields(m, &img);
    int64_t origin[3] = {-1, 0, 2}, vsize[3] = {10, 20, 30};
    double pos[3] = {0.5, -1.25, 3.0};
    fine_map_i64s(m, "origin", origin, 3);
    fine_map_f64s(m, "pos", pos, 3);
    fine_map_i64s(m, "volume_size", vsize, 3);
    fine_map_i64(m, "index", 7);
    fine_map_tensor(m, "label", &lab);
    fine_map *meta = fine_map_map(m, "meta");
    const char *tags[3] = {"a", "", "\xc3\xbcn\xc3\xaf"};
    fine_map_str(meta, "source", "stream_rt");
    fine_map_strs(meta, "tags", tags, 3);
    fine_map_f64(meta, "scale", 0.1);
    fine_map_f64(meta, "tiny", 5e-324);
    fine_map_f64(meta, "huge", 1e300);
    fine_map_f64(meta, "negzero", -0.0);
    fine_map_f64(meta, "inf", INFINITY);
    fine_map_f64(meta, "nan", NAN);
    fine_map_i64(meta, "imin", INT64_MIN);
    fine_map_i64(meta, "imax", INT64_MAX);
    fine_map_bool(meta, "flag", 1);
    fine_map_bool(meta, "off", 0);
    fine_map *deep = fine_map_map(meta, "deep");
    fine_map_i64(deep, "level", 2);
    fine_map_i64(fine_map_map(deep, "more"), "x", -3);
    rc |= put(w, m);

    m = fine_map_new("case_end");
    fine_map_str(m, "case", CASE);
    fine_map_i64(m, "patches", 1);
    rc |= put(w, m);
    m = fine_map_new("x-unknown");
    fine_map_str(m, "note", "pass me through");
    fine_map_i64(m, "n", 42);
    rc |= put(w, m);

    if (rc < 0) {
        fine_writer_abort(w);
        rc = -1;
    } else if (fine_writer_close(w, &e) < 0) {
        fprintf(stderr, "stream_rt: %s\n", e.msg);
        rc = -1;
    }
    fine_tensor_free(&scalar);
    fine_tensor_free(&empty);
    fine_tensor_free(&img);
    fine_tensor_free(&lab);
    return rc < 0 ? 1 : 0;
}

/* ---------------------------------------------------------------- check */

/* The record being checked, for messages. */
static int rec_no;
static const char *rec_type;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "stream_rt: mismatch in record %d (%s): ", rec_no, rec_type ? rec_type : "-");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return -1;
}

static int expect_str(const fine_record *r, const char *path, const char *want)
{
    const msgpack_object *o = fine_record_get(r, path);
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return fail("key '%s' is missing or not a string", path);
    if (o->via.str.size != strlen(want) || memcmp(o->via.str.ptr, want, o->via.str.size) != 0)
        return fail("key '%s' is \"%.*s\", expected \"%s\"", path, (int)o->via.str.size,
                    o->via.str.ptr, want);
    return 0;
}

static int obj_is_int(const msgpack_object *o, int64_t want)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return want >= 0 && o->via.u64 == (uint64_t)want;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64 == want;
    return 0;
}

/* An integer, stored as a msgpack integer (not a float). */
static int expect_int(const fine_record *r, const char *path, int64_t want)
{
    const msgpack_object *o = fine_record_get(r, path);
    if (!o || !obj_is_int(o, want))
        return fail("key '%s' is missing or not the integer %" PRId64, path, want);
    return 0;
}

static int obj_is_f64(const msgpack_object *o, double want)
{
    if (o->type != MSGPACK_OBJECT_FLOAT64 && o->type != MSGPACK_OBJECT_FLOAT32)
        return 0;
    if (isnan(want))
        return isnan(o->via.f64);
    return memcmp(&o->via.f64, &want, sizeof want) == 0; /* bit-exact: tells -0.0 from 0.0 */
}

/* A double, stored as a msgpack float, bit-exact. */
static int expect_f64(const fine_record *r, const char *path, double want)
{
    const msgpack_object *o = fine_record_get(r, path);
    if (!o || !obj_is_f64(o, want))
        return fail("key '%s' is missing or not the float %.17g", path, want);
    return 0;
}

static int expect_bool(const fine_record *r, const char *path, int want)
{
    const msgpack_object *o = fine_record_get(r, path);
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN || o->via.boolean != (want != 0))
        return fail("key '%s' is missing or not %s", path, want ? "true" : "false");
    return 0;
}

static int expect_ints(const fine_record *r, const char *path, const int64_t *want, int n)
{
    const msgpack_object *o = fine_record_get(r, path);
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != (uint32_t)n)
        return fail("key '%s' is missing or not an array of %d", path, n);
    for (int i = 0; i < n; i++)
        if (!obj_is_int(&o->via.array.ptr[i], want[i]))
            return fail("key '%s'[%d] is not the integer %" PRId64, path, i, want[i]);
    return 0;
}

static int expect_f64s(const fine_record *r, const char *path, const double *want, int n)
{
    const msgpack_object *o = fine_record_get(r, path);
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != (uint32_t)n)
        return fail("key '%s' is missing or not an array of %d", path, n);
    for (int i = 0; i < n; i++)
        if (!obj_is_f64(&o->via.array.ptr[i], want[i]))
            return fail("key '%s'[%d] is not the float %.17g", path, i, want[i]);
    return 0;
}

/* The tensor at path (NULL: the record's own) has dtype, shape and pattern k (or the given
 * bytes when want is not NULL). */
static int expect_tensor(const fine_record *r, const char *path, fine_dtype dt, int ndim,
                         const int64_t *shape, int k, const void *want)
{
    const char *what = path ? path : "tensor";
    fine_err e = {0};
    fine_tensor t;
    if (fine_record_tensor(r, path, &t, &e) < 0)
        return fail("%s", e.msg);
    int rc = 0;
    if (t.dtype != dt)
        rc = fail("%s: dtype %s, expected %s", what, fine_dtype_name(t.dtype), fine_dtype_name(dt));
    else if (t.ndim != ndim)
        rc = fail("%s: %d dimensions, expected %d", what, t.ndim, ndim);
    for (int d = 0; rc == 0 && d < ndim; d++)
        if (t.shape[d] != shape[d])
            rc = fail("%s: shape[%d] is %" PRId64 ", expected %" PRId64, what, d, t.shape[d],
                      shape[d]);
    size_t size = fine_dtype_size(dt);
    const unsigned char *p = t.data;
    for (int64_t i = 0; rc == 0 && i < fine_tensor_numel(&t); i++) {
        uint64_t got = 0, exp = 0;
        for (size_t b = 0; b < size; b++)
            got |= (uint64_t)p[(size_t)i * size + b] << (8 * b);
        if (want)
            for (size_t b = 0; b < size; b++)
                exp |= (uint64_t)((const unsigned char *)want)[(size_t)i * size + b] << (8 * b);
        else
            exp = pattern_bits(dt, k, i);
        if (got != exp)
            rc = fail("%s (%s): element %" PRId64 " has bits 0x%0*" PRIx64 ", expected 0x%0*" PRIx64,
                      what, fine_dtype_name(dt), i, (int)size * 2, got, (int)size * 2, exp);
    }
    fine_tensor_free(&t);
    return rc;
}

/* Record j (0-based) of the test stream. */
static int check_record(const fine_record *r, int j)
{
    static const char *const types[NREC] = {"volume", "volume", "volume", "volume", "volume",
                                            "volume", "volume", "volume", "volume", "param",
                                            "param",  "patch",  "case_end", "x-unknown"};
    if (strcmp(r->type, types[j]) != 0)
        return fail("type '%s', expected '%s'", r->type, types[j]);
    if (j < NVOL) {
        int64_t shape[3] = {3, 4, 5};
        if (expect_str(r, "case", "RT_001") || expect_str(r, "name", fine_dtype_name(vol_dtypes[j])) ||
            expect_int(r, "index", j))
            return -1;
        return expect_tensor(r, NULL, vol_dtypes[j], 3, shape, j, NULL);
    }
    if (j == 9) {
        uint64_t pi_bits = 0x400921FB54442D18u;
        return expect_str(r, "name", "scalar") ||
               expect_tensor(r, NULL, FINE_F64, 0, NULL, 0, &pi_bits) ? -1 : 0;
    }
    if (j == 10) {
        int64_t shape[2] = {0, 4};
        return expect_str(r, "name", "empty") || expect_tensor(r, NULL, FINE_I16, 2, shape, 0, "")
                   ? -1 : 0;
    }
    if (j == 11) {
        int64_t ishape[4] = {1, 2, 3, 4}, lshape[3] = {2, 3, 4};
        int64_t origin[3] = {-1, 0, 2}, vsize[3] = {10, 20, 30};
        double pos[3] = {0.5, -1.25, 3.0};
        if (expect_str(r, "case", CASE) || expect_str(r, "name", "image") ||
            expect_tensor(r, NULL, FINE_F32, 4, ishape, 20, NULL) ||
            expect_ints(r, "origin", origin, 3) || expect_f64s(r, "pos", pos, 3) ||
            expect_ints(r, "volume_size", vsize, 3) || expect_int(r, "index", 7) ||
            expect_tensor(r, "label", FINE_I16, 3, lshape, 21, NULL))
            return -1;
        const msgpack_object *tags = fine_record_get(r, "meta.tags");
        const char *want[3] = {"a", "", "\xc3\xbcn\xc3\xaf"};
        if (!tags || tags->type != MSGPACK_OBJECT_ARRAY || tags->via.array.size != 3)
            return fail("key 'meta.tags' is missing or not an array of 3");
        for (int i = 0; i < 3; i++) {
            const msgpack_object *s = &tags->via.array.ptr[i];
            if (s->type != MSGPACK_OBJECT_STR || s->via.str.size != strlen(want[i]) ||
                memcmp(s->via.str.ptr, want[i], s->via.str.size) != 0)
                return fail("meta.tags[%d] is not \"%s\"", i, want[i]);
        }
        if (expect_str(r, "meta.source", "stream_rt") || expect_f64(r, "meta.scale", 0.1) ||
            expect_f64(r, "meta.tiny", 5e-324) || expect_f64(r, "meta.huge", 1e300) ||
            expect_f64(r, "meta.negzero", -0.0) || expect_f64(r, "meta.inf", INFINITY) ||
            expect_f64(r, "meta.nan", NAN) || expect_int(r, "meta.imin", INT64_MIN) ||
            expect_int(r, "meta.imax", INT64_MAX) || expect_bool(r, "meta.flag", 1) ||
            expect_bool(r, "meta.off", 0) || expect_int(r, "meta.deep.level", 2) ||
            expect_int(r, "meta.deep.more.x", -3))
            return -1;
        return 0;
    }
    if (j == 12)
        return expect_str(r, "case", CASE) || expect_int(r, "patches", 1) ? -1 : 0;
    return expect_str(r, "note", "pass me through") || expect_int(r, "n", 42) ? -1 : 0;
}

/* The provenance: an array of complete entries naming the tools (when given), oldest first. */
static int check_provenance(const fine_reader *rd, int ntools, char **tools)
{
    const msgpack_object *p = fine_reader_provenance(rd);
    if (!p || p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size == 0)
        return fail("the header has no provenance array");
    if (ntools > 0 && p->via.array.size != (uint32_t)ntools)
        return fail("the provenance has %u entries, expected %d", p->via.array.size, ntools);
    for (uint32_t i = 0; i < p->via.array.size; i++) {
        fine_record entry = {&p->via.array.ptr[i], "provenance entry"};
        const msgpack_object *args = fine_record_get(&entry, "args");
        const msgpack_object *when = fine_record_get(&entry, "time");
        const msgpack_object *ver = fine_record_get(&entry, "version");
        if (!fine_record_get(&entry, "tool") || !ver || ver->type != MSGPACK_OBJECT_STR ||
            !args || args->type != MSGPACK_OBJECT_ARRAY || !when || when->type != MSGPACK_OBJECT_STR ||
            when->via.str.size != 20 || when->via.str.ptr[19] != 'Z')
            return fail("provenance entry %u lacks tool, version, args or time", i);
        for (uint32_t a = 0; a < args->via.array.size; a++)
            if (args->via.array.ptr[a].type != MSGPACK_OBJECT_STR)
                return fail("provenance entry %u: args[%u] is not a string", i, a);
        if (ntools > 0 && expect_str(&entry, "tool", tools[i]) < 0)
            return -1;
    }
    return 0;
}

static int do_check(const char *path, int copies, int ntools, char **tools)
{
    fine_err e = {0};
    fine_reader *rd = fine_reader_open(path, &e);
    if (!rd) {
        fprintf(stderr, "stream_rt: %s\n", e.msg);
        return 1;
    }
    int major, minor;
    fine_reader_version(rd, &major, &minor);
    rec_type = "header";
    int rc = major == 1 ? 0 : fail("version %d.%d, expected 1.x", major, minor);
    if (rc == 0)
        rc = check_provenance(rd, ntools, tools);
    int n = 0;
    while (rc == 0) {
        fine_record r;
        int got = fine_reader_next(rd, &r, &e);
        if (got < 0) {
            fprintf(stderr, "stream_rt: %s\n", e.msg);
            rc = -1;
            break;
        }
        rec_no = n + 1;
        rec_type = got ? r.type : "end of input";
        if (got == 0) {
            if (n != copies * NREC)
                rc = fail("the input ends after %d records, expected %d", n, copies * NREC);
            break;
        }
        if (n == copies * NREC) {
            rc = fail("more records than the %d expected", copies * NREC);
            break;
        }
        rc = check_record(&r, n % NREC);
        n++;
    }
    fine_reader_close(rd);
    if (rc == 0)
        printf("stream_rt: %s: %d records verified\n", path, n);
    return rc < 0 ? 1 : 0;
}

static int do_read(const char *path)
{
    fine_err e = {0};
    fine_reader *rd = fine_reader_open(path, &e);
    if (!rd) {
        fprintf(stderr, "stream_rt: %s\n", e.msg);
        return 1;
    }
    int n = 0, got;
    fine_record r;
    while ((got = fine_reader_next(rd, &r, &e)) > 0) {
        n++;
        const char *paths[2] = {"", "label"};
        for (int i = 0; i < 2 && got > 0; i++) {
            fine_tensor t = {0};
            if (!fine_obj_get(r.map, i ? "label.dtype" : "dtype"))
                continue;
            if (fine_record_tensor(&r, paths[i], &t, &e) < 0) {
                fine_err_prefix(&e, path);
                got = -1;
            }
            fine_tensor_free(&t);
        }
        if (got < 0)
            break;
    }
    if (got < 0)
        fprintf(stderr, "stream_rt: %s\n", e.msg);
    else
        printf("stream_rt: %s: %d records\n", path, n);
    fine_reader_close(rd);
    return got < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "read") == 0)
        return do_read(argv[2]);
    if (argc == 3 && strcmp(argv[1], "write") == 0)
        return do_write(argv[2], argc, argv);
    if (argc >= 3 && strcmp(argv[1], "check") == 0) {
        int copies = 1, i = 2;
        if (argc >= 5 && strcmp(argv[2], "-n") == 0) {
            copies = atoi(argv[3]);
            i = 4;
        }
        if (copies >= 1 && i < argc)
            return do_check(argv[i], copies, argc - i - 1, argv + i + 1);
    }
    fprintf(stderr, "usage: stream_rt write OUT | stream_rt read IN | "
                    "stream_rt check [-n COPIES] IN [TOOL...]\n");
    return 2;
}
