// Causal attention of a decoder step against the block cache: each new row attends to its own
// sequence's keys at positions 0..its position. Work is split into tasks of one sequence, one kv
// head and up to DecodeBlock::kMaxRows (row, query head) pairs, so the query heads sharing a kv
// head read its keys and values once; a task walks the sequence's blocks with the decode kernel
// (attention_decode.h) and merges their partial softmax results by log-sum-exp. When a step has
// fewer tasks than about two per thread (decode of few sequences), long caches are split into
// ranges of blocks run as separate tasks, merged the same way afterwards.
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
  index_t blk0, blk1;                    // the cache blocks it reads
  index_t split, splits;                 // its part of the task's blocks; partial results at slot
  index_t slot;
};

// What a step reuses (kept by the caller so a step allocates nothing once warm).
struct LmAttentionScratch {
  std::vector<LmAttentionTask> tasks;
  std::vector<float> partials;
};

// q: row t's query head h at q + t·ldq + h·head_dim; out likewise with ldo.
void lm_attention(const KvCache& cache, index_t layer, const float* q, index_t ldq, float* out, index_t ldo,
                  index_t n_heads, index_t n_kv_heads, index_t head_dim, const LmAttentionBatch* batch, index_t B,
                  LmAttentionScratch& scratch);

}  // namespace engine
