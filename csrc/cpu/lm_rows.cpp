// Row kernels of the decoder step (lm_rows.h).
#include "cpu/lm_rows.h"
#include "cpu/rotary_row.h"

#include <algorithm>
#include <cmath>

#include "engine/elementwise.h"

namespace engine {

void lm_add_bias(float* y, index_t ld, index_t rows, const float* b, index_t n) {
  if (!b) return;
  for (index_t r = 0; r < rows; ++r) {
    float* yr = y + r * ld;
    for (index_t c = 0; c < n; ++c) yr[c] += b[c];
  }
}

void lm_rope_angles(float* cs, index_t rows, const index_t* pos, index_t rope_dim, const double* inv_freq) {
  const index_t half = rope_dim / 2;
  for (index_t r = 0; r < rows; ++r, cs += rope_dim)
    for (index_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(pos[r]) * inv_freq[i];
      cs[i] = static_cast<float>(std::cos(a)), cs[half + i] = static_cast<float>(std::sin(a));
    }
}

void lm_rope(float* x, index_t ld, index_t rows, index_t heads, index_t head_dim, index_t rope_dim,
             bool interleaved, const float* cs) {
  for (index_t r = 0; r < rows; ++r) {
    const float* cosv = cs + r * rope_dim;
    const float* sinv = cosv + rope_dim / 2;
    for (index_t h = 0; h < heads; ++h) {
      float* v = x + r * ld + h * head_dim;
      rotate_row(v, v, cosv, sinv, head_dim, rope_dim, interleaved);
    }
  }
}

void lm_silu_mul(float* gate, const float* up, index_t ld, index_t rows, index_t n) {
  if (ld == n) {
    activation(gate, gate, rows * n, Act::Silu);
  } else {
    for (index_t r = 0; r < rows; ++r) activation(gate + r * ld, gate + r * ld, n, Act::Silu);
  }
  for (index_t r = 0; r < rows; ++r) {
    float* g = gate + r * ld;
    const float* u = up + r * ld;
    for (index_t c = 0; c < n; ++c) g[c] *= u[c];
  }
}

void lm_gelu_tanh(float* x, index_t ld, index_t rows, index_t n) {
  if (ld == n) return activation(x, x, rows * n, Act::GeluTanh);
  for (index_t r = 0; r < rows; ++r) activation(x + r * ld, x + r * ld, n, Act::GeluTanh);
}

}  // namespace engine
