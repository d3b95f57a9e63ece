#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void fine_cli_init(void)
{
    signal(SIGPIPE, SIG_IGN);
}

void fine_cli_omp_passive(char **argv)
{
    if (getenv("OMP_WAIT_POLICY"))
        return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) == 0)
        execv("/proc/self/exe", argv);
}

int fine_cli_fail(const char *tool, const fine_err *e)
{
    if (e && e->code == FINE_ERR_PIPE)
        return FINE_EXIT_FAIL;
    fprintf(stderr, "%s: %s\n", tool, e && e->msg[0] ? e->msg : "failed");
    return FINE_EXIT_FAIL;
}

int fine_cli_usage(const char *tool, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tool);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", tool);
    return FINE_EXIT_USAGE;
}

void fine_cli_version(const char *tool)
{
    printf("%s %s\n", tool, FINE_VERSION);
}

static int parse_list(const char *s, double *out, int n, int allow_scalar)
{
    int count = 0;
    const char *p = s;
    while (*p) {
        if (count == n)
            return -1;
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !isfinite(v))
            return -1;
        out[count++] = v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    if (count == 1 && allow_scalar) {
        for (int i = 1; i < n; i++)
            out[i] = out[0];
        return 0;
    }
    return count == n ? 0 : -1;
}

int fine_parse_f64s(const char *s, double *out, int n, int allow_scalar)
{
    return parse_list(s, out, n, allow_scalar);
}

int fine_parse_i64s(const char *s, int64_t *out, int n, int allow_scalar)
{
    double tmp[16];
    if (n > 16 || parse_list(s, tmp, n, allow_scalar) < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        if (tmp[i] != floor(tmp[i]) || fabs(tmp[i]) > 9e15)
            return -1;
        out[i] = (int64_t)tmp[i];
    }
    return 0;
}

int fine_parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 0)
        return -1;
    *out = v;
    return 0;
}

double fine_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void fine_progress_init(fine_progress *p, const char *tool, int quiet, int force)
{
    memset(p, 0, sizeof *p);
    p->tool = tool;
    p->enabled = !quiet && (force || isatty(STDERR_FILENO));
    p->start = fine_now();
}

static void format_duration(double s, char *buf, size_t n)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%lds", t);
}

void fine_progress_update(fine_progress *p, int64_t done, int64_t total, const char *what)
{
    if (!p->enabled)
        return;
    double now = fine_now();
    if (p->drawn && now - p->last < 0.2 && !(total > 0 && done >= total))
        return;
    p->last = now;
    p->drawn = 1;
    double el = now - p->start;
    char eta[32] = "";
    if (total > 0 && done > 0 && done < total) {
        char d[24];
        format_duration(el / (double)done * (double)(total - done), d, sizeof d);
        snprintf(eta, sizeof eta, "  eta %s", d);
    }
    if (total > 0)
        fprintf(stderr, "\r%s: [%3d%%] %lld/%lld%s%s%s\033[K", p->tool,
                (int)(100.0 * (double)done / (double)total), (long long)done, (long long)total,
                what ? "  " : "", what ? what : "", eta);
    else
        fprintf(stderr, "\r%s: %lld%s%s\033[K", p->tool, (long long)done, what ? "  " : "",
                what ? what : "");
    fflush(stderr);
}

void fine_progress_done(fine_progress *p)
{
    if (p->enabled && p->drawn)
        fputc('\n', stderr);
    p->drawn = 0;
}

int fine_write_file(const char *path, int force, const void *data, size_t len, fine_err *e)
{
    if (strcmp(path, "-") == 0) {
        if (fwrite(data, 1, len, stdout) != len || fflush(stdout) != 0)
            return fine_err_set(e, "stdout: %s", strerror(errno));
        return 0;
    }
    struct stat st;
    if (!force && stat(path, &st) == 0)
        return fine_err_set(e, "%s: exists (use --force to overwrite)", path);
    size_t n = strlen(path);
    char *tmp = malloc(n + 32);
    if (!tmp)
        return fine_err_set(e, "%s: out of memory", path);
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        snprintf(tmp, n + 32, "%s.tmp%ld.%d", path, (long)getpid(), attempt);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        fine_err_set(e, "%s: %s", path, strerror(errno));
        free(tmp);
        return -1;
    }
    int err = 0;
    for (size_t done = 0; done < len && !err;) {
        ssize_t w = write(fd, (const char *)data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            err = w < 0 ? errno : EIO;
        else
            done += (size_t)w;
    }
    if (close(fd) != 0 && !err)
        err = errno;
    if (!err && rename(tmp, path) != 0)
        err = errno;
    if (err)
        unlink(tmp);
    free(tmp);
    return err ? fine_err_set(e, "%s: %s", path, strerror(err)) : 0;
}
