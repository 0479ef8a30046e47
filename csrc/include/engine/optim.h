// Optimizer updates: one fused, multithreaded pass per parameter tensor that reads the
// gradient once, clips it, applies weight decay, updates the optimizer state and the
// parameter in place (float32 throughout; state starts as the caller fills it: zeros, or
// Adagrad's initial accumulator value).
//
// What is fixed when a training step is planned (betas, eps, flags) is an OptimConfig; what
// changes between steps (the learning rate from a schedule, the step count for bias
// correction, a global clip scale) is an OptimHyper read from a small float64 buffer on every
// call, so one planned program serves the whole run.
//
// Where Keras and PyTorch define an update differently, `convention` picks one (formulas in
// docs/training.md): Adam's eps added to sqrt(v) after (Keras: eps·sqrt(1-β2^t) in effect)
// or before (torch) the bias correction; RMSprop's and Adagrad's eps inside (Keras) or outside
// (torch) the sqrt, RMSprop's momentum buffer holding lr·g/rms (Keras) or g/rms (torch); SGD's
// momentum v = m·v − lr·g (Keras) or v = m·v + (1−dampening)·g, v₁ = g (torch).
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {

enum class OptimKind : int { Sgd = 0, Adam = 1, Rmsprop = 2, Adagrad = 3 };
enum class OptimConvention : int { Keras = 0, Torch = 1 };
// None; Coupled: g += wd·p (L2, torch's SGD/Adam/RMSprop/Adagrad); Decoupled: p −= lr·wd·p
// before the update (Keras's every optimizer, torch's AdamW).
enum class WeightDecayMode : int { None = 0, Coupled = 1, Decoupled = 2 };

struct OptimConfig {
  OptimKind kind = OptimKind::Sgd;
  OptimConvention convention = OptimConvention::Keras;
  WeightDecayMode decay_mode = WeightDecayMode::None;
  double weight_decay = 0;
  double clipnorm = 0;   // > 0: g · clipnorm / max(‖g‖, clipnorm), per tensor (Keras)
  double clipvalue = 0;  // > 0: g clamped to [−clipvalue, clipvalue] (NaN stays NaN)
  double momentum = 0;   // SGD, RMSprop
  double dampening = 0;  // SGD, torch convention only
  bool nesterov = false; // SGD
  double beta1 = 0.9, beta2 = 0.999;  // Adam
  bool amsgrad = false;               // Adam
  double rho = 0.9;                   // RMSprop (torch calls it alpha)
  bool centered = false;              // RMSprop
  double eps = 1e-7;
};

// Layout of the run-time buffer (float64): [lr, step, grad_scale].
//   lr          the learning rate of this update (schedules and Adagrad's lr_decay applied)
//   step        1-based count of this update (bias correction; torch SGD's first step)
//   grad_scale  multiplies every gradient first (global_clipnorm's scale; 1 for none)
constexpr int kOptimHyperLen = 3;
struct OptimHyper {
  double lr = 0;
  std::int64_t step = 1;
  double grad_scale = 1;
};
OptimHyper read_optim_hyper(const double* buf);

// Throws engine::Error naming what is wrong (ranges, flags that contradict each other).
void check_optim_config(const OptimConfig& c);

// The state tensors an update reads and writes, in this order:
//   SGD      [momentum buffer] if momentum != 0
//   Adam     [m, v] (+ [v_max] with amsgrad)
//   RMSprop  [mean square] (+ [momentum buffer] if momentum > 0) (+ [mean gradient] if centered)
//   Adagrad  [accumulator]
int optim_state_count(const OptimConfig& c);

// One update of `n` parameters. states: optim_state_count(c) pointers of n floats each.
// Throws (on the calling thread, before any write) if hyper.step < 1.
void optim_update(const OptimConfig& c, const OptimHyper& hyper, float* param, const float* grad,
                  float* const* states, index_t n);

// Σ x² accumulated in float64 over a partition that depends only on n (the same result
// for every thread count): the norms behind clipnorm and global_clipnorm.
double sum_squares(const float* x, index_t n);

// Keras's clip_by_global_norm scale from the total Σ g² of all gradients:
// clipnorm · min(1/‖g‖, 1/clipnorm), NaN when the norm is not finite.
double global_clip_scale(double sum_sq, double clipnorm);

}  // namespace engine
