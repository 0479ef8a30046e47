// ONNX Conv / ConvTranspose / pools over NCHW tensors (1..3 spatial dims, right-aligned in 3
// slots, see engine/nchw.h), and the float16 <-> float32 conversion the float16 paths of the
// NCHW and linear ops run through. `window` below is 18 ints: in[3], out[3], kernel[3],
// strides[3], dilations[3], pads_begin[3].
//   nchw_conv           (float32, float64): in [x, w, bias or -1], out [y];
//                       ints [N, C, OC, groups, window...]
//   nchw_conv_transpose (float32, float64): in [x, w (C×OC/groups×k), bias or -1], out [y];
//                       ints [N, C, OC, groups, window...] (window.in = x's, window.out = y's)
//   nchw_pool           (float32, float64, int8, uint8; avg/lp float only): in [x],
//                       out [y] or [y, indices (int64)]; ints [kind (0 max, 1 avg, 2 lp),
//                       planes (N·C), window..., pads_end[3], count_include_pad, p, col_major]
//   nchw_global_pool    (float32, float64): in [x], out [y]; ints [is_max, planes, size]
//   nchw_transpose      (any 4-byte type): in [x], out [y]; ints [batch, rows, cols]:
//                       y[b][c][r] = x[b][r][c] (NCHW <-> NHWC around the NHWC conv)
#include <cstdint>
#include <type_traits>

#include "engine/nchw.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

WindowND window_at(const StepSpec& s, size_t at) {
  WindowND g;
  for (int d = 0; d < 3; ++d) {
    g.in[d] = s.i(at + d);
    g.out[d] = s.i(at + 3 + d);
    g.k[d] = s.i(at + 6 + d);
    g.stride[d] = s.i(at + 9 + d);
    g.dil[d] = s.i(at + 12 + d);
    g.pad[d] = s.i(at + 15 + d);
  }
  g.validate(s.name.c_str());
  return g;
}

template <class T>
StepFn conv_like(const StepSpec& s, bool transposed) {
  s.expect(3, 1, 22);
  const index_t N = s.i(0), C = s.i(1), OC = s.i(2), G = s.i(3);
  ENGINE_CHECK(N >= 0 && C >= 0 && OC >= 0 && G >= 1 && C % G == 0 && OC % G == 0,
               s.name + ": bad batch / channel / group sizes");
  const WindowND g = window_at(s, 4);
  const int x = s.in[0], w = s.in[1], b = s.in[2], y = s.out[0];
  ENGINE_CHECK(x >= 0 && w >= 0, s.name + ": x and w are required");
  if (transposed)
    return [=](void* const* sl) {
      conv_transpose_nd<T>(slot<T>(sl, y), slot<const T>(sl, x), slot<const T>(sl, w),
                           b >= 0 ? slot<const T>(sl, b) : nullptr, N, C, OC, G, g);
    };
  return [=](void* const* sl) {
    conv_nd<T>(slot<T>(sl, y), slot<const T>(sl, x), slot<const T>(sl, w), b >= 0 ? slot<const T>(sl, b) : nullptr,
               N, C, OC, G, g);
  };
}

StepFn conv_step(const StepSpec& s) {
  return s.dtype == DType::F64 ? conv_like<double>(s, false) : conv_like<float>(s, false);
}

StepFn conv_transpose_step(const StepSpec& s) {
  return s.dtype == DType::F64 ? conv_like<double>(s, true) : conv_like<float>(s, true);
}

template <class T>
StepFn pool_typed(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 1 && (s.out.size() == 1 || s.out.size() == 2) && s.ints.size() == 26,
               "nchw_pool: expected 1 input, 1 or 2 outputs, 26 ints");
  PoolParams pp;
  const std::int64_t kind = s.i(0);
  ENGINE_CHECK(kind >= 0 && kind <= 2, "nchw_pool: bad kind");
  pp.kind = static_cast<PoolKind>(kind);
  const index_t planes = s.i(1);
  ENGINE_CHECK(planes >= 0, "nchw_pool: negative plane count");
  const WindowND g = window_at(s, 2);
  for (int d = 0; d < 3; ++d) pp.pad_end[d] = s.i(20 + d);
  pp.count_include_pad = s.i(23) != 0;
  ENGINE_CHECK(s.i(24) >= 1 && s.i(24) <= 1 << 20, "nchw_pool: p must be a positive int");
  pp.p = static_cast<int>(s.i(24));
  pp.col_major = s.i(25) != 0;
  ENGINE_CHECK(pp.kind == PoolKind::Max || std::is_floating_point<T>::value,
               "nchw_pool: average and Lp pooling take floating-point tensors only");
  const bool with_indices = s.out.size() == 2;
  ENGINE_CHECK(!with_indices || (pp.kind == PoolKind::Max && s.out_types[1] == DType::I64),
               "nchw_pool: indices are an int64 output of max pooling");
  const int x = s.in[0], y = s.out[0], ix = with_indices ? s.out[1] : -1;
  return [=](void* const* sl) {
    pool_nd<T>(slot<T>(sl, y), ix >= 0 ? slot<std::int64_t>(sl, ix) : nullptr, slot<const T>(sl, x), planes, g, pp);
  };
}

StepFn pool_step(const StepSpec& s) {
  switch (s.dtype) {
    case DType::F64: return pool_typed<double>(s);
    case DType::I8: return pool_typed<std::int8_t>(s);
    case DType::U8: return pool_typed<std::uint8_t>(s);
    default: return pool_typed<float>(s);
  }
}

StepFn global_pool_step(const StepSpec& s) {
  s.expect(1, 1, 3);
  const bool is_max = s.i(0) != 0;
  const index_t planes = s.i(1), size = s.i(2);
  ENGINE_CHECK(planes >= 0 && size >= 1, "nchw_global_pool: bad sizes");
  const int x = s.in[0], y = s.out[0];
  if (s.dtype == DType::F64)
    return [=](void* const* sl) { global_pool<double>(slot<double>(sl, y), slot<const double>(sl, x), planes, size, is_max); };
  return [=](void* const* sl) { global_pool<float>(slot<float>(sl, y), slot<const float>(sl, x), planes, size, is_max); };
}

StepFn transpose_step(const StepSpec& s) {
  s.expect(1, 1, 3);
  const index_t batch = s.i(0), rows = s.i(1), cols = s.i(2);
  ENGINE_CHECK(batch >= 0 && rows >= 0 && cols >= 0, "nchw_transpose: negative size");
  ENGINE_CHECK(dtype_size(s.in_types[0]) == 4 && dtype_size(s.out_types[0]) == 4,
               "nchw_transpose: 4-byte elements only");
  const int x = s.in[0], y = s.out[0];
  return [=](void* const* sl) { transpose32(sl[y], sl[x], batch, rows, cols); };
}

}  // namespace

void register_nchw_steps(KernelRegistry& r) {
  r.add_each("nchw_conv", conv_step, DType::F32, DType::F64);
  r.add_each("nchw_conv_transpose", conv_transpose_step, DType::F32, DType::F64);
  r.add_each("nchw_pool", pool_step, DType::F32, DType::F64, DType::I8, DType::U8);
  r.add_each("nchw_global_pool", global_pool_step, DType::F32, DType::F64);
  r.add("nchw_transpose", DType::Any, transpose_step);
}

}  // namespace engine
