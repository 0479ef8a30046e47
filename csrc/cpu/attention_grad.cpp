// The attention backward (engine/attention.h): tasks over the thread pool, each task's query
// tiles handed to the per-ISA tile kernel (attention_grad.h).
//
// A task owns one (batch, kv head) and a range of its keys: it zeroes those keys' dK and dV, adds
// into them over every query head sharing the kv head (grouped-query) and every query tile, and
// writes each tile's dQ summed over its keys. Usually a range is all the keys (batch · kv heads
// gives the threads enough tasks) and dQ is written where it belongs. With fewer tasks than twice
// the threads (batch 1, few kv heads, long sequences) the keys are split into ranges: the first
// range writes dQ, each other range a partial buffer of its own (the caller's scratch), and a last
// pass adds the partials in range order, so the result does not depend on which thread ran what.
#include <algorithm>
#include <limits>

#include "cpu/attention_dropout.h"
#include "cpu/attention_grad.h"
#include "cpu/attention_range.h"
#include "engine/attention.h"
#include "engine/cpu_features.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr index_t kTileRows = 64;        // query rows per tile
constexpr index_t kMinRangeKeys = 128;   // the fewest keys a split range gets
constexpr double kParallelWork = 1 << 18;  // multiply-adds below which the caller runs it all

void (*grad_kernel())(const GradTile&) {
  switch (cpu_isa()) {
    case Isa::Avx512: return att_grad_avx512::grad_tile;
    case Isa::Avx2: return att_grad_avx2::grad_tile;
    default: return att_grad_portable::grad_tile;
  }
}

struct Backward {
  HeadView<float> dk, dv;
  HeadView<const float> q, k, v, o, dout;
  const float* lse;
  AttentionDims d;
  AttentionMask m;
  AttentionOptions opt;
  index_t group;  // query heads per kv head
  void (*kernel)(const GradTile&);

  // Keys [k0, k1) of (batch b, kv head kvh); the tiles' dQ goes to dq.
  void task(index_t b, index_t kvh, index_t k0, index_t k1, HeadView<float> dq) const {
    const index_t D = d.head_dim, Dv = d.v_head_dim;
    for (index_t j = k0; j < k1; ++j) {
      std::fill(dk.row(b, kvh, j), dk.row(b, kvh, j) + D, 0.f);
      std::fill(dv.row(b, kvh, j), dv.row(b, kvh, j) + Dv, 0.f);
    }
    index_t lo[kTileRows], hi[kTileRows];
    for (index_t h = kvh * group; h < (kvh + 1) * group; ++h)
      for (index_t i0 = 0; i0 < d.q_len; i0 += kTileRows) {
        const index_t rows = std::min(kTileRows, d.q_len - i0);
        index_t c0 = k1, c1 = k0;
        for (index_t r = 0; r < rows; ++r) {
          attention_key_range(d, m, opt, b, i0 + r, lo[r], hi[r]);
          if (lo[r] < hi[r]) c0 = std::min(c0, lo[r]), c1 = std::max(c1, hi[r]);
        }
        c0 = std::max(c0, k0), c1 = std::min(c1, k1);
        if (c1 <= c0) {
          for (index_t r = 0; r < rows; ++r) std::fill(dq.row(b, h, i0 + r), dq.row(b, h, i0 + r) + D, 0.f);
          continue;
        }
        GradTile t;
        t.q = q.row(b, h, i0), t.ldq = q.sr;
        t.o = o.row(b, h, i0), t.ldo = o.sr;
        t.dout = dout.row(b, h, i0), t.lddo = dout.sr;
        t.k = k.row(b, kvh, 0), t.ldk = k.sr;
        t.v = v.row(b, kvh, 0), t.ldv = v.sr;
        t.dq = dq.row(b, h, i0), t.lddq = dq.sr;
        t.dk = dk.row(b, kvh, 0), t.lddk = dk.sr;
        t.dv = dv.row(b, kvh, 0), t.lddv = dv.sr;
        t.rows = rows, t.dim = D, t.vdim = Dv;
        t.scale = static_cast<float>(opt.scale);
        t.lse = lse + (b * d.q_heads + h) * d.q_len + i0;
        t.lo = lo, t.hi = hi, t.c0 = c0, t.c1 = c1;
        set_task_mask<float>(t, m, b, h, i0);
        set_task_dropout(t, opt.dropout, b * d.q_heads + h, i0);
        kernel(t);
      }
  }
};

}  // namespace

void attention_backward(HeadView<float> dq, HeadView<float> dk, HeadView<float> dv, HeadView<const float> q,
                        HeadView<const float> k, HeadView<const float> v, HeadView<const float> o,
                        HeadView<const float> dout, const float* lse, const AttentionDims& dims,
                        const AttentionMask& mask, const AttentionOptions& opt) {
  ENGINE_CHECK(dims.kv_heads > 0 && dims.q_heads % dims.kv_heads == 0, "attention_backward: q_heads % kv_heads != 0");
  ENGINE_CHECK(!(opt.softcap > 0), "attention_backward: softcap is not supported");
  ENGINE_CHECK(opt.dropout.rate >= 0 && opt.dropout.rate < 1, "attention_backward: dropout rate must be in [0, 1)");
  if (dims.batch == 0) return;
  const Backward bw{dk, dv, q, k, v, o, dout, lse, dims, mask, opt, dims.q_heads / dims.kv_heads, grad_kernel()};
  const index_t L = dims.kv_len, units = dims.batch * dims.kv_heads;
  const double work = static_cast<double>(dims.batch) * dims.q_heads * dims.q_len * std::max<index_t>(L, 1) *
                      (dims.head_dim + dims.v_head_dim + 16);
  const index_t threads = num_threads();
  index_t ranges = 1;
  if (work >= kParallelWork && units < 2 * threads)
    ranges = std::clamp<index_t>((2 * threads + units - 1) / units, 1, std::max<index_t>(1, L / kMinRangeKeys));
  const index_t span = std::max<index_t>(1, (L + ranges - 1) / ranges);
  ranges = std::max<index_t>(1, (L + span - 1) / span);
  const index_t rows = dims.batch * dims.q_heads * dims.q_len, D = dims.head_dim;
  float* partial = ranges > 1 ? thread_scratch<float, kScratchAttentionGradPartial>(
                                    static_cast<size_t>(ranges - 1) * rows * D)
                              : nullptr;
  // Range c >= 1's dQ: a (batch, q_heads, q_len, head_dim) buffer.
  auto dq_of = [&](index_t c) {
    if (c == 0) return dq;
    return HeadView<float>{partial + (c - 1) * rows * D, dims.q_heads * dims.q_len * D, dims.q_len * D, D};
  };
  auto run = [&](std::int64_t t) {
    const index_t c = t % ranges, u = t / ranges;
    bw.task(u / dims.kv_heads, u % dims.kv_heads, c * span, std::min(L, (c + 1) * span), dq_of(c));
  };
  const index_t tasks = units * ranges;
  if (work < kParallelWork) {
    for (index_t t = 0; t < tasks; ++t) run(t);
  } else {
    parallel_tasks(tasks, run);
  }
  if (ranges == 1) return;
  parallel_for(rows, std::max<index_t>(1, 4096 / std::max<index_t>(D, 1)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t b = r / (dims.q_heads * dims.q_len), h = r / dims.q_len % dims.q_heads, i = r % dims.q_len;
      float* out = dq.row(b, h, i);
      for (index_t c = 1; c < ranges; ++c) {
        const float* p = dq_of(c).row(b, h, i);
        for (index_t x = 0; x < D; ++x) out[x] += p[x];
      }
    }
  });
}

void attention_dropout_mask(float* out, const AttentionDims& d, const AttentionDropout& drop) {
  ENGINE_CHECK(drop.rate >= 0 && drop.rate < 1, "attention_dropout_mask: rate must be in [0, 1)");
  const std::uint32_t thresh = attdrop::threshold(drop.rate);
  const float scale = static_cast<float>(1.0 / (1.0 - drop.rate));
  for (index_t bh = 0; bh < d.batch * d.q_heads; ++bh) {
    const std::uint64_t key = attdrop::head_key(drop, bh);
    for (index_t i = 0; i < d.q_len; ++i) {
      const std::uint32_t word = attdrop::row_word(key, static_cast<std::uint32_t>(i));
      for (index_t j = 0; j < d.kv_len; ++j, ++out)
        *out = (attdrop::bits(key, word, j) >> 8) >= thresh ? scale : 0.f;
    }
  }
}

}  // namespace engine
