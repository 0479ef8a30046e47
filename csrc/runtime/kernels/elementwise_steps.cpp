// Elementwise steps (float32).
//   activation: in [x], out [y]; ints [n, act]; floats [alpha, beta]
//   binary:     in [a, b], out [y]; ints [op, ndim, out_shape..., a_strides..., b_strides...]
//               (element strides, 0 on broadcast dims)
//   softmax:    in [x], out [y]; ints [outer, axis, inner, log]
#include "engine/elementwise.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

StepFn activation_step(const StepSpec& s) {
  s.expect(1, 1, 2, 2);
  const index_t n = s.i(0);
  ENGINE_CHECK(n >= 0, "activation: n < 0");
  ENGINE_CHECK(s.i(1) >= 0 && s.i(1) <= static_cast<std::int64_t>(Act::Identity), "activation: bad code");
  const Act act = static_cast<Act>(s.i(1));
  const float a = static_cast<float>(s.f(0)), b = static_cast<float>(s.f(1));
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) { activation(slot<float>(sl, out), slot<const float>(sl, in), n, act, a, b); };
}

StepFn binary_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 2 && s.out.size() == 1 && s.ints.size() >= 2, "binary: bad arguments");
  const std::int64_t op = s.i(0), nd = s.i(1);
  ENGINE_CHECK(op >= 0 && op <= static_cast<std::int64_t>(BinaryOp::Pow), "binary: bad op code");
  ENGINE_CHECK(nd >= 0 && s.ints.size() == static_cast<size_t>(2 + 3 * nd), "binary: expected 2 + 3*ndim ints");
  std::vector<index_t> shape(s.ints.begin() + 2, s.ints.begin() + 2 + nd);
  std::vector<index_t> as(s.ints.begin() + 2 + nd, s.ints.begin() + 2 + 2 * nd);
  std::vector<index_t> bs(s.ints.begin() + 2 + 2 * nd, s.ints.end());
  const int a = s.in[0], b = s.in[1], out = s.out[0];
  const BinaryOp bop = static_cast<BinaryOp>(op);
  return [=](void* const* sl) {
    binary(slot<float>(sl, out), slot<const float>(sl, a), slot<const float>(sl, b), bop, static_cast<int>(nd),
           shape.data(), as.data(), bs.data());
  };
}

StepFn softmax_step(const StepSpec& s) {
  s.expect(1, 1, 4);
  const index_t outer = s.i(0), axis = s.i(1), inner = s.i(2);
  const bool log = s.i(3) != 0;
  ENGINE_CHECK(outer >= 0 && axis >= 0 && inner >= 0, "softmax: negative size");
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) { softmax(slot<float>(sl, out), slot<const float>(sl, in), outer, axis, inner, log); };
}

}  // namespace

void register_elementwise_steps(KernelRegistry& r) {
  r.add("activation", DType::F32, activation_step);
  r.add("binary", DType::F32, binary_step);
  r.add("softmax", DType::F32, softmax_step);
}

}  // namespace engine
