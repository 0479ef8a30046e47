// One head's rotary rotation, shared by the RotaryEmbedding op (rotary.cpp) and the decoder step
// (lm_rows.cpp): y[0:rot] = x[0:rot] rotated by the (c, s) pairs, y[rot:dim] = x[rot:dim].
// interleaved: pairs (2k, 2k+1) (GPT-J, ggml's "normal" rope); else halves (k, k + rot/2) (NeoX, HF).
// y may equal x.
#pragma once

#include <algorithm>

#include "engine/common.h"

namespace engine {

inline void rotate_row(float* y, const float* x, const float* c, const float* s, index_t dim, index_t rot,
                       bool interleaved) {
  const index_t half = rot / 2;
  if (interleaved) {
    for (index_t k = 0; k < half; ++k) {
      const float x1 = x[2 * k], x2 = x[2 * k + 1];
      y[2 * k] = x1 * c[k] - x2 * s[k];
      y[2 * k + 1] = x1 * s[k] + x2 * c[k];
    }
  } else {
    for (index_t k = 0; k < half; ++k) {
      const float x1 = x[k], x2 = x[k + half];
      y[k] = x1 * c[k] - x2 * s[k];
      y[k + half] = x1 * s[k] + x2 * c[k];
    }
  }
  if (y != x) std::copy(x + rot, x + dim, y + rot);
}

}  // namespace engine
