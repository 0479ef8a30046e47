// The tiled online-softmax ("flash") form of one attention block, float32: for a block of query
// rows it walks the keys in tiles, S = scale·Q·Kᵀ for the tile only, softcap, mask, causal and
// window frontiers, a running max and sum per row with the accumulator rescaled as the max
// grows, acc += P·V; y = acc / sum at the end (in training also the rows' log-sum-exp, and
// dropout on P·V's probabilities). The score matrix is never materialised: buffers
// are O(rows·(tile + head_dim + v_head_dim)). Compiled per ISA (attention_flash_impl.h).
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {

struct FlashBlock {
  const float* q = nullptr;  // query row r at q + r·ldq (head_dim floats)
  const float* k = nullptr;  // key j at k + j·ldk (j from 0: absolute key index)
  const float* v = nullptr;  // value j at v + j·ldv
  float* y = nullptr;        // output row r at y + r·ldy (v_head_dim floats)
  index_t ldq = 0, ldk = 0, ldv = 0, ldy = 0;
  index_t rows = 0, dk = 0, dv = 0;
  float scale = 1.f, softcap = 0.f;  // softcap <= 0: none
  const index_t* lo = nullptr;       // per row: keys [lo, hi) before mask values
  const index_t* hi = nullptr;
  index_t c0 = 0, c1 = 0;            // the union of the rows' ranges; c0 < c1
  const void* mask = nullptr;        // null: none; row r's value for key j at mask[r·msq + j]
  bool boolean = false;              // bool mask (uint8, nonzero = attend) or additive float
  index_t msq = 0;
  // Training: row r's log-sum-exp at lse[r] (+inf for a row with no key), and dropout
  // (attention_dropout.h): threshold 0 is none; row r is query row0 + r under the head's key.
  float* lse = nullptr;
  std::uint32_t drop_threshold = 0;
  float drop_scale = 1.f;
  std::uint64_t drop_key = 0;
  index_t row0 = 0;
};

namespace att_flash_avx512 { void flash_block(const FlashBlock& f); }
namespace att_flash_avx2 { void flash_block(const FlashBlock& f); }
namespace att_flash_portable { void flash_block(const FlashBlock& f); }

}  // namespace engine
