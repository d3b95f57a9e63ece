/* tap.h: the smallest TAP producer for the C unit tests. Each test program prints
 * "ok N - what" / "not ok N - what" lines and a plan "1..N" at the end; tests/run counts them. */
#ifndef FINE_TAP_H
#define FINE_TAP_H

#include <stdarg.h>
#include <stdio.h>

typedef struct tap {
    int n, failed;
} tap;

static inline int tap_ok(tap *t, int cond, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline int tap_ok(tap *t, int cond, const char *fmt, ...)
{
    va_list ap;
    t->n++;
    if (!cond)
        t->failed++;
    printf("%sok %d - ", cond ? "" : "not ", t->n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return cond;
}

/* Prints the plan and returns the exit status for main. */
static inline int tap_done(tap *t)
{
    printf("1..%d\n", t->n);
    return t->failed ? 1 : 0;
}

#endif
