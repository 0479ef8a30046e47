// The keys one query row may attend, shared by the forward (attention.cpp) and the backward
// (attention_grad.cpp) so both see the same frontiers.
#pragma once

#include <algorithm>

#include "engine/attention.h"

namespace engine {

// Keys [lo, hi) query row i of batch b may attend before attn_mask values: padding, causal and
// window frontiers, the mask's length. lo == hi: none.
inline void attention_key_range(const AttentionDims& d, const AttentionMask& m, const AttentionOptions& o, index_t b,
                                index_t i, index_t& lo, index_t& hi) {
  const index_t L = d.kv_len;
  lo = 0, hi = L;
  index_t offset = o.past_len;
  if (o.nonpad_kv_seqlen) {
    const index_t valid = std::min<std::int64_t>(std::max<std::int64_t>(o.nonpad_kv_seqlen[b], -L - d.q_len), L);
    hi = std::max<index_t>(0, valid);
    offset = valid - d.q_len;
  }
  const index_t p = i + offset;  // the query's absolute position
  if (o.causal) hi = std::min(hi, p + 1);
  if (o.left_window >= 0) lo = std::max(lo, p - o.left_window);
  if (o.right_window >= 0) hi = std::min(hi, p + o.right_window + 1);
  if (m.data) hi = std::min(hi, m.len);
  if (hi < lo) hi = lo;
}

}  // namespace engine
