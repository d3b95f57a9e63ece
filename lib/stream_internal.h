/* stream_internal.h: what stream.c and record_build.c share; not installed. */
#ifndef FINE_STREAM_INTERNAL_H
#define FINE_STREAM_INTERNAL_H

#include "stream.h"

/* Packs m as one msgpack map through fn(data, bytes, len), with bin data aligned to 64 bytes
 * from the start of the map; returns 0, or non-zero when fn failed. */
int fine_map_pack(const fine_map *m, msgpack_packer_write fn, void *data);
/* 1 when building m (or a nested map) ran out of memory. */
int fine_map_failed(const fine_map *m);

#endif
