// Activation and softmax backward (engine/grad.h): argument checks, threading, ISA dispatch.
// The loops are in grad_act_impl.h.
#include <algorithm>

#include "cpu/grad_kernels.h"
#include "cpu/grad_util.h"
#include "engine/grad.h"

namespace engine {

using gradu::str;

ActSource act_grad_source(int act) {
  switch (act) {
    case static_cast<int>(Act::Relu): case static_cast<int>(Act::Sigmoid): case static_cast<int>(Act::Tanh):
    case static_cast<int>(Act::Exp): case static_cast<int>(Act::Sqrt): case static_cast<int>(Act::Reciprocal):
      return ActSource::Y;
    case static_cast<int>(Act::None): case static_cast<int>(Act::Identity): case static_cast<int>(Act::Neg):
      return ActSource::None;
    case grad_act::kSoftsign: case grad_act::kHardSwish: case grad_act::kMish:
      return ActSource::X;
    default:
      ENGINE_CHECK(act >= 0 && act <= static_cast<int>(Act::Identity),
                   "act_grad: unknown activation code " + str(act) + " (0-" +
                       str(static_cast<int>(Act::Identity)) + ", 64 softsign, 65 hard_swish, 66 mish)");
      return ActSource::X;
  }
}

void act_backward(float* dx, const float* dy, const float* src, index_t n, int act, float alpha, float beta) {
  act_grad_source(act);  // rejects unknown codes before any work
  ENGINE_CHECK(n >= 0, "act_grad: n < 0");
  const auto& k = gradk::kernels();
  const bool cheap = act == static_cast<int>(Act::Relu) || act == static_cast<int>(Act::LeakyRelu) ||
                     act == static_cast<int>(Act::Clip) || act == static_cast<int>(Act::None) ||
                     act == static_cast<int>(Act::Identity) || act == static_cast<int>(Act::Neg);
  gradu::split_elems(n, cheap ? 1 << 16 : 1 << 14, [&](index_t i0, index_t i1) {
    k.act_backward(dx + i0, dy + i0, src + i0, i1 - i0, act, alpha, beta);
  });
}

void softmax_backward(float* dx, const float* dy, const float* y, index_t outer, index_t axis, index_t inner,
                      bool log) {
  ENGINE_CHECK(outer >= 0 && axis >= 0 && inner >= 0, "softmax_grad: negative size");
  if (outer == 0 || axis == 0 || inner == 0) return;
  const auto& k = gradk::kernels();
  const index_t slab = axis * inner;
  const index_t grain = std::max<index_t>(1, (1 << 14) / slab);
  if (inner == 1) {
    if (outer * axis <= (1 << 14)) return k.softmax_rows(dx, dy, y, outer, axis, log);
    return parallel_for(outer, grain, [&](index_t r0, index_t r1) {
      k.softmax_rows(dx + r0 * axis, dy + r0 * axis, y + r0 * axis, r1 - r0, axis, log);
    });
  }
  auto run = [&](index_t o0, index_t o1) {
    for (index_t o = o0; o < o1; ++o) k.softmax_cols(dx + o * slab, dy + o * slab, y + o * slab, axis, inner, log);
  };
  if (outer * slab <= (1 << 14)) return run(0, outer);
  parallel_for(outer, grain, run);
}

}  // namespace engine
