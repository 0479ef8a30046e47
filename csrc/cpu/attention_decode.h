// Attention for a few query rows (decode: one new token, or a handful, against a KV cache),
// float32. One call takes rows that share a kv head — every query head of a grouped-query group,
// every query row — so K and V are read once for all of them. With so few rows the vectors run
// along the head dimension and the keys instead of the rows: a score is a dot product (W keys at
// a time, their lane sums folded into one vector), the mask, max, exponentials and sums run along
// the keys, and P·V broadcasts P against rows of V. Online softmax over tiles of keys (buffers are
// O(rows·(tile + head_dim))). Over keys [c0, c1) a call writes the rows' outputs or, when
// attention.cpp splits long caches over threads, unnormalised partial results it merges by their
// log-sum-exp. Compiled per ISA (attention_decode_impl.h).
#pragma once

#include "engine/common.h"

namespace engine {

struct DecodeBlock {
  static constexpr index_t kMaxRows = 16;
  index_t rows = 0, dk = 0, dv = 0;
  const float* q[kMaxRows] = {};   // row r's query (dk floats)
  float* y[kMaxRows] = {};         // its output (dv floats), or its partial accumulator (see m)
  const void* mask[kMaxRows] = {}; // its mask value for key j (absolute) at mask[r][j]; null: none
  index_t lo[kMaxRows] = {}, hi[kMaxRows] = {};  // its keys [lo, hi) before mask values
  bool boolean = false;            // bool masks (uint8, nonzero = attend) or additive float
  const float* k = nullptr;        // key j at k + j·ldk (j from 0: absolute key index)
  const float* v = nullptr;        // value j at v + j·ldv
  index_t ldk = 0, ldv = 0;
  index_t c0 = 0, c1 = 0;          // the keys of this call
  float scale = 1.f, softcap = 0.f;  // softcap <= 0: none
  // Null: y[r] = softmax·V (zeros for a row with no key). Else partial results over [c0, c1):
  // y[r] = Σ_j exp(s_j − m[r])·V[j], m[r] the max score (-inf: no key), l[r] = Σ_j exp(s_j − m[r]).
  float* m = nullptr;
  float* l = nullptr;
};

namespace att_decode_avx512 { void decode_block(const DecodeBlock& f); }
namespace att_decode_avx2 { void decode_block(const DecodeBlock& f); }
namespace att_decode_portable { void decode_block(const DecodeBlock& f); }

}  // namespace engine
