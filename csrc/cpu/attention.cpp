// Scaled dot-product attention (see engine/attention.h).
//
// Work is split into tasks of (batch, query head, block of up to 32 query rows), run over the
// thread pool; each task is one call of Attention::block, which a tiled online-softmax kernel
// can replace without touching the rest. Within a block: S = scale·Q·Kᵀ for the keys any of its
// rows may attend (all keys when the scores are an output), then per row softcap, bias and
// softmax, then Y = S·V. float runs the two products on sgemm (nested inside a pool task it runs
// inline); double uses plain loops. Buffers are thread-local and grow-only.
#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/elementwise.h"
#include "engine/gemm.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr index_t kBlockRows = 32;

template <class T>
T* tls_buffer(size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// S (rows × n) = scale · q (rows × dk) · kᵀ (k: n rows × dk)
void scores(float* S, index_t rows, index_t n, index_t dk, float scale, const float* q, index_t ldq, const float* k,
            index_t ldk) {
  sgemm(false, true, rows, n, dk, scale, q, ldq, k, ldk, 0.f, S, n);
}
void scores(double* S, index_t rows, index_t n, index_t dk, double scale, const double* q, index_t ldq, const double* k,
            index_t ldk) {
  for (index_t r = 0; r < rows; ++r)
    for (index_t j = 0; j < n; ++j) {
      const double *a = q + r * ldq, *b = k + j * ldk;
      double acc = 0;
      for (index_t d = 0; d < dk; ++d) acc += a[d] * b[d];
      S[r * n + j] = acc * scale;
    }
}

// y (rows × dv, row stride ldy) = P (rows × n) · v (n rows × dv)
void weighted_sum(float* y, index_t ldy, const float* P, index_t rows, index_t n, index_t dv, const float* v,
                  index_t ldv) {
  sgemm(false, false, rows, dv, n, 1.f, P, n, v, ldv, 0.f, y, ldy);
}
void weighted_sum(double* y, index_t ldy, const double* P, index_t rows, index_t n, index_t dv, const double* v,
                  index_t ldv) {
  for (index_t r = 0; r < rows; ++r) {
    double* yr = y + r * ldy;
    std::fill(yr, yr + dv, 0.0);
    for (index_t j = 0; j < n; ++j) {
      const double p = P[r * n + j], *vj = v + j * ldv;
      for (index_t d = 0; d < dv; ++d) yr[d] += p * vj[d];
    }
  }
}

void softcap_row(float* s, index_t n, float cap) {
  for (index_t j = 0; j < n; ++j) s[j] /= cap;
  activation(s, s, n, Act::Tanh);
  for (index_t j = 0; j < n; ++j) s[j] *= cap;
}
void softcap_row(double* s, index_t n, double cap) {
  for (index_t j = 0; j < n; ++j) s[j] = cap * std::tanh(s[j] / cap);
}

template <class T>
T row_max(const T* s, index_t n) {
  T m = -std::numeric_limits<T>::infinity();
  for (index_t j = 0; j < n; ++j) m = s[j] > m ? s[j] : m;
  return m;
}

// Softmax in place; false (row untouched) when every score is -inf.
bool softmax_row(float* s, index_t n) {
  if (row_max(s, n) == -std::numeric_limits<float>::infinity()) return false;
  softmax(s, s, 1, n, 1, false);
  return true;
}
bool softmax_row(double* s, index_t n) {
  const double m = row_max(s, n);
  if (m == -std::numeric_limits<double>::infinity()) return false;
  double sum = 0;
  for (index_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - m));
  for (index_t j = 0; j < n; ++j) s[j] /= sum;
  return true;
}

template <class T>
struct Attention {
  HeadView<T> y, qk;
  HeadView<const T> q, k, v;
  AttentionDims d;
  AttentionMask m;
  AttentionOptions o;
  index_t group;  // query heads per kv head

  // Keys [lo, hi) query row i of batch b may attend before attn_mask values: padding, causal
  // and window frontiers, the mask's length.
  void key_range(index_t b, index_t i, index_t& lo, index_t& hi) const {
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

  void block(index_t b, index_t h, index_t i0, index_t i1) const {
    const index_t rows = i1 - i0, L = d.kv_len, kvh = h / group, dv = d.v_head_dim;
    index_t lo[kBlockRows], hi[kBlockRows];
    index_t c0 = L, c1 = 0;
    for (index_t r = 0; r < rows; ++r) {
      key_range(b, i0 + r, lo[r], hi[r]);
      if (lo[r] < hi[r]) c0 = std::min(c0, lo[r]), c1 = std::max(c1, hi[r]);
    }
    if (qk.data) c0 = 0, c1 = L;
    if (c1 <= c0) c0 = c1 = 0;
    const index_t n = c1 - c0;
    T* S = tls_buffer<T>(static_cast<size_t>(std::max<index_t>(rows * n, 1)));
    if (n > 0) {
      if (d.head_dim > 0)
        scores(S, rows, n, d.head_dim, static_cast<T>(o.scale), q.row(b, h, i0), q.sr, k.row(b, kvh, c0), k.sr);
      else
        std::fill(S, S + rows * n, T(0));
    }
    for (index_t r = 0; r < rows; ++r) {
      T* s = S + r * n;
      const index_t i = i0 + r;
      T* out = qk.data ? qk.row(b, h, i) : nullptr;
      if (out && o.qk_mode == 0) std::copy(s, s + n, out);
      if (o.softcap > 0) softcap_row(s, n, static_cast<T>(o.softcap));
      if (out && o.qk_mode == 1) std::copy(s, s + n, out);
      bool keys = apply_bias(s, b, h, i, c0, n, lo[r], hi[r]);
      if (out && o.qk_mode == 2) std::copy(s, s + n, out);
      if (keys) keys = softmax_row(s, n);
      if (!keys) std::fill(s, s + n, T(0));
      if (out && o.qk_mode == 3) std::copy(s, s + n, out);
    }
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
  const index_t nblk = (dims.q_len + kBlockRows - 1) / kBlockRows;
  const index_t rows = (dims.q_len + nblk - 1) / nblk;  // balanced blocks
  const index_t tasks = dims.batch * dims.q_heads * nblk;
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

template void attention<float>(HeadView<float>, HeadView<float>, HeadView<const float>, HeadView<const float>,
                               HeadView<const float>, const AttentionDims&, const AttentionMask&,
                               const AttentionOptions&);
template void attention<double>(HeadView<double>, HeadView<double>, HeadView<const double>, HeadView<const double>,
                                HeadView<const double>, const AttentionDims&, const AttentionMask&,
                                const AttentionOptions&);

}  // namespace engine
