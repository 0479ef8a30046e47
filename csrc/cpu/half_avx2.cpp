// float16 <-> float32 with F16C (this file gets -mavx2 -mf16c; called only after the
// dispatcher in half.cpp checked the CPU).
#include <immintrin.h>

#include <cstring>

#include "engine/half.h"

namespace engine {
namespace half_f16c {

void half_to_float(float* y, const std::uint16_t* x, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  if (i < n) {
    std::uint16_t in[8] = {0};
    float out[8];
    std::memcpy(in, x + i, static_cast<size_t>(n - i) * 2);
    _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in))));
    std::memcpy(y + i, out, static_cast<size_t>(n - i) * 4);
  }
}

void float_to_half(std::uint16_t* y, const float* x, index_t n) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), kRound));
  if (i < n) {
    float in[8] = {0};
    std::uint16_t out[8];
    std::memcpy(in, x + i, static_cast<size_t>(n - i) * 4);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_cvtps_ph(_mm256_loadu_ps(in), kRound));
    std::memcpy(y + i, out, static_cast<size_t>(n - i) * 2);
  }
}

}  // namespace half_f16c
}  // namespace engine
