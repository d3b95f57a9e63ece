/* conv_cache.c: see conv_cache.h. A linear search: a network has about ten convolution shapes. */
#include "nn/conv_cache.h"

int fine_conv_shape_equal(const fine_conv3d_shape *a, const fine_conv3d_shape *b)
{
    if (a->B != b->B || a->Cin != b->Cin || a->D != b->D || a->H != b->H || a->W != b->W ||
        a->Cout != b->Cout)
        return 0;
    for (int d = 0; d < 3; d++)
        if (a->k[d] != b->k[d] || a->stride[d] != b->stride[d] || a->pad[d] != b->pad[d])
            return 0;
    return 1;
}

const fine_conv_cache_entry *fine_conv_cache_find(fine_conv_cache *c, const fine_conv3d_shape *s)
{
    for (int i = 0; i < c->n; i++)
        if (fine_conv_shape_equal(&c->e[i].shape, s)) {
            c->hits++;
            return &c->e[i];
        }
    c->misses++;
    return NULL;
}

int fine_conv_cache_put(fine_conv_cache *c, const fine_conv3d_shape *s, const fine_conv_choice dir[3])
{
    int i = 0;
    while (i < c->n && !fine_conv_shape_equal(&c->e[i].shape, s))
        i++;
    if (i == c->n) {
        if (c->n == FINE_CONV_CACHE_MAX)
            return -1;
        c->n++;
    }
    c->e[i].shape = *s;
    for (int d = 0; d < 3; d++)
        c->e[i].dir[d] = dir[d];
    return 0;
}
