/* json.h: a growing text buffer with HTML escaping and base64 (for data: URIs), and a small
 * strict JSON reader, enough for fine-dice's --json summary and fine-train's --log. No state,
 * no printing: every function that can fail returns -1 (or NULL) with a one-line message in its
 * fine_err. */
#ifndef FINE_JSON_H
#define FINE_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* ---------------------------------------------------------------- text buffer */

/* A growing byte buffer, always NUL-terminated once anything was added. Zero it to start.
 * After an allocation failure `failed` is set and further additions do nothing, so a page can
 * be assembled with unchecked calls and checked once at the end. */
typedef struct fine_buf {
    char *data;
    size_t len, cap;
    int failed;
} fine_buf;

/* Appends n bytes / a string / formatted text. Return 0, or -1 when out of memory. */
int fine_buf_add(fine_buf *b, const void *p, size_t n);
int fine_buf_puts(fine_buf *b, const char *s);
int fine_buf_printf(fine_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s with & < > " ' escaped as HTML character references (safe in text and in quoted
 * attribute values). */
int fine_buf_html(fine_buf *b, const char *s);
/* Appends the standard base64 encoding (RFC 4648, alphabet A-Z a-z 0-9 + /, '=' padding, no
 * line breaks) of p[0..n). */
int fine_buf_base64(fine_buf *b, const uint8_t *p, size_t n);
void fine_buf_free(fine_buf *b);

/* ---------------------------------------------------------------- JSON */

typedef enum fine_json_type {
    FINE_JSON_NULL,
    FINE_JSON_BOOL,
    FINE_JSON_NUMBER,
    FINE_JSON_STRING,
    FINE_JSON_ARRAY,
    FINE_JSON_OBJECT,
} fine_json_type;

/* A parsed JSON value; the whole tree is owned by its root. */
typedef struct fine_json {
    fine_json_type type;
    int boolean;              /* BOOL */
    double number;            /* NUMBER */
    char *string;             /* STRING: UTF-8, NUL-terminated (a \u0000 escape is refused) */
    size_t n;                 /* ARRAY, OBJECT: element count */
    struct fine_json *items;  /* ARRAY, OBJECT: the n values, in document order */
    char **keys;              /* OBJECT: the n keys */
} fine_json;

/* Parses one JSON document (RFC 8259) from text[0..len): objects, arrays, strings with every
 * escape (\u and four hex digits, surrogate pairs joined, written as UTF-8), numbers in
 * JSON's grammar, true/false/null,
 * whitespace around; anything after the value is an error. One leniency, for logs written with
 * printf("%g"): the bare words NaN, nan, Infinity, inf (optionally after '-') are numbers.
 * Nesting deeper than 64 is refused. On success *out holds the tree (free with fine_json_free);
 * on failure -1 with e "line L, column C: what was expected". */
int fine_json_parse(const char *text, size_t len, fine_json *out, fine_err *e);
/* Frees the tree under v and zeroes v. Safe on a zeroed value. */
void fine_json_free(fine_json *v);
/* The value of key in an object (the first one if repeated); NULL when v is not an object or
 * has no such key. */
const fine_json *fine_json_get(const fine_json *v, const char *key);

/* Reads a whole file into a malloc'ed buffer (NUL-terminated; *len excludes the NUL). Returns 0
 * or -1 with e naming the file. */
int fine_read_file(const char *path, char **data, size_t *len, fine_err *e);

#endif
