// Convolution steps (NHWC, filters pre-packed into PackedConv2D).
//   conv2d (float32): in [x] or [x, residual], out [y]; state PackedConv2D;
//                     ints [batch, act, pool_h, pool_w] (pool 0 = no fused max-pool), optionally
//                     + [channel offset, channels per pixel of y] (this conv writes its OC
//                     channels at that offset of a wider, concatenated y);
//                     floats [act_alpha, act_beta]. y = act(conv(x) + bias + residual).
#include "engine/conv.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

StepFn conv2d(const StepSpec& s) {
  s.expect(s.in.size() == 2 ? 2 : 1, 1, s.ints.size() == 6 ? 6 : 4, 2);
  auto w = s.state_as<PackedConv2D>();
  const index_t batch = s.i(0), ph = s.i(2), pw = s.i(3);
  ENGINE_CHECK(batch >= 0 && ph >= 0 && pw >= 0, "conv2d: negative size");
  ENGINE_CHECK(s.i(1) >= 0 && s.i(1) <= static_cast<std::int64_t>(Act::Identity), "conv2d: bad activation code");
  const Act act = static_cast<Act>(s.i(1));
  const float a = static_cast<float>(s.f(0)), b = static_cast<float>(s.f(1));
  const int in = s.in[0], out = s.out[0], res = s.in.size() == 2 ? s.in[1] : -1;
  const index_t OC = w->shape().OC;
  const index_t off = s.ints.size() == 6 ? s.i(4) : 0, ldy = s.ints.size() == 6 ? s.i(5) : OC;
  ENGINE_CHECK(off >= 0 && ldy >= off + OC, "conv2d: channels [" + std::to_string(off) + ", " +
                                                std::to_string(off + OC) + ") do not fit " + std::to_string(ldy));
  if (ph > 0) {
    ENGINE_CHECK(res < 0 && ldy == OC, "conv2d: a fused max-pool takes no residual or output stride");
    return [=](void* const* sl) {
      conv2d_maxpool_nhwc(slot<float>(sl, out), slot<const float>(sl, in), *w, batch, ph, pw, act, a, b);
    };
  }
  return [=](void* const* sl) {
    conv2d_nhwc(slot<float>(sl, out) + off, slot<const float>(sl, in), *w, batch, act, a, b,
                res >= 0 ? slot<const float>(sl, res) : nullptr, ldy);
  };
}

}  // namespace

void register_conv_steps(KernelRegistry& r) { r.add("conv2d", DType::F32, conv2d); }

}  // namespace engine
