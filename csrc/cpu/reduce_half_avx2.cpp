// float16 <-> float32 with F16C, 8 at a time (compiled with -mavx2 -mf16c; every AVX2 CPU
// the dispatcher picks this for has F16C). See reduce_half.cpp.
#include <immintrin.h>

#include <cstdint>

#include "engine/common.h"

namespace engine {
namespace rd {
namespace avx2 {

void f16_to_f32(float* y, const std::uint16_t* x, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  for (; i < n; ++i) y[i] = _cvtsh_ss(x[i]);
}

void f32_to_f16(std::uint16_t* y, const float* x, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

}  // namespace avx2
}  // namespace rd
}  // namespace engine
