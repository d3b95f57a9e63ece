/* json.c: a growing text buffer (HTML escaping, base64) and a small strict JSON reader (json.h). */
#include "json.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
