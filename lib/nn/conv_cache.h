/* conv_cache.h: the per-shape cache of convolution algorithms a GPU backend chose (cuDNN's
 * heuristics are asked once per shape and direction, not per call). Plain C with no CUDA types
 * so that it builds and is tested everywhere. */
#ifndef FINE_NN_CONV_CACHE_H
#define FINE_NN_CONV_CACHE_H

#include <stddef.h>

#include "nn/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FINE_CONV_CACHE_MAX 64

enum { FINE_CONV_FWD = 0, FINE_CONV_BWD_DATA = 1, FINE_CONV_BWD_FILTER = 2 };

typedef struct fine_conv_choice {
    int algo;             /* the backend's algorithm number */
    size_t workspace;     /* bytes of work space it needs */
} fine_conv_choice;

typedef struct fine_conv_cache_entry {
    fine_conv3d_shape shape;
    fine_conv_choice dir[3]; /* FINE_CONV_FWD, _BWD_DATA, _BWD_FILTER */
} fine_conv_cache_entry;

typedef struct fine_conv_cache {
    fine_conv_cache_entry e[FINE_CONV_CACHE_MAX];
    int n;
    long hits, misses;
} fine_conv_cache;

/* The entry of shape s, or NULL (counts a hit or a miss). */
const fine_conv_cache_entry *fine_conv_cache_find(fine_conv_cache *c, const fine_conv3d_shape *s);
/* Stores the choices for s (replacing an entry of the same shape); -1 when the cache is full. */
int fine_conv_cache_put(fine_conv_cache *c, const fine_conv3d_shape *s, const fine_conv_choice dir[3]);
/* 1 when a and b describe the same convolution (every field compared, padding bytes ignored). */
int fine_conv_shape_equal(const fine_conv3d_shape *a, const fine_conv3d_shape *b);

#ifdef __cplusplus
}
#endif

#endif
