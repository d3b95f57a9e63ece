/* bench_util.h: what the benchmarks share: process CPU time and page faults, the PyTorch peer's
 * command line and output fields, the preset filter, the synthetic labels. Header-only: each
 * benchmark is its own program. */
#ifndef FINE_BENCH_UTIL_H
#define FINE_BENCH_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static inline double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Minor page faults of this process so far: fresh memory touched. */
static inline double minflt_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_minflt;
}

/* Labels of B crops (D, H, W): blocks of 8 x 16 x 16 voxels, class (bz + 2 by + 5 bx + b) mod
 * K, so every class occurs and the Dice terms are not trivial. bench/torch_fine.py makes the
 * same labels. */
static inline void block_labels(uint8_t *y, int B, int D, int H, int W, int K)
{
    for (int b = 0; b < B; b++)
        for (int z = 0; z < D; z++)
            for (int r = 0; r < H; r++)
                for (int c = 0; c < W; c++)
                    *y++ = (uint8_t)((z / 8 + 2 * (r / 16) + 5 * (c / 16) + b) % K);
}

/* The value after "key" in line, or NAN. */
static inline double field(const char *line, const char *key)
{
    const char *s = strstr(line, key);
    return s ? strtod(s + strlen(key), NULL) : NAN;
}

static inline const char *python(void)
{
    return getenv("FINE_PYTHON") ? getenv("FINE_PYTHON") : "/usr/bin/python3";
}

/* 1 when the peer can run: python3-torch importable and not switched off. */
static inline int torch_available(void)
{
    const char *want = getenv("FINE_BENCH_TORCH");
    if (want && strcmp(want, "0") == 0)
        return 0;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", python());
    return system(cmd) == 0;
}

/* What the peer's command line starts with. By default glibc malloc keeps the memory PyTorch
 * frees (no mmap per large tensor, no trimming): with glibc's defaults every tensor over 32 MB is
 * a fresh mmap, and where first touches are expensive (the development VM) the page faults cost
 * PyTorch more than its compute at the bcv crop. FINE_BENCH_TORCH_MALLOC=glibc: the defaults. */
static inline const char *torch_env(void)
{
    const char *m = getenv("FINE_BENCH_TORCH_MALLOC");
    if (m && strcmp(m, "glibc") == 0)
        return "";
    return "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000 MALLOC_TOP_PAD_=1000000000 ";
}

/* 1 when preset is in the comma-separated list (NULL: every preset). */
static inline int selected(const char *list, const char *preset)
{
    if (!list)
        return 1;
    size_t n = strlen(preset);
    for (const char *s = list; *s;) {
        size_t k = strcspn(s, ",");
        if (k == n && strncmp(s, preset, n) == 0)
            return 1;
        s += k + (s[k] == ',');
    }
    return 0;
}

#endif
