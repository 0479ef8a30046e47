// int32 quotients (truncated toward zero) through float64 vectors: idiv does not vectorise,
// and float64 is exact here (the quotient's rounding error stays below 1/|b|). INT_MIN / -1
// converts to the "integer indefinite" INT_MIN, which is the wrapped result. This file gets
// -mavx2; math_binary.cpp calls it only on CPUs with AVX2.
#include <immintrin.h>

#include <cstdint>

#include "engine/common.h"

namespace engine {
namespace idiv_avx2 {

// q[i] = a[i*sa] / b[i*sb] for strides 0 or 1; b holds no zero (checked by the caller).
void quotients(std::int32_t* q, const std::int32_t* a, index_t sa, const std::int32_t* b, index_t sb, index_t n) {
  index_t i = 0;
  const __m256d as = _mm256_set1_pd(static_cast<double>(*a)), bs = _mm256_set1_pd(static_cast<double>(*b));
  for (; i + 4 <= n; i += 4) {
    const __m256d x = sa ? _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))) : as;
    const __m256d y = sb ? _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i))) : bs;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm256_cvttpd_epi32(_mm256_div_pd(x, y)));
  }
  for (; i < n; ++i) {
    const std::int32_t x = a[i * sa], y = b[i * sb];
    q[i] = y == -1 ? static_cast<std::int32_t>(0u - static_cast<std::uint32_t>(x)) : x / y;
  }
}

}  // namespace idiv_avx2
}  // namespace engine
