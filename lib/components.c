#include "components.h"

#include <stdlib.h>
#include <string.h>

/* Union-find over provisional labels (two-pass labelling). */
typedef struct uf {
    int32_t *parent;
    int64_t n, cap;
} uf;

static int32_t uf_find(uf *u, int32_t a)
{
    while (u->parent[a] != a) {
        u->parent[a] = u->parent[u->parent[a]];
        a = u->parent[a];
    }
    return a;
}

static void uf_union(uf *u, int32_t a, int32_t b)
{
    a = uf_find(u, a);
    b = uf_find(u, b);
    if (a < b)
        u->parent[b] = a;
    else if (b < a)
        u->parent[a] = b;
}

static int32_t uf_new(uf *u)
{
    if (u->n == u->cap) {
        int64_t cap = u->cap ? u->cap * 2 : 1024;
        int32_t *p = realloc(u->parent, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        u->parent = p;
        u->cap = cap;
    }
    u->parent[u->n] = (int32_t)u->n;
    return (int32_t)u->n++;
}

static int joined(const uint8_t *seg, int64_t a, int64_t b, int rule)
{
    return seg[b] != 0 && (rule == FINE_CC_FOREGROUND || seg[a] == seg[b]);
}

int fine_cc_label(const uint8_t *seg, const int64_t dims[3], int rule, int32_t *labels,
                  int64_t *count, int64_t **sizes, fine_err *e)
{
    *count = 0;
    *sizes = NULL;
    int64_t nz = dims[0], ny = dims[1], nx = dims[2], n = nz * ny * nx;
    if (n >= INT32_MAX)
        return fine_err_set(e, "connected components: %lld voxels is too many (at most %d)",
                            (long long)n, INT32_MAX - 1);
    uf u = {0};
    if (uf_new(&u) < 0) /* label 0: background */
        return fine_err_set(e, "out of memory");
    /* First pass: provisional labels from the already visited neighbours -x, -y, -z. */
    for (int64_t z = 0, i = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++)
            for (int64_t x = 0; x < nx; x++, i++) {
                if (!seg[i]) {
                    labels[i] = 0;
                    continue;
                }
                int32_t l = 0;
                int64_t nb[3] = {x > 0 ? i - 1 : -1, y > 0 ? i - nx : -1, z > 0 ? i - nx * ny : -1};
                for (int k = 0; k < 3; k++) {
                    if (nb[k] < 0 || !joined(seg, i, nb[k], rule))
                        continue;
                    if (!l)
                        l = labels[nb[k]];
                    else if (labels[nb[k]] != l)
                        uf_union(&u, l, labels[nb[k]]);
                }
                if (!l && (l = uf_new(&u)) < 0) {
                    free(u.parent);
                    return fine_err_set(e, "out of memory");
                }
                labels[i] = l;
            }
    /* Final ids in raster order of each component's first voxel. */
    int32_t *final = calloc((size_t)u.n, sizeof *final);
    if (!final) {
        free(u.parent);
        return fine_err_set(e, "out of memory");
    }
    int64_t next = 0, cap = 1024;
    int64_t *sz = calloc((size_t)cap, sizeof *sz);
    if (!sz) {
        free(final);
        free(u.parent);
        return fine_err_set(e, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) {
        if (!labels[i])
            continue;
        int32_t r = uf_find(&u, labels[i]);
        if (!final[r]) {
            final[r] = (int32_t)++next;
            if (next >= cap) {
                int64_t *s2 = realloc(sz, (size_t)cap * 2 * sizeof *sz);
                if (!s2) {
                    free(sz);
                    free(final);
                    free(u.parent);
                    return fine_err_set(e, "out of memory");
                }
                memset(s2 + cap, 0, (size_t)cap * sizeof *sz);
                sz = s2;
                cap *= 2;
            }
        }
        labels[i] = final[r];
        sz[final[r]]++;
    }
    free(final);
    free(u.parent);
    *count = next;
    *sizes = sz;
    return 0;
}

/* Removes the components of `labels` that are not the largest of their group, where the
 * group of a component is group_of(its first voxel's value) (per class, or one group). */
static int keep_largest(uint8_t *seg, const int64_t dims[3], int rule, const uint8_t *keep,
                        int64_t *removed, fine_err *e)
{
    int64_t n = dims[0] * dims[1] * dims[2], count, *sizes;
    if (removed)
        *removed = 0;
    int32_t *labels = malloc((size_t)(n > 0 ? n : 1) * sizeof *labels);
    if (!labels)
        return fine_err_set(e, "out of memory (component labels of %lld voxels)", (long long)n);
    if (fine_cc_label(seg, dims, rule, labels, &count, &sizes, e) < 0) {
        free(labels);
        return -1;
    }
    /* group: the class (by value) or 1 (foreground); the largest size per group */
    uint8_t *group = calloc((size_t)count + 1, 1);
    int64_t best[256] = {0};
    if (!group) {
        free(sizes);
        free(labels);
        return fine_err_set(e, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) {
        int32_t l = labels[i];
        if (l && !group[l]) {
            group[l] = rule == FINE_CC_BY_VALUE ? seg[i] : 1;
            if (sizes[l] > best[group[l]])
                best[group[l]] = sizes[l];
        }
    }
    int64_t nrem = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t l = labels[i];
        if (!l || sizes[l] == best[group[l]])
            continue;
        if (rule == FINE_CC_BY_VALUE && keep && !keep[group[l]])
            continue;
        seg[i] = 0;
        nrem++;
    }
    free(group);
    free(sizes);
    free(labels);
    if (removed)
        *removed = nrem;
    return 0;
}

int fine_cc_keep_largest_per_class(uint8_t *seg, const int64_t dims[3], const uint8_t *keep,
                                   int64_t *removed, fine_err *e)
{
    return keep_largest(seg, dims, FINE_CC_BY_VALUE, keep, removed, e);
}

int fine_cc_keep_largest_foreground(uint8_t *seg, const int64_t dims[3], int64_t *removed,
                                    fine_err *e)
{
    return keep_largest(seg, dims, FINE_CC_FOREGROUND, NULL, removed, e);
}
