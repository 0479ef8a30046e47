// Row kernels of the decoder step (lm_rows.h).
#include "cpu/lm_rows.h"
#include "cpu/rotary_row.h"

#include <algorithm>
#include <cmath>

#include "engine/threadpool.h"

namespace engine {

void lm_add_bias(float* y, index_t ld, index_t rows, const float* b, index_t n) {
  if (!b) return;
  for (index_t r = 0; r < rows; ++r) {
    float* yr = y + r * ld;
    for (index_t c = 0; c < n; ++c) yr[c] += b[c];
  }
}

void lm_rope(float* x, index_t ld, index_t rows, const index_t* pos, index_t heads, index_t head_dim,
             index_t rope_dim, bool interleaved, const double* inv_freq, float* cs) {
  const index_t half = rope_dim / 2;
  float* cosv = cs;
  float* sinv = cs + half;
  for (index_t r = 0; r < rows; ++r) {
    for (index_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(pos[r]) * inv_freq[i];
      cosv[i] = static_cast<float>(std::cos(a)), sinv[i] = static_cast<float>(std::sin(a));
    }
    for (index_t h = 0; h < heads; ++h) {
      float* v = x + r * ld + h * head_dim;
      rotate_row(v, v, cosv, sinv, head_dim, rope_dim, interleaved);
    }
  }
}

void lm_silu_mul(float* gate, const float* up, index_t ld, index_t rows, index_t n) {
  parallel_for(rows * n, 16384, [&](std::int64_t i0, std::int64_t i1) {
    for (index_t r = i0 / n; r * n < i1; ++r) {
      const index_t c0 = std::max<index_t>(i0 - r * n, 0), c1 = std::min<index_t>(i1 - r * n, n);
      float* g = gate + r * ld;
      const float* u = up + r * ld;
      for (index_t c = c0; c < c1; ++c) g[c] = g[c] / (1.f + std::exp(-g[c])) * u[c];
    }
  });
}

void lm_gelu_tanh(float* x, index_t ld, index_t rows, index_t n) {
  constexpr float kS = 0.7978845608028654f;  // sqrt(2/pi)
  parallel_for(rows * n, 16384, [&](std::int64_t i0, std::int64_t i1) {
    for (index_t r = i0 / n; r * n < i1; ++r) {
      const index_t c0 = std::max<index_t>(i0 - r * n, 0), c1 = std::min<index_t>(i1 - r * n, n);
      float* v = x + r * ld;
      for (index_t c = c0; c < c1; ++c) {
        const float a = v[c];
        v[c] = 0.5f * a * (1.f + std::tanh(kS * (a + 0.044715f * a * a * a)));
      }
    }
  });
}

}  // namespace engine
