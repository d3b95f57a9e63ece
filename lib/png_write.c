/* png_write.c: RGB -> PNG bytes in memory with libpng (png_write.h).
 *
 * libpng reports errors by longjmp to the setjmp in fine_png_encode_rgb; its message is kept in
 * the encoder's context. Everything touched after setjmp lives in that context (memory, not
 * registers), so it is valid after the jump. */
#include "png_write.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct png_sink {
    uint8_t *data;
    size_t len, cap;
    int oom;
    char msg[200];
} png_sink;

static void sink_write(png_structp png, png_bytep p, png_size_t n)
{
    png_sink *s = png_get_io_ptr(png);
    if (s->oom)
        return;
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n)
            cap *= 2;
        uint8_t *d = realloc(s->data, cap);
        if (!d) {
            s->oom = 1;
            png_error(png, "out of memory");
        }
        s->data = d;
        s->cap = cap;
    }
    memcpy(s->data + s->len, p, n);
    s->len += n;
}

static void sink_flush(png_structp png)
{
    (void)png;
}

static void on_error(png_structp png, png_const_charp msg)
{
    png_sink *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png, (void)msg; /* warnings are not errors; nothing is printed from the library */
}

int fine_png_encode_rgb(const uint8_t *rgb, int width, int height, uint8_t **out, size_t *n, fine_err *e)
{
    *out = NULL;
    *n = 0;
    if (width < 1 || height < 1 || width > 65535 || height > 65535)
        return fine_err_set(e, "PNG: image size %dx%d out of range (1 to 65535)", width, height);
    png_sink *s = calloc(1, sizeof *s);
    png_bytep *rows = malloc((size_t)height * sizeof *rows);
    if (!s || !rows) {
        free(s);
        free(rows);
        return fine_err_set(e, "PNG: out of memory");
    }
    for (int y = 0; y < height; y++)
        rows[y] = (png_bytep)(rgb + (size_t)y * (size_t)width * 3);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, s, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        free(s);
        free(rows);
        return fine_err_set(e, "PNG: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        fine_err_set(e, "PNG: %s", s->oom ? "out of memory" : s->msg);
        png_destroy_write_struct(&png, &info);
        free(s->data);
        free(s);
        free(rows);
        return -1;
    }
    png_set_write_fn(png, s, sink_write, sink_flush);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_rows(png, info, rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    png_destroy_write_struct(&png, &info);
    *out = s->data;
    *n = s->len;
    free(s);
    free(rows);
    return 0;
}
