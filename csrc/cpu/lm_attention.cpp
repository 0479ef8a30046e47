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

}  // namespace

void lm_attention(const KvCache& cache, index_t layer, const float* q, index_t ldq, float* out, index_t ldo,
                  index_t n_heads, index_t n_kv_heads, index_t head_dim, const LmAttentionBatch* batch, index_t B,
                  std::vector<LmAttentionTask>& tasks) {
  const index_t group = n_heads / n_kv_heads, bt = cache.block_tokens(), hd = head_dim;
  const index_t ldkv = n_kv_heads * hd;
  tasks.clear();
  for (index_t b = 0; b < B; ++b)
    for (index_t g = 0; g < n_kv_heads; ++g)
      for (index_t i = 0; i < batch[b].rows * group; i += kRows)
        tasks.push_back({b, g, i, std::min(kRows, batch[b].rows * group - i)});
  const Kernel kernel = decode_kernel();
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));

  parallel_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t ti) {
    const LmAttentionTask& task = tasks[ti];
    const LmAttentionBatch& bb = batch[task.batch];
    const index_t R = task.items;
    DecodeBlock f;
    f.rows = R, f.dk = hd, f.dv = hd, f.ldk = ldkv, f.ldv = ldkv, f.scale = scale;
    index_t pos[kRows], keys = 0;
    for (index_t r = 0; r < R; ++r) {
      const index_t item = task.item0 + r, t = item / group, h = task.kv_head * group + item % group;
      f.q[r] = q + (bb.row0 + t) * ldq + h * hd;
      f.y[r] = out + (bb.row0 + t) * ldo + h * hd;
      pos[r] = bb.pos0 + t;
      keys = std::max(keys, pos[r] + 1);
    }
    const index_t nblocks = (keys + bt - 1) / bt;
    if (nblocks == 1) {  // the whole cache in one block: the kernel normalises in place
      for (index_t r = 0; r < R; ++r) f.lo[r] = 0, f.hi[r] = pos[r] + 1;
      f.k = cache.keys(bb.seq, layer, 0) + task.kv_head * hd;
      f.v = cache.values(bb.seq, layer, 0) + task.kv_head * hd;
      f.c0 = 0, f.c1 = keys;
      kernel(f);
      return;
    }
    // Per row: the running max, sum and accumulator, and the block's partial result.
    float* buf = thread_scratch<float, kScratchAttentionDecodePartial>(static_cast<size_t>(2 * R * hd + 2 * R));
    float *acc = buf, *part = buf + R * hd, *pm = part + R * hd, *pl = pm + R;
    float M[kRows], L[kRows];
    float* y[kRows];
    for (index_t r = 0; r < R; ++r) {
      M[r] = -std::numeric_limits<float>::infinity(), L[r] = 0.f;
      std::fill(acc + r * hd, acc + (r + 1) * hd, 0.f);
      y[r] = f.y[r];
      f.y[r] = part + r * hd;
    }
    f.m = pm, f.l = pl;
    for (index_t blk = 0; blk < nblocks; ++blk) {
      const index_t start = blk * bt, n = std::min(bt, keys - start);
      for (index_t r = 0; r < R; ++r) f.lo[r] = 0, f.hi[r] = std::clamp<index_t>(pos[r] + 1 - start, 0, n);
      f.k = cache.keys(bb.seq, layer, blk) + task.kv_head * hd;
      f.v = cache.values(bb.seq, layer, blk) + task.kv_head * hd;
      f.c0 = 0, f.c1 = n;
      kernel(f);
      for (index_t r = 0; r < R; ++r) {
        if (f.hi[r] == 0 || pm[r] == -std::numeric_limits<float>::infinity()) continue;
        const float mn = std::max(M[r], pm[r]), a = std::exp(M[r] - mn), c = std::exp(pm[r] - mn);
        float* ar = acc + r * hd;
        const float* pr = part + r * hd;
        for (index_t d = 0; d < hd; ++d) ar[d] = ar[d] * a + pr[d] * c;
        L[r] = L[r] * a + pl[r] * c, M[r] = mn;
      }
    }
    for (index_t r = 0; r < R; ++r) {
      const float inv = L[r] > 0.f ? 1.f / L[r] : 0.f;
      for (index_t d = 0; d < hd; ++d) y[r][d] = acc[r * hd + d] * inv;
    }
  });
}

}  // namespace engine
