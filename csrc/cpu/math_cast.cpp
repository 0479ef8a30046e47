// Cast between every pair of element types (see engine/math.h). Plain C++ conversions
// (float -> integer truncates toward zero), bool is 0/1 and anything nonzero (NaN included)
// becomes true. float16 and bfloat16 go through float32 in blocks: the float16 conversions
// are F16C's (or the portable equivalent), bfloat16 rounds to nearest even.
#include <array>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>

#include "engine/math.h"

namespace engine {
namespace {

constexpr index_t kBlock = 256;

// bool is read and written as a byte (any nonzero byte reads as true).
struct Bool {};
template <class T>
using Storage = std::conditional_t<std::is_same_v<T, Bool>, std::uint8_t, T>;

template <class From, class To>
void cast_plain(void* y, const void* x, index_t n) {
  using SF = Storage<From>;
  using ST = Storage<To>;
  ST* yp = static_cast<ST*>(y);
  const SF* xp = static_cast<const SF*>(x);
  for (index_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<To, Bool>) yp[i] = xp[i] != SF(0);
    else if constexpr (std::is_same_v<From, Bool>) yp[i] = static_cast<ST>(xp[i] != 0);
    else yp[i] = static_cast<ST>(xp[i]);
  }
}

inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even
  return static_cast<std::uint16_t>(x >> 16);
}

// 16-bit float kinds in and out of float32 blocks.
enum class Half { F16, BF16 };

template <Half H>
void to_float(float* y, const std::uint16_t* x, index_t n) {
  if constexpr (H == Half::F16) half_to_float(y, x, n);
  else for (index_t i = 0; i < n; ++i) y[i] = bf16_to_float(x[i]);
}

template <Half H>
void from_float(std::uint16_t* y, const float* x, index_t n) {
  if constexpr (H == Half::F16) float_to_half(y, x, n);
  else for (index_t i = 0; i < n; ++i) y[i] = float_to_bf16(x[i]);
}

// Half kind -> T: blocks to float32, then float -> T.
template <Half H, class To>
void cast_from_half(void* y, const void* x, index_t n) {
  float buf[kBlock];
  for (index_t i = 0; i < n; i += kBlock) {
    const index_t m = n - i < kBlock ? n - i : kBlock;
    to_float<H>(buf, static_cast<const std::uint16_t*>(x) + i, m);
    cast_plain<float, To>(static_cast<Storage<To>*>(y) + i, buf, m);
  }
}

// T -> half kind: T -> float32 blocks, then rounded (float64 thus rounds twice, as onnxruntime).
template <class From, Half H>
void cast_to_half(void* y, const void* x, index_t n) {
  float buf[kBlock];
  for (index_t i = 0; i < n; i += kBlock) {
    const index_t m = n - i < kBlock ? n - i : kBlock;
    cast_plain<From, float>(buf, static_cast<const Storage<From>*>(x) + i, m);
    from_float<H>(static_cast<std::uint16_t*>(y) + i, buf, m);
  }
}

template <Half From, Half To>
void cast_half_half(void* y, const void* x, index_t n) {
  float buf[kBlock];
  for (index_t i = 0; i < n; i += kBlock) {
    const index_t m = n - i < kBlock ? n - i : kBlock;
    to_float<From>(buf, static_cast<const std::uint16_t*>(x) + i, m);
    from_float<To>(static_cast<std::uint16_t*>(y) + i, buf, m);
  }
}

void copy_bytes2(void* y, const void* x, index_t n) {
  if (y != x) std::memmove(y, x, static_cast<size_t>(n) * 2);
}

// The plain types in one order, so a (from, to) pair indexes a table.
using Plain = std::tuple<float, double, std::int8_t, std::int16_t, std::int32_t, std::int64_t, std::uint8_t,
                         std::uint16_t, std::uint32_t, std::uint64_t, Bool>;
constexpr int kPlain = std::tuple_size_v<Plain>;

int plain_index(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F64: return 1;
    case DType::I8: return 2;
    case DType::I16: return 3;
    case DType::I32: return 4;
    case DType::I64: return 5;
    case DType::U8: return 6;
    case DType::U16: return 7;
    case DType::U32: return 8;
    case DType::U64: return 9;
    case DType::Bool: return 10;
    default: return -1;
  }
}

template <int F, int... T>
constexpr std::array<CastFn, kPlain> plain_row(std::integer_sequence<int, T...>) {
  return {{&cast_plain<std::tuple_element_t<F, Plain>, std::tuple_element_t<T, Plain>>...}};
}
template <int... F>
constexpr std::array<std::array<CastFn, kPlain>, kPlain> plain_table(std::integer_sequence<int, F...>) {
  return {{plain_row<F>(std::make_integer_sequence<int, kPlain>{})...}};
}

template <Half H, int... T>
constexpr std::array<CastFn, kPlain> from_half_row(std::integer_sequence<int, T...>) {
  return {{&cast_from_half<H, std::tuple_element_t<T, Plain>>...}};
}
template <Half H, int... F>
constexpr std::array<CastFn, kPlain> to_half_row(std::integer_sequence<int, F...>) {
  return {{&cast_to_half<std::tuple_element_t<F, Plain>, H>...}};
}

constexpr auto kSeq = std::make_integer_sequence<int, kPlain>{};

template <Half H>
CastFn half_to(DType to) {
  static constexpr auto row = from_half_row<H>(kSeq);
  const int t = plain_index(to);
  return t < 0 ? nullptr : row[t];
}

template <Half H>
CastFn to_half(DType from) {
  static constexpr auto row = to_half_row<H>(kSeq);
  const int f = plain_index(from);
  return f < 0 ? nullptr : row[f];
}

}  // namespace

CastFn cast_kernel(DType from, DType to) {
  const bool fh = from == DType::F16 || from == DType::BF16, th = to == DType::F16 || to == DType::BF16;
  if (fh && th) {
    if (from == to) return copy_bytes2;
    return from == DType::F16 ? cast_half_half<Half::F16, Half::BF16> : cast_half_half<Half::BF16, Half::F16>;
  }
  if (fh) return from == DType::F16 ? half_to<Half::F16>(to) : half_to<Half::BF16>(to);
  if (th) return to == DType::F16 ? to_half<Half::F16>(from) : to_half<Half::BF16>(from);
  static constexpr auto table = plain_table(kSeq);
  const int f = plain_index(from), t = plain_index(to);
  return f < 0 || t < 0 ? nullptr : table[f][t];
}

}  // namespace engine
