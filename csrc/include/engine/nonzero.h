// Indices of the non-zero elements (ONNX NonZero): the only kernel here whose output size
// depends on the data, so it is called in two steps: count, then fill an exactly-sized output.
#pragma once

#include "engine/common.h"
#include "engine/dtype.h"

namespace engine {

// Number of elements of x (n of them, element type t) that are not zero (NaN counts as non-zero).
index_t nonzero_count(const void* x, index_t n, DType t);

// out (ndim × count, row-major int64): the coordinates of each non-zero element of x (shape
// `shape`, ndim dims), in row-major order of x.
void nonzero_indices(std::int64_t* out, index_t count, const void* x, const index_t* shape, int ndim, DType t);

}  // namespace engine
