// Binary rows for every element type (see engine/math.h): out[i] = op(a[i*sa], b[i*sb]).
// The unit-stride and scalar cases are separate loops so the compiler vectorises them.
// Integers wrap like numpy (arithmetic in the unsigned type: no signed-overflow UB); integer
// Div truncates toward zero like C. Integer division by zero is refused by the caller before
// any row runs (math_steps.cpp), and INT_MIN / -1 wraps instead of trapping. float16 rows are
// converted to float32 in blocks, computed there and rounded back.
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "engine/cpu_features.h"
#include "engine/math.h"

namespace engine {

namespace idiv_avx2 {
void quotients(std::int32_t* q, const std::int32_t* a, index_t sa, const std::int32_t* b, index_t sb, index_t n);
}

namespace {

using B = MathBinaryOp;
constexpr int kOps = static_cast<int>(B::Count);
constexpr index_t kBlock = 256;

template <class T>
using Wide = std::conditional_t<(sizeof(T) < 4), std::uint32_t, std::make_unsigned_t<T>>;

// Integer division truncating toward zero (C); INT_MIN / -1 wraps to INT_MIN instead of
// trapping.
template <class T>
inline T int_div(T a, T b) {
  if constexpr (std::is_signed_v<T>) return b == -1 ? T(Wide<T>(0) - Wide<T>(a)) : T(a / b);
  else return T(a / b);
}

// C's remainder (the dividend's sign), from the quotient.
template <class T>
inline T int_rem(T a, T b) {
  return T(Wide<T>(a) - Wide<T>(int_div(a, b)) * Wide<T>(b));
}

template <class T>
inline T int_pow(T base, T exp) {
  if constexpr (std::is_signed_v<T>) {
    if (exp < 0) {  // what the float result truncates to: only ±1 survive
      if (base == 1) return 1;
      if (base == -1) return (exp & 1) ? T(-1) : T(1);
      return 0;
    }
  }
  Wide<T> r = 1, b = static_cast<Wide<T>>(base);
  for (auto e = static_cast<std::make_unsigned_t<T>>(exp); e; e >>= 1) {
    if (e & 1) r *= b;
    b *= b;
  }
  return static_cast<T>(r);
}

// numpy's float mod: the result takes the divisor's sign; a zero result is a zero of that sign.
template <class T>
inline T float_mod(T a, T b) {
  T r = std::fmod(a, b);
  if (r != 0) {
    if ((r < 0) != (b < 0)) r += b;
  } else {
    r = std::copysign(T(0), b);
  }
  return r;
}

template <class T, B OP>
inline auto apply(T a, T b) {
  constexpr bool is_float = std::is_floating_point_v<T>;
  if constexpr (OP == B::Add) { if constexpr (is_float) return a + b; else return T(Wide<T>(a) + Wide<T>(b)); }
  else if constexpr (OP == B::Sub) { if constexpr (is_float) return a - b; else return T(Wide<T>(a) - Wide<T>(b)); }
  else if constexpr (OP == B::Mul) { if constexpr (is_float) return a * b; else return T(Wide<T>(a) * Wide<T>(b)); }
  else if constexpr (OP == B::Div) {
    if constexpr (is_float) return a / b;
    else if constexpr (std::is_signed_v<T>) return b == -1 ? T(Wide<T>(0) - Wide<T>(a)) : T(a / b);
    else return T(a / b);
  } else if constexpr (OP == B::Pow) {
    if constexpr (is_float) return std::pow(a, b); else return int_pow(a, b);
  } else if constexpr (OP == B::Max) {
    if constexpr (is_float) return a != a ? a : (a > b ? a : b);  // NaN in either propagates
    else return a > b ? a : b;
  } else if constexpr (OP == B::Min) {
    if constexpr (is_float) return a != a ? a : (a < b ? a : b);
    else return a < b ? a : b;
  } else if constexpr (OP == B::Mod) {
    if constexpr (is_float) return float_mod(a, b);
    else if constexpr (std::is_signed_v<T>) {
      const T r = int_rem(a, b);
      return (r != 0 && ((r < 0) != (b < 0))) ? T(Wide<T>(r) + Wide<T>(b)) : r;
    } else return int_rem(a, b);
  } else if constexpr (OP == B::FMod) {
    if constexpr (is_float) return std::fmod(a, b); else return int_rem(a, b);
  } else if constexpr (OP == B::PRelu) {
    if constexpr (is_float) return a < 0 ? a * b : a;
    else return a < 0 ? T(Wide<T>(a) * Wide<T>(b)) : a;
  }
  else if constexpr (OP == B::Equal) return std::uint8_t(a == b);
  else if constexpr (OP == B::Less) return std::uint8_t(a < b);
  else if constexpr (OP == B::Greater) return std::uint8_t(a > b);
  else if constexpr (OP == B::LessOrEqual) return std::uint8_t(a <= b);
  else if constexpr (OP == B::GreaterOrEqual) return std::uint8_t(a >= b);
  else if constexpr (OP == B::And) return std::uint8_t((a != 0) & (b != 0));
  else if constexpr (OP == B::Or) return std::uint8_t((a != 0) | (b != 0));
  else return std::uint8_t((a != 0) != (b != 0));  // Xor
}

constexpr bool is_compare(B op) { return op >= B::Equal; }

template <class T, B OP>
void row(void* out, const void* a, index_t sa, const void* b, index_t sb, index_t n) {
  using R = decltype(apply<T, OP>(T(), T()));
  R* o = static_cast<R*>(out);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  if (sa == 1 && sb == 1) {
    for (index_t i = 0; i < n; ++i) o[i] = apply<T, OP>(x[i], y[i]);
  } else if (sa == 1 && sb == 0) {
    const T v = *y;
    for (index_t i = 0; i < n; ++i) o[i] = apply<T, OP>(x[i], v);
  } else if (sa == 0 && sb == 1) {
    const T v = *x;
    for (index_t i = 0; i < n; ++i) o[i] = apply<T, OP>(v, y[i]);
  } else {
    for (index_t i = 0; i < n; ++i) o[i] = apply<T, OP>(x[i * sa], y[i * sb]);
  }
}

// float16: a block of each operand to float32 (a broadcast operand once), the float32 row,
// then the result rounded back (comparisons write their bool result directly).
template <B OP>
void half_row(void* out, const void* a, index_t sa, const void* b, index_t sb, index_t n) {
  const auto* x = static_cast<const std::uint16_t*>(a);
  const auto* y = static_cast<const std::uint16_t*>(b);
  float fa[kBlock], fb[kBlock], fo[kBlock];
  auto load = [](float* dst, const std::uint16_t* src, index_t s, index_t i, index_t m) {
    if (s == 1) return half_to_float(dst, src + i, m);
    if (s == 0) return half_to_float(dst, src, 1);
    for (index_t k = 0; k < m; ++k) half_to_float(dst + k, src + (i + k) * s, 1);
  };
  for (index_t i = 0; i < n; i += kBlock) {
    const index_t m = n - i < kBlock ? n - i : kBlock;
    if (i == 0 || sa != 0) load(fa, x, sa, i, m);
    if (i == 0 || sb != 0) load(fb, y, sb, i, m);
    const index_t ua = sa != 0, ub = sb != 0;
    if constexpr (is_compare(OP)) {
      row<float, OP>(static_cast<std::uint8_t*>(out) + i, fa, ua, fb, ub, m);
    } else {
      row<float, OP>(fo, fa, ua, fb, ub, m);
      float_to_half(static_cast<std::uint16_t*>(out) + i, fo, m);
    }
  }
}

// int32 Div / Mod / FMod on AVX2: quotients in float64 vectors (math_idiv_avx2.cpp), the
// remainders from them. Other CPUs and strides take the generic row.
template <B OP>
void int32_div_row(void* out, const void* a, index_t sa, const void* b, index_t sb, index_t n) {
  if (cpu_isa() < Isa::Avx2 || ((sa | sb) & ~index_t(1))) return row<std::int32_t, OP>(out, a, sa, b, sb, n);
  auto* o = static_cast<std::int32_t*>(out);
  const auto* x = static_cast<const std::int32_t*>(a);
  const auto* y = static_cast<const std::int32_t*>(b);
  std::int32_t q[kBlock];
  for (index_t i = 0; i < n; i += kBlock) {
    const index_t m = n - i < kBlock ? n - i : kBlock;
    const std::int32_t *xi = x + i * sa, *yi = y + i * sb;
    idiv_avx2::quotients(OP == B::Div ? o + i : q, xi, sa, yi, sb, m);
    if constexpr (OP != B::Div) {
      for (index_t k = 0; k < m; ++k) {
        const std::int32_t d = yi[k * sb];
        const auto r = static_cast<std::int32_t>(static_cast<std::uint32_t>(xi[k * sa]) -
                                                 static_cast<std::uint32_t>(q[k]) * static_cast<std::uint32_t>(d));
        if constexpr (OP == B::Mod) o[i + k] = (r != 0 && ((r < 0) != (d < 0))) ? r + d : r;
        else o[i + k] = r;
      }
    }
  }
}

template <class T, int... I>
constexpr std::array<BinaryRowFn, kOps> table(std::integer_sequence<int, I...>) {
  return {{&row<T, static_cast<B>(I)>...}};
}
template <int... I>
constexpr std::array<BinaryRowFn, kOps> half_table(std::integer_sequence<int, I...>) {
  return {{&half_row<static_cast<B>(I)>...}};
}
constexpr auto kOpSeq = std::make_integer_sequence<int, kOps>{};

// Which ops a type has: logic is bool only; bool also compares for equality.
bool defined(B op, DType t) {
  const bool is_bool = t == DType::Bool;
  if (op == B::And || op == B::Or || op == B::Xor) return is_bool;
  if (is_bool) return op == B::Equal;
  return true;
}

template <class T>
BinaryRowFn typed(B op) {
  if constexpr (std::is_same_v<T, std::int32_t>) {
    if (op == B::Div) return int32_div_row<B::Div>;
    if (op == B::Mod) return int32_div_row<B::Mod>;
    if (op == B::FMod) return int32_div_row<B::FMod>;
  }
  static constexpr auto t = table<T>(kOpSeq);
  return t[static_cast<int>(op)];
}

}  // namespace

BinaryRowFn binary_kernel(MathBinaryOp op, DType in, DType* out) {
  const int k = static_cast<int>(op);
  if (k < 0 || k >= kOps || !defined(op, in)) return nullptr;
  *out = is_compare(op) ? DType::Bool : in;
  switch (in) {
    case DType::F32: return typed<float>(op);
    case DType::F64: return typed<double>(op);
    case DType::F16: {
      static constexpr auto t = half_table(kOpSeq);
      return t[k];
    }
    case DType::I8: return typed<std::int8_t>(op);
    case DType::I16: return typed<std::int16_t>(op);
    case DType::I32: return typed<std::int32_t>(op);
    case DType::I64: return typed<std::int64_t>(op);
    case DType::U8: return typed<std::uint8_t>(op);
    case DType::U16: return typed<std::uint16_t>(op);
    case DType::U32: return typed<std::uint32_t>(op);
    case DType::U64: return typed<std::uint64_t>(op);
    case DType::Bool: return typed<std::uint8_t>(op);
    default: return nullptr;
  }
}

bool binary_heavy(MathBinaryOp op) { return op == B::Pow || op == B::Mod || op == B::FMod; }

}  // namespace engine
