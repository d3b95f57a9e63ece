/* png_write.h: an 8-bit RGB image -> the bytes of a PNG file, in memory, through libpng
 * (Debian libpng-dev; link with `pkg-config --libs libpng`). Used by fine-report to embed slices
 * in an HTML page as data: URIs. No state, no threads. */
#ifndef FINE_PNG_WRITE_H
#define FINE_PNG_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Encodes rgb (height rows of width pixels, 3 bytes per pixel R, G, B, no row padding) as a
 * non-interlaced 8-bit truecolour PNG. width and height: 1 to 65535. On success *out is a
 * malloc'ed buffer of *n bytes (the caller frees it) and 0 is returned; on failure -1 with e set
 * (bad size, out of memory, a libpng error) and *out NULL. */
int fine_png_encode_rgb(const uint8_t *rgb, int width, int height, uint8_t **out, size_t *n, fine_err *e);

#endif
