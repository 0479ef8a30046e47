// Resize kernels. The planner precomputes, per output index along each resized axis, the
// source indices and weights (they depend only on shapes and attributes), so a resize is a
// gather (nearest) or a separable gather-and-blend pass per axis (linear, cubic, antialias).
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/common.h"
#include "engine/dtype.h"

namespace engine {

// Nearest: y[o_0, ..., o_{nd-1}, b] = x[off_0[o_0] + ... + off_{nd-1}[o_{nd-1}] + b] for
// b < block (offsets in elements), or *fill where any of those offsets is negative
// (tf_crop_and_resize's extrapolation). tables[d] holds out_shape[d] offsets. Any type.
void resize_nearest(void* y, const void* x, const void* fill, const std::int64_t* const* tables,
                    const index_t* out_shape, int nd, index_t block, size_t elem);

// One axis of a separable resize: x is [outer, in_len, inner], y is [outer, out_len, inner],
//   y[o, j, i] = sum_t w[t·out_len + j] · x[o, idx[t·out_len + j], i]   (t < taps)
// or `fill` where flags[j] != 0 (flags may be null). Weights are `Acc` (resize_acc_type of
// the element type); x and y are each either the element type or Acc, so a multi-axis
// resize keeps its intermediates in Acc and rounds once (integers: half to even, saturated).
struct ResizeAxis {
  index_t outer = 0, in_len = 0, out_len = 0, inner = 0, taps = 0;
  const std::int32_t* idx = nullptr;  // int32: the compilers vectorise gathers on it
  const void* w = nullptr;
  const std::uint8_t* flags = nullptr;
  double fill = 0.0;
};

// float64 for float64 and the 32/64-bit integers, float32 otherwise.
inline DType resize_acc_type(DType t) {
  switch (t) {
    case DType::F64: case DType::I32: case DType::U32: case DType::I64: case DType::U64:
      return DType::F64;
    default:
      return DType::F32;
  }
}

// The last two axes at once (the NCHW image case): x [h.outer, h.in_len, w.in_len] ->
// y [h.outer, h.out_len, w.out_len], element type in and out; h.flags / w.flags mark
// extrapolated rows / columns. Needs h.taps <= resize_2d_max_taps().
void resize_2d(void* y, const void* x, DType elem, const ResizeAxis& h, const ResizeAxis& w);
index_t resize_2d_max_taps();

// Whether resize_axis takes this element type (numeric, not bfloat16).
bool resize_axis_supports(DType t);

void resize_axis(void* y, DType ty, const void* x, DType tx, DType elem, const ResizeAxis& a);

}  // namespace engine
