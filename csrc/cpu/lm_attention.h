// Causal attention of a decoder step against the block cache: each new row attends to its own
// sequence's keys at positions 0..its position. Work is split into tasks of one sequence, one kv
// head and up to DecodeBlock::kMaxRows (row, query head) pairs, so the query heads sharing a kv
// head read its keys and values once; a task walks the sequence's blocks with the decode kernel
// (attention_decode.h) and merges their partial softmax results by log-sum-exp.
#pragma once

#include <vector>

#include "cpu/lm_kv_cache.h"
#include "engine/common.h"

namespace engine {

struct LmAttentionBatch {
  index_t seq, row0, rows, pos0;  // cache sequence; its rows row0.. of the step, at positions pos0..
};

struct LmAttentionTask {
  index_t batch, kv_head, item0, items;  // items: (row, head in group) pairs, row-major
};

// q: row t's query head h at q + t·ldq + h·head_dim; out likewise with ldo.
// tasks: scratch the call fills (kept by the caller so a step allocates nothing).
void lm_attention(const KvCache& cache, index_t layer, const float* q, index_t ldq, float* out, index_t ldo,
                  index_t n_heads, index_t n_kv_heads, index_t head_dim, const LmAttentionBatch* batch, index_t B,
                  std::vector<LmAttentionTask>& tasks);

}  // namespace engine
