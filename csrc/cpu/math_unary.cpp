// Unary math for every element type (see engine/math.h) and Clip.
//   float32: the activation kernels where the Act enum has the op, the per-ISA vector kernels
//            of math_f32_impl.h for sin, cos and the other cheap ones, libm (scalar) for the
//            remaining trigonometric and hyperbolic functions;
//   float16: converted to float32 in blocks of kBlock, computed as float32, rounded back;
//   float64: libm in double; integers and bool: typed loops (wrapping like numpy).
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "engine/cpu_features.h"
#include "engine/elementwise.h"
#include "engine/math.h"

namespace engine {

#define MF_DECLARE(ns) \
  namespace ns {       \
  bool unary_vec(float* y, const float* x, index_t n, UnaryOp op, float alpha, float beta); \
  }
MF_DECLARE(mf_avx512)
MF_DECLARE(mf_avx2)
MF_DECLARE(mf_portable)
#undef MF_DECLARE

namespace {

using U = UnaryOp;
constexpr int kOps = static_cast<int>(U::Count);
constexpr index_t kBlock = 256;  // float16 conversion block (stack buffers)

// -- float math, T = float or double ----------------------------------------------------------

template <class T>
inline T sigmoid(T x) {  // exp(-|x|) never overflows
  const T e = std::exp(-std::fabs(x));
  return x >= 0 ? 1 / (1 + e) : e / (1 + e);
}

template <class T>
inline T softplus(T x) {
  return (x > 0 ? x : T(0)) + std::log1p(std::exp(-std::fabs(x)));
}

template <class T, U OP>
inline T apply_float(T x, T a, T b) {
  if constexpr (OP == U::Abs) return std::fabs(x);
  else if constexpr (OP == U::Neg) return -x;
  else if constexpr (OP == U::Sign) return x > 0 ? T(1) : (x < 0 ? T(-1) : x);
  else if constexpr (OP == U::Relu) return x < 0 ? T(0) : x;
  else if constexpr (OP == U::Square) return x * x;
  else if constexpr (OP == U::Acos) return std::acos(x);
  else if constexpr (OP == U::Acosh) return std::acosh(x);
  else if constexpr (OP == U::Asin) return std::asin(x);
  else if constexpr (OP == U::Asinh) return std::asinh(x);
  else if constexpr (OP == U::Atan) return std::atan(x);
  else if constexpr (OP == U::Atanh) return std::atanh(x);
  else if constexpr (OP == U::Cos) return std::cos(x);
  else if constexpr (OP == U::Cosh) return std::cosh(x);
  else if constexpr (OP == U::Sin) return std::sin(x);
  else if constexpr (OP == U::Sinh) return std::sinh(x);
  else if constexpr (OP == U::Tan) return std::tan(x);
  else if constexpr (OP == U::Tanh) return std::tanh(x);
  else if constexpr (OP == U::Ceil) return std::ceil(x);
  else if constexpr (OP == U::Floor) return std::floor(x);
  else if constexpr (OP == U::Round) return std::nearbyint(x);  // default mode: half to even
  else if constexpr (OP == U::Erf) return std::erf(x);
  else if constexpr (OP == U::Exp) return std::exp(x);
  else if constexpr (OP == U::Log) return std::log(x);
  else if constexpr (OP == U::Sqrt) return std::sqrt(x);
  else if constexpr (OP == U::Reciprocal) return 1 / x;
  else if constexpr (OP == U::Sigmoid) return sigmoid(x);
  else if constexpr (OP == U::Softplus) return softplus(x);
  else if constexpr (OP == U::Softsign) return x / (1 + std::fabs(x));
  else if constexpr (OP == U::Mish) return x * std::tanh(softplus(x));
  else if constexpr (OP == U::HardSwish) return x * std::fmin(T(1), std::fmax(T(0), x / 6 + T(0.5)));
  else if constexpr (OP == U::Gelu) return T(0.5) * x * (1 + std::erf(x * T(0.70710678118654752440)));
  else if constexpr (OP == U::GeluTanh)
    return T(0.5) * x * (1 + std::tanh(T(0.79788456080286535588) * (x + T(0.044715) * x * x * x)));
  else if constexpr (OP == U::Swish) return x * sigmoid(a * x);
  else if constexpr (OP == U::LeakyRelu) return x < 0 ? a * x : x;
  else if constexpr (OP == U::Elu) return x < 0 ? a * std::expm1(x) : x;
  else if constexpr (OP == U::Selu) return x > 0 ? b * x : b * (a * std::expm1(x));
  else if constexpr (OP == U::Celu) return std::fmax(T(0), x) + std::fmin(T(0), a * std::expm1(x / a));
  else if constexpr (OP == U::HardSigmoid) return std::fmax(T(0), std::fmin(T(1), a * x + b));
  else if constexpr (OP == U::ThresholdedRelu) return x > a ? x : T(0);
  else if constexpr (OP == U::Shrink) return x < -b ? x + a : (x > b ? x - a : T(0));
  else return x;  // not a float op (Not, IsNaN, IsInf): never resolved
}

template <class T, U OP>
void float_op(void* y, const void* x, index_t n, float alpha, float beta) {
  T* yp = static_cast<T*>(y);
  const T* xp = static_cast<const T*>(x);
  const T a = alpha, b = beta;
  for (index_t i = 0; i < n; ++i) yp[i] = apply_float<T, OP>(xp[i], a, b);
}

// IsNaN / IsInf: float in, bool (one byte, 0/1) out.
template <class T, U OP>
void float_test(void* y, const void* x, index_t n, float alpha, float beta) {
  std::uint8_t* yp = static_cast<std::uint8_t*>(y);
  const T* xp = static_cast<const T*>(x);
  const T inf = std::numeric_limits<T>::infinity();
  const bool neg = alpha != 0, pos = beta != 0;
  for (index_t i = 0; i < n; ++i) {
    const T v = xp[i];
    if constexpr (OP == U::IsNaN) yp[i] = v != v;
    else yp[i] = (pos && v == inf) || (neg && v == -inf);
  }
}

// -- integers and bool ------------------------------------------------------------------------

template <class T>
using Wide = std::conditional_t<(sizeof(T) < 4), std::uint32_t, std::make_unsigned_t<T>>;  // wraps, no UB

template <class T, U OP>
void int_op(void* y, const void* x, index_t n, float alpha, float beta) {
  T* yp = static_cast<T*>(y);
  const T* xp = static_cast<const T*>(x);
  const double bias = alpha, lambd = beta;
  for (index_t i = 0; i < n; ++i) {
    const T v = xp[i];
    if constexpr (OP == U::Abs) yp[i] = v < 0 ? T(Wide<T>(0) - Wide<T>(v)) : v;
    else if constexpr (OP == U::Neg) yp[i] = T(Wide<T>(0) - Wide<T>(v));
    else if constexpr (OP == U::Sign) yp[i] = T((v > 0) - (v < 0));
    else if constexpr (OP == U::Relu) yp[i] = v < 0 ? T(0) : v;
    else if constexpr (OP == U::Square) yp[i] = T(Wide<T>(v) * Wide<T>(v));
    else if constexpr (OP == U::Shrink) {
      const double d = static_cast<double>(v);
      yp[i] = d < -lambd ? static_cast<T>(d + bias) : (d > lambd ? static_cast<T>(d - bias) : T(0));
    } else if constexpr (OP == U::Not) yp[i] = v == 0;
  }
  (void)bias, (void)lambd;
}

constexpr bool int_defined(U op, bool is_signed, bool is_bool) {
  if (is_bool) return op == U::Not;
  switch (op) {
    case U::Abs: case U::Sign: case U::Square: case U::Shrink: return true;
    case U::Neg: case U::Relu: return is_signed;
    default: return false;
  }
}

// -- float32 and float16 dispatch ---------------------------------------------------------------

template <int... I>
constexpr std::array<UnaryFn, kOps> float_table_f32(std::integer_sequence<int, I...>) {
  return {{&float_op<float, static_cast<U>(I)>...}};
}
template <int... I>
constexpr std::array<UnaryFn, kOps> float_table_f64(std::integer_sequence<int, I...>) {
  return {{&float_op<double, static_cast<U>(I)>...}};
}
constexpr auto kOpSeq = std::make_integer_sequence<int, kOps>{};
constexpr std::array<UnaryFn, kOps> kScalarF32 = float_table_f32(kOpSeq);
constexpr std::array<UnaryFn, kOps> kScalarF64 = float_table_f64(kOpSeq);

template <Act A>
void via_activation(void* y, const void* x, index_t n, float alpha, float beta) {
  activation(static_cast<float*>(y), static_cast<const float*>(x), n, A, alpha, beta);
}

template <U OP>
void vec_f32(void* y, const void* x, index_t n, float alpha, float beta) {
  float* yp = static_cast<float*>(y);
  const float* xp = static_cast<const float*>(x);
  switch (cpu_isa()) {
    case Isa::Avx512: mf_avx512::unary_vec(yp, xp, n, OP, alpha, beta); return;
    case Isa::Avx2: mf_avx2::unary_vec(yp, xp, n, OP, alpha, beta); return;
    default: mf_portable::unary_vec(yp, xp, n, OP, alpha, beta); return;
  }
}

void swish_f32(void* y, const void* x, index_t n, float alpha, float beta) {
  if (alpha == 1.f) return via_activation<Act::Silu>(y, x, n, alpha, beta);  // SiLU
  vec_f32<U::Swish>(y, x, n, alpha, beta);
}

UnaryFn f32_kernel(U op) {
  switch (op) {
    case U::Abs: return via_activation<Act::Abs>;
    case U::Neg: return via_activation<Act::Neg>;
    case U::Relu: return via_activation<Act::Relu>;
    case U::Square: return via_activation<Act::Square>;
    case U::Tanh: return via_activation<Act::Tanh>;
    case U::Erf: return via_activation<Act::Erf>;
    case U::Exp: return via_activation<Act::Exp>;
    case U::Log: return via_activation<Act::Log>;
    case U::Sqrt: return via_activation<Act::Sqrt>;
    case U::Reciprocal: return via_activation<Act::Reciprocal>;
    case U::Sigmoid: return via_activation<Act::Sigmoid>;
    case U::Softplus: return via_activation<Act::Softplus>;
    case U::Gelu: return via_activation<Act::Gelu>;
    case U::GeluTanh: return via_activation<Act::GeluTanh>;
    case U::LeakyRelu: return via_activation<Act::LeakyRelu>;
    case U::Elu: return via_activation<Act::Elu>;
    case U::HardSigmoid: return via_activation<Act::HardSigmoid>;
    case U::Swish: return swish_f32;
    case U::Sign: return vec_f32<U::Sign>;
    case U::Sin: return vec_f32<U::Sin>;
    case U::Cos: return vec_f32<U::Cos>;
    case U::Round: return vec_f32<U::Round>;
    case U::Floor: return vec_f32<U::Floor>;
    case U::Ceil: return vec_f32<U::Ceil>;
    case U::Softsign: return vec_f32<U::Softsign>;
    case U::Mish: return vec_f32<U::Mish>;
    case U::HardSwish: return vec_f32<U::HardSwish>;
    case U::Selu: return vec_f32<U::Selu>;
    case U::Celu: return vec_f32<U::Celu>;
    case U::ThresholdedRelu: return vec_f32<U::ThresholdedRelu>;
    case U::Shrink: return vec_f32<U::Shrink>;
    case U::IsNaN: return float_test<float, U::IsNaN>;
    case U::IsInf: return float_test<float, U::IsInf>;
    case U::Not: return nullptr;
    default: return kScalarF32[static_cast<int>(op)];
  }
}

// float16: blocks converted to float32, computed there, rounded back (IsNaN / IsInf write
// their bool result directly).
template <U OP>
void half_op(void* y, const void* x, index_t n, float alpha, float beta) {
  static const UnaryFn f32 = f32_kernel(OP);
  constexpr bool to_bool = OP == U::IsNaN || OP == U::IsInf;
  float buf[kBlock];
  const auto* xp = static_cast<const std::uint16_t*>(x);
  for (index_t i = 0; i < n; i += kBlock) {
    const index_t m = n - i < kBlock ? n - i : kBlock;
    half_to_float(buf, xp + i, m);
    if constexpr (to_bool) {
      f32(static_cast<std::uint8_t*>(y) + i, buf, m, alpha, beta);
    } else {
      f32(buf, buf, m, alpha, beta);
      float_to_half(static_cast<std::uint16_t*>(y) + i, buf, m);
    }
  }
}

template <int... I>
constexpr std::array<UnaryFn, kOps> half_table(std::integer_sequence<int, I...>) {
  return {{&half_op<static_cast<U>(I)>...}};
}

template <class T, int... I>
constexpr std::array<UnaryFn, kOps> int_table(std::integer_sequence<int, I...>) {
  return {{&int_op<T, static_cast<U>(I)>...}};
}

template <class T>
UnaryFn int_kernel(U op) {
  static constexpr auto table = int_table<T>(kOpSeq);
  return int_defined(op, std::is_signed_v<T>, false) ? table[static_cast<int>(op)] : nullptr;
}

}  // namespace

UnaryFn unary_kernel(UnaryOp op, DType in, DType* out) {
  const int k = static_cast<int>(op);
  if (k < 0 || k >= kOps) return nullptr;
  const bool test = op == U::IsNaN || op == U::IsInf;
  *out = test ? DType::Bool : in;
  switch (in) {
    case DType::F32: return f32_kernel(op);
    case DType::F16: {
      static constexpr auto table = half_table(kOpSeq);
      return op == U::Not ? nullptr : table[k];
    }
    case DType::F64:
      if (op == U::IsNaN) return float_test<double, U::IsNaN>;
      if (op == U::IsInf) return float_test<double, U::IsInf>;
      return op == U::Not ? nullptr : kScalarF64[k];
    case DType::I8: return int_kernel<std::int8_t>(op);
    case DType::I16: return int_kernel<std::int16_t>(op);
    case DType::I32: return int_kernel<std::int32_t>(op);
    case DType::I64: return int_kernel<std::int64_t>(op);
    case DType::U8: return int_kernel<std::uint8_t>(op);
    case DType::U16: return int_kernel<std::uint16_t>(op);
    case DType::U32: return int_kernel<std::uint32_t>(op);
    case DType::U64: return int_kernel<std::uint64_t>(op);
    case DType::Bool: return op == U::Not ? int_op<std::uint8_t, U::Not> : nullptr;
    default: return nullptr;
  }
}

bool unary_heavy(UnaryOp op) {
  switch (op) {
    case U::Abs: case U::Neg: case U::Sign: case U::Relu: case U::Square: case U::Not:
    case U::IsNaN: case U::IsInf: case U::Ceil: case U::Floor: case U::Round: case U::Sqrt:
    case U::Reciprocal: case U::Softsign: case U::HardSwish: case U::LeakyRelu:
    case U::HardSigmoid: case U::ThresholdedRelu: case U::Shrink:
      return false;
    default:
      return true;
  }
}

// -- Clip ---------------------------------------------------------------------------------------

namespace {

template <class T>
void clip_typed(T* y, const T* x, index_t n, const void* lo, const void* hi) {
  const T l = lo ? *static_cast<const T*>(lo) : std::numeric_limits<T>::lowest();
  const T h = hi ? *static_cast<const T*>(hi) : std::numeric_limits<T>::max();
  for_each_block(n, 1 << 16, [&](index_t i0, index_t i1) {
    for (index_t i = i0; i < i1; ++i) {
      T v = x[i] < l ? l : x[i];  // NaN passes both tests
      y[i] = v > h ? h : v;
    }
  });
}

void clip_half(std::uint16_t* y, const std::uint16_t* x, index_t n, const void* lo, const void* hi) {
  float l = -std::numeric_limits<float>::infinity(), h = -l;
  if (lo) half_to_float(&l, static_cast<const std::uint16_t*>(lo), 1);
  if (hi) half_to_float(&h, static_cast<const std::uint16_t*>(hi), 1);
  for_each_block(n, 1 << 15, [&](index_t i0, index_t i1) {
    float buf[kBlock];
    for (index_t i = i0; i < i1; i += kBlock) {
      const index_t m = i1 - i < kBlock ? i1 - i : kBlock;
      half_to_float(buf, x + i, m);
      activation(buf, buf, m, Act::Clip, l, h);
      float_to_half(y + i, buf, m);
    }
  });
}

}  // namespace

void clip(DType t, void* y, const void* x, index_t n, const void* lo, const void* hi) {
  switch (t) {
    case DType::F32: {
      const float inf = std::numeric_limits<float>::infinity();
      return activation(static_cast<float*>(y), static_cast<const float*>(x), n, Act::Clip,
                        lo ? *static_cast<const float*>(lo) : -inf, hi ? *static_cast<const float*>(hi) : inf);
    }
    case DType::F16:
      return clip_half(static_cast<std::uint16_t*>(y), static_cast<const std::uint16_t*>(x), n, lo, hi);
#define CLIP_CASE(D, T) \
  case DType::D: return clip_typed(static_cast<T*>(y), static_cast<const T*>(x), n, lo, hi);
    CLIP_CASE(F64, double)
    CLIP_CASE(I8, std::int8_t)
    CLIP_CASE(I16, std::int16_t)
    CLIP_CASE(I32, std::int32_t)
    CLIP_CASE(I64, std::int64_t)
    CLIP_CASE(U8, std::uint8_t)
    CLIP_CASE(U16, std::uint16_t)
    CLIP_CASE(U32, std::uint32_t)
    CLIP_CASE(U64, std::uint64_t)
#undef CLIP_CASE
    default:
      throw Error(std::string("clip: unsupported element type ") + dtype_name(t));
  }
}

}  // namespace engine
