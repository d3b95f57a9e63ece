/* error.h: the one error type of the library.
 * Library functions never print and never exit: they return an error code (or NULL)
 * and, when given a fine_err, leave a one-line message in it that the tool prints. */
#ifndef FINE_ERROR_H
#define FINE_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FINE_ERR_MAX 512

/* code: 0 for an ordinary failure; FINE_ERR_PIPE when the output pipe was closed by its
 * reader, which a tool reports by exiting non-zero without a message. */
enum { FINE_ERR_FAIL = 0, FINE_ERR_PIPE = 1 };

typedef struct fine_err {
    int code;
    char msg[FINE_ERR_MAX];
} fine_err;

/* Formats a message into e (if e is not NULL; code becomes FINE_ERR_FAIL); always returns -1 so callers can write
 * `return fine_err_set(e, "...")`. */
int fine_err_set(fine_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the message already in e with "prefix: " (used to add a file name). */
void fine_err_prefix(fine_err *e, const char *prefix);

/* 1 when msg already starts with the file name `name` ("NAME: ..." or "NAME/..."; "-" matches
 * the stream's "stdin: " and "stdout: "), so a tool knows whether to prefix it. */
int fine_err_names_file(const char *msg, const char *name);

#ifdef __cplusplus
}
#endif

#endif
