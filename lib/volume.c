#include "volume.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void fine_volume_free(fine_volume *v)
{
    fine_tensor_free(&v->data);
    memset(v, 0, sizeof *v);
}

void fine_case_id_from_path(const char *path, char *out, size_t cap)
{
    if (cap == 0)
        return;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    static const char *const ext[] = {".nii.gz", ".nii", ".fst"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t m = strlen(ext[i]);
        if (n > m && strcasecmp(base + n - m, ext[i]) == 0) {
            n -= m;
            break;
        }
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(out, base, n);
    out[n] = 0;
}

int fine_volume_name_is_integral(const char *name)
{
    return strcmp(name, "label") == 0 || strcmp(name, "seg") == 0;
}

int fine_label_dtype(const fine_tensor *t, fine_dtype *dt, fine_err *e)
{
    int64_t numel = fine_tensor_numel(t);
    double lo = 0, hi = 0;
    for (int64_t i = 0; i < numel; i++) {
        double v = fine_tensor_get(t, i);
        if (!isfinite(v) || v != floor(v))
            return fine_err_set(e, "label value %g at index %lld is not an integer", v, (long long)i);
        if (v < -2147483648.0 || v > 2147483647.0)
            return fine_err_set(e, "label value %.0f at index %lld does not fit i32", v, (long long)i);
        if (i == 0 || v < lo)
            lo = v;
        if (i == 0 || v > hi)
            hi = v;
    }
    if (lo >= 0 && hi <= 255)
        *dt = FINE_U8;
    else if (lo >= -32768 && hi <= 32767)
        *dt = FINE_I16;
    else
        *dt = FINE_I32;
    return 0;
}

int fine_tensor_fits(const fine_tensor *t, fine_dtype dt)
{
    if (!fine_dtype_is_int(dt))
        return 1;
    double lo, hi;
    switch (dt) {
    case FINE_U8: lo = 0, hi = 255; break;
    case FINE_I8: lo = -128, hi = 127; break;
    case FINE_I16: lo = -32768, hi = 32767; break;
    case FINE_U16: lo = 0, hi = 65535; break;
    case FINE_I32: lo = -2147483648.0, hi = 2147483647.0; break;
    default: lo = -9223372036854775808.0, hi = 9223372036854775807.0; break;
    }
    if (t->dtype == FINE_I64 && dt == FINE_I64)
        return 1;
    int64_t numel = fine_tensor_numel(t);
    for (int64_t i = 0; i < numel; i++) {
        double v = fine_tensor_get(t, i);
        /* hi of i64 rounds up to 2^63 as a double, so its bound is exclusive */
        if (!isfinite(v) || v != floor(v) || v < lo || v > hi || (dt == FINE_I64 && v >= hi))
            return 0;
    }
    return 1;
}

fine_map *fine_volume_record(const fine_volume *v)
{
    fine_map *m = fine_map_new("volume");
    if (!m)
        return NULL;
    fine_map_str(m, "case", v->case_id);
    fine_map_str(m, "name", v->name);
    fine_map_tensor_fields(m, &v->data);
    fine_map_geometry(m, &v->geom);
    return m;
}

int fine_volume_from_record(const fine_record *r, fine_volume *v, fine_err *e)
{
    memset(v, 0, sizeof *v);
    if (strcmp(r->type, "volume") != 0)
        return fine_err_set(e, "expected a volume record, got '%s'", r->type);
    if (fine_record_str(r, "case", v->case_id, sizeof v->case_id, e) < 0 ||
        fine_record_str(r, "name", v->name, sizeof v->name, e) < 0)
        return -1;
    if (fine_record_tensor(r, NULL, &v->data, e) < 0 || fine_record_geometry(r, &v->geom, e) < 0) {
        fine_err_prefix(e, v->case_id);
        fine_volume_free(v);
        return -1;
    }
    for (int d = 0; d < 3; d++) {
        if (v->data.ndim < 3 || v->data.shape[v->data.ndim - 3 + d] != v->geom.size[d]) {
            fine_err_set(e, "case %s: %s shape does not end in the geometry's size %lldx%lldx%lld", v->case_id,
                         v->name, (long long)v->geom.size[0], (long long)v->geom.size[1],
                         (long long)v->geom.size[2]);
            fine_volume_free(v);
            return -1;
        }
    }
    return 0;
}

int fine_volume_set_dtype(fine_volume *v, fine_dtype dt, fine_err *e)
{
    if (fine_dtype_size(dt) == 0)
        return fine_err_set(e, "invalid dtype %d", (int)dt);
    if (v->data.dtype == dt)
        return 0;
    if (fine_volume_name_is_integral(v->name)) {
        if (!fine_dtype_is_int(dt))
            return fine_err_set(e, "a %s must have an integer dtype, not %s", v->name, fine_dtype_name(dt));
        if (!fine_tensor_fits(&v->data, dt))
            return fine_err_set(e, "%s values do not fit %s exactly", v->name, fine_dtype_name(dt));
    }
    fine_tensor out;
    if (fine_tensor_convert(&v->data, dt, &out, e) < 0)
        return -1;
    fine_tensor_free(&v->data);
    v->data = out;
    return 0;
}

int fine_volume_from_nifti(const char *path, const char *case_id, const char *name, int dtype,
                           fine_volume *v, fine_err *e)
{
    memset(v, 0, sizeof *v);
    if (fine_nifti_read(path, &v->data, &v->geom, e) < 0)
        return -1;
    snprintf(v->case_id, sizeof v->case_id, "%s", case_id);
    snprintf(v->name, sizeof v->name, "%s", name);
    fine_dtype dt = (fine_dtype)dtype;
    if (dtype < 0 && fine_volume_name_is_integral(name) && fine_label_dtype(&v->data, &dt, e) < 0)
        goto fail;
    if ((dtype >= 0 || fine_volume_name_is_integral(name)) && fine_volume_set_dtype(v, dt, e) < 0)
        goto fail;
    return 0;
fail:
    fine_err_prefix(e, path);
    fine_volume_free(v);
    return -1;
}

int fine_volume_record_matches(const fine_record *r, const char *case_id, const char *name)
{
    if (strcmp(r->type, "volume") != 0)
        return 0;
    char buf[FINE_CASE_MAX];
    if (case_id && case_id[0] &&
        (fine_record_str(r, "case", buf, sizeof buf, NULL) < 0 || strcmp(buf, case_id) != 0))
        return 0;
    if (name && name[0] && (fine_record_str(r, "name", buf, sizeof buf, NULL) < 0 || strcmp(buf, name) != 0))
        return 0;
    return 1;
}
