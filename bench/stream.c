/* bench/stream: throughput of the tensor stream against raw bytes and against .nii.gz.
 *
 * One 200x512x512 f32 volume (CT-like: smooth anatomy plus noise, z-scored as fine-normalize
 * leaves it, so the mantissas are noisy and compress little, the hard case) is
 *   1. piped raw (the uncompressed bytes, as `cat` would move them)        -- the baseline
 *   2. piped as a fine stream (writer and reader in two processes)
 *   3. written to and read from a .fst file
 *   4. written to and read from a .nii.gz file with nifti_clib
 * all in this run. MB/s are of the uncompressed volume (200 MiB = 209.7 MB). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "nifti_io.h"
#include "stream.h"

static void fill(fine_tensor *t)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    float *v = t->data;
    int64_t Z = t->shape[0], Y = t->shape[1], X = t->shape[2];
    for (int64_t z = 0; z < Z; z++)
        for (int64_t y = 0; y < Y; y++)
            for (int64_t x = 0; x < X; x++) {
                double dy = (double)(y - Y / 2) / (double)Y, dx = (double)(x - X / 2) / (double)X;
                double r = dx * dx / 0.16 + dy * dy / 0.09;
                double base = r < 1 ? 0.3 + 0.5 * sin(0.05 * (double)z + 8 * dx) * cos(6 * dy) : -3.0;
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                double noise = ((double)(s >> 11) / 9007199254740992.0 - 0.5) * 0.35;
                v[(z * Y + y) * X + x] = (float)(base + (r < 1 ? noise : 0));
            }
}

static double mbps(size_t bytes, double s)
{
    return (double)bytes / 1e6 / s;
}

/* raw: a child writes the bytes into a pipe, we read them all */
static double pipe_raw(const fine_tensor *t)
{
    int p[2];
    if (pipe(p) < 0)
        return NAN;
    size_t n = fine_tensor_nbytes(t);
    double t0 = fine_now();
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        const char *b = t->data;
        size_t off = 0;
        while (off < n) {
            ssize_t k = write(p[1], b + off, n - off);
            if (k <= 0)
                _exit(1);
            off += (size_t)k;
        }
        _exit(0);
    }
    close(p[1]);
    char *buf = malloc(n);
    size_t off = 0;
    ssize_t k;
    while ((k = read(p[0], buf + off, n - off > (1 << 20) ? (1 << 20) : n - off)) > 0)
        off += (size_t)k;
    close(p[0]);
    waitpid(pid, NULL, 0);
    double dt = fine_now() - t0;
    free(buf);
    return off == n ? dt : NAN;
}

static int write_stream_n(const char *path, const fine_tensor *t, int force, int copies)
{
    fine_err e = {0};
    fine_writer *w = fine_writer_open(path, force, &e);
    if (!w) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return -1;
    }
    char *argv[] = {"bench"};
    fine_map *m = fine_map_new("volume");
    fine_map_str(m, "case", "bench");
    fine_map_str(m, "name", "image");
    fine_map_tensor_fields(m, t);
    int rc = fine_writer_header(w, NULL, "bench", 1, argv, &e);
    for (int i = 0; i < copies && !rc; i++)
        rc = fine_writer_put(w, m, &e);
    fine_map_free(m);
    if (rc) {
        fprintf(stderr, "bench: %s\n", e.msg);
        fine_writer_abort(w);
        return -1;
    }
    return fine_writer_close(w, &e);
}

static int write_stream(const char *path, const fine_tensor *t, int force)
{
    return write_stream_n(path, t, force, 1);
}

/* Reads every volume of the stream as a pipeline stage does (tensor views, no copy) and checks
 * each against ref. Returns the count or -1. */
static int read_stream(const char *path, const fine_tensor *ref, int verify)
{
    fine_err e = {0};
    fine_reader *r = fine_reader_open(path, &e);
    if (!r) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return -1;
    }
    fine_record rec;
    fine_tensor t;
    int n = 0, rc, ok = 1;
    while (ok && (rc = fine_reader_next(r, &rec, &e)) == 1) {
        ok = fine_record_tensor_view(&rec, NULL, &t, &e) == 0;
        if (ok) {
            ok = fine_tensor_nbytes(&t) == fine_tensor_nbytes(ref) &&
                 (!verify || memcmp(t.data, ref->data, fine_tensor_nbytes(ref)) == 0);
            fine_tensor_free(&t);
        }
        n++;
    }
    ok = ok && rc == 0;
    fine_reader_close(r);
    if (!ok)
        fprintf(stderr, "bench: stream read failed or differs: %s\n", e.msg);
    return ok ? n : -1;
}

static double pipe_stream(const fine_tensor *t)
{
    int p[2];
    if (pipe(p) < 0)
        return NAN;
    double t0 = fine_now();
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], STDOUT_FILENO);
        close(p[1]);
        _exit(write_stream("-", t, 0) == 0 ? 0 : 1);
    }
    close(p[1]);
    char path[32];
    snprintf(path, sizeof path, "/dev/fd/%d", p[0]);
    int rc = read_stream(path, t, 1) == 1 ? 0 : -1;
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    double dt = fine_now() - t0;
    return rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? dt : NAN;
}

static long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

int main(int argc, char **argv)
{
    int64_t shape[3] = {200, 512, 512};
    if (argc > 1 && fine_parse_i64s(argv[1], shape, 3, 0) < 0) {
        fprintf(stderr, "usage: stream [Z,Y,X]\n");
        return 2;
    }
    const char *tmpdir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[512], fst[600], nii[600];
    snprintf(dir, sizeof dir, "%s/fine-bench.XXXXXX", tmpdir);
    if (!mkdtemp(dir))
        return 1;
    snprintf(fst, sizeof fst, "%s/v.fst", dir);
    snprintf(nii, sizeof nii, "%s/v.nii.gz", dir);
    fine_err e = {0};
    fine_tensor t;
    if (fine_tensor_alloc(&t, FINE_F32, 3, shape, &e) < 0)
        return 1;
    fill(&t);
    size_t n = fine_tensor_nbytes(&t);
    printf("bench/stream: %lldx%lldx%lld f32 volume, %.1f MB uncompressed\n", (long long)shape[0],
           (long long)shape[1], (long long)shape[2], (double)n / 1e6);

    double raw = pipe_raw(&t);
    double piped = pipe_stream(&t);
    double t0 = fine_now();
    int rc = write_stream(fst, &t, 1);
    double wf = fine_now() - t0;
    long fst_size = file_size(fst);
    t0 = fine_now();
    rc |= read_stream(fst, &t, 1) == 1 ? 0 : 1; /* checked once */
    t0 = fine_now();
    rc |= read_stream(fst, &t, 0) == 1 ? 0 : 1;
    double rf = fine_now() - t0;
    fine_geometry g;
    double sp[3] = {3.0, 0.76, 0.76};
    fine_geometry_init(&g, shape, sp);
    g.nifti_version = 1;
    g.qform_code = g.sform_code = 1;
    g.xyz_units = 2;
    t0 = fine_now();
    rc |= fine_nifti_write(nii, &t, &g, 1, &e);
    double wn = fine_now() - t0;
    fine_tensor back;
    fine_geometry g2;
    t0 = fine_now();
    rc |= fine_nifti_read(nii, &back, &g2, &e);
    double rn = fine_now() - t0;
    if (rc == 0)
        rc = memcmp(back.data, t.data, n) != 0;
    fine_tensor_free(&back);

    /* Steady state: K volumes in one stream, read by one reader (its buffer is reused, as in a
     * pipeline stage), against K reads of the .nii.gz (nifti_clib allocates each time). The
     * first volume of each is left out: it pays for fresh memory, measured above. */
    enum { K = 4 };
    rc |= write_stream_n(fst, &t, 1, K);
    t0 = fine_now();
    rc |= read_stream(fst, &t, 0) == K ? 0 : 1;
    double rs = (fine_now() - t0 - rf) / (K - 1);
    t0 = fine_now();
    for (int i = 1; i < K && rc == 0; i++) {
        rc |= fine_nifti_read(nii, &back, &g2, &e);
        fine_tensor_free(&back);
    }
    double rns = (fine_now() - t0) / (K - 1);
    if (rc || isnan(raw) || isnan(piped)) {
        fprintf(stderr, "bench/stream: a step failed: %s\n", e.msg);
        return 1;
    }
    printf("  %-34s %8.0f MB/s  %6.2f s\n", "raw bytes through a pipe (cat)", mbps(n, raw), raw);
    printf("  %-34s %8.0f MB/s  %6.2f s  (%.2fx raw)\n", "stream through a pipe (write+read)",
           mbps(n, piped), piped, raw / piped);
    printf("  %-34s %8.0f MB/s  %6.2f s  size %.1f MB\n", "stream write to file", mbps(n, wf), wf,
           (double)fst_size / 1e6);
    printf("  %-34s %8.0f MB/s  %6.2f s\n", "stream read from file", mbps(n, rf), rf);
    printf("  %-34s %8.0f MB/s  %6.2f s  size %.1f MB\n", "nifti_clib write .nii.gz", mbps(n, wn), wn,
           (double)file_size(nii) / 1e6);
    printf("  %-34s %8.0f MB/s  %6.2f s\n", "nifti_clib read .nii.gz", mbps(n, rn), rn);
    printf("  %-34s %8.0f MB/s  %6.2f s\n", "stream read, later volumes", mbps(n, rs), rs);
    printf("  %-34s %8.0f MB/s  %6.2f s\n", "nifti_clib read .nii.gz, again", mbps(n, rns), rns);
    double ratio = rns / rs;
    printf("  first volume: stream read %.1fx faster than .nii.gz (both pay for fresh memory)\n",
           rn / rf);
    printf("  steady state: stream read %.1fx faster than .nii.gz (target >= 5x): %s\n", ratio,
           ratio >= 5 ? "PASS" : "FAIL");
    printf("  stream write %.1fx faster than .nii.gz write\n", wn / wf);
    unlink(fst);
    unlink(nii);
    rmdir(dir);
    fine_tensor_free(&t);
    return ratio >= 5 ? 0 : 1;
}
