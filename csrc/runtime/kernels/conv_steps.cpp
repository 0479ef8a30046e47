// Convolution steps (NHWC; filters pre-packed into PackedConv2D, or packed per call).
//   conv2d (float32): in [x] or [x, residual], out [y]; state PackedConv2D;
//                     ints [batch, act, pool_h, pool_w] (pool 0 = no fused max-pool), optionally
//                     + [channel offset, channels per pixel of y] (this conv writes its OC
//                     channels at that offset of a wider, concatenated y);
//                     floats [act_alpha, act_beta]. y = act(conv(x) + bias + residual).
//   conv2d_dynamic (float32): a filter read at run time (trained weights), packed on every
//                     call into the workspace, then the kernels of conv2d.
//                     in [x, filter, bias | -1, residual | -1, workspace], out [y];
//                     ints [N, H, W, C, OC, KH, KW, stride_h, stride_w, dil_h, dil_w, pad_top,
//                     pad_left, pad_bottom, pad_right, groups, layout (0 HWIO, 1 OIHW,
//                     2 DataGrad: the input gradient of a stride-1 conv, engine/conv.h), act,
//                     pool_h, pool_w, workspace floats] (+ [channel offset, channels per pixel
//                     of y] as conv2d); floats [act_alpha, act_beta]. The workspace (float32,
//                     at least DynamicConv2D::workspace_floats(); per execution context) is
//                     scratch: its contents are not kept between calls.
#include <algorithm>
#include <memory>
#include <string>

#include "engine/conv.h"
#include "engine/dtype.h"
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

StepFn conv2d_dynamic(const StepSpec& s) {
  s.expect(5, 1, s.ints.size() == 23 ? 23 : 21, 2);
  Conv2DShape c;
  c.N = s.i(0), c.H = s.i(1), c.W = s.i(2), c.C = s.i(3), c.OC = s.i(4), c.KH = s.i(5), c.KW = s.i(6);
  c.stride_h = s.i(7), c.stride_w = s.i(8), c.dil_h = s.i(9), c.dil_w = s.i(10);
  c.pad_top = s.i(11), c.pad_left = s.i(12), c.pad_bottom = s.i(13), c.pad_right = s.i(14), c.groups = s.i(15);
  const index_t batch = c.N;
  ENGINE_CHECK(batch >= 0, "conv2d_dynamic: negative batch");
  c.N = std::max<index_t>(1, batch);  // the layout does not depend on the batch (which may be 0)
  ENGINE_CHECK(s.i(16) >= 0 && s.i(16) <= 2, "conv2d_dynamic: layout must be 0 (HWIO), 1 (OIHW) or 2 (DataGrad), got " +
                                                std::to_string(s.i(16)));
  ENGINE_CHECK(s.i(17) >= 0 && s.i(17) <= static_cast<std::int64_t>(Act::Identity), "conv2d_dynamic: bad activation code");
  const Act act = static_cast<Act>(s.i(17));
  const index_t ph = s.i(18), pw = s.i(19);
  ENGINE_CHECK(ph >= 0 && pw >= 0 && (ph == 0) == (pw == 0), "conv2d_dynamic: bad fused max-pool window");
  auto conv = std::make_shared<const DynamicConv2D>(c, static_cast<FilterLayout>(s.i(16)));
  ENGINE_CHECK(s.i(20) >= 0 && static_cast<std::size_t>(s.i(20)) >= conv->workspace_floats(),
               "conv2d_dynamic: the workspace holds " + std::to_string(s.i(20)) + " floats, the " +
                   conv->algorithm() + " path needs " + std::to_string(conv->workspace_floats()));
  const index_t off = s.ints.size() == 23 ? s.i(21) : 0, ldy = s.ints.size() == 23 ? s.i(22) : c.OC;
  ENGINE_CHECK(off >= 0 && ldy >= off + c.OC, "conv2d_dynamic: channels [" + std::to_string(off) + ", " +
                                                   std::to_string(off + c.OC) + ") do not fit " + std::to_string(ldy));
  ENGINE_CHECK(ph == 0 || (s.in[3] < 0 && ldy == c.OC), "conv2d_dynamic: a fused max-pool takes no residual or output stride");
  for (int k : {0, 1, 4})
    ENGINE_CHECK(s.in[k] >= 0, "conv2d_dynamic: input " + std::to_string(k) + " (x, filter, workspace) is required");
  for (size_t k = 0; k < s.in_types.size() && k < s.in.size(); ++k)
    ENGINE_CHECK(s.in[k] < 0 || s.in_types[k] == DType::F32,
                 "conv2d_dynamic: input " + std::to_string(k) + " must be float32, got " + dtype_name(s.in_types[k]));
  const float a = static_cast<float>(s.f(0)), b = static_cast<float>(s.f(1));
  const int x = s.in[0], w = s.in[1], bias = s.in[2], res = s.in[3], ws = s.in[4], out = s.out[0];
  return [=](void* const* sl) {
    conv->run(slot<float>(sl, out) + off, slot<const float>(sl, x), slot<const float>(sl, w),
              bias >= 0 ? slot<const float>(sl, bias) : nullptr, slot<float>(sl, ws), batch, act, a, b,
              res >= 0 ? slot<const float>(sl, res) : nullptr, ldy, ph, pw);
  };
}

}  // namespace

void register_conv_steps(KernelRegistry& r) {
  r.add("conv2d", DType::F32, conv2d);
  r.add("conv2d_dynamic", DType::F32, conv2d_dynamic);
}

}  // namespace engine
