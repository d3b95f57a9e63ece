/* stream.c: the reader and writer of fine tensor streams (formats/STREAM.md).
 *
 * Writer: each record is packed straight into a zstd frame of its own (checksum on, content
 * size set), then the frame is written out, so a pipe sees whole records promptly.
 * Reader: decodes one zstd frame at a time into a buffer; once the frame has ended (and zstd
 * has verified its checksum) the msgpack records it completes are handed out one by one. */
#include "stream_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_d_stableOutBuffer */
#include <zstd.h>

/* A frame's declared content size is trusted for pre-allocation only up to this. */
#define PREALLOC_MAX ((size_t)1 << 30)
#define HUGE_MIN ((size_t)32 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)

/* ================================================================ low-level I/O */

static int write_all(int fd, const void *buf, size_t n, const char *name, fine_err *e)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EPIPE) {
                fine_err_set(e, "%s: broken pipe", name);
                if (e)
                    e->code = FINE_ERR_PIPE;
                return -1;
            }
            return fine_err_set(e, "%s: write failed: %s", name, strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* ================================================================ writer */

struct fine_writer {
    int fd;
    char *path;     /* final path, NULL for stdout */
    char *tmp;      /* temporary path, NULL for stdout */
    const char *name;
    ZSTD_CCtx *cctx;
    int level;
    char *obuf;
    size_t ocap;
    uint64_t count; /* records after the header */
    int header_done;
    fine_err *err;  /* where the packer callback reports (set during a put) */
    int failed;
};

/* msgpack write callback: compress what the packer produced, write out full buffers. */
static int pack_to_zstd(void *data, const char *buf, size_t len)
{
    fine_writer *w = data;
    ZSTD_inBuffer in = {buf, len, 0};
    while (in.pos < in.size) {
        ZSTD_outBuffer out = {w->obuf, w->ocap, 0};
        size_t rc = ZSTD_compressStream2(w->cctx, &out, &in, ZSTD_e_continue);
        if (ZSTD_isError(rc)) {
            fine_err_set(w->err, "%s: zstd: %s", w->name, ZSTD_getErrorName(rc));
            return -1;
        }
        if (out.pos && write_all(w->fd, w->obuf, out.pos, w->name, w->err) < 0)
            return -1;
    }
    return 0;
}

static int count_bytes(void *data, const char *buf, size_t len)
{
    (void)buf;
    *(uint64_t *)data += len;
    return 0;
}

static int put_packed(fine_writer *w, const fine_map *m, const msgpack_object *obj, fine_err *e)
{
    if (w->failed)
        return fine_err_set(e, "%s: writer already failed", w->name);
    if (m && fine_map_failed(m))
        return fine_err_set(e, "%s: out of memory building a record", w->name);
    /* First pass counts the bytes so the frame header carries the content size. */
    uint64_t size = 0;
    msgpack_packer pk;
    if (m) {
        fine_map_pack(m, count_bytes, &size);
    } else {
        msgpack_packer_init(&pk, &size, count_bytes);
        msgpack_pack_object(&pk, *obj);
    }

    ZSTD_CCtx_reset(w->cctx, ZSTD_reset_session_only);
    ZSTD_CCtx_setPledgedSrcSize(w->cctx, size);
    w->err = e;
    msgpack_packer_init(&pk, w, pack_to_zstd);
    int rc = m ? fine_map_pack(m, pack_to_zstd, w) : msgpack_pack_object(&pk, *obj);
    if (rc) {
        w->failed = 1;
        if (e && !e->msg[0])
            fine_err_set(e, "%s: packing a record failed", w->name);
        return -1;
    }
    for (;;) {
        ZSTD_inBuffer in = {NULL, 0, 0};
        ZSTD_outBuffer out = {w->obuf, w->ocap, 0};
        size_t left = ZSTD_compressStream2(w->cctx, &out, &in, ZSTD_e_end);
        if (ZSTD_isError(left)) {
            w->failed = 1;
            return fine_err_set(e, "%s: zstd: %s", w->name, ZSTD_getErrorName(left));
        }
        if (out.pos && write_all(w->fd, w->obuf, out.pos, w->name, e) < 0) {
            w->failed = 1;
            return -1;
        }
        if (left == 0)
            break;
    }
    return 0;
}

fine_writer *fine_writer_open(const char *path, int force, fine_err *e)
{
    fine_writer *w = calloc(1, sizeof *w);
    if (!w) {
        fine_err_set(e, "out of memory");
        return NULL;
    }
    w->level = 1;
    w->fd = -1;
    if (strcmp(path, "-") == 0) {
        w->name = "stdout";
        if (isatty(STDOUT_FILENO)) {
            fine_err_set(e, "refusing to write a binary stream to a terminal; redirect or pipe stdout");
            free(w);
            return NULL;
        }
        w->fd = STDOUT_FILENO;
    } else {
        w->path = strdup(path);
        w->name = w->path;
        if (!w->path)
            goto oom;
        struct stat st;
        if (!force && stat(path, &st) == 0) {
            fine_err_set(e, "%s: exists (use --force to overwrite)", path);
            free(w->path);
            free(w);
            return NULL;
        }
        char *copy = strdup(path);
        if (!copy)
            goto oom;
        const char *dir = dirname(copy);
        size_t n = strlen(dir) + strlen(path) + 32;
        w->tmp = malloc(n);
        if (!w->tmp) {
            free(copy);
            goto oom;
        }
        char *base = strdup(path);
        snprintf(w->tmp, n, "%s/.%s.tmp.XXXXXX", dir, base ? basename(base) : "out");
        free(base);
        free(copy);
        w->fd = mkstemp(w->tmp);
        if (w->fd < 0) {
            fine_err_set(e, "%s: cannot create: %s", path, strerror(errno));
            free(w->tmp);
            free(w->path);
            free(w);
            return NULL;
        }
        mode_t um = umask(0);
        umask(um);
        fchmod(w->fd, 0666 & ~um);
    }
    w->cctx = ZSTD_createCCtx();
    w->ocap = ZSTD_CStreamOutSize();
    w->obuf = malloc(w->ocap);
    if (!w->cctx || !w->obuf)
        goto oom;
    return w;
oom:
    fine_err_set(e, "out of memory");
    fine_writer_abort(w);
    return NULL;
}

void fine_writer_set_level(fine_writer *w, int level)
{
    w->level = level;
}

static void utc_now(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int fine_writer_header(fine_writer *w, const msgpack_object *upstream, const char *tool, int argc,
                       char **argv, fine_err *e)
{
    if (w->header_done)
        return fine_err_set(e, "%s: header written twice", w->name);
    size_t rc = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(rc))
        rc = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, w->level);
    if (!ZSTD_isError(rc))
        rc = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1);
    if (ZSTD_isError(rc))
        return fine_err_set(e, "%s: zstd: %s", w->name, ZSTD_getErrorName(rc));

    /* provenance = upstream entries, then ours; built as msgpack by hand since the upstream
     * entries are objects read from another stream. */
    fine_map *h = fine_map_new("header");
    fine_map_str(h, "format", FINE_FORMAT_NAME);
    int64_t ver[2] = {FINE_FORMAT_MAJOR, FINE_FORMAT_MINOR};
    fine_map_i64s(h, "version", ver, 2);
    uint32_t nup = upstream && upstream->type == MSGPACK_OBJECT_ARRAY ? upstream->via.array.size : 0;
    msgpack_object *items = calloc(nup + 1, sizeof *items);
    msgpack_object arr = {.type = MSGPACK_OBJECT_ARRAY};
    fine_map *mine = fine_map_new(NULL);
    char when[32];
    utc_now(when, sizeof when);
    fine_map_str(mine, "tool", tool);
    fine_map_str(mine, "version", FINE_VERSION);
    fine_map_strs(mine, "args", (const char *const *)argv, argc);
    fine_map_str(mine, "time", when);
    /* pack our entry into a buffer and unpack it so it can join the array as an object */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int ok = items && !fine_map_failed(mine) && fine_map_pack(mine, msgpack_sbuffer_write, &sb) == 0 &&
             msgpack_unpack_next(&up, sb.data, sb.size, NULL) == MSGPACK_UNPACK_SUCCESS;
    int result = -1;
    if (ok) {
        for (uint32_t i = 0; i < nup; i++)
            items[i] = upstream->via.array.ptr[i];
        items[nup] = up.data;
        arr.via.array.size = nup + 1;
        arr.via.array.ptr = items;
        fine_map_object(h, "provenance", &arr);
        result = put_packed(w, h, NULL, e);
    } else {
        fine_err_set(e, "out of memory");
    }
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    fine_map_free(mine);
    fine_map_free(h);
    free(items);
    if (result == 0)
        w->header_done = 1;
    return result;
}

int fine_writer_put(fine_writer *w, const fine_map *rec, fine_err *e)
{
    if (!w->header_done)
        return fine_err_set(e, "%s: record written before the header", w->name);
    if (put_packed(w, rec, NULL, e) < 0)
        return -1;
    w->count++;
    return 0;
}

int fine_writer_put_record(fine_writer *w, const fine_record *rec, fine_err *e)
{
    if (!w->header_done)
        return fine_err_set(e, "%s: record written before the header", w->name);
    if (put_packed(w, NULL, rec->map, e) < 0)
        return -1;
    w->count++;
    return 0;
}

static void writer_free(fine_writer *w)
{
    ZSTD_freeCCtx(w->cctx);
    free(w->obuf);
    free(w->path);
    free(w->tmp);
    free(w);
}

void fine_writer_abort(fine_writer *w)
{
    if (!w)
        return;
    if (w->tmp && w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp);
    }
    writer_free(w);
}

int fine_writer_close(fine_writer *w, fine_err *e)
{
    int rc = 0;
    if (!w->header_done)
        rc = fine_err_set(e, "%s: closed before a header was written", w->name);
    if (rc == 0) {
        fine_map *end = fine_map_new("end");
        fine_map_i64(end, "records", (int64_t)w->count);
        rc = put_packed(w, end, NULL, e);
        fine_map_free(end);
    }
    if (w->tmp) {
        if (rc == 0 && fsync(w->fd) < 0 && errno != EINVAL)
            rc = fine_err_set(e, "%s: %s", w->name, strerror(errno));
        if (close(w->fd) < 0 && rc == 0)
            rc = fine_err_set(e, "%s: %s", w->name, strerror(errno));
        w->fd = -1;
        if (rc == 0 && rename(w->tmp, w->path) < 0)
            rc = fine_err_set(e, "%s: cannot rename into place: %s", w->name, strerror(errno));
        if (rc < 0)
            unlink(w->tmp);
    }
    writer_free(w);
    return rc;
}

/* ================================================================ reader */

enum { R_EXPECT_HEADER, R_IN_STREAM };

struct fine_reader {
    int fd;
    char *name;
    ZSTD_DCtx *dctx;
    /* compressed input */
    char *ibuf;
    size_t icap, ipos, ilen;
    int eof;
    uint64_t consumed;   /* compressed bytes consumed before ibuf[0] */
    /* decompressed records */
    char *obuf;
    size_t ocap, olen;   /* all of obuf[0..olen) comes from completed frames */
    size_t opos;         /* next record starts here */
    msgpack_unpacked up; /* the record handed out last */
    char type[64];
    int state;
    int streams;         /* headers seen */
    uint64_t count;      /* records since the last header */
    int major, minor;
    msgpack_sbuffer prov_buf;
    msgpack_unpacked prov;
    int have_prov;
};

static int fill_input(fine_reader *r, size_t want, fine_err *e)
{
    /* keep unread bytes, top up to at least `want` (or EOF) */
    if (r->ipos > 0) {
        memmove(r->ibuf, r->ibuf + r->ipos, r->ilen - r->ipos);
        r->consumed += r->ipos;
        r->ilen -= r->ipos;
        r->ipos = 0;
    }
    while (!r->eof && r->ilen < want) {
        ssize_t k = read(r->fd, r->ibuf + r->ilen, r->icap - r->ilen);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return fine_err_set(e, "%s: read failed: %s", r->name, strerror(errno));
        }
        if (k == 0)
            r->eof = 1;
        r->ilen += (size_t)k;
    }
    return 0;
}

/* The decode buffer is 64-byte aligned, so tensor data that a writer aligned within its
 * record (formats/STREAM.md, `_pad_` keys) can be used in place; large buffers ask for huge
 * pages, since touching fresh memory is a large part of reading a big volume. */
static int grow_obuf(fine_reader *r, size_t need, fine_err *e)
{
    if (need <= r->ocap)
        return 0;
    size_t cap = r->ocap ? r->ocap : 1 << 16;
    while (cap < need)
        cap = cap < need / 2 ? 2 * cap : need;
    size_t align = cap >= HUGE_MIN ? HUGE_ALIGN : 64;
    cap = (cap + align - 1) / align * align;
    char *nb = aligned_alloc(align, cap);
    if (!nb)
        return fine_err_set(e, "%s: out of memory (a record of %zu bytes)", r->name, need);
    if (align == HUGE_ALIGN)
        madvise(nb, cap, MADV_HUGEPAGE);
    if (r->olen)
        memcpy(nb, r->obuf, r->olen);
    free(r->obuf);
    r->obuf = nb;
    r->ocap = cap;
    return 0;
}

/* Decodes one whole frame, appending to obuf. Returns 1, 0 at EOF before any byte of a new
 * frame, or -1. */
static int read_frame(fine_reader *r, fine_err *e)
{
    if (fill_input(r, 5, e) < 0) /* magic and frame header descriptor */
        return -1;
    if (r->ilen == 0)
        return 0;
    uint64_t at = r->consumed;
    const unsigned char *p = (const unsigned char *)r->ibuf;
    static const unsigned char magic[4] = {0x28, 0xb5, 0x2f, 0xfd}; /* ZSTD_MAGIC, little-endian */
    size_t have = r->ilen < 4 ? r->ilen : 4;
    if (memcmp(p, magic, have) != 0) {
        if (at == 0)
            return fine_err_set(e, "%s: not a fine stream (no zstd frame at the start)", r->name);
        return fine_err_set(e, "%s: corrupt stream: no zstd frame at byte %llu", r->name,
                            (unsigned long long)at);
    }
    if (r->ilen < 5)
        return fine_err_set(e, "%s: truncated stream (cut inside a frame header at byte %llu)",
                            r->name, (unsigned long long)at);
    if (!(p[4] & 0x04))
        return fine_err_set(e, "%s: zstd frame at byte %llu has no checksum (write streams with "
                            "checksums on, e.g. zstd's default)", r->name, (unsigned long long)at);
    /* wait for the whole frame header (2 to 18 bytes), no more: a short frame must not stall
     * a live pipe */
    size_t hsize = ZSTD_frameHeaderSize(r->ibuf, r->ilen);
    if (!ZSTD_isError(hsize) && fill_input(r, hsize, e) < 0)
        return -1;
    p = (const unsigned char *)r->ibuf;
    /* With the content size known, one allocation with a little slack holds the frame. */
    unsigned long long csize = ZSTD_getFrameContentSize(r->ibuf, r->ilen);
    int sized = csize != ZSTD_CONTENTSIZE_UNKNOWN && csize != ZSTD_CONTENTSIZE_ERROR &&
                csize <= PREALLOC_MAX;
    if (sized && grow_obuf(r, r->olen + (size_t)csize + 4096, e) < 0)
        return -1;
    /* A buffer that cannot move during the frame lets zstd decode straight into it instead of
     * through its own window buffer (about twice as fast for a large volume). */
    ZSTD_DCtx_reset(r->dctx, ZSTD_reset_session_only);
    ZSTD_DCtx_setParameter(r->dctx, ZSTD_d_stableOutBuffer, sized);
    for (;;) {
        if (r->olen == r->ocap && grow_obuf(r, r->ocap + ZSTD_DStreamOutSize(), e) < 0)
            return -1;
        ZSTD_inBuffer in = {r->ibuf, r->ilen, r->ipos};
        ZSTD_outBuffer out = {r->obuf, r->ocap, r->olen};
        size_t rc = ZSTD_decompressStream(r->dctx, &out, &in);
        r->ipos = in.pos;
        r->olen = out.pos;
        if (ZSTD_isError(rc)) {
            ZSTD_DCtx_reset(r->dctx, ZSTD_reset_session_only);
            return fine_err_set(e, "%s: corrupt stream (zstd frame at byte %llu: %s)", r->name,
                                (unsigned long long)at, ZSTD_getErrorName(rc));
        }
        if (rc == 0)
            return 1; /* frame complete, checksum verified by zstd */
        if (r->olen == r->ocap) {
            if (sized) /* more output than the frame header declared */
                return fine_err_set(e, "%s: corrupt stream (zstd frame at byte %llu is larger than "
                                    "its declared size)", r->name, (unsigned long long)at);
            continue; /* output full: grow */
        }
        if (r->ipos == r->ilen) {
            if (r->eof)
                return fine_err_set(e, "%s: truncated stream (cut inside the zstd frame at byte %llu)",
                                    r->name, (unsigned long long)at);
            if (fill_input(r, 1, e) < 0)
                return -1;
            if (r->ilen == 0)
                return fine_err_set(e, "%s: truncated stream (cut inside the zstd frame at byte %llu)",
                                    r->name, (unsigned long long)at);
        }
    }
}

/* Next raw record from the decoded frames: 1, 0 at EOF between frames, -1. */
static int next_object(fine_reader *r, fine_err *e)
{
    for (;;) {
        if (r->opos < r->olen) {
            size_t off = r->opos;
            msgpack_unpack_return ur = msgpack_unpack_next(&r->up, r->obuf, r->olen, &off);
            if (ur == MSGPACK_UNPACK_SUCCESS) {
                r->opos = off;
                return 1;
            }
            if (ur != MSGPACK_UNPACK_CONTINUE)
                return fine_err_set(e, "%s: corrupt stream (invalid msgpack record)", r->name);
        }
        /* need another frame: drop consumed bytes first (the last record is no longer used) */
        if (r->opos > 0) {
            memmove(r->obuf, r->obuf + r->opos, r->olen - r->opos);
            r->olen -= r->opos;
            r->opos = 0;
        }
        int rc = read_frame(r, e);
        if (rc <= 0) {
            if (rc == 0 && r->olen > 0)
                return fine_err_set(e, "%s: truncated stream (a record is cut short)", r->name);
            return rc;
        }
    }
}

static int record_type(fine_reader *r, fine_record *rec, fine_err *e)
{
    const msgpack_object *o = &r->up.data;
    if (o->type != MSGPACK_OBJECT_MAP)
        return fine_err_set(e, "%s: corrupt stream (a record is not a map)", r->name);
    rec->map = o;
    const msgpack_object *t = fine_obj_get(o, "type");
    if (!t || t->type != MSGPACK_OBJECT_STR || t->via.str.size == 0 ||
        t->via.str.size >= sizeof r->type)
        return fine_err_set(e, "%s: corrupt stream (a record has no type)", r->name);
    memcpy(r->type, t->via.str.ptr, t->via.str.size);
    r->type[t->via.str.size] = 0;
    rec->type = r->type;
    return 0;
}

static int take_header(fine_reader *r, const fine_record *rec, fine_err *e)
{
    char fmt[32];
    int64_t ver[2];
    fine_err tmp;
    if (fine_record_str(rec, "format", fmt, sizeof fmt, &tmp) < 0 || strcmp(fmt, FINE_FORMAT_NAME) != 0)
        return fine_err_set(e, "%s: not a fine stream (header format is not '%s')", r->name,
                            FINE_FORMAT_NAME);
    if (fine_record_i64s(rec, "version", ver, 2, &tmp) < 0)
        return fine_err_set(e, "%s: stream header has no valid version", r->name);
    if (ver[0] > FINE_FORMAT_MAJOR)
        return fine_err_set(e, "%s: written by a newer fine (stream version %lld.%lld); this fine "
                            "reads version %d.x", r->name, (long long)ver[0], (long long)ver[1],
                            FINE_FORMAT_MAJOR);
    if (ver[0] < 1)
        return fine_err_set(e, "%s: unknown stream version %lld.%lld", r->name, (long long)ver[0],
                            (long long)ver[1]);
    if (r->streams == 0) {
        r->major = (int)ver[0];
        r->minor = (int)ver[1];
        const msgpack_object *p = fine_record_get(rec, "provenance");
        if (p && p->type == MSGPACK_OBJECT_ARRAY) {
            /* keep a private copy: the record's memory is reused */
            msgpack_packer pk;
            msgpack_packer_init(&pk, &r->prov_buf, msgpack_sbuffer_write);
            if (msgpack_pack_object(&pk, *p) == 0 &&
                msgpack_unpack_next(&r->prov, r->prov_buf.data, r->prov_buf.size, NULL) ==
                    MSGPACK_UNPACK_SUCCESS)
                r->have_prov = 1;
        }
    }
    r->streams++;
    r->count = 0;
    r->state = R_IN_STREAM;
    return 0;
}

int fine_reader_next(fine_reader *r, fine_record *rec, fine_err *e)
{
    for (;;) {
        int rc = next_object(r, e);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            if (r->state == R_IN_STREAM)
                return fine_err_set(e, "%s: truncated stream (ended after %llu records without an "
                                    "end record)", r->name, (unsigned long long)r->count);
            return 0;
        }
        if (record_type(r, rec, e) < 0)
            return -1;
        if (r->state == R_EXPECT_HEADER) {
            if (strcmp(rec->type, "header") != 0)
                return fine_err_set(e, "%s: corrupt stream (a '%s' record follows the end record)",
                                    r->name, rec->type);
            if (take_header(r, rec, e) < 0)
                return -1;
            continue;
        }
        if (strcmp(rec->type, "header") == 0)
            return fine_err_set(e, "%s: truncated stream (a new stream starts before the end record "
                                "of the previous one)", r->name);
        if (strcmp(rec->type, "end") == 0) {
            int64_t n;
            fine_err tmp;
            if (fine_record_i64(rec, "records", &n, &tmp) < 0)
                return fine_err_set(e, "%s: corrupt stream (end record without a count)", r->name);
            if ((uint64_t)n != r->count)
                return fine_err_set(e, "%s: corrupt stream (end record counts %lld records, %llu "
                                    "were read)", r->name, (long long)n, (unsigned long long)r->count);
            r->state = R_EXPECT_HEADER;
            continue;
        }
        r->count++;
        return 1;
    }
}

fine_reader *fine_reader_open(const char *path, fine_err *e)
{
    fine_reader *r = calloc(1, sizeof *r);
    if (!r) {
        fine_err_set(e, "out of memory");
        return NULL;
    }
    msgpack_unpacked_init(&r->up);
    msgpack_unpacked_init(&r->prov);
    msgpack_sbuffer_init(&r->prov_buf);
    r->fd = -1;
    if (strcmp(path, "-") == 0) {
        r->name = strdup("stdin");
        if (isatty(STDIN_FILENO)) {
            fine_err_set(e, "stdin is a terminal; give an input file or pipe a stream in");
            fine_reader_close(r);
            return NULL;
        }
        r->fd = STDIN_FILENO;
    } else {
        r->name = strdup(path);
        r->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (r->fd < 0) {
            fine_err_set(e, "%s: %s", path, strerror(errno));
            fine_reader_close(r);
            return NULL;
        }
        struct stat st;
        if (fstat(r->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            fine_err_set(e, "%s: is a directory", path);
            fine_reader_close(r);
            return NULL;
        }
    }
    r->dctx = ZSTD_createDCtx();
    r->icap = ZSTD_DStreamInSize() > (1 << 17) ? ZSTD_DStreamInSize() : (1 << 17);
    r->ibuf = malloc(r->icap);
    if (!r->name || !r->dctx || !r->ibuf) {
        fine_err_set(e, "out of memory");
        fine_reader_close(r);
        return NULL;
    }
    /* Read the first header now so that a wrong input fails at open. */
    int rc = next_object(r, e);
    fine_record rec;
    if (rc == 0) {
        fine_err_set(e, "%s: empty input (not a fine stream)", r->name);
        rc = -1;
    }
    if (rc > 0 && record_type(r, &rec, e) < 0)
        rc = -1;
    if (rc > 0 && strcmp(rec.type, "header") != 0)
        rc = fine_err_set(e, "%s: not a fine stream (first record is '%s', not a header)", r->name,
                          rec.type);
    if (rc > 0 && take_header(r, &rec, e) < 0)
        rc = -1;
    if (rc < 0) {
        fine_reader_close(r);
        return NULL;
    }
    return r;
}

const msgpack_object *fine_reader_provenance(const fine_reader *r)
{
    return r->have_prov ? &r->prov.data : NULL;
}

void fine_reader_version(const fine_reader *r, int *major, int *minor)
{
    *major = r->major;
    *minor = r->minor;
}

const char *fine_reader_name(const fine_reader *r)
{
    return r->name;
}

void fine_reader_close(fine_reader *r)
{
    if (!r)
        return;
    if (r->fd > STDIN_FILENO)
        close(r->fd);
    ZSTD_freeDCtx(r->dctx);
    msgpack_unpacked_destroy(&r->up);
    msgpack_unpacked_destroy(&r->prov);
    msgpack_sbuffer_destroy(&r->prov_buf);
    free(r->ibuf);
    free(r->obuf);
    free(r->name);
    free(r);
}

int fine_path_is_stream(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    unsigned char b[4];
    ssize_t k = read(fd, b, 4);
    close(fd);
    return k == 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd;
}
