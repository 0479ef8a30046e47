// float16 <-> float32 conversion (see engine/reduce.h): F16C on AVX2 machines
// (reduce_half_avx2.cpp), else exact bit manipulation. Large arrays split over the pool.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/reduce_half.h"
#include "engine/cpu_features.h"
#include "engine/reduce.h"
#include "engine/threadpool.h"

namespace engine {
namespace rd {
namespace avx2 {
void f16_to_f32(float* y, const std::uint16_t* x, index_t n);
void f32_to_f16(std::uint16_t* y, const float* x, index_t n);
}  // namespace avx2

namespace {

inline std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) return float_of(sign | bits_of(static_cast<float>(mant) * 5.9604644775390625e-8f));  // mant·2^-24
  if (exp == 31) return float_of(sign | 0x7f800000u | (mant << 13));                                  // inf, NaN
  return float_of(sign | ((exp + 112) << 23) | (mant << 13));
}

// Round to nearest even (F. Giesen's float_to_half_fast3_rtne): subnormal results by one
// float addition that aligns the mantissa, normal ones by integer rounding of the bits.
std::uint16_t float_to_half(float f) {
  std::uint32_t u = bits_of(f);
  const std::uint32_t sign = u & 0x80000000u;
  u ^= sign;
  std::uint32_t o;
  if (u >= (127u + 16u) << 23) {
    o = u > 0x7f800000u ? 0x7e00u : 0x7c00u;  // NaN stays NaN; overflow -> inf
  } else if (u < (113u << 23)) {
    const std::uint32_t magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    o = bits_of(float_of(u) + float_of(magic)) - magic;
  } else {
    const std::uint32_t odd = (u >> 13) & 1u;
    u += ((15u - 127u) << 23) + 0xfffu + odd;
    o = u >> 13;
  }
  return static_cast<std::uint16_t>(o | (sign >> 16));
}

constexpr index_t kGrainConvert = 1 << 16;

template <class Fn>
void split(index_t n, Fn fn) {
  if (n <= kGrainConvert) return fn(0, n);
  parallel_for((n + 15) / 16, kGrainConvert / 16, [&](index_t b0, index_t b1) {
    fn(b0 * 16, std::min(n, b1 * 16));
  });
}

}  // namespace

namespace portable {
void f16_to_f32(float* y, const std::uint16_t* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = half_to_float(x[i]);
}
void f32_to_f16(std::uint16_t* y, const float* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = float_to_half(x[i]);
}
}  // namespace portable

void f16_to_f32_serial(float* y, const std::uint16_t* x, index_t n) {
  (cpu_isa() >= Isa::Avx2 ? avx2::f16_to_f32 : portable::f16_to_f32)(y, x, n);
}
void f32_to_f16_serial(std::uint16_t* y, const float* x, index_t n) {
  (cpu_isa() >= Isa::Avx2 ? avx2::f32_to_f16 : portable::f32_to_f16)(y, x, n);
}
}  // namespace rd

void f16_to_f32(float* y, const std::uint16_t* x, index_t n) {
  rd::split(n, [&](index_t b, index_t e) { rd::f16_to_f32_serial(y + b, x + b, e - b); });
}

void f32_to_f16(std::uint16_t* y, const float* x, index_t n) {
  rd::split(n, [&](index_t b, index_t e) { rd::f32_to_f16_serial(y + b, x + b, e - b); });
}

}  // namespace engine
