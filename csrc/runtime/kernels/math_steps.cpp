// Math family steps: unary math and activations, typed broadcasting binary / comparison /
// logic ops, Clip, Where and Cast, for every element type (kernels in csrc/cpu/math_*.cpp).
// All are registered for DType::Any and read their element types from the spec.
//   math_unary:  in [x], out [y]; ints [n, op (UnaryOp)]; floats [alpha, beta]
//   math_binary: in [a, b], out [y]; ints [op (MathBinaryOp), ndim, out_shape...,
//                a_strides..., b_strides...] (element strides, 0 on broadcast dims)
//   math_clip:   in [x, lo (one element, optional), hi (optional)], out [y]; ints [n]
//   math_where:  in [cond (bool), x, y], out [out]; ints [ndim, out_shape..., cond_strides...,
//                x_strides..., y_strides...]
//   math_cast:   in [x], out [y]; ints [n]
#include <algorithm>
#include <string>
#include <vector>

#include "engine/math.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

constexpr index_t kGrainCheap = 1 << 16;  // elements below which work stays on the caller
constexpr index_t kGrainHeavy = 1 << 13;  // libm calls, transcendentals

std::string type_error(const char* op, DType t) { return std::string(op) + ": unsupported element type " + dtype_name(t); }

StepFn unary_step(const StepSpec& s) {
  s.expect(1, 1, 2, 2);
  const index_t n = s.i(0);
  const std::int64_t code = s.i(1);
  ENGINE_CHECK(n >= 0, "math_unary: n < 0");
  ENGINE_CHECK(code >= 0 && code < static_cast<std::int64_t>(UnaryOp::Count), "math_unary: bad op code");
  const UnaryOp op = static_cast<UnaryOp>(code);
  DType out_type = DType::Any;
  const UnaryFn fn = unary_kernel(op, s.in_types[0], &out_type);
  ENGINE_CHECK(fn != nullptr, "math_unary: op " + std::to_string(code) + " is not defined for " +
                                  dtype_name(s.in_types[0]));
  ENGINE_CHECK(s.out_types[0] == out_type, "math_unary: output must be " + std::string(dtype_name(out_type)));
  const size_t ei = dtype_size(s.in_types[0]), eo = dtype_size(out_type);
  const float a = static_cast<float>(s.f(0)), b = static_cast<float>(s.f(1));
  const index_t grain = unary_heavy(op) ? kGrainHeavy : kGrainCheap;
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) {
    char* y = static_cast<char*>(sl[out]);
    const char* x = static_cast<const char*>(sl[in]);
    for_each_block(n, grain, [&](index_t i0, index_t i1) { fn(y + i0 * eo, x + i0 * ei, i1 - i0, a, b); });
  };
}

bool is_integer(DType t) {
  switch (t) {
    case DType::I8: case DType::I16: case DType::I32: case DType::I64:
    case DType::U8: case DType::U16: case DType::U32: case DType::U64: return true;
    default: return false;
  }
}

// Element strides (0 on broadcast dims) and the output shape, checked: `count` ints each.
std::vector<index_t> dims(const StepSpec& s, size_t from, size_t count) {
  return std::vector<index_t>(s.ints.begin() + static_cast<std::ptrdiff_t>(from),
                              s.ints.begin() + static_cast<std::ptrdiff_t>(from + count));
}

// Elements of an input that its strides reach: the product of the dims it is not broadcast on.
index_t reached(const std::vector<index_t>& shape, const std::vector<index_t>& strides) {
  index_t n = 1;
  for (size_t d = 0; d < shape.size(); ++d)
    if (strides[d] != 0) n *= shape[d];
  return n;
}

template <class T>
bool has_zero(const void* p, index_t n) {
  const T* v = static_cast<const T*>(p);
  bool z = false;
  for (index_t i = 0; i < n; ++i) z |= v[i] == 0;
  return z;
}

bool has_zero_int(DType t, const void* p, index_t n) {
  switch (dtype_size(t)) {
    case 1: return has_zero<std::uint8_t>(p, n);
    case 2: return has_zero<std::uint16_t>(p, n);
    case 4: return has_zero<std::uint32_t>(p, n);
    default: return has_zero<std::uint64_t>(p, n);
  }
}

StepFn binary_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 2 && s.out.size() == 1 && s.ints.size() >= 2, "math_binary: bad arguments");
  const std::int64_t code = s.i(0), nd = s.i(1);
  ENGINE_CHECK(code >= 0 && code < static_cast<std::int64_t>(MathBinaryOp::Count), "math_binary: bad op code");
  ENGINE_CHECK(nd >= 0 && nd <= 64 && s.ints.size() == static_cast<size_t>(2 + 3 * nd),
               "math_binary: expected 2 + 3*ndim ints");
  const MathBinaryOp op = static_cast<MathBinaryOp>(code);
  const DType t = s.in_types[0];
  ENGINE_CHECK(s.in_types[1] == t, std::string("math_binary: operand types differ (") + dtype_name(t) + ", " +
                                       dtype_name(s.in_types[1]) + ")");
  DType out_type = DType::Any;
  const BinaryRowFn fn = binary_kernel(op, t, &out_type);
  ENGINE_CHECK(fn != nullptr, "math_binary: op " + std::to_string(code) + " is not defined for " + dtype_name(t));
  ENGINE_CHECK(s.out_types[0] == out_type, "math_binary: output must be " + std::string(dtype_name(out_type)));
  const auto shape = dims(s, 2, nd), as = dims(s, 2 + nd, nd), bs = dims(s, 2 + 2 * nd, nd);
  const index_t* strides[2] = {as.data(), bs.data()};
  const Broadcast bc = make_broadcast(2, static_cast<int>(nd), shape.data(), strides);
  // Integer division by zero would trap: the divisor is checked first, on the calling thread.
  const bool check_zero = is_integer(t) && (op == MathBinaryOp::Div || op == MathBinaryOp::Mod ||
                                            op == MathBinaryOp::FMod);
  const index_t b_count = bc.total == 0 ? 0 : reached(shape, bs);
  const size_t e = dtype_size(t), eo = dtype_size(out_type);
  const index_t grain = binary_heavy(op) ? kGrainHeavy : kGrainCheap;
  const int ia = s.in[0], ib = s.in[1], out = s.out[0];
  return [=](void* const* sl) {
    if (check_zero && has_zero_int(t, sl[ib], b_count)) throw Error("integer division by zero (Div/Mod divisor holds 0)");
    char* y = static_cast<char*>(sl[out]);
    const char* a = static_cast<const char*>(sl[ia]);
    const char* b = static_cast<const char*>(sl[ib]);
    const index_t sa = bc.strides[0][0], sb = bc.strides[1][0];
    for_each_row(bc, grain, [&](index_t o, const index_t* in, index_t len) {
      fn(y + o * eo, a + in[0] * e, sa, b + in[1] * e, sb, len);
    });
  };
}

StepFn clip_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && s.out.size() == 1 && s.ints.size() == 1, "math_clip: expected 3 inputs, 1 int");
  const index_t n = s.i(0);
  const DType t = s.in_types[0];
  ENGINE_CHECK(n >= 0, "math_clip: n < 0");
  ENGINE_CHECK(s.out_types[0] == t, "math_clip: output type differs from input");
  for (int k = 1; k <= 2; ++k)
    ENGINE_CHECK(s.in[k] < 0 || s.in_types[k] == t, "math_clip: bound type differs from input");
  switch (t) {
    case DType::F32: case DType::F16: case DType::F64: break;
    default: ENGINE_CHECK(is_integer(t), type_error("math_clip", t));
  }
  const int in = s.in[0], lo = s.in[1], hi = s.in[2], out = s.out[0];
  return [=](void* const* sl) { clip(t, sl[out], sl[in], n, lo >= 0 ? sl[lo] : nullptr, hi >= 0 ? sl[hi] : nullptr); };
}

StepFn where_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && s.out.size() == 1 && !s.ints.empty(), "math_where: bad arguments");
  const std::int64_t nd = s.i(0);
  ENGINE_CHECK(nd >= 0 && nd <= 64 && s.ints.size() == static_cast<size_t>(1 + 4 * nd),
               "math_where: expected 1 + 4*ndim ints");
  ENGINE_CHECK(s.in_types[0] == DType::Bool, "math_where: condition must be bool");
  const DType t = s.out_types[0];
  ENGINE_CHECK(s.in_types[1] == t && s.in_types[2] == t, "math_where: x, y and output types differ");
  const size_t e = dtype_size(t);
  ENGINE_CHECK(e == 1 || e == 2 || e == 4 || e == 8, type_error("math_where", t));
  const auto shape = dims(s, 1, nd), cs = dims(s, 1 + nd, nd), xs = dims(s, 1 + 2 * nd, nd),
             ys = dims(s, 1 + 3 * nd, nd);
  const index_t* strides[3] = {cs.data(), xs.data(), ys.data()};
  const Broadcast bc = make_broadcast(3, static_cast<int>(nd), shape.data(), strides);
  const int c = s.in[0], x = s.in[1], y = s.in[2], out = s.out[0];
  return [=](void* const* sl) { where(e, bc, sl[out], sl[c], sl[x], sl[y]); };
}

StepFn cast_step(const StepSpec& s) {
  s.expect(1, 1, 1);
  const index_t n = s.i(0);
  ENGINE_CHECK(n >= 0, "math_cast: n < 0");
  const DType from = s.in_types[0], to = s.out_types[0];
  const CastFn fn = cast_kernel(from, to);
  ENGINE_CHECK(fn != nullptr, std::string("math_cast: no conversion from ") + dtype_name(from) + " to " + dtype_name(to));
  const size_t ei = dtype_size(from), eo = dtype_size(to);
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) {
    char* y = static_cast<char*>(sl[out]);
    const char* x = static_cast<const char*>(sl[in]);
    for_each_block(n, kGrainCheap, [&](index_t i0, index_t i1) { fn(y + i0 * eo, x + i0 * ei, i1 - i0); });
  };
}

}  // namespace

void register_math_steps(KernelRegistry& r) {
  r.add("math_unary", DType::Any, unary_step);
  r.add("math_binary", DType::Any, binary_step);
  r.add("math_clip", DType::Any, clip_step);
  r.add("math_where", DType::Any, where_step);
  r.add("math_cast", DType::Any, cast_step);
}

}  // namespace engine
