#include "volume_check.h"

#include <math.h>
#include <stdint.h>

int fine_check_image(const fine_tensor *img, const char *case_id, fine_err *e)
{
    if (img->ndim < 3 || fine_tensor_numel(img) == 0)
        return fine_err_set(e, "case %s: the image is empty (%d dimensions, %lld voxels)", case_id, img->ndim,
                            (long long)(img->ndim ? fine_tensor_numel(img) : 0));
    int64_t bad = fine_tensor_first_nonfinite(img);
    if (bad >= 0) {
        const int64_t *s = img->shape + img->ndim - 3;
        int64_t v = bad % (s[0] * s[1] * s[2]);
        return fine_err_set(e, "case %s: the image has %s intensity at voxel (%lld, %lld, %lld) (z, y, x)", case_id,
                            isnan(fine_tensor_get(img, bad)) ? "a NaN" : "an infinite", (long long)(v / (s[1] * s[2])),
                            (long long)(v / s[2] % s[1]), (long long)(v % s[2]));
    }
    return 0;
}

int fine_check_label(const fine_tensor *lab, int max_label, const char *case_id, fine_err *e)
{
    if (!fine_dtype_is_int(lab->dtype))
        return fine_err_set(e, "case %s: the label is %s; labels are integers", case_id, fine_dtype_name(lab->dtype));
    int64_t n = fine_tensor_numel(lab);
    if (lab->dtype == FINE_U8) { /* the common case, without a call per voxel */
        const uint8_t *p = lab->data;
        for (int64_t i = 0; i < n; i++)
            if (p[i] > max_label)
                return fine_err_set(e, "case %s: label value %d outside 0..%d", case_id, p[i], max_label);
        return 0;
    }
    for (int64_t i = 0; i < n; i++) {
        double v = fine_tensor_get(lab, i);
        if (v < 0 || v > max_label)
            return fine_err_set(e, "case %s: label value %.0f outside 0..%d", case_id, v, max_label);
    }
    return 0;
}

int fine_check_same_shape(const fine_tensor *img, const fine_tensor *lab, const char *case_id, fine_err *e)
{
    const int64_t *a = img->shape + (img->ndim >= 3 ? img->ndim - 3 : 0), *b = lab->shape;
    if (img->ndim < 3 || lab->ndim != 3 || a[0] != b[0] || a[1] != b[1] || a[2] != b[2])
        return fine_err_set(e, "case %s: label shape %lldx%lldx%lld differs from image shape %lldx%lldx%lld", case_id,
                            (long long)(lab->ndim > 0 ? b[0] : 0), (long long)(lab->ndim > 1 ? b[1] : 0),
                            (long long)(lab->ndim > 2 ? b[2] : 0), (long long)(img->ndim >= 3 ? a[0] : 0),
                            (long long)(img->ndim >= 3 ? a[1] : 0), (long long)(img->ndim >= 3 ? a[2] : 0));
    return 0;
}

int fine_check_same_spacing(const double img[3], const double lab[3], const char *case_id, fine_err *e)
{
    for (int d = 0; d < 3; d++)
        if (fabs(img[d] - lab[d]) > 1e-5 * fmax(fabs(img[d]), fabs(lab[d])))
            return fine_err_set(e, "case %s: label spacing %gx%gx%g differs from image spacing %gx%gx%g", case_id,
                                lab[0], lab[1], lab[2], img[0], img[1], img[2]);
    return 0;
}
