// 8×8 transposes of 4-byte elements in AVX registers (compiled with -mavx2; called only when
// cpu_isa() is AVX2 or AVX-512): the full tiles of convnd_transpose.cpp.
#include <immintrin.h>

#include <cstdint>

#include "engine/nchw.h"

namespace engine {
namespace transpose_avx2 {

// y[c][r] = x[r][c] for an 8×8 block; x rows are ldx apart, y rows ldy apart.
void block8(std::uint32_t* y, index_t ldy, const std::uint32_t* x, index_t ldx) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(reinterpret_cast<const float*>(x + i * ldx));
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(reinterpret_cast<float*>(y + i * ldy), t[i]);
}

}  // namespace transpose_avx2
}  // namespace engine
