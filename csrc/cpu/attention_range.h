// What the forward (attention.cpp) and the backward (attention_grad.cpp) set up alike for a block
// of query rows: the keys each row may attend, the mask rows and the dropout draw, so both see
// the same frontiers, mask and probabilities.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/attention_dropout.h"
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

// Points a kernel task (fields mask, boolean, msq) at attn_mask's rows from (b, h, i0) on; T is the
// additive mask's element type. No mask: the task's defaults stay.
template <class T, class Task>
inline void set_task_mask(Task& t, const AttentionMask& m, index_t b, index_t h, index_t i0) {
  if (!m.data) return;
  const index_t off = b * m.sb + h * m.sh + i0 * m.sq;
  t.mask = m.boolean ? static_cast<const void*>(static_cast<const std::uint8_t*>(m.data) + off)
                     : static_cast<const void*>(static_cast<const T*>(m.data) + off);
  t.boolean = m.boolean, t.msq = m.sq;
}

// The dropout fields of a kernel task (drop_threshold, drop_scale, drop_key, row0) for head bh
// (batch·q_heads + head) and first row i0. Rate 0: the task's defaults (no dropout) stay.
template <class Task>
inline void set_task_dropout(Task& t, const AttentionDropout& dr, index_t bh, index_t i0) {
  if (dr.rate <= 0) return;
  t.drop_threshold = attdrop::threshold(dr.rate);
  t.drop_scale = static_cast<float>(1.0 / (1.0 - dr.rate));
  t.drop_key = attdrop::head_key(dr, bh);
  t.row0 = i0;
}

}  // namespace engine
