/* cli.h: the conventions every tool shares: error and usage reporting, exit codes
 * (0 success, 1 failure, 2 usage), comma lists, the progress line on stderr. */
#ifndef FINE_CLI_H
#define FINE_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "error.h"

enum { FINE_EXIT_OK = 0, FINE_EXIT_FAIL = 1, FINE_EXIT_USAGE = 2 };

/* Call first in main(): a closed output pipe must surface as EPIPE from write(), which the
 * stream writer reports, not as a signal that kills the tool mid-record. */
void fine_cli_init(void);

/* Call first in the main() of a tool that runs the network: re-executes the tool once with
 * OMP_WAIT_POLICY=passive unless the environment sets a policy. libgomp reads the policy when
 * it loads, before main, and its default lets idle threads spin; the stages of a pipe share
 * the cores, and spinning threads steal them from their neighbours. Returns if exec fails. */
void fine_cli_omp_passive(char **argv);

/* Prints "tool: message" on stderr (nothing for a closed output pipe) and returns 1. */
int fine_cli_fail(const char *tool, const fine_err *e);
/* Prints "tool: message" and "Try 'tool --help'." on stderr and returns 2. */
int fine_cli_usage(const char *tool, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "tool VERSION" on stdout. */
void fine_cli_version(const char *tool);

/* Parses exactly n comma-separated numbers ("3,0.76,0.76"); a single number is repeated n times
 * when allow_scalar. Returns 0 or -1. */
int fine_parse_f64s(const char *s, double *out, int n, int allow_scalar);
int fine_parse_i64s(const char *s, int64_t *out, int n, int allow_scalar);
/* Parses a whole non-negative integer; returns 0 or -1. */
int fine_parse_i64(const char *s, int64_t *out);

/* A progress line on stderr, redrawn in place at most 5 times a second. Shown when stderr is a
 * terminal, or always with force (--progress); never with quiet (--quiet). */
typedef struct fine_progress {
    const char *tool;
    int enabled;
    double start, last;
    int drawn;
} fine_progress;

void fine_progress_init(fine_progress *p, const char *tool, int quiet, int force);
/* done of total units (total <= 0: unknown), and a short free text (may be NULL). */
void fine_progress_update(fine_progress *p, int64_t done, int64_t total, const char *what);
/* Ends the line (prints a newline if anything was drawn). */
void fine_progress_done(fine_progress *p);

/* Monotonic seconds. */
double fine_now(void);

/* Writes len bytes to path atomically (a temporary file in the same folder, renamed over path),
 * or to stdout for "-". An existing path is refused unless force. 0 or -1 with e naming path. */
int fine_write_file(const char *path, int force, const void *data, size_t len, fine_err *e);

#endif
