// Types shared by every CPU kernel family. Kernels know nothing of graphs:
// they take raw pointers, sizes and strides (outputs first, then inputs, then sizes).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace engine {

using index_t = std::int64_t;

// Thrown by kernels and the runtime when arguments are inconsistent. The bindings map it
// to engine.errors.KernelError (an engine.EngineError) so nothing ever reaches memory
// with a bad shape.
struct Error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

#define ENGINE_CHECK(cond, msg)                                  \
  do {                                                           \
    if (!(cond)) throw ::engine::Error(std::string(msg));        \
  } while (0)

// Data a kernel prepares once and reads on every call (packed weights, tables): immutable,
// shared by every plan of a model. Kernel families derive their prepared types from it so
// the runtime can hold them without knowing what they are.
struct KernelState {
  virtual ~KernelState() = default;
};

// Activations: used standalone (elementwise unary) and fused into GEMM/conv epilogues.
// alpha/beta carry the parameters: LeakyRelu slope, Elu alpha, Clip min/max,
// HardSigmoid alpha/beta.
enum class Act : int {
  None = 0,
  Relu,
  LeakyRelu,
  Sigmoid,
  Tanh,
  Gelu,      // exact, 0.5·x·(1+erf(x/√2))
  GeluTanh,  // tanh approximation
  Elu,
  Selu,
  Silu,      // x·sigmoid(x)
  Softplus,
  HardSigmoid,
  Clip,
  Exp,
  Log,
  Sqrt,
  Neg,
  Abs,
  Reciprocal,
  Square,
  Erf,
  Identity,
};

// What a GEMM or convolution applies to its result while it is still in cache:
// C = act(C + bias + residual). bias has N entries (one per output column) unless bias_per_row,
// in which case it has M entries. residual (a skip connection) is M×N with leading dimension
// ldr; it must not overlap C, except by being C itself (then it is read as beta = 1).
struct Epilogue {
  const float* bias = nullptr;
  bool bias_per_row = false;
  Act act = Act::None;
  float act_alpha = 0.f;
  float act_beta = 0.f;
  const float* residual = nullptr;
  index_t ldr = 0;
};

}  // namespace engine
