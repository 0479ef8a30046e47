// Attention of a decoder step over the block cache (lm_attention.h).
#include "cpu/lm_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/attention_decode.h"
#include "engine/cpu_features.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {

namespace {

using Kernel = void (*)(const DecodeBlock&);

Kernel decode_kernel() {
  switch (cpu_isa()) {
    case Isa::Avx512: return att_decode_avx512::decode_block;
    case Isa::Avx2: return att_decode_avx2::decode_block;
    default: return att_decode_portable::decode_block;
  }
}

constexpr index_t kRows = DecodeBlock::kMaxRows;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// A split reads at least this many keys: below it the merge costs more than the balance gains.
constexpr index_t kMinSplitKeys = 256;
// Steps with less work than this (keys x rows x head_dim, summed over tasks) run on the calling
// thread: waking the pool would cost more (decode at short contexts).
constexpr index_t kInlineWork = index_t(1) << 17;

// Running softmax state of up to kRows rows: max, sum, unnormalised output (hd floats each).
struct Partial {
  float* m;
  float* l;
  float* acc;
};

// Folds (m2, l2, acc2) of row r into p.
void merge_into(Partial& p, index_t r, float m2, float l2, const float* acc2, index_t hd) {
  if (m2 == kNegInf) return;
  const float mn = std::max(p.m[r], m2), a = std::exp(p.m[r] - mn), c = std::exp(m2 - mn);
  float* ar = p.acc + r * hd;
  for (index_t d = 0; d < hd; ++d) ar[d] = ar[d] * a + acc2[d] * c;
  p.l[r] = p.l[r] * a + l2 * c, p.m[r] = mn;
}

}  // namespace

void lm_attention(const KvCache& cache, index_t layer, const float* q, index_t ldq, float* out, index_t ldo,
                  index_t n_heads, index_t n_kv_heads, index_t head_dim, const LmAttentionBatch* batch, index_t B,
                  LmAttentionScratch& scratch) {
  const index_t group = n_heads / n_kv_heads, bt = cache.block_tokens(), hd = head_dim;
  const index_t ldkv = n_kv_heads * hd, slot_floats = kRows * (hd + 2);
  auto& tasks = scratch.tasks;
  tasks.clear();
  index_t base_tasks = 0;
  for (index_t b = 0; b < B; ++b) base_tasks += n_kv_heads * ((batch[b].rows * group + kRows - 1) / kRows);
  const index_t want_tasks = 2 * num_threads();
  index_t slots = 0;
  for (index_t b = 0; b < B; ++b) {
    const index_t keys = batch[b].pos0 + batch[b].rows, nblocks = (keys + bt - 1) / bt;
    index_t splits = 1;
    if (base_tasks < want_tasks)
      splits = std::clamp<index_t>(std::min((want_tasks + base_tasks - 1) / base_tasks, keys / kMinSplitKeys), 1,
                                   nblocks);
    for (index_t g = 0; g < n_kv_heads; ++g)
      for (index_t i = 0; i < batch[b].rows * group; i += kRows)
        for (index_t s = 0; s < splits; ++s)
          tasks.push_back({b, g, i, std::min(kRows, batch[b].rows * group - i), nblocks * s / splits,
                           nblocks * (s + 1) / splits, s, splits, splits > 1 ? slots++ : -1});
  }
  if (static_cast<index_t>(scratch.partials.size()) < slots * slot_floats) scratch.partials.resize(slots * slot_floats);
  const Kernel kernel = decode_kernel();
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));

  // Item r of a task: its step row, query head and position.
  struct Item {
    index_t row, head, pos;
  };
  auto item = [&](const LmAttentionTask& task, index_t r) {
    const LmAttentionBatch& bb = batch[task.batch];
    const index_t i = task.item0 + r, t = i / group;
    return Item{bb.row0 + t, task.kv_head * group + i % group, bb.pos0 + t};
  };

  index_t work = 0;
  for (const LmAttentionTask& t : tasks) work += (t.blk1 - t.blk0) * bt * t.items * hd;

  auto run = [&](std::int64_t ti) {
    const LmAttentionTask& task = tasks[ti];
    const LmAttentionBatch& bb = batch[task.batch];
    const index_t R = task.items;
    DecodeBlock f;
    f.rows = R, f.dk = hd, f.dv = hd, f.ldk = ldkv, f.ldv = ldkv, f.scale = scale;
    index_t pos[kRows], keys = 0;
    float* y[kRows];
    for (index_t r = 0; r < R; ++r) {
      const Item it = item(task, r);
      f.q[r] = q + it.row * ldq + it.head * hd;
      y[r] = out + it.row * ldo + it.head * hd;
      pos[r] = it.pos;
      keys = std::max(keys, pos[r] + 1);
    }
    if (task.splits == 1 && task.blk1 == 1) {  // the whole cache in one block: the kernel normalises
      for (index_t r = 0; r < R; ++r) f.lo[r] = 0, f.hi[r] = pos[r] + 1, f.y[r] = y[r];
      f.k = cache.keys(bb.seq, layer, 0) + task.kv_head * hd;
      f.v = cache.values(bb.seq, layer, 0) + task.kv_head * hd;
      f.c0 = 0, f.c1 = keys;
      kernel(f);
      return;
    }
    // Running state (in the task's slot when split, else this thread's), and one block's result.
    float* buf = thread_scratch<float, kScratchAttentionDecodePartial>(static_cast<size_t>(2 * kRows * (hd + 2)));
    float *part = buf + slot_floats, *pm = part + kRows * hd, *pl = pm + kRows;
    float* slot = task.slot >= 0 ? scratch.partials.data() + task.slot * slot_floats : buf;
    Partial p{slot, slot + kRows, slot + 2 * kRows};
    for (index_t r = 0; r < R; ++r) {
      p.m[r] = kNegInf, p.l[r] = 0.f;
      std::fill(p.acc + r * hd, p.acc + (r + 1) * hd, 0.f);
      f.y[r] = part + r * hd;
    }
    f.m = pm, f.l = pl;
    for (index_t blk = task.blk0; blk < task.blk1; ++blk) {
      const index_t start = blk * bt, n = std::min(bt, keys - start);
      index_t reach = 0;
      for (index_t r = 0; r < R; ++r) {
        f.lo[r] = 0, f.hi[r] = std::clamp<index_t>(pos[r] + 1 - start, 0, n);
        reach = std::max(reach, f.hi[r]);
      }
      if (reach == 0) continue;
      f.k = cache.keys(bb.seq, layer, blk) + task.kv_head * hd;
      f.v = cache.values(bb.seq, layer, blk) + task.kv_head * hd;
      f.c0 = 0, f.c1 = reach;
      kernel(f);
      for (index_t r = 0; r < R; ++r)
        if (f.hi[r] > 0) merge_into(p, r, pm[r], pl[r], part + r * hd, hd);
    }
    if (task.slot >= 0) return;  // merged after all tasks
    for (index_t r = 0; r < R; ++r) {
      const float inv = p.l[r] > 0.f ? 1.f / p.l[r] : 0.f;
      for (index_t d = 0; d < hd; ++d) y[r][d] = p.acc[r * hd + d] * inv;
    }
  };
  if (work < kInlineWork) {
    for (std::int64_t ti = 0; ti < static_cast<std::int64_t>(tasks.size()); ++ti) run(ti);
  } else {
    parallel_tasks(static_cast<std::int64_t>(tasks.size()), run);
  }

  // Split tasks: fold splits 1.. into split 0's slot, then normalise into the output.
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    const LmAttentionTask& t0 = tasks[ti];
    if (t0.splits == 1) continue;
    float* s0 = scratch.partials.data() + t0.slot * slot_floats;
    Partial p{s0, s0 + kRows, s0 + 2 * kRows};
    for (index_t s = 1; s < t0.splits; ++s) {
      const float* ss = scratch.partials.data() + tasks[ti + s].slot * slot_floats;
      for (index_t r = 0; r < t0.items; ++r) merge_into(p, r, ss[r], ss[kRows + r], ss + 2 * kRows + r * hd, hd);
    }
    for (index_t r = 0; r < t0.items; ++r) {
      const Item it = item(t0, r);
      float* y = out + it.row * ldo + it.head * hd;
      const float inv = p.l[r] > 0.f ? 1.f / p.l[r] : 0.f;
      for (index_t d = 0; d < hd; ++d) y[d] = p.acc[r * hd + d] * inv;
    }
    ti += t0.splits - 1;
  }
}

}  // namespace engine
