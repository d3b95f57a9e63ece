/* tensor.h: dtype, shape and data of an n-dimensional array, row-major (C order),
 * little-endian in memory (the library refuses to build on big-endian hosts). */
#ifndef FINE_TENSOR_H
#define FINE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fine assumes a little-endian host (the stream format is little-endian)"
#endif

typedef enum fine_dtype {
    FINE_U8,
    FINE_I8,
    FINE_I16,
    FINE_U16,
    FINE_I32,
    FINE_I64,
    FINE_F16,
    FINE_F32,
    FINE_F64,
    FINE_DTYPE_COUNT
} fine_dtype;

#define FINE_MAX_DIMS 8

typedef struct fine_tensor {
    fine_dtype dtype;
    int ndim;
    int64_t shape[FINE_MAX_DIMS];
    void *data;     /* numel * dtype size bytes, aligned to 64 when allocated here */
    int owns_data;  /* 1 when fine_tensor_free must free data */
} fine_tensor;

/* Bytes per element; 0 for an invalid dtype. */
size_t fine_dtype_size(fine_dtype dt);
/* The wire name: "u8" "i8" "i16" "u16" "i32" "i64" "f16" "f32" "f64". */
const char *fine_dtype_name(fine_dtype dt);
/* Parses a wire name; returns 0 and sets *dt, or -1 when unknown. */
int fine_dtype_parse(const char *name, fine_dtype *dt);
/* 1 for the integer dtypes. */
int fine_dtype_is_int(fine_dtype dt);

/* Product of the shape (1 for ndim 0). */
int64_t fine_tensor_numel(const fine_tensor *t);
size_t fine_tensor_nbytes(const fine_tensor *t);

/* Allocates zeroed data for dtype and shape; t->owns_data = 1. Returns 0 or -1 with e set. */
int fine_tensor_alloc(fine_tensor *t, fine_dtype dt, int ndim, const int64_t *shape, fine_err *e);
/* Frees owned data and zeroes the struct. Safe on a zeroed struct. */
void fine_tensor_free(fine_tensor *t);

/* Element i as a double (any dtype). */
double fine_tensor_get(const fine_tensor *t, int64_t i);
/* Index of the first NaN or infinite value of a float tensor (f16, f32, f64), or -1 (integer
 * tensors: -1). */
int64_t fine_tensor_first_nonfinite(const fine_tensor *t);
/* Stores v into element i, rounding to nearest and saturating for integer dtypes. */
void fine_tensor_set(fine_tensor *t, int64_t i, double v);

/* New tensor dst (allocated) holding src converted to dtype `to` (rounding and saturating
 * into integer dtypes, IEEE round-to-nearest-even into f16). Returns 0 or -1. */
int fine_tensor_convert(const fine_tensor *src, fine_dtype to, fine_tensor *dst, fine_err *e);

/* Minimum and maximum over all elements (NaNs ignored; both NaN when none is finite). */
void fine_tensor_range(const fine_tensor *t, double *min, double *max);

/* IEEE 754 binary16 <-> binary32, round to nearest even, with subnormals, inf and NaN. */
float fine_f16_to_f32(uint16_t h);
uint16_t fine_f32_to_f16(float f);

#ifdef __cplusplus
}
#endif

#endif
