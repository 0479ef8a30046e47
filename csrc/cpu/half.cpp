// float16 <-> float32 arrays (engine/half.h): F16C when the ISA tier allows it, the scalar
// conversion otherwise; the parallel forms split large arrays over the pool.
#include "engine/half.h"

#include <algorithm>

#include "engine/cpu_features.h"
#include "engine/threadpool.h"
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace engine {

namespace half_f16c {  // half_avx2.cpp
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

// F16C goes with the AVX2 tier (its instructions need AVX's OS support, which that tier
// implies); a test that caps the ISA at portable gets the scalar conversions.
bool use_f16c() {
  static const bool has = cpu_has_f16c();
  return has && cpu_isa() >= Isa::Avx2;
}

constexpr index_t kGrain = 1 << 16;  // elements below which a conversion stays on the caller

template <class Fn>
void split(index_t n, Fn fn) {
  if (n <= kGrain) return fn(0, n);
  // Chunks of whole 16-element blocks, so each task's vector loop has no ragged start.
  parallel_for((n + 15) / 16, kGrain / 16, [&](index_t b0, index_t b1) { fn(b0 * 16, std::min(n, b1 * 16)); });
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

void half_to_float_parallel(float* y, const std::uint16_t* x, index_t n) {
  split(n, [&](index_t a, index_t b) { half_to_float(y + a, x + a, b - a); });
}

void float_to_half_parallel(std::uint16_t* y, const float* x, index_t n) {
  split(n, [&](index_t a, index_t b) { float_to_half(y + a, x + a, b - a); });
}

}  // namespace engine
