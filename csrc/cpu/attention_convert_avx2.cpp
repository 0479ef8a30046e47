// F16C float16 <-> float32 conversion (compiled with -mf16c; called after the ISA check).
#include <immintrin.h>

#include "cpu/attention_convert.h"

namespace engine {
namespace seq {

void half_to_float_f16c(float* dst, const std::uint16_t* src, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

void float_to_half_f16c(std::uint16_t* dst, const float* src, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

}  // namespace seq
}  // namespace engine
