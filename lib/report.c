/* report.c: the pieces of fine-report's HTML page (report.h): text buffer, JSON reader, the
 * scores and the training log, tables, SVG charts, slices. */
#include "report.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"

/* ---------------------------------------------------------------- text buffer */

static int buf_reserve(fine_buf *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->failed = 1;
            return -1;
        }
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

int fine_buf_add(fine_buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int fine_buf_puts(fine_buf *b, const char *s)
{
    return fine_buf_add(b, s, strlen(s));
}

int fine_buf_printf(fine_buf *b, const char *fmt, ...)
{
    if (b->failed)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) < 0) {
        b->failed = 1;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int fine_buf_html(fine_buf *b, const char *s)
{
    for (; *s; s++) {
        const char *r = NULL;
        switch (*s) {
        case '&': r = "&amp;"; break;
        case '<': r = "&lt;"; break;
        case '>': r = "&gt;"; break;
        case '"': r = "&quot;"; break;
        case '\'': r = "&#39;"; break;
        default: break;
        }
        if ((r ? fine_buf_puts(b, r) : fine_buf_add(b, s, 1)) < 0)
            return -1;
    }
    return 0;
}

int fine_buf_base64(fine_buf *b, const uint8_t *p, size_t n)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (buf_reserve(b, (n + 2) / 3 * 4) < 0)
        return -1;
    char *o = b->data + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = A[v >> 18 & 63];
        *o++ = A[v >> 12 & 63];
        *o++ = A[v >> 6 & 63];
        *o++ = A[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = A[v >> 18 & 63];
        *o++ = A[v >> 12 & 63];
        *o++ = i + 1 < n ? A[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return 0;
}

void fine_buf_free(fine_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- JSON */

#define JSON_MAX_DEPTH 64

typedef struct jparser {
    const char *s;
    size_t len, pos;
    int depth;
    fine_err *e;
} jparser;

static int jp_fail(jparser *p, const char *what)
{
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p->pos && i < p->len; i++) {
        if (p->s[i] == '\n')
            line++, col = 1;
        else
            col++;
    }
    if (p->pos >= p->len)
        return fine_err_set(p->e, "line %zu, column %zu: %s (the text ends here)", line, col, what);
    return fine_err_set(p->e, "line %zu, column %zu: %s", line, col, what);
}

static void jp_ws(jparser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                               p->s[p->pos] == '\r'))
        p->pos++;
}

static int jp_peek(const jparser *p)
{
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

/* 1 when the text at pos starts with word and no letter or digit follows it. */
static int jp_word(const jparser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return 0;
    return p->pos + n == p->len || !isalnum((unsigned char)p->s[p->pos + n]);
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)s[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | (unsigned)d;
    }
    *out = v;
    return 0;
}

static void put_utf8(fine_buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 63)), u[2] = (char)(0x80 | (cp & 63)), n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 63)), u[2] = (char)(0x80 | (cp >> 6 & 63)),
        u[3] = (char)(0x80 | (cp & 63)), n = 4;
    }
    fine_buf_add(b, u, n);
}

/* A string at pos (which holds '"') into a malloc'ed *out. */
static int jp_string(jparser *p, char **out)
{
    fine_buf b = {0};
    p->pos++; /* the opening quote */
    fine_buf_add(&b, "", 0);
    for (;;) {
        if (p->pos >= p->len) {
            fine_buf_free(&b);
            return jp_fail(p, "unterminated string");
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            fine_buf_free(&b);
            return jp_fail(p, "control character in a string (escape it)");
        }
        if (c != '\\') {
            fine_buf_add(&b, &p->s[p->pos++], 1);
            continue;
        }
        if (p->pos + 1 >= p->len) {
            p->pos++;
            fine_buf_free(&b);
            return jp_fail(p, "unterminated string");
        }
        char x = p->s[p->pos + 1], r = 0;
        switch (x) {
        case '"': r = '"'; break;
        case '\\': r = '\\'; break;
        case '/': r = '/'; break;
        case 'b': r = '\b'; break;
        case 'f': r = '\f'; break;
        case 'n': r = '\n'; break;
        case 'r': r = '\r'; break;
        case 't': r = '\t'; break;
        case 'u': break;
        default:
            fine_buf_free(&b);
            return jp_fail(p, "invalid escape in a string");
        }
        if (r) {
            fine_buf_add(&b, &r, 1);
            p->pos += 2;
            continue;
        }
        unsigned cp, lo;
        if (p->len - p->pos < 6 || hex4(p->s + p->pos + 2, &cp) < 0) {
            fine_buf_free(&b);
            return jp_fail(p, "\\u needs four hex digits");
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fine_buf_free(&b);
            return jp_fail(p, "lone low surrogate in \\u escape");
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (p->len - p->pos < 12 || p->s[p->pos + 6] != '\\' || p->s[p->pos + 7] != 'u' ||
                hex4(p->s + p->pos + 8, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF) {
                fine_buf_free(&b);
                return jp_fail(p, "high surrogate in \\u escape without its low surrogate");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p->pos += 6;
        }
        if (cp == 0) {
            fine_buf_free(&b);
            return jp_fail(p, "\\u0000 in a string is not supported");
        }
        put_utf8(&b, cp);
        p->pos += 6;
    }
    if (b.failed) {
        fine_buf_free(&b);
        return fine_err_set(p->e, "out of memory");
    }
    *out = b.data;
    return 0;
}

static int jp_number(jparser *p, double *out)
{
    size_t start = p->pos, i = p->pos;
    const char *s = p->s;
    if (i < p->len && s[i] == '-')
        i++;
    /* the leniency for printf's %g: nan, inf and their spellings */
    static const char *const words[] = {"NaN", "nan", "Infinity", "inf"};
    for (int w = 0; w < 4; w++) {
        jparser q = *p;
        q.pos = i;
        if (jp_word(&q, words[w])) {
            p->pos = i + strlen(words[w]);
            *out = w < 2 ? NAN : s[start] == '-' ? -INFINITY : INFINITY;
            return 0;
        }
    }
    if (i >= p->len || !isdigit((unsigned char)s[i])) {
        p->pos = i;
        return jp_fail(p, "expected a value");
    }
    if (s[i] == '0')
        i++;
    else
        while (i < p->len && isdigit((unsigned char)s[i]))
            i++;
    if (i < p->len && s[i] == '.') {
        i++;
        if (i >= p->len || !isdigit((unsigned char)s[i])) {
            p->pos = i;
            return jp_fail(p, "expected a digit after the decimal point");
        }
        while (i < p->len && isdigit((unsigned char)s[i]))
            i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= p->len || !isdigit((unsigned char)s[i])) {
            p->pos = i;
            return jp_fail(p, "expected a digit in the exponent");
        }
        while (i < p->len && isdigit((unsigned char)s[i]))
            i++;
    }
    if (i < p->len && (isalnum((unsigned char)s[i]) || s[i] == '.')) {
        p->pos = i;
        return jp_fail(p, "malformed number");
    }
    char small[64], *tmp = small;
    size_t n = i - start;
    if (n >= sizeof small && !(tmp = malloc(n + 1)))
        return fine_err_set(p->e, "out of memory");
    memcpy(tmp, s + start, n);
    tmp[n] = '\0';
    *out = strtod(tmp, NULL);
    if (tmp != small)
        free(tmp);
    p->pos = i;
    return 0;
}

static int jp_value(jparser *p, fine_json *v);

/* Appends a value slot to an array or object under construction. */
static fine_json *jp_push(fine_json *v, size_t *cap, int with_key, fine_err *e)
{
    if (v->n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        fine_json *items = realloc(v->items, c * sizeof *items);
        if (items)
            v->items = items;
        char **keys = with_key ? realloc(v->keys, c * sizeof *keys) : NULL;
        if (keys)
            v->keys = keys;
        if (!items || (with_key && !keys)) {
            fine_err_set(e, "out of memory");
            return NULL;
        }
        *cap = c;
    }
    fine_json *slot = &v->items[v->n];
    memset(slot, 0, sizeof *slot);
    if (with_key)
        v->keys[v->n] = NULL;
    return slot;
}

static int jp_container(jparser *p, fine_json *v, int object)
{
    if (++p->depth > JSON_MAX_DEPTH)
        return jp_fail(p, "nested deeper than 64 levels");
    v->type = object ? FINE_JSON_OBJECT : FINE_JSON_ARRAY;
    char close = object ? '}' : ']';
    size_t cap = 0;
    p->pos++;
    jp_ws(p);
    if (jp_peek(p) == close) {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        jp_ws(p);
        fine_json *slot = jp_push(v, &cap, object, p->e);
        if (!slot)
            return -1;
        if (object) {
            if (jp_peek(p) != '"')
                return jp_fail(p, "expected a string key");
            if (jp_string(p, &v->keys[v->n]) < 0)
                return -1;
            v->n++; /* counted now so that its key is freed on failure */
            jp_ws(p);
            if (jp_peek(p) != ':')
                return jp_fail(p, "expected ':' after a key");
            p->pos++;
            jp_ws(p);
            if (jp_value(p, slot) < 0)
                return -1;
        } else {
            v->n++;
            if (jp_value(p, slot) < 0)
                return -1;
        }
        jp_ws(p);
        int c = jp_peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == close) {
            p->pos++;
            break;
        }
        return jp_fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->depth--;
    return 0;
}

static int jp_value(jparser *p, fine_json *v)
{
    memset(v, 0, sizeof *v);
    jp_ws(p);
    int c = jp_peek(p);
    if (c == '{' || c == '[')
        return jp_container(p, v, c == '{');
    if (c == '"') {
        v->type = FINE_JSON_STRING;
        return jp_string(p, &v->string);
    }
    if (jp_word(p, "true") || jp_word(p, "false")) {
        v->type = FINE_JSON_BOOL;
        v->boolean = c == 't';
        p->pos += v->boolean ? 4 : 5;
        return 0;
    }
    if (jp_word(p, "null")) {
        v->type = FINE_JSON_NULL;
        p->pos += 4;
        return 0;
    }
    v->type = FINE_JSON_NUMBER;
    return jp_number(p, &v->number);
}

int fine_json_parse(const char *text, size_t len, fine_json *out, fine_err *e)
{
    jparser p = {text, len, 0, 0, e};
    memset(out, 0, sizeof *out);
    jp_ws(&p);
    if (p.pos >= len)
        return fine_err_set(e, "empty (no JSON value)");
    if (jp_value(&p, out) < 0) {
        fine_json_free(out);
        return -1;
    }
    jp_ws(&p);
    if (p.pos < len) {
        fine_json_free(out);
        return jp_fail(&p, "unexpected text after the JSON value");
    }
    return 0;
}

void fine_json_free(fine_json *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        fine_json_free(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    memset(v, 0, sizeof *v);
}

const fine_json *fine_json_get(const fine_json *v, const char *key)
{
    if (!v || v->type != FINE_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], key) == 0)
            return &v->items[i];
    return NULL;
}

int fine_read_file(const char *path, char **data, size_t *len, fine_err *e)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fine_err_set(e, "%s: %s", path, strerror(errno));
    fine_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fine_buf_add(&b, chunk, n);
    int bad = ferror(f), err = errno;
    fclose(f);
    if (bad) {
        fine_buf_free(&b);
        return fine_err_set(e, "%s: %s", path, strerror(err ? err : EIO));
    }
    if (fine_buf_add(&b, "", 0) < 0) {
        fine_buf_free(&b);
        return fine_err_set(e, "%s: out of memory", path);
    }
    *data = b.data;
    *len = b.len;
    return 0;
}

/* ---------------------------------------------------------------- the scores */

/* The number under key of obj into *out: NaN when obj is NULL or the key is missing or null.
 * Fails when the value is of another type. */
static int json_num(const fine_json *obj, const char *key, double *out, const char *path, const char *where,
                    fine_err *e)
{
    const fine_json *v = obj ? fine_json_get(obj, key) : NULL;
    *out = NAN;
    if (!v || v->type == FINE_JSON_NULL)
        return 0;
    if (v->type != FINE_JSON_NUMBER)
        return fine_err_set(e, "%s: %s: \"%s\" is not a number", path, where, key);
    *out = v->number;
    return 0;
}

/* 1 when s is a label id: decimal digits, no sign, value < 2^31. */
static int label_key(const char *s, int64_t *out)
{
    if (!*s || strlen(s) > 10)
        return 0;
    int64_t v = 0;
    for (const char *c = s; *c; c++) {
        if (!isdigit((unsigned char)*c))
            return 0;
        v = v * 10 + (*c - '0');
    }
    if (v > 2147483647)
        return 0;
    *out = v;
    return 1;
}

static char *dup_or(const char *s, int *oom)
{
    char *d = strdup(s);
    if (!d)
        *oom = 1;
    return d;
}

void fine_report_scores_free(fine_report_scores *s)
{
    fine_free_strings(s->organs, s->nlabels);
    fine_free_strings(s->cases, s->ncases);
    fine_free_strings(s->row_names, s->nrows);
    free(s->labels);
    free(s->dice);
    free(s->hd95);
    free(s->mean_dice);
    free(s->mean_hd95);
    free(s->row_dice);
    free(s->row_hd95);
    memset(s, 0, sizeof *s);
}

/* The labels and organ names of the summary. */
static int scores_labels(const fine_json *root, const fine_json *results, const char *path, fine_report_scores *s,
                         fine_err *e)
{
    const fine_json *names = fine_json_get(root, "labels");
    const fine_json *src = names;
    if (names && names->type != FINE_JSON_OBJECT)
        return fine_err_set(e, "%s: \"labels\" is not an object", path);
    if (!names) { /* an nnU-Net summary: the numeric keys of results.mean */
        src = fine_json_get(results, "mean");
        if (!src || src->type != FINE_JSON_OBJECT)
            return fine_err_set(e, "%s: neither \"labels\" nor \"results\".\"mean\" (not a fine-dice --json summary)",
                                path);
    }
    s->labels = calloc(src->n + 1, sizeof *s->labels);
    s->organs = calloc(src->n + 1, sizeof *s->organs);
    if (!s->labels || !s->organs)
        return fine_err_set(e, "%s: out of memory", path);
    int oom = 0;
    for (size_t i = 0; i < src->n; i++) {
        int64_t id;
        if (!label_key(src->keys[i], &id)) {
            if (names)
                return fine_err_set(e, "%s: \"labels\": key \"%s\" is not a label id", path, src->keys[i]);
            continue;
        }
        for (int k = 0; k < s->nlabels; k++)
            if (s->labels[k] == id)
                return fine_err_set(e, "%s: label %lld appears twice", path, (long long)id);
        char fallback[32];
        const char *organ = fine_bcv_organ(id);
        if (names) {
            if (src->items[i].type != FINE_JSON_STRING)
                return fine_err_set(e, "%s: \"labels\": the name of label %lld is not a string", path, (long long)id);
            organ = src->items[i].string;
        } else if (!organ) {
            snprintf(fallback, sizeof fallback, "label %lld", (long long)id);
            organ = fallback;
        }
        s->labels[s->nlabels] = id;
        s->organs[s->nlabels++] = dup_or(organ, &oom);
    }
    if (oom)
        return fine_err_set(e, "%s: out of memory", path);
    if (s->nlabels == 0)
        return fine_err_set(e, "%s: no labels", path);
    return 0;
}

/* A case's name: "case", else the base name of "test" without .nii/.nii.gz, else its number. */
static char *case_name(const fine_json *c, size_t i, int *oom)
{
    const fine_json *v = fine_json_get(c, "case");
    if (v && v->type == FINE_JSON_STRING)
        return dup_or(v->string, oom);
    v = fine_json_get(c, "test");
    char buf[FINE_CASE_MAX];
    if (v && v->type == FINE_JSON_STRING)
        fine_case_id_from_path(v->string, buf, sizeof buf);
    else
        snprintf(buf, sizeof buf, "%zu", i + 1);
    return dup_or(buf, oom);
}

int fine_report_scores_load(const char *path, fine_report_scores *s, fine_err *e)
{
    memset(s, 0, sizeof *s);
    char *text;
    size_t len;
    if (fine_read_file(path, &text, &len, e) < 0)
        return -1;
    fine_json root;
    int rc = fine_json_parse(text, len, &root, e);
    free(text);
    if (rc < 0) {
        fine_err_prefix(e, path);
        return -1;
    }
    const fine_json *results = fine_json_get(&root, "results");
    const fine_json *all = results ? fine_json_get(results, "all") : NULL;
    const fine_json *mean = results ? fine_json_get(results, "mean") : NULL;
    char where[FINE_CASE_MAX + 64];
    int oom = 0;
    if (root.type != FINE_JSON_OBJECT)
        rc = fine_err_set(e, "%s: not a JSON object (not a fine-dice --json summary)", path);
    else if (!results || results->type != FINE_JSON_OBJECT)
        rc = fine_err_set(e, "%s: no \"results\" object (not a fine-dice --json summary)", path);
    else if (!all || all->type != FINE_JSON_ARRAY)
        rc = fine_err_set(e, "%s: no \"results\".\"all\" array (not a fine-dice --json summary)", path);
    else if (mean && mean->type != FINE_JSON_OBJECT)
        rc = fine_err_set(e, "%s: \"results\".\"mean\" is not an object", path);
    else
        rc = scores_labels(&root, results, path, s, e);
    if (rc == 0) {
        int L = s->nlabels;
        s->ncases = (int)all->n;
        s->cases = calloc(all->n + 1, sizeof *s->cases);
        s->dice = calloc(all->n * (size_t)L + 1, sizeof *s->dice);
        s->hd95 = calloc(all->n * (size_t)L + 1, sizeof *s->hd95);
        s->mean_dice = calloc((size_t)L, sizeof *s->mean_dice);
        s->mean_hd95 = calloc((size_t)L, sizeof *s->mean_hd95);
        s->row_names = calloc(results->n + 1, sizeof *s->row_names);
        s->row_dice = calloc(results->n + 1, sizeof *s->row_dice);
        s->row_hd95 = calloc(results->n + 1, sizeof *s->row_hd95);
        if (!s->cases || !s->dice || !s->hd95 || !s->mean_dice || !s->mean_hd95 || !s->row_names || !s->row_dice ||
            !s->row_hd95)
            rc = fine_err_set(e, "%s: out of memory", path);
    }
    for (size_t c = 0; rc == 0 && c < all->n; c++) {
        const fine_json *cj = &all->items[c];
        if (cj->type != FINE_JSON_OBJECT) {
            rc = fine_err_set(e, "%s: \"results\".\"all\"[%zu] is not an object", path, c);
            break;
        }
        s->cases[c] = case_name(cj, c, &oom);
        for (int k = 0; rc == 0 && k < s->nlabels; k++) {
            char key[24];
            snprintf(key, sizeof key, "%lld", (long long)s->labels[k]);
            const fine_json *m = fine_json_get(cj, key);
            snprintf(where, sizeof where, "case %s, label %s", s->cases[c] ? s->cases[c] : "?", key);
            if (m && m->type != FINE_JSON_OBJECT && m->type != FINE_JSON_NULL)
                rc = fine_err_set(e, "%s: %s is not an object", path, where);
            else if (json_num(m, "Dice", &s->dice[c * (size_t)s->nlabels + (size_t)k], path, where, e) < 0 ||
                     json_num(m, "Hausdorff Distance 95", &s->hd95[c * (size_t)s->nlabels + (size_t)k], path, where,
                              e) < 0)
                rc = -1;
        }
    }
    for (int k = 0; rc == 0 && k < s->nlabels; k++) {
        char key[24];
        snprintf(key, sizeof key, "%lld", (long long)s->labels[k]);
        const fine_json *m = mean ? fine_json_get(mean, key) : NULL;
        snprintf(where, sizeof where, "mean, label %s", key);
        if (m && m->type != FINE_JSON_OBJECT && m->type != FINE_JSON_NULL)
            rc = fine_err_set(e, "%s: %s is not an object", path, where);
        else if (json_num(m, "Dice", &s->mean_dice[k], path, where, e) < 0 ||
                 json_num(m, "Hausdorff Distance 95", &s->mean_hd95[k], path, where, e) < 0)
            rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < results->n; i++) {
        const char *key = results->keys[i];
        if (strncmp(key, "mean (", 6) != 0)
            continue;
        if (results->items[i].type != FINE_JSON_OBJECT) {
            rc = fine_err_set(e, "%s: \"results\".\"%s\" is not an object", path, key);
            break;
        }
        snprintf(where, sizeof where, "%s", key);
        s->row_names[s->nrows] = dup_or(key, &oom);
        if (json_num(&results->items[i], "Dice", &s->row_dice[s->nrows], path, where, e) < 0 ||
            json_num(&results->items[i], "Hausdorff Distance 95", &s->row_hd95[s->nrows], path, where, e) < 0)
            rc = -1;
        s->nrows++;
    }
    if (rc == 0 && oom)
        rc = fine_err_set(e, "%s: out of memory", path);
    fine_json_free(&root);
    if (rc < 0)
        fine_report_scores_free(s);
    return rc;
}

/* ---------------------------------------------------------------- the training log */

typedef struct epoch_line {
    fine_report_epoch ep;
    size_t line;
} epoch_line;

static int cmp_epoch_line(const void *a, const void *b)
{
    const epoch_line *x = a, *y = b;
    if (x->ep.epoch != y->ep.epoch)
        return x->ep.epoch < y->ep.epoch ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

int fine_report_log_load(const char *path, fine_report_epoch **ep, int *n, fine_err *e)
{
    *ep = NULL;
    *n = 0;
    char *text;
    size_t len;
    if (fine_read_file(path, &text, &len, e) < 0)
        return -1;
    epoch_line *a = NULL;
    size_t na = 0, cap = 0, lineno = 0;
    int rc = 0;
    for (size_t pos = 0; pos < len && rc == 0;) {
        size_t end = pos;
        while (end < len && text[end] != '\n')
            end++;
        lineno++;
        size_t b = pos;
        while (b < end && isspace((unsigned char)text[b]))
            b++;
        char where[64];
        snprintf(where, sizeof where, "line %zu", lineno);
        if (b < end) {
            fine_json j;
            epoch_line el;
            memset(&el, 0, sizeof el);
            el.line = lineno;
            double epoch = NAN;
            if (fine_json_parse(text + pos, end - pos, &j, e) < 0) {
                char pre[600];
                snprintf(pre, sizeof pre, "%s: line %zu", path, lineno);
                /* the parser's "line 1, column C" is about this line alone: keep the column */
                char *col = strstr(e->msg, "column ");
                char msg[FINE_ERR_MAX];
                snprintf(msg, sizeof msg, "%s", col ? col : e->msg);
                fine_err_set(e, "%s, %s", pre, msg);
                rc = -1;
                break;
            }
            if (j.type != FINE_JSON_OBJECT)
                rc = fine_err_set(e, "%s: %s: not a JSON object", path, where);
            else if (!fine_json_get(&j, "epoch"))
                rc = fine_err_set(e, "%s: %s: no \"epoch\" (not a fine-train --log file)", path, where);
            else if (json_num(&j, "epoch", &epoch, path, where, e) < 0)
                rc = -1;
            else if (!(epoch >= 0 && epoch <= 1e15 && epoch == floor(epoch)))
                rc = fine_err_set(e, "%s: %s: \"epoch\" is not a whole number >= 0", path, where);
            else if (json_num(&j, "loss", &el.ep.loss, path, where, e) < 0 ||
                     json_num(&j, "train_dice", &el.ep.train_dice, path, where, e) < 0 ||
                     json_num(&j, "lr", &el.ep.lr, path, where, e) < 0 ||
                     json_num(&j, "val_dice", &el.ep.val_dice, path, where, e) < 0 ||
                     json_num(&j, "val_dice_ema", &el.ep.val_dice_ema, path, where, e) < 0)
                rc = -1;
            fine_json_free(&j);
            if (rc == 0) {
                el.ep.epoch = (int64_t)epoch;
                if (na == cap) {
                    size_t c = cap ? cap * 2 : 64;
                    epoch_line *g = realloc(a, c * sizeof *g);
                    if (!g) {
                        rc = fine_err_set(e, "%s: out of memory", path);
                        break;
                    }
                    a = g;
                    cap = c;
                }
                a[na++] = el;
            }
        }
        pos = end + 1;
    }
    free(text);
    if (rc == 0 && na > (size_t)1 << 30)
        rc = fine_err_set(e, "%s: too many epochs", path);
    if (rc < 0) {
        free(a);
        return -1;
    }
    if (na > 1)
        qsort(a, na, sizeof *a, cmp_epoch_line);
    fine_report_epoch *out = na ? malloc(na * sizeof *out) : NULL;
    if (na && !out) {
        free(a);
        return fine_err_set(e, "%s: out of memory", path);
    }
    int m = 0;
    for (size_t i = 0; i < na; i++) {
        if (i + 1 < na && a[i + 1].ep.epoch == a[i].ep.epoch)
            continue; /* a later line of the same epoch (a resumed run) wins */
        out[m++] = a[i].ep;
    }
    free(a);
    *ep = out;
    *n = m;
    return 0;
}

/* ---------------------------------------------------------------- colours, tables, legend */

static const uint8_t PALETTE[13][3] = {
    {230, 25, 75},   /* 1 spleen */
    {60, 180, 75},   /* 2 right kidney */
    {255, 225, 25},  /* 3 left kidney */
    {67, 99, 216},   /* 4 gallbladder */
    {245, 130, 49},  /* 5 esophagus */
    {154, 99, 36},   /* 6 liver */
    {70, 240, 240},  /* 7 stomach */
    {240, 50, 230},  /* 8 aorta */
    {188, 246, 12},  /* 9 inferior vena cava */
    {250, 190, 190}, /* 10 portal vein and splenic vein */
    {0, 128, 128},   /* 11 pancreas */
    {230, 190, 255}, /* 12 right adrenal gland */
    {145, 30, 180},  /* 13 left adrenal gland */
};

void fine_label_color(int64_t label, uint8_t rgb[3])
{
    if (label <= 0) {
        rgb[0] = rgb[1] = rgb[2] = 0;
        return;
    }
    const uint8_t *c = PALETTE[(label - 1) % 13];
    rgb[0] = c[0], rgb[1] = c[1], rgb[2] = c[2];
}

static void put_hex_color(fine_buf *b, int64_t label)
{
    uint8_t c[3];
    fine_label_color(label, c);
    fine_buf_printf(b, "#%02x%02x%02x", c[0], c[1], c[2]);
}

static void table_cell(fine_buf *b, double v, int metric)
{
    if (!isfinite(v)) {
        fine_buf_puts(b, "<td class=\"na\">n/a</td>");
        return;
    }
    if (metric == 0) {
        double t = v < 0 ? 0 : v > 1 ? 1 : v;
        fine_buf_printf(b, "<td style=\"background:hsl(%d,70%%,86%%)\">%.4f</td>", (int)lround(120 * t), v);
    } else {
        fine_buf_printf(b, "<td>%.2f</td>", v);
    }
}

void fine_report_table(fine_buf *b, const fine_report_scores *s, int metric, const char *id)
{
    fine_buf_printf(b, "<table class=\"scores\" id=\"%s\">\n<caption>%s per organ and case; the last column is the "
                    "mean over cases as fine-dice computed it (NaN ignored)</caption>\n<thead><tr><th>label</th>"
                    "<th>organ</th>", id, metric == 0 ? "Dice" : "HD95 (mm)");
    for (int c = 0; c < s->ncases; c++) {
        fine_buf_puts(b, "<th>");
        fine_buf_html(b, s->cases[c]);
        fine_buf_puts(b, "</th>");
    }
    fine_buf_puts(b, "<th>mean</th></tr></thead>\n<tbody>\n");
    for (int k = 0; k < s->nlabels; k++) {
        fine_buf_printf(b, "<tr><td>%lld</td><th class=\"organ\"><span class=\"sw\" style=\"background:",
                        (long long)s->labels[k]);
        put_hex_color(b, s->labels[k]);
        fine_buf_puts(b, "\"></span>");
        fine_buf_html(b, s->organs[k]);
        fine_buf_puts(b, "</th>");
        for (int c = 0; c < s->ncases; c++) {
            size_t i = (size_t)c * (size_t)s->nlabels + (size_t)k;
            table_cell(b, metric == 0 ? s->dice[i] : s->hd95[i], metric);
        }
        table_cell(b, metric == 0 ? s->mean_dice[k] : s->mean_hd95[k], metric);
        fine_buf_puts(b, "</tr>\n");
    }
    for (int r = 0; r < s->nrows; r++) {
        fine_buf_puts(b, "<tr class=\"summary\"><td></td><th class=\"organ\">");
        fine_buf_html(b, s->row_names[r]);
        fine_buf_puts(b, "</th>");
        for (int c = 0; c < s->ncases; c++)
            fine_buf_puts(b, "<td></td>");
        table_cell(b, metric == 0 ? s->row_dice[r] : s->row_hd95[r], metric);
        fine_buf_puts(b, "</tr>\n");
    }
    fine_buf_puts(b, "</tbody>\n</table>\n");
}

void fine_report_legend(fine_buf *b, const fine_report_scores *s)
{
    fine_buf_puts(b, "<div class=\"legend\">");
    int n = s ? s->nlabels : 13;
    for (int k = 0; k < n; k++) {
        int64_t label = s ? s->labels[k] : k + 1;
        if (label <= 0)
            continue;
        fine_buf_puts(b, "<span class=\"item\"><span class=\"sw\" style=\"background:");
        put_hex_color(b, label);
        fine_buf_printf(b, "\"></span>%lld ", (long long)label);
        fine_buf_html(b, s ? s->organs[k] : fine_bcv_organ(label));
        fine_buf_puts(b, "</span>");
    }
    fine_buf_puts(b, "</div>\n");
}

/* ---------------------------------------------------------------- SVG charts */

static double nice_step(double range, int target)
{
    double raw = range / target;
    if (!(raw > 0) || !isfinite(raw))
        return 1;
    double mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/* An axis range widened to round ticks; fixed when lo, hi are given (finite, lo < hi). */
typedef struct axis {
    double lo, hi, step;
} axis;

static axis make_axis(double dlo, double dhi, double flo, double fhi, int integer)
{
    axis a;
    if (isfinite(flo) && isfinite(fhi) && flo < fhi) {
        a.lo = flo, a.hi = fhi, a.step = nice_step(fhi - flo, 5);
        return a;
    }
    if (!isfinite(dlo) || !isfinite(dhi))
        dlo = 0, dhi = 1;
    if (!(dhi > dlo)) {
        double d = dlo != 0 ? fabs(dlo) * 0.1 : 1;
        if (integer && d < 1)
            d = 1;
        dlo -= d, dhi += d;
    }
    a.step = nice_step(dhi - dlo, 5);
    if (integer && a.step < 1)
        a.step = 1;
    a.lo = floor(dlo / a.step) * a.step;
    a.hi = ceil(dhi / a.step) * a.step;
    if (!(a.hi > a.lo))
        a.hi = a.lo + a.step;
    return a;
}

static void tick_label(char *out, size_t cap, double v, double step)
{
    if (fabs(v) < step * 1e-9)
        v = 0;
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 4 || fabs(v) >= 1e6)
        snprintf(out, cap, "%.2g", v);
    else
        snprintf(out, cap, "%.*f", dec, v);
}

enum { LW = 680, LH = 300, LX0 = 70, LX1 = 660, LY0 = 50, LY1 = 250 };

void fine_svg_line_chart(fine_buf *b, const char *title, const char *xlabel, const char *ylabel,
                         const fine_svg_series *s, int ns, double ylo, double yhi)
{
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int total = 0;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            if (!isfinite(s[k].x[i]) || !isfinite(s[k].y[i]))
                continue;
            xmin = fmin(xmin, s[k].x[i]), xmax = fmax(xmax, s[k].x[i]);
            ymin = fmin(ymin, s[k].y[i]), ymax = fmax(ymax, s[k].y[i]);
            total++;
        }
    axis ax = make_axis(xmin, xmax, NAN, NAN, 1), ay = make_axis(ymin, ymax, ylo, yhi, 0);
    fine_buf_printf(b, "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"", LW, LH, LW, LH);
    fine_buf_html(b, title);
    fine_buf_printf(b, "\" font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"%d\" y=\"18\" font-size=\"14\" "
                    "font-weight=\"bold\">", LX0);
    fine_buf_html(b, title);
    fine_buf_puts(b, "</text>\n");
    /* legend, one row under the title */
    double lx = LX0;
    for (int k = 0; k < ns; k++) {
        fine_buf_printf(b, "<line x1=\"%.1f\" y1=\"32\" x2=\"%.1f\" y2=\"32\" stroke=\"%s\" stroke-width=\"2\"%s/>"
                        "<text x=\"%.1f\" y=\"36\">", lx, lx + 20, s[k].color,
                        s[k].dashed ? " stroke-dasharray=\"5,3\"" : "", lx + 24);
        fine_buf_html(b, s[k].name);
        fine_buf_puts(b, "</text>\n");
        lx += 40 + 6.5 * (double)strlen(s[k].name);
    }
    /* grid, ticks and tick labels */
    char lab[48];
    for (double v = ay.lo; v <= ay.hi + ay.step * 1e-6; v += ay.step) {
        double y = LY1 - (v - ay.lo) / (ay.hi - ay.lo) * (LY1 - LY0);
        tick_label(lab, sizeof lab, v, ay.step);
        fine_buf_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>"
                        "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", LX0, y, LX1, y, LX0 - 6, y + 4, lab);
    }
    for (double v = ax.lo; v <= ax.hi + ax.step * 1e-6; v += ax.step) {
        double x = LX0 + (v - ax.lo) / (ax.hi - ax.lo) * (LX1 - LX0);
        tick_label(lab, sizeof lab, v, ax.step);
        fine_buf_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e3e3e3\"/>"
                        "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x, LY0, x, LY1 + 4, x, LY1 + 17,
                        lab);
    }
    fine_buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", LX0, LY0,
                    LX1 - LX0, LY1 - LY0);
    fine_buf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (LX0 + LX1) / 2, LH - 12);
    fine_buf_html(b, xlabel);
    fine_buf_printf(b, "</text>\n<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">",
                    (LY0 + LY1) / 2, (LY0 + LY1) / 2);
    fine_buf_html(b, ylabel);
    fine_buf_puts(b, "</text>\n");
    /* the curves: one polyline per run of finite points */
    for (int k = 0; k < ns; k++) {
        int open = 0, run = 0;
        double px = 0, py = 0;
        for (int i = 0; i <= s[k].n; i++) {
            int ok = i < s[k].n && isfinite(s[k].x[i]) && isfinite(s[k].y[i]);
            if (ok) {
                double yv = fmin(fmax(s[k].y[i], ay.lo), ay.hi);
                px = LX0 + (s[k].x[i] - ax.lo) / (ax.hi - ax.lo) * (LX1 - LX0);
                py = LY1 - (yv - ay.lo) / (ay.hi - ay.lo) * (LY1 - LY0);
                if (!open)
                    fine_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s points=\"",
                                    s[k].color, s[k].dashed ? " stroke-dasharray=\"5,3\"" : "");
                fine_buf_printf(b, "%s%.1f,%.1f", open ? " " : "", px, py);
                open = 1, run++;
            } else if (open) {
                fine_buf_puts(b, "\"/>\n");
                if (run == 1 && total > 60) /* a lone point; with few points every one is marked below */
                    fine_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", px, py, s[k].color);
                open = 0, run = 0;
            }
        }
        if (total <= 60) /* few points: mark each one */
            for (int i = 0; i < s[k].n; i++)
                if (isfinite(s[k].x[i]) && isfinite(s[k].y[i])) {
                    double yv = fmin(fmax(s[k].y[i], ay.lo), ay.hi);
                    fine_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                                    LX0 + (s[k].x[i] - ax.lo) / (ax.hi - ax.lo) * (LX1 - LX0),
                                    LY1 - (yv - ay.lo) / (ay.hi - ay.lo) * (LY1 - LY0), s[k].color);
                }
    }
    fine_buf_puts(b, "</svg>\n");
}

void fine_svg_bar_chart(fine_buf *b, const char *title, const char *const *names, const int64_t *labels,
                        const double *values, int n, const char *mark_name, double mark)
{
    const int W = 680, X0 = 220, X1 = 620, Y0 = 48, ROW = 22;
    int Y1 = Y0 + ROW * n, H = Y1 + 40;
    fine_buf_printf(b, "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                    "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"", W, H, W, H);
    fine_buf_html(b, title);
    fine_buf_printf(b, "\" font-family=\"sans-serif\" font-size=\"11\">\n<text x=\"10\" y=\"18\" font-size=\"14\" "
                    "font-weight=\"bold\">");
    fine_buf_html(b, title);
    fine_buf_puts(b, "</text>\n");
    for (int t = 0; t <= 10; t += 2) {
        double x = X0 + (X1 - X0) * t / 10.0;
        fine_buf_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e3e3e3\"/>"
                        "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.1f</text>\n", x, Y0 - 4, x, Y1 + 4, x, Y1 + 17,
                        t / 10.0);
    }
    for (int k = 0; k < n; k++) {
        double y = Y0 + ROW * k, v = values[k];
        fine_buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", X0 - 8, y + ROW / 2.0 + 4);
        fine_buf_html(b, names[k]);
        fine_buf_puts(b, "</text>");
        if (isfinite(v)) {
            double t = v < 0 ? 0 : v > 1 ? 1 : v, w = t * (X1 - X0);
            fine_buf_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"", X0, y + 3, w, ROW - 6);
            put_hex_color(b, labels[k]);
            fine_buf_printf(b, "\" stroke=\"#555\" stroke-width=\"0.5\"/><text x=\"%.1f\" y=\"%.1f\">%.3f</text>\n",
                            X0 + w + 4, y + ROW / 2.0 + 4, v);
        } else {
            fine_buf_printf(b, "<text x=\"%d\" y=\"%.1f\" fill=\"#888\">n/a</text>\n", X0 + 4, y + ROW / 2.0 + 4);
        }
    }
    fine_buf_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888\"/>\n", X0, Y0 - 4, X0, Y1 + 4);
    if (isfinite(mark)) {
        double t = mark < 0 ? 0 : mark > 1 ? 1 : mark, x = X0 + t * (X1 - X0);
        fine_buf_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#222\" stroke-dasharray=\"5,3\"/>"
                        "<text x=\"%.1f\" y=\"%d\" text-anchor=\"%s\">", x, Y0 - 12, x, Y1 + 4, x, Y0 - 16,
                        t > 0.6 ? "end" : "start");
        fine_buf_html(b, mark_name ? mark_name : "mean");
        fine_buf_printf(b, " %.3f</text>\n", mark);
    }
    fine_buf_puts(b, "</svg>\n");
}

/* ---------------------------------------------------------------- slices */

/* For each array axis (0 z, 1 y, 2 x): the world axis (0 R, 1 A, 2 S) it moves along most, and
 * the sign of that move. Greedy on the largest remaining |affine| entry, so always a permutation. */
static void array_to_world(const fine_geometry *g, int world[3], int sign[3])
{
    double A[4][4];
    fine_geometry_current_affine(g, A);
    int used_w[3] = {0, 0, 0}, used_a[3] = {0, 0, 0};
    for (int round = 0; round < 3; round++) {
        int bw = -1, ba = -1;
        double best = -1;
        for (int a = 0; a < 3; a++)
            for (int w = 0; w < 3; w++) {
                if (used_a[a] || used_w[w])
                    continue;
                double v = fabs(A[w][2 - a]); /* array axis z is NIfTI k, column 2 */
                if (!isfinite(v))
                    v = 0;
                if (bw < 0 || v > best)
                    best = v, bw = w, ba = a;
            }
        used_w[bw] = used_a[ba] = 1;
        world[ba] = bw;
        sign[ba] = A[bw][2 - ba] < 0 ? -1 : 1;
    }
}

int fine_slice_plan_make(const fine_geometry *g, fine_view view, const int64_t centre[3], int max_px,
                         fine_slice_plan *p, fine_err *e)
{
    memset(p, 0, sizeof *p);
    if (max_px < 16)
        return fine_err_set(e, "slice size %d is below 16 pixels", max_px);
    for (int d = 0; d < 3; d++)
        if (g->size[d] < 1)
            return fine_err_set(e, "volume size %lldx%lldx%lld is empty", (long long)g->size[0],
                                (long long)g->size[1], (long long)g->size[2]);
    int world[3], sign[3], of_world[3];
    array_to_world(g, world, sign);
    for (int a = 0; a < 3; a++)
        of_world[world[a]] = a;
    /* the world axis held fixed, and the world axes the columns and rows run along (each toward
     * the world's negative direction: left, posterior, inferior) */
    static const int fixed_w[3] = {2, 1, 0}, col_w[3] = {0, 0, 1}, row_w[3] = {1, 2, 2};
    p->fixed_axis = of_world[fixed_w[view]];
    p->col_axis = of_world[col_w[view]];
    p->row_axis = of_world[row_w[view]];
    p->col_flip = sign[p->col_axis] > 0;
    p->row_flip = sign[p->row_axis] > 0;
    p->index = centre[p->fixed_axis];
    if (p->index < 0 || p->index >= g->size[p->fixed_axis])
        return fine_err_set(e, "slice %lld outside 0..%lld", (long long)p->index,
                            (long long)g->size[p->fixed_axis] - 1);
    /* one pixel size for every view of the volume: its longest extent over max_px pixels */
    double ext[3], longest = 0;
    for (int a = 0; a < 3; a++) {
        double sp = fabs(g->spacing[a]);
        ext[a] = (sp > 0 && isfinite(sp) ? sp : 1) * (double)g->size[a];
        longest = fmax(longest, ext[a]);
    }
    double px = longest / max_px;
    double w = fmin(fmax(round(ext[p->col_axis] / px), 1), max_px);
    double h = fmin(fmax(round(ext[p->row_axis] / px), 1), max_px);
    p->width = (int)w;
    p->height = (int)h;
    return 0;
}

int64_t fine_foreground_centre(const fine_tensor *lab, int64_t centre[3])
{
    const int64_t *s = lab->shape;
    double sum[3] = {0, 0, 0};
    int64_t n = 0, i = 0;
    for (int64_t z = 0; z < s[0]; z++)
        for (int64_t y = 0; y < s[1]; y++)
            for (int64_t x = 0; x < s[2]; x++, i++) {
                int in = lab->dtype == FINE_U8 ? ((const uint8_t *)lab->data)[i] > 0 : fine_tensor_get(lab, i) > 0;
                if (in) {
                    sum[0] += (double)z, sum[1] += (double)y, sum[2] += (double)x;
                    n++;
                }
            }
    for (int d = 0; d < 3; d++) {
        centre[d] = n ? (int64_t)llround(sum[d] / (double)n) : s[d] / 2;
        if (centre[d] >= s[d])
            centre[d] = s[d] - 1;
        if (centre[d] < 0)
            centre[d] = 0;
    }
    return n;
}

void fine_slice_render(const fine_tensor *img, const fine_tensor *lab, const fine_slice_plan *p, double lo,
                       double hi, double alpha, uint8_t *rgb)
{
    const int64_t *s = img->shape;
    int64_t nc = s[p->col_axis], nr = s[p->row_axis];
    double scale = hi > lo ? 255.0 / (hi - lo) : 0;
    for (int r = 0; r < p->height; r++) {
        int64_t ir = (int64_t)(((double)r + 0.5) * (double)nr / p->height);
        ir = ir >= nr ? nr - 1 : ir;
        if (p->row_flip)
            ir = nr - 1 - ir;
        for (int c = 0; c < p->width; c++) {
            int64_t ic = (int64_t)(((double)c + 0.5) * (double)nc / p->width);
            ic = ic >= nc ? nc - 1 : ic;
            if (p->col_flip)
                ic = nc - 1 - ic;
            int64_t v[3];
            v[p->fixed_axis] = p->index;
            v[p->col_axis] = ic;
            v[p->row_axis] = ir;
            int64_t i = (v[0] * s[1] + v[1]) * s[2] + v[2];
            double x = fine_tensor_get(img, i);
            double gv = isnan(x) ? 0 : (x - lo) * scale;
            gv = gv < 0 ? 0 : gv > 255 ? 255 : gv;
            double out[3] = {gv, gv, gv};
            double l = lab ? fine_tensor_get(lab, i) : 0;
            if (l > 0) {
                uint8_t col[3];
                fine_label_color((int64_t)l, col);
                for (int k = 0; k < 3; k++)
                    out[k] = (1 - alpha) * gv + alpha * col[k];
            }
            uint8_t *o = rgb + ((size_t)r * (size_t)p->width + (size_t)c) * 3;
            for (int k = 0; k < 3; k++)
                o[k] = (uint8_t)lround(out[k]);
        }
    }
}
