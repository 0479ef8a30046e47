// Backward steps for training, elementwise and loss family (float32; engine/grad.h). The
// layer backward steps (dense, conv, pooling, normalisation, embedding) are in
// grad_layer_steps.cpp. Optional outputs are chosen by a mask in ints (bit k = output k is
// wanted) and the out list holds only the wanted ones, in order.
//
//   act_grad:      in [dy, x | -1, y | -1], out [dx]; ints [n, act]; floats [alpha, beta]
//                  act: an Act code, or 64 softsign, 65 hard_swish, 66 mish (their forward
//                  is math_unary). The derivative reads y for relu, sigmoid, tanh, exp, sqrt
//                  and reciprocal, nothing for none / identity / neg, x for the others: that
//                  input must be present. dx may be dy's slot.
//   softmax_grad:  in [dy, y], out [dx]; ints [outer, axis, inner, log] (as softmax; y is
//                  its output, log-softmax's for log = 1). dx may be dy's slot.
//   softmax_xent:  in [logits (N×C), labels (int32|int64, N) or target (float32, N×C),
//                  weight (N) | -1, dloss | -1], out [loss] or [loss, dlogits (N×C)];
//                  ints [N, C, reduction (0 none, 1 sum, 2 mean over N, 3 mean over Σ weight),
//                  sparse (1: labels, 0: target)]. loss has N values for none, else 1; dloss
//                  (the loss's upstream gradient, 1 when absent) likewise. dlogits may be the
//                  logits' slot. A label outside [0, C) stops the run with a KernelError
//                  naming the sample and the label; input types are required.
//   dropout_fwd:   in [x, counter], out [y] or [y, mask (uint8)]; ints [n, seed]; floats [rate]
//   dropout_grad:  in [dy, mask | -1, counter | -1], out [dx]; ints [n, seed]; floats [rate]
//                  counter: the step, read at run time: int64[1], or the optimizers' float64
//                  hyper buffer [lr, step, grad_scale]. The mask of (seed, step) is the same
//                  for any thread count; dropout_grad takes the forward's mask, or draws it
//                  again from (seed, counter) without storing it. 0 <= rate < 1.
//   sum_to_shape:  in [x], out [y]; ints [ndim, x_shape (ndim)..., y_shape (ndim)...]: x
//                  summed over the dims where y has 1 (a broadcast input's gradient).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/grad.h"
#include "runtime/kernels/grad_step_util.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {

void register_grad_layer_steps(KernelRegistry& r);  // grad_layer_steps.cpp

namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

DType in_type(const StepSpec& s, size_t k) {
  ENGINE_CHECK(s.in_types.size() == s.in.size(), s.name + ": input types are required (one per input)");
  return s.in_types[k];
}

void need_f32(const StepSpec& s, size_t k, const char* what) {
  if (s.in_types.size() == s.in.size() && s.in[k] >= 0)
    ENGINE_CHECK(s.in_types[k] == DType::F32, s.name + ": " + what + " must be float32, got " +
                                                  dtype_name(s.in_types[k]));
}

StepFn act_grad(const StepSpec& s) {
  s.expect(3, 1, 2, 2);
  const index_t n = s.i(0);
  ENGINE_CHECK(n >= 0, "act_grad: n < 0");
  const int act = static_cast<int>(s.i(1));
  ENGINE_CHECK(s.i(1) == act, "act_grad: unknown activation code " + str(s.i(1)));
  const ActSource from = act_grad_source(act);
  const bool from_y = from == ActSource::Y;
  ENGINE_CHECK(s.in[0] >= 0, "act_grad: dy is required");
  const int src = from == ActSource::None ? s.in[0] : s.in[from_y ? 2 : 1];  // linear, neg: dy only
  ENGINE_CHECK(src >= 0, "act_grad: activation " + str(act) + " needs its " + (from_y ? "output y" : "input x") +
                             " (input " + (from_y ? "2" : "1") + ")");
  for (size_t k = 0; k < 3; ++k) need_f32(s, k, "every input");
  const float a = static_cast<float>(s.f(0)), b = static_cast<float>(s.f(1));
  const int dy = s.in[0], dx = s.out[0];
  return [=](void* const* sl) {
    act_backward(slot<float>(sl, dx), slot<const float>(sl, dy), slot<const float>(sl, src), n, act, a, b);
  };
}

StepFn softmax_grad(const StepSpec& s) {
  s.expect(2, 1, 4);
  const index_t outer = s.i(0), axis = s.i(1), inner = s.i(2);
  ENGINE_CHECK(outer >= 0 && axis >= 0 && inner >= 0, "softmax_grad: negative size");
  ENGINE_CHECK(s.in[0] >= 0 && s.in[1] >= 0, "softmax_grad: dy and y are required");
  const bool log = s.i(3) != 0;
  const int dy = s.in[0], y = s.in[1], dx = s.out[0];
  return [=](void* const* sl) {
    softmax_backward(slot<float>(sl, dx), slot<const float>(sl, dy), slot<const float>(sl, y), outer, axis, inner, log);
  };
}

StepFn softmax_xent(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 4 && (s.out.size() == 1 || s.out.size() == 2) && s.ints.size() == 4,
               "softmax_xent: expected inputs [logits, labels or target, weight, dloss], outputs [loss] or "
               "[loss, dlogits] and 4 ints [N, C, reduction, sparse]");
  const index_t N = s.i(0), C = s.i(1);
  ENGINE_CHECK(N >= 0 && C >= 1, "softmax_xent: expected N >= 0 and C >= 1, got N=" + str(N) + ", C=" + str(C));
  ENGINE_CHECK(s.i(2) >= 0 && s.i(2) <= 3, "softmax_xent: reduction must be 0 (none), 1 (sum), 2 (mean) or "
                                           "3 (weighted mean), got " + str(s.i(2)));
  const auto red = static_cast<XentReduction>(s.i(2));
  const bool sparse = s.i(3) != 0;
  ENGINE_CHECK(s.in[0] >= 0 && s.in[1] >= 0, "softmax_xent: logits and labels/target are required");
  const DType lt = in_type(s, 1);
  if (sparse)
    ENGINE_CHECK(lt == DType::I32 || lt == DType::I64,
                 std::string("softmax_xent: sparse labels must be int32 or int64, got ") + dtype_name(lt));
  else
    ENGINE_CHECK(lt == DType::F32, std::string("softmax_xent: targets must be float32, got ") + dtype_name(lt));
  need_f32(s, 0, "logits");
  need_f32(s, 2, "weight");
  need_f32(s, 3, "dloss");
  const int z = s.in[0], lab = s.in[1], w = s.in[2], dl = s.in[3], loss = s.out[0];
  const int g = s.out.size() == 2 ? s.out[1] : -1;
  return [=](void* const* sl) {
    float* grad = g >= 0 ? slot<float>(sl, g) : nullptr;
    const float* weight = w >= 0 ? slot<const float>(sl, w) : nullptr;
    const float* dloss = dl >= 0 ? slot<const float>(sl, dl) : nullptr;
    if (!sparse)
      return softmax_xent_dense(slot<float>(sl, loss), grad, slot<const float>(sl, z), slot<const float>(sl, lab),
                                weight, dloss, N, C, red);
    const index_t bad = softmax_xent_sparse(slot<float>(sl, loss), grad, slot<const float>(sl, z), sl[lab], lt,
                                            weight, dloss, N, C, red);
    if (bad >= 0) {
      const std::int64_t v = lt == DType::I32 ? slot<const std::int32_t>(sl, lab)[bad]
                                              : slot<const std::int64_t>(sl, lab)[bad];
      throw Error("softmax_xent: label " + str(v) + " of sample " + str(bad) + " is out of range for " + str(C) +
                  " classes (valid: 0 to " + str(C - 1) + ")");
    }
  };
}


void dropout_params(const StepSpec& s, index_t& n, std::uint64_t& seed, double& rate) {
  n = s.i(0);
  ENGINE_CHECK(n >= 0, s.name + ": n < 0");
  seed = static_cast<std::uint64_t>(s.i(1));
  rate = s.f(0);
  ENGINE_CHECK(rate >= 0 && rate < 1, s.name + ": rate must be in [0, 1), got " + std::to_string(rate));
}

StepFn dropout_fwd(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 2 && (s.out.size() == 1 || s.out.size() == 2) && s.ints.size() == 2 &&
                   s.floats.size() == 1,
               "dropout_fwd: expected inputs [x, counter], outputs [y] or [y, mask], ints [n, seed], floats [rate]");
  index_t n;
  std::uint64_t seed;
  double rate;
  dropout_params(s, n, seed, rate);
  ENGINE_CHECK(s.in[0] >= 0 && s.in[1] >= 0, "dropout_fwd: x and the counter are required");
  need_f32(s, 0, "x");
  const gradstep::StepCounter ctr = gradstep::step_counter(s, 1);
  if (s.out.size() == 2 && !s.out_types.empty())
    ENGINE_CHECK(s.out_types[1] == DType::U8, std::string("dropout_fwd: the mask must be uint8, got ") +
                                                  dtype_name(s.out_types[1]));
  const int x = s.in[0], y = s.out[0], mask = s.out.size() == 2 ? s.out[1] : -1;
  return [=](void* const* sl) {
    dropout_forward(slot<float>(sl, y), mask >= 0 ? slot<std::uint8_t>(sl, mask) : nullptr, slot<const float>(sl, x),
                    n, rate, seed, ctr.read(sl));
  };
}

StepFn dropout_grad(const StepSpec& s) {
  s.expect(3, 1, 2, 1);
  index_t n;
  std::uint64_t seed;
  double rate;
  dropout_params(s, n, seed, rate);
  ENGINE_CHECK(s.in[0] >= 0, "dropout_grad: dy is required");
  ENGINE_CHECK(s.in[1] >= 0 || s.in[2] >= 0, "dropout_grad: needs the forward's mask (input 1) or the counter "
                                              "(input 2) to draw it again");
  need_f32(s, 0, "dy");
  if (s.in[1] >= 0 && s.in_types.size() == s.in.size())
    ENGINE_CHECK(s.in_types[1] == DType::U8, std::string("dropout_grad: the mask must be uint8, got ") +
                                                 dtype_name(s.in_types[1]));
  const gradstep::StepCounter ctr = s.in[1] >= 0 ? gradstep::StepCounter{} : gradstep::step_counter(s, 2);
  const int dy = s.in[0], mask = s.in[1], dx = s.out[0];
  return [=](void* const* sl) {
    dropout_backward(slot<float>(sl, dx), slot<const float>(sl, dy),
                     mask >= 0 ? slot<const std::uint8_t>(sl, mask) : nullptr, n, rate, seed,
                     mask >= 0 ? 0 : ctr.read(sl));
  };
}

StepFn sum_to_shape_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 1 && s.out.size() == 1 && !s.ints.empty(),
               "sum_to_shape: expected input [x], output [y], ints [ndim, x_shape..., y_shape...]");
  const std::int64_t nd = s.i(0);
  ENGINE_CHECK(nd >= 0 && nd <= 16 && s.ints.size() == static_cast<size_t>(1 + 2 * nd),
               "sum_to_shape: expected 1 + 2*ndim ints (ndim 0 to 16)");
  std::vector<index_t> xs(s.ints.begin() + 1, s.ints.begin() + 1 + nd), ys(s.ints.begin() + 1 + nd, s.ints.end());
  for (std::int64_t d = 0; d < nd; ++d)
    ENGINE_CHECK(xs[d] >= 0 && (ys[d] == xs[d] || ys[d] == 1),
                 "sum_to_shape: dim " + str(d) + " of y must be 1 or x's (" + str(xs[d]) + "), got " + str(ys[d]));
  ENGINE_CHECK(s.in[0] >= 0, "sum_to_shape: x is required");
  const int x = s.in[0], y = s.out[0];
  return [=](void* const* sl) {
    sum_to_shape(slot<float>(sl, y), slot<const float>(sl, x), static_cast<int>(nd), xs.data(), ys.data());
  };
}

}  // namespace

void register_grad_steps(KernelRegistry& r) {
  r.add("act_grad", DType::F32, act_grad);
  r.add("softmax_grad", DType::F32, softmax_grad);
  r.add("softmax_xent", DType::F32, softmax_xent);
  r.add("dropout_fwd", DType::F32, dropout_fwd);
  r.add("dropout_grad", DType::F32, dropout_grad);
  r.add("sum_to_shape", DType::F32, sum_to_shape_step);
  register_grad_layer_steps(r);
}

}  // namespace engine
