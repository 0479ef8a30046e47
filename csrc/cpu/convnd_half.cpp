// float16 <-> float32 for the NCHW / linear ops' float16 paths (computed in float32): F16C
// (convnd_half_avx2.cpp) when the ISA has it, else the bit-exact portable conversion below
// (round to nearest even, subnormals, ±inf and NaN kept).
#include <algorithm>
#include <cstring>

#include "engine/cpu_features.h"
#include "engine/nchw.h"
#include "engine/threadpool.h"

namespace engine {

namespace half_avx2 {
void to_float(float* y, const std::uint16_t* x, index_t n);
void to_half(std::uint16_t* y, const float* x, index_t n);
}  // namespace half_avx2

namespace {

constexpr index_t kGrain = 1 << 16;  // elements below which a conversion stays on the caller

float h2f(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    const float v = static_cast<float>(mant) * (1.f / 16777216.f);  // mant · 2^-24, exact
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::uint16_t f2h(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t mant = x & 0x7fffffu;
  const int exp = static_cast<int>((x >> 23) & 0xffu);
  if (exp == 0xff) return static_cast<std::uint16_t>(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
  const int e = exp - 127 + 15;
  if (e >= 31) return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (e <= 0) {  // a half subnormal (or zero): units of 2^-24
    if (e < -10) return static_cast<std::uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    std::uint32_t h = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return static_cast<std::uint16_t>(sign | h);
  }
  std::uint32_t h = (static_cast<std::uint32_t>(e) << 10) | (mant >> 13);
  const std::uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right (up to inf)
  return static_cast<std::uint16_t>(sign | h);
}

template <class Fn>
void split(index_t n, Fn&& fn) {
  if (n <= kGrain) return fn(0, n);
  parallel_for(n, kGrain, [&](std::int64_t a, std::int64_t b) { fn(a, b); });
}

}  // namespace

void half_to_float(float* y, const std::uint16_t* x, index_t n) {
  const bool f16c = cpu_isa() != Isa::Portable;
  split(n, [&](index_t a, index_t b) {
    if (f16c) return half_avx2::to_float(y + a, x + a, b - a);
    for (index_t i = a; i < b; ++i) y[i] = h2f(x[i]);
  });
}

void float_to_half(std::uint16_t* y, const float* x, index_t n) {
  const bool f16c = cpu_isa() != Isa::Portable;
  split(n, [&](index_t a, index_t b) {
    if (f16c) return half_avx2::to_half(y + a, x + a, b - a);
    for (index_t i = a; i < b; ++i) y[i] = f2h(x[i]);
  });
}

}  // namespace engine
