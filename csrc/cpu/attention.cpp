// Scaled dot-product attention (see engine/attention.h).
//
// Work is split into tasks of (batch, query head, block of query rows), run over the
// thread pool; each task is one call of Attention::block, which a tiled online-softmax kernel
// can replace without touching the rest (a few query rows in inference: tasks of (batch, kv
// head, key range) through the decode kernel instead, Attention::decode_all). Within a block:
// S = scale·Q·Kᵀ for the keys any of its rows may attend (all keys when the scores are an
// output), then per row softcap, bias and softmax, then Y = S·V. float runs the two products on
// sgemm (nested inside a pool task it runs inline) unless they are tiny; double uses plain loops.
// Buffers are thread-local and grow-only.
#include "engine/attention.h"
#include "engine/scratch.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "engine/cpu_features.h"
#include "engine/elementwise.h"
#include "engine/gemm.h"
#include "engine/threadpool.h"
#include "cpu/attention_decode.h"
#include "cpu/attention_dropout.h"
#include "cpu/attention_flash.h"
#include "cpu/attention_range.h"

namespace engine {

namespace att_portable {
#include "cpu/attention_loops.h"
}  // namespace att_portable

#define ATT_DECLARE(ns)                                                                                          \
  namespace ns {                                                                                                 \
  template <class T>                                                                                             \
  void scores_loops(T*, index_t, index_t, index_t, T, const T*, index_t, const T*, index_t);                    \
  template <class T>                                                                                             \
  void weighted_sum_loops(T*, index_t, const T*, index_t, index_t, index_t, const T*, index_t);                 \
  }
ATT_DECLARE(att_avx2)
ATT_DECLARE(att_avx512)
#undef ATT_DECLARE

namespace {

// Query rows per block: up to kMaxBlockRows (K and V are packed once per block by sgemm, so
// taller blocks amortise that), at most kMaxScores scores per block (they stay in L2), fewer
// when a causal or window frontier makes a tall block's bounding box wasteful (about 1/8 of
// the keys: the waste stays near 1/16) or the pool needs tasks.
constexpr index_t kMaxBlockRows = 256, kMinBlockRows = 16;
constexpr index_t kMaxScores = 1 << 17;

// Below this many multiply-adds a float product runs as plain loops: sgemm's packing and
// dispatch cost more than the arithmetic (a few heads of a handful of tokens).
constexpr index_t kSmallProduct = 1 << 13;

// The plain-loop products per ISA (attention_loops.h; the baseline build is in att_portable).
template <class T>
struct Loops {
  void (*scores)(T*, index_t, index_t, index_t, T, const T*, index_t, const T*, index_t);
  void (*weighted_sum)(T*, index_t, const T*, index_t, index_t, index_t, const T*, index_t);
};
template <class T>
Loops<T> loops() {
  switch (cpu_isa()) {
    case Isa::Avx512: return {att_avx512::scores_loops<T>, att_avx512::weighted_sum_loops<T>};
    case Isa::Avx2: return {att_avx2::scores_loops<T>, att_avx2::weighted_sum_loops<T>};
    default: return {att_portable::scores_loops<T>, att_portable::weighted_sum_loops<T>};
  }
}

// S (rows × n) = scale · q (rows × dk) · kᵀ (k: n rows × dk)
void scores(float* S, index_t rows, index_t n, index_t dk, float scale, const float* q, index_t ldq, const float* k,
            index_t ldk) {
  if (rows * n * dk <= kSmallProduct) return loops<float>().scores(S, rows, n, dk, scale, q, ldq, k, ldk);
  sgemm(false, true, rows, n, dk, scale, q, ldq, k, ldk, 0.f, S, n);
}
void scores(double* S, index_t rows, index_t n, index_t dk, double scale, const double* q, index_t ldq,
            const double* k, index_t ldk) {
  loops<double>().scores(S, rows, n, dk, scale, q, ldq, k, ldk);
}

// y (rows × dv, row stride ldy) = P (rows × n) · v (n rows × dv)
void weighted_sum(float* y, index_t ldy, const float* P, index_t rows, index_t n, index_t dv, const float* v,
                  index_t ldv) {
  if (rows * n * dv <= kSmallProduct) return loops<float>().weighted_sum(y, ldy, P, rows, n, dv, v, ldv);
  sgemm(false, false, rows, dv, n, 1.f, P, n, v, ldv, 0.f, y, ldy);
}
void weighted_sum(double* y, index_t ldy, const double* P, index_t rows, index_t n, index_t dv, const double* v,
                  index_t ldv) {
  loops<double>().weighted_sum(y, ldy, P, rows, n, dv, v, ldv);
}

// s = cap·tanh(s / cap) over n scores (a whole block: one vectorised call).
void softcap(float* s, index_t n, float cap) {
  for (index_t j = 0; j < n; ++j) s[j] /= cap;
  activation(s, s, n, Act::Tanh);
  for (index_t j = 0; j < n; ++j) s[j] *= cap;
}
void softcap(double* s, index_t n, double cap) {
  for (index_t j = 0; j < n; ++j) s[j] = cap * std::tanh(s[j] / cap);
}

template <class T>
T row_max(const T* s, index_t n) {
  constexpr int kLanes = 8;  // independent maxima: the compiler turns them into one vector max
  T m[kLanes];
  std::fill(m, m + kLanes, -std::numeric_limits<T>::infinity());
  index_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) m[l] = s[j + l] > m[l] ? s[j + l] : m[l];
  for (; j < n; ++j) m[0] = s[j] > m[0] ? s[j] : m[0];
  for (int l = 1; l < kLanes; ++l) m[0] = m[l] > m[0] ? m[l] : m[0];
  return m[0];
}

// Softmax of each of `rows` rows of n scores, in place (rows the caller zeroes afterwards may
// come out NaN).
void softmax_rows(float* s, index_t rows, index_t n) { softmax(s, s, rows, n, 1, false); }
void softmax_rows(double* s, index_t rows, index_t n) {
  for (index_t r = 0; r < rows; ++r, s += n) {
    const double m = row_max(s, n);
    double sum = 0;
    for (index_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - m));
    for (index_t j = 0; j < n; ++j) s[j] /= sum;
  }
}

// The flash kernel (attention_flash.h) for float blocks when the scores are not an output.
// Queries per block: kFlashRows, fewer when the pool needs tasks. Below kFlashMinRows query rows
// (decode) its rows-along-lanes layout would leave most lanes idle: the decode kernel
// (attention_decode.h) runs inference there (training stays on flash, which writes lse).
constexpr index_t kFlashRows = 64, kFlashMinRows = 16;
std::atomic<int> g_kernel{static_cast<int>(AttentionKernel::Auto)};

void (*flash_kernel())(const FlashBlock&) {
  switch (cpu_isa()) {
    case Isa::Avx512: return att_flash_avx512::flash_block;
    case Isa::Avx2: return att_flash_avx2::flash_block;
    default: return att_flash_portable::flash_block;
  }
}

void (*decode_kernel())(const DecodeBlock&) {
  switch (cpu_isa()) {
    case Isa::Avx512: return att_decode_avx512::decode_block;
    case Isa::Avx2: return att_decode_avx2::decode_block;
    default: return att_decode_portable::decode_block;
  }
}

// The decode kernel splits a group's keys over threads when there are fewer groups than about
// two per thread, down to kMinSplitKeys keys per split (each split adds a partial result to merge).
constexpr index_t kMinSplitKeys = 128;

template <class T>
struct Attention {
  HeadView<T> y, qk;
  HeadView<const T> q, k, v;
  AttentionDims d;
  AttentionMask m;
  AttentionOptions o;
  index_t group;  // query heads per kv head

  void key_range(index_t b, index_t i, index_t& lo, index_t& hi) const {
    attention_key_range(d, m, o, b, i, lo, hi);
  }

  // Adds row i's bias to its scores s (columns c0 .. c0+n): -inf outside [lo, hi) and where a
  // bool mask is false, the additive mask inside. Returns whether any key keeps a finite bias.
  bool apply_bias(T* s, index_t b, index_t h, index_t i, index_t c0, index_t n, index_t lo, index_t hi) const {
    const T ninf = -std::numeric_limits<T>::infinity();
    const index_t a = std::clamp<index_t>(lo - c0, 0, n), e = std::clamp<index_t>(hi - c0, 0, n);
    if (a >= e) {
      std::fill(s, s + n, ninf);
      return false;
    }
    std::fill(s, s + a, ninf);
    std::fill(s + e, s + n, ninf);
    if (!m.data) return true;
    const index_t off = b * m.sb + h * m.sh + i * m.sq + c0;
    bool any = false;
    if (m.boolean) {
      const std::uint8_t* mk = static_cast<const std::uint8_t*>(m.data) + off;
      for (index_t j = a; j < e; ++j) {
        if (!mk[j]) s[j] = ninf;
        else any = true;
      }
    } else {
      const T* mk = static_cast<const T*>(m.data) + off;
      for (index_t j = a; j < e; ++j) {
        s[j] += mk[j];
        any |= mk[j] != ninf;
      }
    }
    return any;
  }

  // The same block as block() through the flash kernel (float, no qk output).
  void flash(void (*kernel)(const FlashBlock&), index_t b, index_t h, index_t i0, index_t i1) const {
    const index_t rows = i1 - i0, kvh = h / group, dv = d.v_head_dim;
    index_t lo[kMaxBlockRows], hi[kMaxBlockRows];
    index_t c0 = d.kv_len, c1 = 0;
    for (index_t r = 0; r < rows; ++r) {
      key_range(b, i0 + r, lo[r], hi[r]);
      if (lo[r] < hi[r]) c0 = std::min(c0, lo[r]), c1 = std::max(c1, hi[r]);
    }
    float* lse = o.lse ? o.lse + (b * d.q_heads + h) * d.q_len + i0 : nullptr;
    if (dv == 0 || c1 <= c0) {  // (no values: the backward's gradients are 0 whatever lse says)
      for (index_t r = 0; r < rows; ++r) std::fill(y.row(b, h, i0 + r), y.row(b, h, i0 + r) + dv, T(0));
      if (lse) std::fill(lse, lse + rows, std::numeric_limits<float>::infinity());
      return;
    }
    FlashBlock f;
    f.q = (q.row(b, h, i0)), f.ldq = q.sr;
    f.k = (k.row(b, kvh, 0)), f.ldk = k.sr;
    f.v = (v.row(b, kvh, 0)), f.ldv = v.sr;
    f.y = y.row(b, h, i0), f.ldy = y.sr;
    f.rows = rows, f.dk = d.head_dim, f.dv = dv;
    f.scale = static_cast<float>(o.scale), f.softcap = static_cast<float>(o.softcap);
    f.lo = lo, f.hi = hi, f.c0 = c0, f.c1 = c1;
    set_task_mask<T>(f, m, b, h, i0);
    f.lse = lse;
    set_task_dropout(f, o.dropout, b * d.q_heads + h, i0);
    kernel(f);
  }

  // Rows [r0, r1) of the group of kv head g in batch b (row r: query head g·group + r / q_len,
  // query row r % q_len) through the decode kernel, over split s of nsplit of the keys they
  // attend: their outputs, or with `part` their partial results (acc rows of dv at part.acc, max
  // and sum at part.m, part.l).
  struct Partial {
    float *acc, *m, *l;
  };
  void decode(void (*kernel)(const DecodeBlock&), index_t b, index_t g, index_t r0, index_t r1, index_t s,
              index_t nsplit, const Partial* part) const {
    DecodeBlock f;
    f.rows = r1 - r0, f.dk = d.head_dim, f.dv = d.v_head_dim;
    index_t u0 = d.kv_len, u1 = 0;  // the union of the rows' keys
    for (index_t r = 0; r < f.rows; ++r) {
      const index_t h = g * group + (r0 + r) / d.q_len, i = (r0 + r) % d.q_len;
      f.q[r] = q.row(b, h, i);
      f.y[r] = part ? part->acc + r * d.v_head_dim : y.row(b, h, i);
      key_range(b, i, f.lo[r], f.hi[r]);
      if (f.lo[r] < f.hi[r]) u0 = std::min(u0, f.lo[r]), u1 = std::max(u1, f.hi[r]);
      if (m.data) {
        const index_t off = b * m.sb + h * m.sh + i * m.sq;
        f.mask[r] = m.boolean ? static_cast<const void*>(static_cast<const std::uint8_t*>(m.data) + off)
                              : static_cast<const void*>(static_cast<const T*>(m.data) + off);
      }
    }
    u1 = std::max(u0, u1);
    f.boolean = m.boolean;
    f.k = k.row(b, g, 0), f.ldk = k.sr;
    f.v = v.row(b, g, 0), f.ldv = v.sr;
    f.c0 = u0 + (u1 - u0) * s / nsplit, f.c1 = u0 + (u1 - u0) * (s + 1) / nsplit;
    f.scale = static_cast<float>(o.scale), f.softcap = static_cast<float>(o.softcap);
    if (part) f.m = part->m, f.l = part->l;
    kernel(f);
  }

  // Every query row through the decode kernel: tasks of (batch, kv head, up to
  // DecodeBlock::kMaxRows of its group's rows), each over a split of the keys when the tasks are
  // too few for the threads; the splits' partial results merge by their log-sum-exp.
  void decode_all() const {
    const index_t grows = group * d.q_len, nrc = (grows + DecodeBlock::kMaxRows - 1) / DecodeBlock::kMaxRows;
    const index_t groups = d.batch * d.kv_heads, base = groups * nrc, threads = num_threads();
    index_t nsplit = 1;
    if (base < 2 * threads)
      nsplit = std::max<index_t>(1, std::min((2 * threads + base - 1) / base, d.kv_len / kMinSplitKeys));
    const index_t rows_all = groups * grows, dv = d.v_head_dim;
    float* buf = nsplit == 1 ? nullptr
                             : thread_scratch<float, kScratchAttentionDecodePartial>(
                                   static_cast<size_t>(nsplit * rows_all) * (dv + 2));
    auto kernel = decode_kernel();
    auto run = [&](std::int64_t t) {
      const index_t s = t / base, bg = t % base / nrc, rc = t % nrc;
      const index_t b = bg / d.kv_heads, g = bg % d.kv_heads;
      const index_t r0 = rc * DecodeBlock::kMaxRows, r1 = std::min(grows, r0 + DecodeBlock::kMaxRows);
      if (!buf) return decode(kernel, b, g, r0, r1, 0, 1, nullptr);
      const index_t row = s * rows_all + bg * grows + r0;  // partial results: (split, group, row)
      const Partial part{buf + row * dv, buf + nsplit * rows_all * dv + row, buf + nsplit * rows_all * (dv + 1) + row};
      decode(kernel, b, g, r0, r1, s, nsplit, &part);
    };
    const double work = static_cast<double>(rows_all) * std::max<index_t>(d.kv_len, 1) * (d.head_dim + dv + 16);
    if (work < (1 << 17)) {
      for (index_t t = 0; t < nsplit * base; ++t) run(t);
    } else {
      parallel_tasks(nsplit * base, run);
    }
    if (!buf) return;
    const float* pm = buf + nsplit * rows_all * dv;
    const float* pl = pm + nsplit * rows_all;
    for (index_t row = 0; row < rows_all; ++row) {
      const index_t bg = row / grows, r = row % grows;
      T* yr = y.row(bg / d.kv_heads, bg % d.kv_heads * group + r / d.q_len, r % d.q_len);
      float mx = -std::numeric_limits<float>::infinity(), den = 0.f;
      for (index_t s = 0; s < nsplit; ++s) mx = std::max(mx, pm[s * rows_all + row]);
      std::fill(yr, yr + dv, T(0));
      if (mx == -std::numeric_limits<float>::infinity()) continue;  // no key in any split
      for (index_t s = 0; s < nsplit; ++s) {
        const float w = std::exp(pm[s * rows_all + row] - mx);
        const float* acc = buf + (s * rows_all + row) * dv;
        den += w * pl[s * rows_all + row];
        for (index_t c = 0; c < dv; ++c) yr[c] += w * acc[c];
      }
      const float inv = den > 0.f ? 1.f / den : 0.f;
      for (index_t c = 0; c < dv; ++c) yr[c] *= inv;
    }
  }

  void block(index_t b, index_t h, index_t i0, index_t i1) const {
    const index_t rows = i1 - i0, L = d.kv_len, kvh = h / group, dv = d.v_head_dim;
    index_t lo[kMaxBlockRows], hi[kMaxBlockRows];
    index_t c0 = L, c1 = 0;
    for (index_t r = 0; r < rows; ++r) {
      key_range(b, i0 + r, lo[r], hi[r]);
      if (lo[r] < hi[r]) c0 = std::min(c0, lo[r]), c1 = std::max(c1, hi[r]);
    }
    if (qk.data) c0 = 0, c1 = L;
    if (c1 <= c0) c0 = c1 = 0;
    const index_t n = c1 - c0;
    T* S = thread_scratch<T, kScratchAttentionScores>(static_cast<size_t>(std::max<index_t>(rows * n, 1)));
    if (n > 0) {
      if (d.head_dim > 0)
        scores(S, rows, n, d.head_dim, static_cast<T>(o.scale), q.row(b, h, i0), q.sr, k.row(b, kvh, c0), k.sr);
      else
        std::fill(S, S + rows * n, T(0));
    }
    // Row by row where the rows differ, whole-block calls for the vector math.
    auto expose = [&](int mode) {
      if (qk.data && o.qk_mode == mode)
        for (index_t r = 0; r < rows; ++r) std::copy(S + r * n, S + (r + 1) * n, qk.row(b, h, i0 + r));
    };
    expose(0);
    if (o.softcap > 0) softcap(S, rows * n, static_cast<T>(o.softcap));
    expose(1);
    bool keys[kMaxBlockRows];
    for (index_t r = 0; r < rows; ++r) keys[r] = apply_bias(S + r * n, b, h, i0 + r, c0, n, lo[r], hi[r]);
    expose(2);
    // A row with no key, or whose every score is -inf, gets zero weights (never NaN).
    for (index_t r = 0; r < rows; ++r)
      keys[r] = keys[r] && row_max(S + r * n, n) != -std::numeric_limits<T>::infinity();
    if (n > 0) softmax_rows(S, rows, n);
    for (index_t r = 0; r < rows; ++r)
      if (!keys[r]) std::fill(S + r * n, S + (r + 1) * n, T(0));
    expose(3);
    if (dv == 0) return;
    if (n > 0) {
      weighted_sum(y.row(b, h, i0), y.sr, S, rows, n, dv, v.row(b, kvh, c0), v.sr);
    } else {
      for (index_t r = 0; r < rows; ++r) std::fill(y.row(b, h, i0 + r), y.row(b, h, i0 + r) + dv, T(0));
    }
  }
};

}  // namespace

template <class T>
void attention(HeadView<T> y, HeadView<T> qk, HeadView<const T> q, HeadView<const T> k, HeadView<const T> v,
               const AttentionDims& dims, const AttentionMask& mask, const AttentionOptions& opt) {
  ENGINE_CHECK(dims.kv_heads > 0 && dims.q_heads % dims.kv_heads == 0, "attention: q_heads % kv_heads != 0");
  if (dims.batch == 0 || dims.q_heads == 0 || dims.q_len == 0) return;
  const Attention<T> A{y, qk, q, k, v, dims, mask, opt, dims.q_heads / dims.kv_heads};
  const int kernel = g_kernel.load(std::memory_order_relaxed);
  const bool training = opt.lse || opt.dropout.rate > 0;  // only the flash kernel writes lse, drops
  ENGINE_CHECK(!training || (std::is_same<T, float>::value && !qk.data),
               "attention: lse and dropout need float32 and no qk output");
  ENGINE_CHECK(opt.dropout.rate >= 0 && opt.dropout.rate < 1, "attention: dropout rate must be in [0, 1)");
  if constexpr (std::is_same<T, float>::value) {
  if (!training && !qk.data && kernel == static_cast<int>(AttentionKernel::Auto) && dims.q_len < kFlashMinRows)
    return A.decode_all();
  if (training || (!qk.data && kernel != static_cast<int>(AttentionKernel::Block) &&
                   (kernel == static_cast<int>(AttentionKernel::Flash) || dims.q_len >= kFlashMinRows))) {
    // Tasks of (batch·head, block): a head's blocks run one after another, so its K and V stay in
    // cache for all of them; within a head the blocks nearest the end come first (under a causal
    // mask they carry the most keys), so the pool's dynamic hand-out balances the tail.
    const index_t heads = dims.batch * dims.q_heads;
    index_t target = kFlashRows;
    while (target > kFlashMinRows && heads * ((dims.q_len + target - 1) / target) < 4 * num_threads()) target /= 2;
    const index_t nblk = (dims.q_len + target - 1) / target;
    const index_t rows = (dims.q_len + nblk - 1) / nblk;
    const index_t tasks = heads * nblk;
    const double work = static_cast<double>(dims.q_len) * heads * std::max<index_t>(dims.kv_len, 1) *
                        (dims.head_dim + dims.v_head_dim + 16);
    auto fk = flash_kernel();
    auto run = [&](std::int64_t t) {
      const index_t bh = t / nblk, blk = nblk - 1 - t % nblk;
      const index_t i0 = blk * rows, i1 = std::min(dims.q_len, i0 + rows);
      if (i0 < i1) A.flash(fk, bh / dims.q_heads, bh % dims.q_heads, i0, i1);
    };
    if (work < (1 << 18)) {
      for (index_t t = 0; t < tasks; ++t) run(t);
    } else {
      parallel_tasks(tasks, run);
    }
    return;
  }
  }
  const bool banded = (opt.causal || opt.left_window >= 0 || opt.right_window >= 0) && !qk.data;
  const index_t tall = banded ? std::clamp<index_t>(dims.kv_len / 8, 2 * kMinBlockRows, 128) : kMaxBlockRows;
  index_t target = std::min(tall,
                            std::max(kMinBlockRows, kMaxScores / std::max<index_t>(dims.kv_len, 1)));
  const index_t heads = dims.batch * dims.q_heads;
  while (target > 2 * kMinBlockRows && heads * ((dims.q_len + target - 1) / target) < 2 * num_threads()) target /= 2;
  const index_t nblk = (dims.q_len + target - 1) / target;
  const index_t rows = (dims.q_len + nblk - 1) / nblk;  // balanced blocks
  const index_t tasks = heads * nblk;
  const double work = static_cast<double>(rows) * std::max<index_t>(dims.kv_len, 1) *
                      (dims.head_dim + dims.v_head_dim + 16);  // + the per-score row work
  const index_t grain = std::max<index_t>(1, static_cast<index_t>((1 << 17) / work));
  parallel_for(tasks, grain, [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t blk = t % nblk, bh = t / nblk;
      const index_t i0 = blk * rows, i1 = std::min(dims.q_len, i0 + rows);
      if (i0 < i1) A.block(bh / dims.q_heads, bh % dims.q_heads, i0, i1);
    }
  });
}

void set_attention_kernel(AttentionKernel k) { g_kernel.store(static_cast<int>(k), std::memory_order_relaxed); }
AttentionKernel attention_kernel() { return static_cast<AttentionKernel>(g_kernel.load(std::memory_order_relaxed)); }

template void attention<float>(HeadView<float>, HeadView<float>, HeadView<const float>, HeadView<const float>,
                               HeadView<const float>, const AttentionDims&, const AttentionMask&,
                               const AttentionOptions&);
template void attention<double>(HeadView<double>, HeadView<double>, HeadView<const double>, HeadView<const double>,
                                HeadView<const double>, const AttentionDims&, const AttentionMask&,
                                const AttentionOptions&);

}  // namespace engine
