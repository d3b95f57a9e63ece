#include "geometry.h"

#include <math.h>
#include <string.h>

void fine_geometry_init(fine_geometry *g, const int64_t size[3], const double spacing[3])
{
    memset(g, 0, sizeof *g);
    for (int d = 0; d < 3; d++) {
        g->size[d] = g->original_size[d] = g->crop_hi[d] = size[d];
        g->spacing[d] = g->original_spacing[d] = spacing[d];
    }
    g->qfac = 1;
    g->pixdim[0] = 1;
    g->pixdim[1] = spacing[2];
    g->pixdim[2] = spacing[1];
    g->pixdim[3] = spacing[0];
    g->srow[0][0] = spacing[2];
    g->srow[1][1] = spacing[1];
    g->srow[2][2] = spacing[0];
}

/* NIfTI-1 standard: quaternion (b, c, d) with a = sqrt(1 - b^2 - c^2 - d^2). */
static void quatern_affine(const fine_geometry *g, double m[4][4])
{
    double b = g->quatern[0], c = g->quatern[1], d = g->quatern[2];
    double a = 1.0 - (b * b + c * c + d * d);
    if (a < 1e-7) { /* 180 degree rotation: renormalise (b, c, d), a = 0 */
        a = 1.0 / sqrt(b * b + c * c + d * d);
        b *= a;
        c *= a;
        d *= a;
        a = 0.0;
    } else {
        a = sqrt(a);
    }
    double xd = g->pixdim[1] > 0 ? g->pixdim[1] : 1.0;
    double yd = g->pixdim[2] > 0 ? g->pixdim[2] : 1.0;
    double zd = g->pixdim[3] > 0 ? g->pixdim[3] : 1.0;
    if (g->qfac < 0)
        zd = -zd;
    double r[3][3] = {
        {a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
        {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
        {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b},
    };
    double s[3] = {xd, yd, zd};
    memset(m, 0, 16 * sizeof(double));
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++)
            m[i][j] = r[i][j] * s[j];
        m[i][3] = g->qoffset[i];
    }
    m[3][3] = 1;
}

void fine_geometry_original_affine(const fine_geometry *g, double a[4][4])
{
    memset(a, 0, 16 * sizeof(double));
    if (g->sform_code > 0) {
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                a[i][j] = g->srow[i][j];
        a[3][3] = 1;
    } else if (g->qform_code > 0) {
        quatern_affine(g, a);
    } else {
        /* pixdim of a NIfTI header; a geometry without one (nifti_version 0, pixdim all 0)
         * has its spacing in original_spacing (z, y, x) */
        for (int i = 0; i < 3; i++)
            a[i][i] = g->pixdim[i + 1] > 0           ? g->pixdim[i + 1]
                      : g->original_spacing[2 - i] > 0 ? g->original_spacing[2 - i]
                                                       : 1.0;
        a[3][3] = 1;
    }
}

void fine_geometry_current_affine(const fine_geometry *g, double a[4][4])
{
    double o[4][4];
    fine_geometry_original_affine(g, o);
    /* Current voxel (i, j, k) -> original voxel: per NIfTI axis n (array axis 2 - n). */
    double scale[3], shift[3];
    for (int n = 0; n < 3; n++) {
        int d = 2 - n;
        double extent = (double)(g->crop_hi[d] - g->crop_lo[d]);
        double f = g->size[d] > 0 ? extent / (double)g->size[d] : 1.0;
        scale[n] = f;
        shift[n] = (double)g->crop_lo[d] + 0.5 * f - 0.5;
    }
    memset(a, 0, 16 * sizeof(double));
    for (int r = 0; r < 3; r++) {
        for (int n = 0; n < 3; n++)
            a[r][n] = o[r][n] * scale[n];
        a[r][3] = o[r][3];
        for (int n = 0; n < 3; n++)
            a[r][3] += o[r][n] * shift[n];
    }
    a[3][3] = 1;
}
