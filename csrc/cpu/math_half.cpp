// float16 <-> float32 conversions (round to nearest even): F16C instructions on CPUs that
// have them (math_half_avx2.cpp), a bit-exact portable version otherwise.
#include <cmath>
#include <cstring>

#include "engine/cpu_features.h"
#include "engine/math.h"
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace engine {

namespace half_f16c {
void half_to_float(float* y, const std::uint16_t* x, index_t n);
void float_to_half(std::uint16_t* y, const float* x, index_t n);
}  // namespace half_f16c

namespace {

bool cpu_has_f16c() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
#else
  return false;
#endif
}

// F16C is used with the AVX2 kernels (its instructions need AVX's OS support, which the
// AVX2 tier implies); a test that caps the ISA at portable gets the portable conversions.
bool use_f16c() {
  static const bool has = cpu_has_f16c();
  return has && cpu_isa() >= Isa::Avx2;
}

inline float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    float f = static_cast<float>(mant) * 0x1p-24f;  // zero or subnormal: exact
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
  if (x < 0x38800000u) {                        // below 2^-14: subnormal half (or zero)
    float a;
    std::memcpy(&a, &x, 4);
    return sign | static_cast<std::uint16_t>(std::nearbyint(a * 0x1p24f));  // default mode: to even
  }
  x += 0xfffu + ((x >> 13) & 1u);  // round the 13 dropped bits to nearest even
  return sign | static_cast<std::uint16_t>((x - (112u << 23)) >> 13);
}

}  // namespace

void half_to_float(float* y, const std::uint16_t* x, index_t n) {
  if (use_f16c()) return half_f16c::half_to_float(y, x, n);
  for (index_t i = 0; i < n; ++i) y[i] = half_bits_to_float(x[i]);
}

void float_to_half(std::uint16_t* y, const float* x, index_t n) {
  if (use_f16c()) return half_f16c::float_to_half(y, x, n);
  for (index_t i = 0; i < n; ++i) y[i] = float_to_half_bits(x[i]);
}

}  // namespace engine
