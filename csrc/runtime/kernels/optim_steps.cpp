// Optimizer steps (float32): update a parameter and its optimizer state in place.
//   in  [param, grad, state..., hyper]   out [param, state...]  (the same slots: written in place)
//   hyper: float64[3] = [lr, step, grad_scale], read on every run (engine/optim.h), so a
//   planned training step follows a schedule without being planned again.
//   ints   [n, convention (0 Keras, 1 torch), weight decay mode (0 none, 1 coupled, 2 decoupled), flag]
//   sgd_update:     flag nesterov;  floats [weight_decay, clipnorm, clipvalue, momentum, dampening]
//   adam_update:    flag amsgrad;   floats [weight_decay, clipnorm, clipvalue, beta_1, beta_2, epsilon]
//   rmsprop_update: flag centered;  floats [weight_decay, clipnorm, clipvalue, rho, momentum, epsilon]
//   adagrad_update: flag unused (0); floats [weight_decay, clipnorm, clipvalue, epsilon]
//   The state slots, in order, are those of optim_state_count (engine/optim.h).
//
//   global_norm_scale: in [grad...], out [hyper]; ints [n per grad]; floats [clipnorm]:
//   hyper[2] = Keras's clip_by_global_norm scale over all the gradients (run it first).
#include <cmath>
#include <string>
#include <vector>

#include "engine/optim.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

void check_types(const StepSpec& s, size_t n_f32) {
  if (s.in_types.empty()) return;  // callers that do not state types
  ENGINE_CHECK(s.in_types.size() == s.in.size(), s.name + ": one type per input expected");
  for (size_t k = 0; k < n_f32; ++k)
    ENGINE_CHECK(s.in_types[k] == DType::F32, s.name + ": input " + std::to_string(k) + " must be float32");
  ENGINE_CHECK(s.in_types.back() == DType::F64, s.name + ": the hyperparameter buffer must be float64");
}

StepFn update_step(const StepSpec& s, OptimKind kind) {
  const size_t n_floats = kind == OptimKind::Sgd ? 5 : kind == OptimKind::Adagrad ? 4 : 6;
  ENGINE_CHECK(s.ints.size() == 4 && s.floats.size() == n_floats,
               s.name + ": expected 4 integer and " + std::to_string(n_floats) + " float parameters");
  const index_t n = s.i(0);
  ENGINE_CHECK(n >= 0, s.name + ": n < 0");
  OptimConfig c;
  c.kind = kind;
  c.convention = static_cast<OptimConvention>(s.i(1));
  c.decay_mode = static_cast<WeightDecayMode>(s.i(2));
  c.weight_decay = s.f(0);
  c.clipnorm = s.f(1);
  c.clipvalue = s.f(2);
  switch (kind) {
    case OptimKind::Sgd:
      c.nesterov = s.i(3) != 0;
      c.momentum = s.f(3);
      c.dampening = s.f(4);
      break;
    case OptimKind::Adam:
      c.amsgrad = s.i(3) != 0;
      c.beta1 = s.f(3);
      c.beta2 = s.f(4);
      c.eps = s.f(5);
      break;
    case OptimKind::Rmsprop:
      c.centered = s.i(3) != 0;
      c.rho = s.f(3);
      c.momentum = s.f(4);
      c.eps = s.f(5);
      break;
    case OptimKind::Adagrad:
      c.eps = s.f(3);
      break;
  }
  check_optim_config(c);
  const int ns = optim_state_count(c);
  ENGINE_CHECK(s.in.size() == static_cast<size_t>(3 + ns) && s.out.size() == static_cast<size_t>(1 + ns),
               s.name + ": expected " + std::to_string(3 + ns) + " inputs (param, grad, " + std::to_string(ns) +
                   " states, hyper) and " + std::to_string(1 + ns) + " outputs, got " +
                   std::to_string(s.in.size()) + " and " + std::to_string(s.out.size()));
  for (int k = 0; k < 2 + ns + 1; ++k) ENGINE_CHECK(s.in[k] >= 0, s.name + ": no input may be absent");
  ENGINE_CHECK(s.out[0] == s.in[0], s.name + ": output 0 must be the param slot (updated in place)");
  for (int k = 0; k < ns; ++k)
    ENGINE_CHECK(s.out[1 + k] == s.in[2 + k], s.name + ": output " + std::to_string(1 + k) +
                                                  " must be its state's input slot (updated in place)");
  check_types(s, 2 + ns);
  const int param = s.in[0], grad = s.in[1], hyper = s.in[2 + ns];
  std::vector<int> states(s.in.begin() + 2, s.in.begin() + 2 + ns);
  return [=](void* const* sl) {
    float* st[3] = {nullptr, nullptr, nullptr};
    for (int k = 0; k < ns; ++k) st[k] = slot<float>(sl, states[k]);
    const OptimHyper h = read_optim_hyper(slot<const double>(sl, hyper));
    optim_update(c, h, slot<float>(sl, param), slot<const float>(sl, grad), st, n);
  };
}

StepFn sgd_update(const StepSpec& s) { return update_step(s, OptimKind::Sgd); }
StepFn adam_update(const StepSpec& s) { return update_step(s, OptimKind::Adam); }
StepFn rmsprop_update(const StepSpec& s) { return update_step(s, OptimKind::Rmsprop); }
StepFn adagrad_update(const StepSpec& s) { return update_step(s, OptimKind::Adagrad); }

StepFn global_norm_scale(const StepSpec& s) {
  ENGINE_CHECK(!s.in.empty() && s.out.size() == 1 && s.ints.size() == s.in.size() && s.floats.size() == 1,
               s.name + ": expected k gradients, 1 output (hyper), k sizes and [clipnorm]");
  const double clipnorm = s.f(0);
  ENGINE_CHECK(clipnorm > 0 && std::isfinite(clipnorm), s.name + ": clipnorm must be > 0");
  for (size_t k = 0; k < s.in.size(); ++k) ENGINE_CHECK(s.in[k] >= 0 && s.ints[k] >= 0, s.name + ": bad gradient");
  if (!s.in_types.empty())
    for (DType t : s.in_types) ENGINE_CHECK(t == DType::F32, s.name + ": gradients must be float32");
  if (!s.out_types.empty()) ENGINE_CHECK(s.out_types[0] == DType::F64, s.name + ": hyper must be float64");
  const std::vector<int> grads = s.in;
  const std::vector<index_t> sizes(s.ints.begin(), s.ints.end());
  const int hyper = s.out[0];
  return [=](void* const* sl) {
    double total = 0;
    for (size_t k = 0; k < grads.size(); ++k) total += sum_squares(slot<const float>(sl, grads[k]), sizes[k]);
    slot<double>(sl, hyper)[2] = global_clip_scale(total, clipnorm);
  };
}

}  // namespace

void register_optim_steps(KernelRegistry& r) {
  r.add("sgd_update", DType::F32, sgd_update);
  r.add("adam_update", DType::F32, adam_update);
  r.add("rmsprop_update", DType::F32, rmsprop_update);
  r.add("adagrad_update", DType::F32, adagrad_update);
  r.add("global_norm_scale", DType::F32, global_norm_scale);
}

}  // namespace engine
