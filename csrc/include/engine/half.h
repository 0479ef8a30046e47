// IEEE float16 <-> float32, the one implementation every kernel uses: round to nearest even,
// subnormals exact, ±inf kept, NaN stays NaN (quiet, payload kept where it fits). F16C
// instructions when the ISA tier is AVX2 or above and the CPU has them; the bit-exact scalar
// code below otherwise (and for loop tails).
#pragma once

#include <cstdint>
#include <cstring>

#include "engine/common.h"

namespace engine {

inline float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    const float f = static_cast<float>(mant) * 0x1p-24f;  // zero or subnormal: exact
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, NaN (payload kept)
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline std::uint16_t float_to_half_bits(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00u | static_cast<std::uint16_t>((x >> 13) & 0x3ffu);  // NaN, quiet
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
  if (x < 0x38800000u) {                        // below 2^-14: a subnormal half (or zero)
    // Adding 0.5 (2^-1) aligns the value's bits to units of 2^-24 in the low mantissa bits;
    // the float addition rounds to nearest even, as the conversion must.
    float a, magic = 0.5f;
    std::memcpy(&a, &x, 4);
    a += magic;
    std::uint32_t r, m;
    std::memcpy(&r, &a, 4);
    std::memcpy(&m, &magic, 4);
    return sign | static_cast<std::uint16_t>(r - m);
  }
  x += 0xfffu + ((x >> 13) & 1u);  // round the 13 dropped bits to nearest even
  return sign | static_cast<std::uint16_t>((x - (112u << 23)) >> 13);
}

// On the calling thread (for kernels that convert rows inside their own tasks).
void half_to_float(float* y, const std::uint16_t* x, index_t n);
void float_to_half(std::uint16_t* y, const float* x, index_t n);

// Split over the thread pool when n is large.
void half_to_float_parallel(float* y, const std::uint16_t* x, index_t n);
void float_to_half_parallel(std::uint16_t* y, const float* x, index_t n);

}  // namespace engine
