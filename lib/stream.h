/* stream.h: records in and out of a fine tensor stream (formats/STREAM.md).
 *
 * A stream is a sequence of zstd frames (checksums on); the decompressed bytes are a sequence
 * of msgpack maps, the records. The first record of a stream is a header, the last an end
 * record holding the count of records between them. A reader accepts several such streams
 * concatenated (`cat a.fst b.fst`). Writers put each record in a frame of its own, so each
 * record is flushed to the pipe and its checksum verified before a reader hands it out.
 *
 * Memory stays bounded: a reader holds one frame (one record for our writers) at a time, and
 * a record it returns is valid until the next call on that reader. */
#ifndef FINE_STREAM_H
#define FINE_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "error.h"
#include "geometry.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FINE_FORMAT_NAME "fine-stream"
#define FINE_FORMAT_MAJOR 1
#define FINE_FORMAT_MINOR 0

/* ---------------------------------------------------------------- records read from a stream */

/* A record as read: a msgpack map (type "map" in msgpack-c terms) owned by the reader. */
typedef struct fine_record {
    const msgpack_object *map;
    const char *type; /* NUL-terminated copy of the "type" value */
} fine_record;

/* Looks up a value by a dotted key path ("geometry.spacing") in a record's map; NULL if any
 * step is absent or not a map. */
const msgpack_object *fine_record_get(const fine_record *r, const char *path);
const msgpack_object *fine_obj_get(const msgpack_object *map, const char *path);

/* Typed getters on a path. Each returns 0, or -1 with e set ("record 'patch': key 'pos' ...")
 * when the key is absent or of the wrong type. Integers accept any msgpack integer;
 * doubles accept integers and floats. */
int fine_record_str(const fine_record *r, const char *path, char *out, size_t cap, fine_err *e);
int fine_record_i64(const fine_record *r, const char *path, int64_t *out, fine_err *e);
int fine_record_f64(const fine_record *r, const char *path, double *out, fine_err *e);
/* An array of exactly n numbers. */
int fine_record_i64s(const fine_record *r, const char *path, int64_t *out, int n, fine_err *e);
int fine_record_f64s(const fine_record *r, const char *path, double *out, int n, fine_err *e);
/* A tensor: the map at path (NULL or "" for the record itself) holding dtype, shape and data.
 * The data is copied into t (aligned, owned). Checks that the byte count matches the shape.
 * On failure t is left empty, so fine_tensor_free(t) is safe after either outcome. */
int fine_record_tensor(const fine_record *r, const char *path, fine_tensor *t, fine_err *e);
/* The same without a copy where possible: t->data points into the reader's buffer (valid until
 * the next read; t->owns_data = 0) when the data is 64-byte aligned there, as our writers
 * arrange; otherwise it is copied as above. Free with fine_tensor_free either way. */
int fine_record_tensor_view(const fine_record *r, const char *path, fine_tensor *t, fine_err *e);
/* The "geometry" map of a volume record. */
int fine_record_geometry(const fine_record *r, fine_geometry *g, fine_err *e);

/* ---------------------------------------------------------------- records to be written */

/* A record under construction: an ordered map of keys to values. Bulk data (tensor data) is
 * referenced, not copied: it must stay valid until the record is written. Allocation failures
 * are remembered and reported by fine_writer_put, so building code needs no error checks. */
typedef struct fine_map fine_map;

fine_map *fine_map_new(const char *type); /* sets "type" first; NULL type for a nested map */
void fine_map_free(fine_map *m);
void fine_map_str(fine_map *m, const char *key, const char *val);
void fine_map_i64(fine_map *m, const char *key, int64_t val);
void fine_map_f64(fine_map *m, const char *key, double val);
void fine_map_bool(fine_map *m, const char *key, int val);
void fine_map_i64s(fine_map *m, const char *key, const int64_t *vals, int n);
void fine_map_f64s(fine_map *m, const char *key, const double *vals, int n);
void fine_map_strs(fine_map *m, const char *key, const char *const *vals, int n);
/* dtype, shape and data of t as keys of m itself (the record's main tensor). */
void fine_map_tensor_fields(fine_map *m, const fine_tensor *t);
/* A nested map {dtype, shape, data} under key. */
void fine_map_tensor(fine_map *m, const char *key, const fine_tensor *t);
/* A nested map under key, owned by m, returned for filling. */
fine_map *fine_map_map(fine_map *m, const char *key);
/* A value read from another record (pass-through); referenced, so the source record must
 * still be valid when m is written. */
void fine_map_object(fine_map *m, const char *key, const msgpack_object *val);
/* The "geometry" map of a volume record. */
void fine_map_geometry(fine_map *m, const fine_geometry *g);

/* ---------------------------------------------------------------- reading */

typedef struct fine_reader fine_reader;

/* Opens path ("-" for stdin) and reads the stream header. Returns NULL with e set (the
 * message names the file) when the file is missing, not a fine stream, or of a newer major
 * version. */
fine_reader *fine_reader_open(const char *path, fine_err *e);

/* Reads the next record. Returns 1 with *rec set, 0 at the clean end of the input (after an
 * end record whose count matched, at EOF), or -1 with e set: truncated, corrupt, a checksum
 * mismatch, a count mismatch. Header and end records of concatenated streams are consumed
 * here and never returned. *rec is valid until the next call or fine_reader_close. */
int fine_reader_next(fine_reader *r, fine_record *rec, fine_err *e);

/* The provenance array (msgpack array of maps) of the first header, for a writer to extend. */
const msgpack_object *fine_reader_provenance(const fine_reader *r);
/* The header's format version. */
void fine_reader_version(const fine_reader *r, int *major, int *minor);
/* The name given at open ("-" shown as "stdin"). */
const char *fine_reader_name(const fine_reader *r);

void fine_reader_close(fine_reader *r);

/* 1 when the file starts like a zstd frame (a stream), 0 otherwise (e.g. NIfTI). */
int fine_path_is_stream(const char *path);

/* ---------------------------------------------------------------- writing */

typedef struct fine_writer fine_writer;

/* Opens path for writing ("-" for stdout). A file is written to a temporary file in the same
 * directory and renamed on fine_writer_close; an existing file is refused unless force.
 * Refuses a terminal on stdout. Returns NULL with e set. */
fine_writer *fine_writer_open(const char *path, int force, fine_err *e);

/* zstd compression level (default 1: the stream is a pipe format, speed first). Call before
 * the header is written. */
void fine_writer_set_level(fine_writer *w, int level);

/* Writes the header: format, version, and provenance = the upstream provenance (may be NULL)
 * followed by {tool, version, args: argv[0..argc)}. */
int fine_writer_header(fine_writer *w, const msgpack_object *upstream_provenance, const char *tool,
                       int argc, char **argv, fine_err *e);

/* Writes one record in a frame of its own and flushes it to the output. */
int fine_writer_put(fine_writer *w, const fine_map *rec, fine_err *e);
/* Writes a record read from a reader unchanged (pass-through). */
int fine_writer_put_record(fine_writer *w, const fine_record *rec, fine_err *e);

/* Writes the end record, flushes, closes and (for files) renames into place. Frees w.
 * On error the temporary file is removed. Any write to a closed downstream pipe fails with
 * e->code == FINE_ERR_PIPE (the tool then exits non-zero without a message). */
int fine_writer_close(fine_writer *w, fine_err *e);
/* Abandons the output: removes the temporary file, frees w. */
void fine_writer_abort(fine_writer *w);

#ifdef __cplusplus
}
#endif

#endif
