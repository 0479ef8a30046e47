// Backward steps for training, layer family (float32, NHWC; engine/grad.h). Optional outputs
// are chosen by a mask in ints (bit k set: output k wanted); the out list holds the wanted
// ones only, in order. accumulate 1: add into the outputs instead of overwriting them.
//
//   bias_grad:           in [dy (rows×cols)], out [db]; ints [rows, cols, accumulate]
//   matmul_grad:         in [dc, a | -1, b | -1], out [da?, db?]; ints [batch, M, N, K, trans_a,
//                        trans_b, a_batch_stride, b_batch_stride, outputs (1 da, 2 db),
//                        accumulate] (the matmul step's layout; a 0 stride is a broadcast
//                        operand, whose gradient is summed over the batch). da needs b, db a.
//   dense_grad:          in [dy (M×N), x (M×K) | -1, w | -1], out [dx?, dw?, db?];
//                        ints [M, K, N, w_transposed (0: w is K×N, Keras; 1: N×K, torch),
//                        outputs (1 dx, 2 dw, 4 db), accumulate]. dx needs w, dw x.
//   conv2d_grad_input:   in [dy, w (HWIO)], out [dx]; ints CONV
//   conv2d_grad_weight:  in [dy, x], out [dw] or [dw, db]; ints CONV
//                        CONV = [N, H, W, C, OC, KH, KW, stride_h, stride_w, dil_h, dil_w,
//                        pad_top, pad_left, pad_bottom, pad_right, groups, accumulate]
//                        (x N×H×W×C, dy N×OH×OW×OC, w KH×KW×(C/groups)×OC as conv2d_nhwc)
//   pool2d_grad:         in [dy, x | -1], out [dx]; ints as pool2d [is_max, N, H, W, C, KH, KW,
//                        stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, pad_bottom,
//                        pad_right, ceil_mode, count_include_pad] (+ relu: 1 folds the backward of
//                        the ReLU that produced x into this pass); max pooling needs x.
//   global_pool_grad:    in [dy (N×C), x (N×HW×C) | -1], out [dx]; ints [N, HW, C, kind]
//                        kind 0 average, 1 max (all to the first maximum, as max pooling),
//                        2 max with ties sharing (amax, Keras's reduce_max); max needs x.
#include <string>

#include "engine/grad.h"
#include "runtime/kernels/grad_step_util.h"
#include "runtime/registry.h"

namespace engine {

void register_grad_norm_steps(KernelRegistry& r);  // grad_norm_steps.cpp

namespace {

using namespace gradstep;

StepFn bias_grad(const StepSpec& s) {
  s.expect(1, 1, 3);
  const index_t rows = s.i(0), cols = s.i(1);
  ENGINE_CHECK(rows >= 0 && cols >= 0, "bias_grad: negative size");
  const bool acc = flag(s, 2, "accumulate");
  ENGINE_CHECK(s.in[0] >= 0, "bias_grad: dy is required");
  check_f32(s);
  const int dy = s.in[0], db = s.out[0];
  return [=](void* const* sl) { column_sums(slot<float>(sl, db), slot<const float>(sl, dy), rows, cols, acc); };
}

// What matmul_grad and dense_grad share: the outputs mask at ints[k] (n outputs), accumulate
// at ints[k + 1], dy, and the operand each wanted gradient reads (operand[j] for output j,
// named in `names`: output 0's operand, output 1's, their names).
std::vector<int> gemm_grad_outputs(const StepSpec& s, size_t k, int n, bool& acc, int operand0, int operand1,
                                   const char* const names[4]) {
  const auto outs = masked_outputs(s, s.i(k), n);
  acc = flag(s, k + 1, "accumulate");
  ENGINE_CHECK(s.in[0] >= 0, s.name + ": the output gradient (input 0) is required");
  if (outs[0] >= 0) need_input(s, operand0, names[1], names[0]);
  if (outs[1] >= 0) need_input(s, operand1, names[3], names[2]);
  check_f32(s);
  return outs;
}

StepFn matmul_grad(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && s.ints.size() == 10 && s.floats.empty(),
               "matmul_grad: expected inputs [dc, a, b] and 10 ints [batch, M, N, K, trans_a, trans_b, "
               "a_batch_stride, b_batch_stride, outputs, accumulate]");
  MatMulGrad g;
  g.batch = s.i(0), g.M = s.i(1), g.N = s.i(2), g.K = s.i(3);
  g.trans_a = flag(s, 4, "trans_a"), g.trans_b = flag(s, 5, "trans_b");
  g.a_stride = s.i(6), g.b_stride = s.i(7);
  g.validate();
  static const char* const names[4] = {"da", "b", "db", "a"};
  bool acc;
  const auto outs = gemm_grad_outputs(s, 8, 2, acc, 2, 1, names);
  const int dc = s.in[0], a = s.in[1], b = s.in[2], da = outs[0], db = outs[1];
  return [=](void* const* sl) {
    matmul_backward(out_ptr(sl, da), out_ptr(sl, db), slot<const float>(sl, dc), in_ptr(sl, a), in_ptr(sl, b), g, acc);
  };
}

StepFn dense_grad(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && s.ints.size() == 6 && s.floats.empty(),
               "dense_grad: expected inputs [dy, x, w] and 6 ints [M, K, N, w_transposed, outputs, accumulate]");
  MatMulGrad g;
  g.M = s.i(0), g.K = s.i(1), g.N = s.i(2);
  g.trans_b = flag(s, 3, "w_transposed");
  g.validate();
  static const char* const names[4] = {"dx", "w", "dw", "x"};
  bool acc;
  const auto outs = gemm_grad_outputs(s, 4, 3, acc, 2, 1, names);
  const int dy = s.in[0], x = s.in[1], w = s.in[2], dx = outs[0], dw = outs[1], db = outs[2];
  return [=](void* const* sl) {
    const float* gy = slot<const float>(sl, dy);
    if (dx >= 0 || dw >= 0) matmul_backward(out_ptr(sl, dx), out_ptr(sl, dw), gy, in_ptr(sl, x), in_ptr(sl, w), g, acc);
    if (db >= 0) column_sums(slot<float>(sl, db), gy, g.M, g.N, acc);
  };
}

Conv2DShape conv_shape(const StepSpec& s) {
  s.expect(2, s.out.size(), 17);
  Conv2DShape c;
  c.N = s.i(0), c.H = s.i(1), c.W = s.i(2), c.C = s.i(3), c.OC = s.i(4), c.KH = s.i(5), c.KW = s.i(6);
  c.stride_h = s.i(7), c.stride_w = s.i(8), c.dil_h = s.i(9), c.dil_w = s.i(10);
  c.pad_top = s.i(11), c.pad_left = s.i(12), c.pad_bottom = s.i(13), c.pad_right = s.i(14), c.groups = s.i(15);
  c.validate();
  ENGINE_CHECK(s.in[0] >= 0 && s.in[1] >= 0, s.name + ": both inputs are required");
  check_f32(s);
  return c;
}

StepFn conv2d_grad_input(const StepSpec& s) {
  ENGINE_CHECK(s.out.size() == 1, "conv2d_grad_input: expected one output [dx]");
  const Conv2DShape c = conv_shape(s);
  const bool acc = flag(s, 16, "accumulate");
  const int dy = s.in[0], w = s.in[1], dx = s.out[0];
  return [=](void* const* sl) {
    conv2d_backward_data(slot<float>(sl, dx), slot<const float>(sl, dy), slot<const float>(sl, w), c, acc);
  };
}

StepFn conv2d_grad_weight(const StepSpec& s) {
  ENGINE_CHECK(s.out.size() == 1 || s.out.size() == 2, "conv2d_grad_weight: expected outputs [dw] or [dw, db]");
  const Conv2DShape c = conv_shape(s);
  const bool acc = flag(s, 16, "accumulate");
  const int dy = s.in[0], x = s.in[1], dw = s.out[0], db = s.out.size() == 2 ? s.out[1] : -1;
  return [=](void* const* sl) {
    conv2d_backward_filter(slot<float>(sl, dw), out_ptr(sl, db), slot<const float>(sl, dy), slot<const float>(sl, x),
                           c, acc);
  };
}

StepFn pool2d_grad(const StepSpec& s) {
  ENGINE_CHECK(s.ints.size() == 17 || s.ints.size() == 18, "pool2d_grad: expected 17 or 18 ints");
  ENGINE_CHECK(s.in.size() == 2 && s.out.size() == 1, "pool2d_grad: expected inputs [dy, x] and output [dx]");
  Pool2DShape p;
  const bool is_max = flag(s, 0, "is_max");
  p.N = s.i(1), p.H = s.i(2), p.W = s.i(3), p.C = s.i(4), p.KH = s.i(5), p.KW = s.i(6);
  p.stride_h = s.i(7), p.stride_w = s.i(8), p.dil_h = s.i(9), p.dil_w = s.i(10);
  p.pad_top = s.i(11), p.pad_left = s.i(12), p.pad_bottom = s.i(13), p.pad_right = s.i(14);
  p.ceil_mode = flag(s, 15, "ceil_mode"), p.count_include_pad = flag(s, 16, "count_include_pad");
  p.validate();
  ENGINE_CHECK(s.in[0] >= 0, "pool2d_grad: dy is required");
  if (is_max) need_input(s, 1, "x", "max pooling");
  check_f32(s);
  const int dy = s.in[0], x = s.in[1], dx = s.out[0];
  const bool relu = s.ints.size() == 18 && flag(s, 17, "relu");
  ENGINE_CHECK(!relu || is_max, "pool2d_grad: relu applies to max pooling only");
  if (is_max)
    return [=](void* const* sl) {
      maxpool2d_backward(slot<float>(sl, dx), slot<const float>(sl, dy), slot<const float>(sl, x), p, relu);
    };
  return [=](void* const* sl) { avgpool2d_backward(slot<float>(sl, dx), slot<const float>(sl, dy), p); };
}

StepFn global_pool_grad(const StepSpec& s) {
  s.expect(2, 1, 4);
  const index_t N = s.i(0), HW = s.i(1), C = s.i(2);
  const std::int64_t kind = s.i(3);
  ENGINE_CHECK(N >= 0 && HW >= 1 && C >= 1, "global_pool_grad: expected N >= 0, HW >= 1, C >= 1");
  ENGINE_CHECK(kind >= 0 && kind <= 2, "global_pool_grad: kind must be 0 (average), 1 (max) or 2 (max, ties "
                                       "share), got " + str(kind));
  ENGINE_CHECK(s.in[0] >= 0, "global_pool_grad: dy is required");
  if (kind > 0) need_input(s, 1, "x", "max pooling");
  check_f32(s);
  const int dy = s.in[0], x = s.in[1], dx = s.out[0];
  return [=](void* const* sl) {
    if (kind == 0) return global_avgpool_backward(slot<float>(sl, dx), slot<const float>(sl, dy), N, HW, C);
    global_maxpool_backward(slot<float>(sl, dx), slot<const float>(sl, dy), slot<const float>(sl, x), N, HW, C,
                            kind == 2);
  };
}

}  // namespace

void register_grad_layer_steps(KernelRegistry& r) {
  r.add("bias_grad", DType::F32, bias_grad);
  r.add("matmul_grad", DType::F32, matmul_grad);
  r.add("dense_grad", DType::F32, dense_grad);
  r.add("conv2d_grad_input", DType::F32, conv2d_grad_input);
  r.add("conv2d_grad_weight", DType::F32, conv2d_grad_weight);
  r.add("pool2d_grad", DType::F32, pool2d_grad);
  r.add("global_pool_grad", DType::F32, global_pool_grad);
  register_grad_norm_steps(r);
}

}  // namespace engine
