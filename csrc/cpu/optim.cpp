// Optimizer updates: argument checks, the per-call coefficients, ISA dispatch and threading.
// The loops live in optim_impl.h, compiled once per ISA.
//
// Scalars follow each framework: torch works them out in float64 (Python floats) and rounds
// once to float32; Keras computes β^t and its Adam step size in float32 (its variables'
// type), which matters for 1 − β2^t (0.999f is not 0.999), so the Keras path does the same.
#include "engine/optim.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "cpu/optim_kernels.h"
#include "engine/cpu_features.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

struct Kernels {
  void (*sgd)(const OptimCoeffs&, float*, const float*, float*, index_t);
  void (*adam)(const OptimCoeffs&, float*, const float*, float*, float*, float*, index_t);
  void (*rmsprop)(const OptimCoeffs&, float*, const float*, float*, float*, float*, index_t);
  void (*adagrad)(const OptimCoeffs&, float*, const float*, float*, index_t);
  double (*sumsq)(const float*, index_t);
};

constexpr Kernels kKernels[3] = {
    {optim_portable::sgd, optim_portable::adam, optim_portable::rmsprop, optim_portable::adagrad,
     optim_portable::sumsq},
    {optim_avx2::sgd, optim_avx2::adam, optim_avx2::rmsprop, optim_avx2::adagrad, optim_avx2::sumsq},
    {optim_avx512::sgd, optim_avx512::adam, optim_avx512::rmsprop, optim_avx512::adagrad, optim_avx512::sumsq},
};

inline const Kernels& kernels() { return kKernels[static_cast<int>(cpu_isa())]; }

constexpr index_t kBlock = 16;          // chunk boundaries on 64-byte multiples
constexpr index_t kGrain = 1 << 15;     // below this many floats: one thread (a few µs)
constexpr index_t kNormChunk = 1 << 16; // sum_squares' fixed partition
constexpr index_t kMaxNormChunks = 256;

template <class F>
void split(index_t n, F&& f) {
  if (n <= kGrain) return f(index_t(0), n);
  const index_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(blocks, kGrain / kBlock, [&](index_t b0, index_t b1) {
    const index_t i0 = b0 * kBlock, i1 = std::min(n, b1 * kBlock);
    f(i0, i1);
  });
}

bool unit(double x) { return x >= 0 && x <= 1; }        // NaN fails
bool unit_open(double x) { return x >= 0 && x < 1; }
bool nonneg(double x) { return x >= 0 && std::isfinite(x); }

OptimCoeffs coeffs(const OptimConfig& c, const OptimHyper& h, double gscale) {
  OptimCoeffs k;
  const bool torch = c.convention == OptimConvention::Torch;
  k.torch = torch;
  k.gscale = static_cast<float>(gscale);
  k.clip = c.clipvalue > 0 ? static_cast<float>(c.clipvalue) : std::numeric_limits<float>::infinity();
  k.coupled = c.decay_mode == WeightDecayMode::Coupled && c.weight_decay != 0;
  k.decoupled = c.decay_mode == WeightDecayMode::Decoupled && c.weight_decay != 0;
  k.wd = static_cast<float>(c.weight_decay);
  k.lr = static_cast<float>(h.lr);
  // torch: 1 − lr·wd in float64; Keras (torch backend): 1 − wd·lr on float32 tensors.
  k.decay_mul = torch ? static_cast<float>(1.0 - h.lr * c.weight_decay) : 1.f - k.wd * k.lr;
  k.neg_lr = -k.lr;
  k.eps = static_cast<float>(c.eps);
  k.mom = static_cast<float>(c.momentum);
  switch (c.kind) {
    case OptimKind::Sgd:
      k.has_momentum = c.momentum != 0;
      k.nesterov = c.nesterov;
      k.first = h.step == 1;
      k.damp1 = static_cast<float>(1.0 - c.dampening);
      break;
    case OptimKind::Adam: {
      k.amsgrad = c.amsgrad;
      k.b1 = static_cast<float>(c.beta1);
      k.b2 = static_cast<float>(c.beta2);
      k.omb1 = static_cast<float>(1.0 - c.beta1);
      k.omb2 = static_cast<float>(1.0 - c.beta2);
      if (torch) {
        const double t = static_cast<double>(h.step);
        k.neg_step = static_cast<float>(-(h.lr / (1.0 - std::pow(c.beta1, t))));
        k.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(c.beta2, t)));
      } else {
        const float t = static_cast<float>(h.step);
        const float alpha = k.lr * std::sqrt(1.f - std::pow(k.b2, t)) / (1.f - std::pow(k.b1, t));
        k.neg_step = -alpha;
      }
      break;
    }
    case OptimKind::Rmsprop:
      k.has_momentum = c.momentum > 0;
      k.centered = c.centered;
      k.rho = static_cast<float>(c.rho);
      k.omrho = static_cast<float>(1.0 - c.rho);
      break;
    case OptimKind::Adagrad:
      break;
  }
  return k;
}

}  // namespace

OptimHyper read_optim_hyper(const double* buf) {
  OptimHyper h;
  h.lr = buf[0];
  const double step = buf[1];
  // A step that is not a whole number >= 1 would index bias corrections wrongly: refuse it.
  ENGINE_CHECK(step >= 1 && step <= 9.0e15 && step == std::floor(step),
               "optimizer update: step must be a whole number >= 1, got " + std::to_string(step));
  h.step = static_cast<std::int64_t>(step);
  h.grad_scale = buf[2];
  return h;
}

void check_optim_config(const OptimConfig& c) {
  const int kind = static_cast<int>(c.kind), conv = static_cast<int>(c.convention);
  const int decay = static_cast<int>(c.decay_mode);
  ENGINE_CHECK(kind >= 0 && kind <= 3, "optimizer: unknown kind " + std::to_string(kind));
  ENGINE_CHECK(conv == 0 || conv == 1, "optimizer: unknown convention " + std::to_string(conv));
  ENGINE_CHECK(decay >= 0 && decay <= 2, "optimizer: unknown weight decay mode " + std::to_string(decay));
  ENGINE_CHECK(nonneg(c.weight_decay), "optimizer: weight_decay must be >= 0, got " + std::to_string(c.weight_decay));
  ENGINE_CHECK(nonneg(c.clipnorm), "optimizer: clipnorm must be >= 0 (0: off), got " + std::to_string(c.clipnorm));
  ENGINE_CHECK(c.clipvalue >= 0, "optimizer: clipvalue must be >= 0 (0: off), got " + std::to_string(c.clipvalue));
  ENGINE_CHECK(nonneg(c.eps), "optimizer: epsilon must be >= 0, got " + std::to_string(c.eps));
  ENGINE_CHECK(unit(c.momentum), "optimizer: momentum must be in [0, 1], got " + std::to_string(c.momentum));
  const bool torch = c.convention == OptimConvention::Torch;
  switch (c.kind) {
    case OptimKind::Sgd:
      ENGINE_CHECK(unit(c.dampening), "SGD: dampening must be in [0, 1], got " + std::to_string(c.dampening));
      ENGINE_CHECK(torch || c.dampening == 0, "SGD: dampening is a torch-convention option");
      ENGINE_CHECK(!(torch && c.nesterov) || (c.momentum > 0 && c.dampening == 0),
                   "SGD: nesterov needs momentum > 0 and zero dampening");
      break;
    case OptimKind::Adam:
      ENGINE_CHECK(unit_open(c.beta1), "Adam: beta_1 must be in [0, 1), got " + std::to_string(c.beta1));
      ENGINE_CHECK(unit_open(c.beta2), "Adam: beta_2 must be in [0, 1), got " + std::to_string(c.beta2));
      break;
    case OptimKind::Rmsprop:
      ENGINE_CHECK(unit_open(c.rho), "RMSprop: rho must be in [0, 1), got " + std::to_string(c.rho));
      break;
    case OptimKind::Adagrad:
      break;
  }
}

int optim_state_count(const OptimConfig& c) {
  switch (c.kind) {
    case OptimKind::Sgd: return c.momentum != 0 ? 1 : 0;
    case OptimKind::Adam: return c.amsgrad ? 3 : 2;
    case OptimKind::Rmsprop: return 1 + (c.momentum > 0 ? 1 : 0) + (c.centered ? 1 : 0);
    case OptimKind::Adagrad: return 1;
  }
  return 0;
}

double sum_squares(const float* x, index_t n) {
  if (n <= 0) return 0;
  const Kernels& k = kernels();
  // A partition fixed by n alone (not by the thread count): the same sum on every run.
  const index_t chunk = std::max(kNormChunk, (n + kMaxNormChunks - 1) / kMaxNormChunks);
  const index_t tasks = (n + chunk - 1) / chunk;
  if (tasks == 1) return k.sumsq(x, n);
  double part[kMaxNormChunks];
  parallel_tasks(tasks, [&](std::int64_t t) {
    const index_t i0 = t * chunk, i1 = std::min(n, i0 + chunk);
    part[t] = k.sumsq(x + i0, i1 - i0);
  });
  double total = 0;
  for (index_t t = 0; t < tasks; ++t) total += part[t];
  return total;
}

double global_clip_scale(double sum_sq, double clipnorm) {
  const double norm = std::sqrt(sum_sq);
  // Keras: clip_norm · min(1/norm, 1/clip_norm), plus (norm − norm) so inf/NaN give NaN.
  return clipnorm * std::min(1.0 / norm, 1.0 / clipnorm) + (norm - norm);
}

void optim_update(const OptimConfig& c, const OptimHyper& h, float* p, const float* g, float* const* st,
                  index_t n) {
  ENGINE_CHECK(h.step >= 1, "optimizer update: step must be >= 1, got " + std::to_string(h.step));
  if (n <= 0) return;
  double scale = h.grad_scale;
  if (c.clipnorm > 0) {
    // Keras: g · clipnorm / max(‖g‖, clipnorm); a NaN norm makes the whole tensor NaN there too.
    const double norm = std::sqrt(sum_squares(g, n)) * std::fabs(scale);
    scale *= c.clipnorm / (std::isnan(norm) ? norm : std::max(norm, c.clipnorm));
  }
  const OptimCoeffs k = coeffs(c, h, scale);
  const Kernels& K = kernels();
  auto at = [](float* s, index_t i) { return s ? s + i : nullptr; };
  const int ns = optim_state_count(c);
  float* s0 = ns > 0 ? st[0] : nullptr;
  float* s1 = ns > 1 ? st[1] : nullptr;
  float* s2 = ns > 2 ? st[2] : nullptr;
  switch (c.kind) {
    case OptimKind::Sgd:
      return split(n, [&](index_t i0, index_t i1) { K.sgd(k, p + i0, g + i0, at(s0, i0), i1 - i0); });
    case OptimKind::Adam:
      return split(n, [&](index_t i0, index_t i1) {
        K.adam(k, p + i0, g + i0, s0 + i0, s1 + i0, at(s2, i0), i1 - i0);
      });
    case OptimKind::Rmsprop: {
      // [mean square] (+ momentum) (+ mean gradient): the optional ones shift.
      float* buf = c.momentum > 0 ? s1 : nullptr;
      float* gavg = c.centered ? (c.momentum > 0 ? s2 : s1) : nullptr;
      return split(n, [&](index_t i0, index_t i1) {
        K.rmsprop(k, p + i0, g + i0, s0 + i0, at(buf, i0), at(gavg, i0), i1 - i0);
      });
    }
    case OptimKind::Adagrad:
      return split(n, [&](index_t i0, index_t i1) { K.adagrad(k, p + i0, g + i0, s0 + i0, i1 - i0); });
  }
}

}  // namespace engine
