// float16 <-> float32 with F16C, 8 at a time (compiled with -mavx2 -mf16c; called only when
// cpu_isa() is AVX2 or AVX-512, both of which imply F16C here).
#include <immintrin.h>

#include <cstring>

#include "engine/nchw.h"

namespace engine {
namespace half_avx2 {

void to_float(float* y, const std::uint16_t* x, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  if (i < n) {
    std::uint16_t in[8] = {};
    float out[8];
    std::memcpy(in, x + i, (n - i) * sizeof(std::uint16_t));
    _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in))));
    std::memcpy(y + i, out, (n - i) * sizeof(float));
  }
}

void to_half(std::uint16_t* y, const float* x, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  if (i < n) {
    float in[8] = {};
    std::uint16_t out[8];
    std::memcpy(in, x + i, (n - i) * sizeof(float));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    std::memcpy(y + i, out, (n - i) * sizeof(std::uint16_t));
  }
}

}  // namespace half_avx2
}  // namespace engine
