// Copies between strided views, for any element size: the one kernel behind Transpose, Slice,
// Expand, Concat, Split, Pad's interior, DepthToSpace and friends. Strides and offsets are
// in elements; a stride of 0 repeats (broadcasts) along that dim.
#pragma once

#include <cstddef>

#include "engine/common.h"

namespace engine {

// dst[sum_d i_d * dst_strides[d]] = src[sum_d i_d * src_strides[d]] for every index i in
// `shape` (ndim <= 16). elem is the element size in bytes (1, 2, 4, 8 or any other). Neighbouring
// dims that are contiguous in both views are merged first, so a plain copy is one memcpy.
void strided_copy(void* dst, const index_t* dst_strides, const void* src, const index_t* src_strides,
                  const index_t* shape, int ndim, size_t elem);

// Fills n elements of `elem` bytes each with the bytes of *value.
void fill(void* dst, const void* value, index_t n, size_t elem);

}  // namespace engine
