/* stream_internal.h: what stream.c and record_build.c share; not installed. */
#ifndef FINE_STREAM_INTERNAL_H
#define FINE_STREAM_INTERNAL_H

#include "stream.h"

/* Packs m into pk; returns 0, or non-zero when the packer's writer failed. */
int fine_map_pack(const fine_map *m, msgpack_packer *pk);
/* 1 when building m (or a nested map) ran out of memory. */
int fine_map_failed(const fine_map *m);

#endif
