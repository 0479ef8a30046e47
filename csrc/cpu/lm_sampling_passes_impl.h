// The vector passes of sampling (lm_sampling_passes.h), written once over EW_W-float vectors and
// compiled per ISA: lm_sampling_passes_{portable,avx2,avx512}.cpp include this file inside their
// own namespace after defining EW_W and the standard headers. No includes here on purpose.

namespace {
#include "cpu/elementwise_vmath.h"

inline bool any(vi m) {
#if EW_W == 16 && defined(__AVX512F__)
  return _mm512_test_epi32_mask((__m512i)m, (__m512i)m) != 0;
#elif EW_W == 8 && defined(__AVX__)
  return _mm256_movemask_ps((__m256)m) != 0;
#elif EW_W == 4 && defined(__SSE__)
  return _mm_movemask_ps((__m128)m) != 0;
#else
  for (int l = 0; l < W; ++l)
    if (m[l]) return true;
  return false;
#endif
}

// exp(s), 0 for s below kMinScore (and for -inf).
inline vf weight(vf s) {
  vi keep = s >= splat(kMinScore);
  return (vf)((vi)v_exp(vmax(s, splat(kMinScore))) & keep);
}
}  // namespace

RowScan scan_row(const float* x, index_t n) {
  vf mx = splat(-kInf);
  vi bad = splati(0);
  index_t i = 0;
  for (; i + W <= n; i += W) {
    vf v = load(x + i);
    bad |= (v != v) | (v == splat(kInf));
    mx = vmax(v, mx);  // a NaN lane is caught by `bad`
  }
  float m = hmax(mx);
  bool any_bad = any(bad);
  for (; i < n; ++i) {
    any_bad |= std::isnan(x[i]) || x[i] == kInf;
    m = x[i] > m ? x[i] : m;
  }
  RowScan r{m, -1, -1};
  if (any_bad) {
    for (index_t j = 0; j < n; ++j)
      if (std::isnan(x[j]) || x[j] == kInf) { r.bad = j; break; }
    return r;
  }
  if (m == -kInf) return r;
  // The first id holding the max: blocks compared whole, the hit found inside one.
  i = 0;
  for (; i + W <= n; i += W)
    if (any(load(x + i) == splat(m))) break;
  for (; i < n; ++i)
    if (x[i] == m) { r.argmax = i; break; }
  return r;
}

double weigh_row(float* w, double* block_sums, const float* x, index_t n, float max, float inv_t) {
  const vf vm = splat(max), vt = splat(inv_t);
  double total = 0;
  for (index_t b0 = 0, blk = 0; b0 < n; b0 += kBlock, ++blk) {
    const index_t b1 = b0 + kBlock < n ? b0 + kBlock : n;
    vf acc = splat(0.f);
    index_t i = b0;
    for (; i + W <= b1; i += W) {
      vf e = weight((load(x + i) - vm) * vt);
      if (w) store(w + i, e);
      acc += e;
    }
    if (i < b1) {
      const index_t cnt = b1 - i;
      vf e = (vf)((vi)weight((load_partial(x + i, cnt) - vm) * vt) & lane_mask(cnt));
      if (w) store_partial(w + i, e, cnt);
      acc += e;
    }
    block_sums[blk] = hsum(acc);
    total += block_sums[blk];
  }
  return total;
}

float threshold_for_weight(const float* x, index_t n, float max, float inv_t, double need) {
  constexpr int kBuckets = static_cast<int>(-kMinScore) * kBucketsPerUnit + 1;
  // Four histograms (lane l adds to l % 4), so consecutive tokens in one bucket do not wait on
  // each other.
  double hist[4][kBuckets] = {};
  const vf vm = splat(max), vt = splat(inv_t), lo = splat(kMinScore), scale = splat(float(kBucketsPerUnit));
  auto add = [&](vf s, vi live) {
    vf e = (vf)((vi)weight(s) & live);
    vi b = __builtin_convertvector(vmax(s - lo, splat(0.f)) * scale, vi);  // s < kMinScore: weight 0
    for (int l = 0; l < W; ++l) hist[l % 4][b[l] < kBuckets ? b[l] : kBuckets - 1] += e[l];
  };
  index_t i = 0;
  for (; i + W <= n; i += W) add((load(x + i) - vm) * vt, splati(-1));
  if (i < n) add((load_partial(x + i, n - i) - vm) * vt, lane_mask(n - i));
  double cum = 0;
  for (int b = kBuckets - 1; b >= 0; --b) {
    for (int l = 0; l < 4; ++l) cum += hist[l][b];
    if (cum >= need) return kMinScore + static_cast<float>(b) / kBucketsPerUnit;
  }
  return kMinScore;
}

float kth_largest(const float* x, index_t n, index_t k, float* buf) {
  if (k > 256 && k * 8 > n) {  // large k: selection over a copy, O(n)
    std::copy(x, x + n, buf);
    std::nth_element(buf, buf + (k - 1), buf + n, std::greater<float>());
    return buf[k - 1];
  }
  std::copy(x, x + k, buf);
  std::make_heap(buf, buf + k, std::greater<float>());  // min-heap: buf[0] is the k-th best so far
  index_t i = k;
  auto push = [&](float v) {
    if (v <= buf[0]) return;
    std::pop_heap(buf, buf + k, std::greater<float>());
    buf[k - 1] = v;
    std::push_heap(buf, buf + k, std::greater<float>());
  };
  for (; i + W <= n; i += W) {
    vf v = load(x + i);
    if (!any(v > splat(buf[0]))) continue;
    for (int l = 0; l < W; ++l) push(v[l]);
  }
  for (; i < n; ++i) push(x[i]);
  return buf[0];
}

index_t gather_above(Cand* out, const float* x, index_t n, float max, float inv_t, float c) {
  const vf vm = splat(max), vt = splat(inv_t), vc = splat(c);
  index_t k = 0, i = 0;
  for (; i + W <= n; i += W) {
    vf s = (load(x + i) - vm) * vt;
    vi hit = s >= vc;
    if (!any(hit)) continue;
    for (int l = 0; l < W; ++l)
      if (hit[l]) out[k++] = Cand{s[l], 0.f, static_cast<std::int32_t>(i + l)};
  }
  for (; i < n; ++i) {
    const float s = (x[i] - max) * inv_t;
    if (s >= c) out[k++] = Cand{s, 0.f, static_cast<std::int32_t>(i)};
  }
  return k;
}

double weigh_cands(Cand* c, index_t n) {
  double total = 0;
  for (index_t i = 0; i < n; i += W) {
    const index_t cnt = n - i < W ? n - i : W;
    vf s = splat(kMinScore);
    for (index_t l = 0; l < cnt; ++l) s[l] = c[i + l].s;
    vf e = weight(s);
    for (index_t l = 0; l < cnt; ++l) {
      c[i + l].w = e[l];
      total += e[l];
    }
  }
  return total;
}

const Passes& passes() {
  static const Passes p = {scan_row, weigh_row, threshold_for_weight, kth_largest, gather_above, weigh_cands};
  return p;
}
