// PLACEHOLDER scalar elementwise kernels (to be replaced by vectorised, dispatched ones).
#include "engine/elementwise.h"

#include <algorithm>
#include <cmath>

namespace engine {

static float act1(float v, Act act, float a, float b) {
  switch (act) {
    case Act::None: case Act::Identity: return v;
    case Act::Relu: return v > 0 ? v : 0;
    case Act::LeakyRelu: return v > 0 ? v : a * v;
    case Act::Sigmoid: return 1.f / (1.f + std::exp(-v));
    case Act::Tanh: return std::tanh(v);
    case Act::Gelu: return 0.5f * v * (1.f + std::erf(v * 0.70710678f));
    case Act::GeluTanh: return 0.5f * v * (1.f + std::tanh(0.7978845608f * (v + 0.044715f * v * v * v)));
    case Act::Elu: return v > 0 ? v : a * (std::exp(v) - 1.f);
    case Act::Selu: return 1.0507009873554805f * (v > 0 ? v : 1.6732632423543772f * (std::exp(v) - 1.f));
    case Act::Silu: return v / (1.f + std::exp(-v));
    case Act::Softplus: return std::log1p(std::exp(v));
    case Act::HardSigmoid: return std::clamp(a * v + b, 0.f, 1.f);
    case Act::Clip: return std::clamp(v, a, b);
    case Act::Exp: return std::exp(v);
    case Act::Log: return std::log(v);
    case Act::Sqrt: return std::sqrt(v);
    case Act::Neg: return -v;
    case Act::Abs: return std::fabs(v);
    case Act::Reciprocal: return 1.f / v;
    case Act::Square: return v * v;
    case Act::Erf: return std::erf(v);
  }
  return v;
}

void activation(float* y, const float* x, index_t n, Act act, float a, float b) {
  for (index_t i = 0; i < n; ++i) y[i] = act1(x[i], act, a, b);
}

void binary(float* out, const float* a, const float* b, BinaryOp op, int ndim, const index_t* shape,
            const index_t* as, const index_t* bs) {
  index_t total = 1;
  for (int d = 0; d < ndim; ++d) total *= shape[d];
  for (index_t i = 0; i < total; ++i) {
    index_t r = i, ao = 0, bo = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      index_t c = r % shape[d];
      r /= shape[d];
      ao += c * as[d];
      bo += c * bs[d];
    }
    float u = a[ao], v = b[bo];
    switch (op) {
      case BinaryOp::Add: out[i] = u + v; break;
      case BinaryOp::Sub: out[i] = u - v; break;
      case BinaryOp::Mul: out[i] = u * v; break;
      case BinaryOp::Div: out[i] = u / v; break;
      case BinaryOp::Max: out[i] = std::max(u, v); break;
      case BinaryOp::Min: out[i] = std::min(u, v); break;
      case BinaryOp::Pow: out[i] = std::pow(u, v); break;
    }
  }
}

void softmax(float* y, const float* x, index_t outer, index_t axis, index_t inner, bool log) {
  for (index_t o = 0; o < outer; ++o)
    for (index_t in = 0; in < inner; ++in) {
      const float* xp = x + o * axis * inner + in;
      float* yp = y + o * axis * inner + in;
      float m = xp[0];
      for (index_t k = 1; k < axis; ++k) m = std::max(m, xp[k * inner]);
      float s = 0;
      for (index_t k = 0; k < axis; ++k) s += std::exp(xp[k * inner] - m);
      for (index_t k = 0; k < axis; ++k)
        yp[k * inner] = log ? xp[k * inner] - m - std::log(s) : std::exp(xp[k * inner] - m) / s;
    }
}

}  // namespace engine
