// Optimizer kernels shared between the dispatcher (optim.cpp) and the per-ISA loops
// (optim_impl.h, compiled as optim_{avx512,avx2,portable}.cpp): the float32 coefficients of
// one update, worked out once per call from OptimConfig + OptimHyper, and the loop
// declarations per ISA namespace.
#pragma once

#include "engine/common.h"

namespace engine {

struct OptimCoeffs {
  bool torch = false;     // OptimConvention::Torch formulas
  float gscale = 1.f;     // gradient multiplier: global clip scale × per-tensor clipnorm factor
  float clip = 0.f;       // clamp bound (+inf: no clipvalue)
  bool coupled = false;   // g += wd·p
  bool decoupled = false; // p *= decay_mul = 1 − lr·wd
  float wd = 0.f, decay_mul = 1.f;
  float lr = 0.f, neg_lr = 0.f;
  // SGD
  bool has_momentum = false, nesterov = false, first = false;  // first: torch's v₁ = g
  float mom = 0.f, damp1 = 1.f;                                 // damp1 = 1 − dampening
  // Adam
  bool amsgrad = false;
  float b1 = 0.f, omb1 = 0.f, b2 = 0.f, omb2 = 0.f;
  float neg_step = 0.f;   // torch: −lr/(1−β1^t); Keras: −lr·sqrt(1−β2^t)/(1−β1^t)
  float bc2_sqrt = 1.f;   // torch: sqrt(1−β2^t)
  // RMSprop
  bool centered = false;
  float rho = 0.f, omrho = 0.f;
  float eps = 0.f;
};

#define ENGINE_OPTIM_DECLARE(ns)                                                               \
  namespace ns {                                                                               \
  void sgd(const OptimCoeffs& c, float* p, const float* g, float* buf, index_t n);             \
  void adam(const OptimCoeffs& c, float* p, const float* g, float* m, float* v, float* vmax,   \
            index_t n);                                                                        \
  void rmsprop(const OptimCoeffs& c, float* p, const float* g, float* sq, float* buf,          \
               float* gavg, index_t n);                                                        \
  void adagrad(const OptimCoeffs& c, float* p, const float* g, float* acc, index_t n);         \
  double sumsq(const float* x, index_t n);                                                     \
  }
ENGINE_OPTIM_DECLARE(optim_avx512)
ENGINE_OPTIM_DECLARE(optim_avx2)
ENGINE_OPTIM_DECLARE(optim_portable)
#undef ENGINE_OPTIM_DECLARE

}  // namespace engine
