// Backward steps for training: normalisation and embedding (float32, channels last;
// engine/grad.h). Optional outputs as in grad_layer_steps.cpp (a mask in ints).
//
//   batchnorm_train_fwd: in [x (M×C), gamma | -1, beta | -1, running_mean, running_var],
//                        out [y, save_mean, save_invstd, running_mean, running_var] (the running
//                        statistics updated in place: their output slots are their input slots);
//                        ints [M, C, unbiased_running_var (0 Keras, 1 torch)];
//                        floats [eps, momentum] (Keras's: r = r·momentum + batch·(1 − momentum);
//                        torch's momentum m is 1 − m here)
//   batchnorm_grad:      in [dy, x, gamma | -1, mean, stat], out [dx?, dgamma?, dbeta?];
//                        ints [M, C, batch_stats, outputs (1 dx, 2 dgamma, 4 dbeta)]; floats [eps]
//                        batch_stats 1: mean / stat are batchnorm_train_fwd's save_mean /
//                        save_invstd; 0 (a frozen layer): the running mean and variance.
//   layernorm_grad:      in [dy, x, gamma | -1, mean | -1, invstd], out [dx?, dgamma?, dbeta?];
//                        ints [rows, D, rms, outputs (1 dx, 2 dgamma, 4 dbeta)] (mean / invstd:
//                        the normalize step's per-row outputs; rms needs no mean)
//   embedding_grad:      in [dy (n×D), indices (int32|int64, n)], out [dw (V×D)];
//                        ints [n, V, D, accumulate]. An index outside [-V, V) stops the run with
//                        a KernelError naming it; input types are required.
#include <cstdint>
#include <string>

#include "engine/grad.h"
#include "runtime/kernels/grad_step_util.h"
#include "runtime/registry.h"

namespace engine {
namespace {

using namespace gradstep;

void rows_cols(const StepSpec& s, index_t& rows, index_t& cols) {
  rows = s.i(0), cols = s.i(1);
  ENGINE_CHECK(rows >= 1 && cols >= 1, s.name + ": expected at least one row and one channel, got " + str(rows) +
                                           " and " + str(cols));
}

StepFn batchnorm_train_fwd(const StepSpec& s) {
  s.expect(5, 5, 3, 2);
  index_t M, C;
  rows_cols(s, M, C);
  const bool unbiased = flag(s, 2, "unbiased_running_var");
  const double eps = s.f(0), momentum = s.f(1);
  ENGINE_CHECK(eps >= 0, "batchnorm_train_fwd: eps must be >= 0");
  ENGINE_CHECK(momentum >= 0 && momentum <= 1, "batchnorm_train_fwd: momentum must be in [0, 1], got " +
                                                   std::to_string(momentum));
  ENGINE_CHECK(!unbiased || M >= 2, "batchnorm_train_fwd: the unbiased running variance needs at least 2 values "
                                    "per channel, got 1");
  for (int k : {0, 3, 4}) ENGINE_CHECK(s.in[k] >= 0, "batchnorm_train_fwd: x and the running statistics are required");
  ENGINE_CHECK(s.out[3] == s.in[3] && s.out[4] == s.in[4],
               "batchnorm_train_fwd: outputs 3 and 4 must be the running statistics' input slots (updated in place)");
  check_f32(s);
  const int x = s.in[0], gamma = s.in[1], beta = s.in[2], rm = s.in[3], rv = s.in[4];
  const int y = s.out[0], mean = s.out[1], invstd = s.out[2];
  return [=](void* const* sl) {
    batchnorm_train_forward(slot<float>(sl, y), slot<float>(sl, mean), slot<float>(sl, invstd), slot<float>(sl, rm),
                            slot<float>(sl, rv), slot<const float>(sl, x), in_ptr(sl, gamma), in_ptr(sl, beta), M, C,
                            eps, momentum, unbiased);
  };
}

StepFn batchnorm_grad(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 5 && s.ints.size() == 4 && s.floats.size() == 1,
               "batchnorm_grad: expected inputs [dy, x, gamma, mean, stat], 4 ints [M, C, batch_stats, outputs] "
               "and floats [eps]");
  index_t M, C;
  rows_cols(s, M, C);
  const bool batch = flag(s, 2, "batch_stats");
  const auto outs = masked_outputs(s, s.i(3), 3);
  const double eps = s.f(0);
  ENGINE_CHECK(eps >= 0, "batchnorm_grad: eps must be >= 0");
  for (int k : {0, 1, 3, 4}) ENGINE_CHECK(s.in[k] >= 0, "batchnorm_grad: dy, x, mean and stat are required");
  check_f32(s);
  const int dy = s.in[0], x = s.in[1], gamma = s.in[2], mean = s.in[3], stat = s.in[4];
  return [=](void* const* sl) {
    batchnorm_backward(out_ptr(sl, outs[0]), out_ptr(sl, outs[1]), out_ptr(sl, outs[2]), slot<const float>(sl, dy),
                       slot<const float>(sl, x), in_ptr(sl, gamma), slot<const float>(sl, mean),
                       slot<const float>(sl, stat), M, C, batch, eps);
  };
}

StepFn layernorm_grad(const StepSpec& s) {
  s.expect(5, s.out.size(), 4);
  index_t rows, D;
  rows_cols(s, rows, D);
  const bool rms = flag(s, 2, "rms");
  const auto outs = masked_outputs(s, s.i(3), 3);
  for (int k : {0, 1, 4}) ENGINE_CHECK(s.in[k] >= 0, "layernorm_grad: dy, x and invstd are required");
  if (!rms) need_input(s, 3, "the per-row mean", "layer norm");
  check_f32(s);
  const int dy = s.in[0], x = s.in[1], gamma = s.in[2], mean = s.in[3], invstd = s.in[4];
  return [=](void* const* sl) {
    layernorm_backward(out_ptr(sl, outs[0]), out_ptr(sl, outs[1]), out_ptr(sl, outs[2]), slot<const float>(sl, dy),
                       slot<const float>(sl, x), in_ptr(sl, gamma), in_ptr(sl, mean), slot<const float>(sl, invstd),
                       rows, D, rms);
  };
}

StepFn embedding_grad(const StepSpec& s) {
  s.expect(2, 1, 4);
  const index_t n = s.i(0), V = s.i(1), D = s.i(2);
  ENGINE_CHECK(n >= 0 && V >= 1 && D >= 0, "embedding_grad: expected n >= 0, V >= 1, D >= 0, got n=" + str(n) +
                                               ", V=" + str(V) + ", D=" + str(D));
  const bool acc = flag(s, 3, "accumulate");
  ENGINE_CHECK(s.in[0] >= 0 && s.in[1] >= 0, "embedding_grad: dy and the indices are required");
  ENGINE_CHECK(s.in_types.size() == s.in.size(), "embedding_grad: input types are required (one per input)");
  const DType it = s.in_types[1];
  ENGINE_CHECK(it == DType::I32 || it == DType::I64,
               std::string("embedding_grad: indices must be int32 or int64, got ") + dtype_name(it));
  check_f32(s, 1);
  const int dy = s.in[0], idx = s.in[1], dw = s.out[0];
  return [=](void* const* sl) {
    const index_t bad = embedding_backward(slot<float>(sl, dw), slot<const float>(sl, dy), sl[idx], it, n, V, D, acc);
    if (bad < 0) return;
    const std::int64_t v = it == DType::I32 ? slot<const std::int32_t>(sl, idx)[bad]
                                            : slot<const std::int64_t>(sl, idx)[bad];
    throw Error("embedding_grad: index " + str(v) + " at position " + str(bad) + " is out of range for " + str(V) +
                " rows (valid: " + str(-V) + " to " + str(V - 1) + ")");
  };
}

}  // namespace

void register_grad_norm_steps(KernelRegistry& r) {
  r.add("batchnorm_train_fwd", DType::F32, batchnorm_train_fwd);
  r.add("batchnorm_grad", DType::F32, batchnorm_grad);
  r.add("layernorm_grad", DType::F32, layernorm_grad);
  r.add("embedding_grad", DType::F32, embedding_grad);
}

}  // namespace engine
