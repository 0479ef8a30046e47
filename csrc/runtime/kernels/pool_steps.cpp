// Pooling steps (NHWC).
//   pool2d (float32): in [x], out [y]; ints [is_max, N, H, W, C, KH, KW, stride_h, stride_w,
//                     dil_h, dil_w, pad_top, pad_left, pad_bottom, pad_right, ceil_mode,
//                     count_include_pad]
//   global_avgpool (float32): in [x (N×HW×C)], out [y (N×C)]; ints [N, HW, C]
#include "engine/pool.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

StepFn pool2d(const StepSpec& s) {
  s.expect(1, 1, 17);
  Pool2DShape p;
  const bool is_max = s.i(0) != 0;
  p.N = s.i(1), p.H = s.i(2), p.W = s.i(3), p.C = s.i(4), p.KH = s.i(5), p.KW = s.i(6);
  p.stride_h = s.i(7), p.stride_w = s.i(8), p.dil_h = s.i(9), p.dil_w = s.i(10);
  p.pad_top = s.i(11), p.pad_left = s.i(12), p.pad_bottom = s.i(13), p.pad_right = s.i(14);
  p.ceil_mode = s.i(15) != 0, p.count_include_pad = s.i(16) != 0;
  p.validate();
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) { (is_max ? maxpool2d_nhwc : avgpool2d_nhwc)(slot<float>(sl, out), slot<const float>(sl, in), p); };
}

StepFn global_avgpool(const StepSpec& s) {
  s.expect(1, 1, 3);
  const index_t N = s.i(0), HW = s.i(1), C = s.i(2);
  ENGINE_CHECK(N >= 0 && HW > 0 && C >= 0, "global_avgpool: bad size");
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) { global_avgpool_nhwc(slot<float>(sl, out), slot<const float>(sl, in), N, HW, C); };
}

}  // namespace

void register_pool_steps(KernelRegistry& r) {
  r.add("pool2d", DType::F32, pool2d);
  r.add("global_avgpool", DType::F32, global_avgpool);
}

}  // namespace engine
