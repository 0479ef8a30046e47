// Data movement that is not a plain strided copy: Pad (constant/reflect/edge/wrap), Trilu,
// OneHot, Range. Copies between strided views are in engine/copy.h.
#pragma once

#include <cstddef>
#include <vector>

#include "engine/common.h"
#include "engine/dtype.h"

namespace engine {

// Where each output element of a padded tensor comes from, decided once per shape:
// src[d][i] is the input index along dim d of output index i, or -1 for the pad value.
// The last dim is kept as runs (a reflected border is a run with step -1, an edge one a
// run with step 0), so each output row is a few memcpy/fill calls.
struct PadLayout {
  struct Run {
    index_t dst, len, src, step;  // src < 0: the pad value
  };
  std::vector<index_t> out_shape, x_strides;   // x_strides in elements
  std::vector<std::vector<index_t>> src;       // outer dims (all but the last)
  std::vector<Run> runs;                       // the last dim
};

// out_shape/x_shape have ndim >= 1 dims; tables holds out_shape[d] source indices per dim,
// one dim after the other. Throws engine::Error if a table entry is out of range.
PadLayout pad_layout(int ndim, const index_t* out_shape, const index_t* x_shape, const index_t* tables);

// y = pad(x) as described by `p`; value points at one element (the constant).
void pad(void* y, const void* x, const void* value, const PadLayout& p, size_t elem);

// y = x with the elements outside the band zeroed, per matrix [rows, cols] of `batch`:
// upper keeps j - i >= k, lower keeps j - i <= k. y may be x.
void trilu(void* y, const void* x, index_t batch, index_t rows, index_t cols, index_t k, bool upper, size_t elem);

// y[o, d, i] = values[1] if idx[o, i] (negative: + depth) == d else values[0];
// y: [outer, depth, inner]. Indices of any numeric type (floats are truncated).
void onehot(void* y, const void* idx, DType idx_type, const void* values, index_t outer, index_t depth,
            index_t inner, size_t elem);

// y[i] = start + i * delta, i < n, with start/delta of `type` (float16 computed in float32,
// or float64 with stash_double; float32 in float64; integers exactly).
void range(void* y, DType type, const void* start, const void* delta, index_t n, bool stash_double);

// Whether range() takes `type`.
bool range_supports(DType type);

}  // namespace engine
