// Pooling bodies, compiled once per ISA (POOL_ISA names the build). Everything sits in an
// anonymous namespace so no ISA-specific inline code is shared between translation units;
// the loops run over contiguous channels in fixed-size blocks (average: auto-vectorised;
// max: intrinsics, for its NaN handling).
#include "pool_kernels.h"

#if defined(__SSE__)
#include <immintrin.h>
#endif

#define POOL_CAT2(a, b) a##b
#define POOL_CAT(a, b) POOL_CAT2(a, b)

namespace engine::poolk {
namespace {

inline index_t imin(index_t a, index_t b) { return a < b ? a : b; }
inline index_t imax(index_t a, index_t b) { return a > b ? a : b; }

// One vector register of floats for the ISA this file is built for (GCC vector extension;
// aligned(4) so loads/stores through it are unaligned).
#if defined(__AVX512F__)
#define POOL_VW 16
#elif defined(__AVX2__)
#define POOL_VW 8
#else
#define POOL_VW 4
#endif
constexpr int VW = POOL_VW;
typedef float vf __attribute__((vector_size(POOL_VW * 4), aligned(4)));

// Taps k in [k0, k1) with 0 <= o*s - p + k*d < n.
inline void tap_range(index_t o, index_t s, index_t p, index_t d, index_t k, index_t n, index_t& k0, index_t& k1) {
  const index_t start = o * s - p;
  if (d == 1) {  // no division on the common path
    k0 = imax(0, -start);
    k1 = imin(k, n - start);
  } else {
    k0 = start >= 0 ? 0 : (-start + d - 1) / d;
    const index_t last = n - 1 - start;
    k1 = last < 0 ? 0 : imin(k, last / d + 1);
  }
  if (k1 < k0) k1 = k0;
}

// Max pooling works on the ISA's own register type (vr) with load/store intrinsics, so GCC
// keeps the accumulators in registers. load_n / store_n touch only the first n < VW floats
// (masked: a channel tail runs as one more vector); builds without them take the scalar tail.
#if defined(__AVX512F__)
typedef __m512 vr;
inline vr ldu(const float* p) { return _mm512_loadu_ps(p); }
inline void stu(float* p, vr v) { _mm512_storeu_ps(p, v); }
inline vr vmax(vr a, vr b) { return _mm512_max_ps(a, b); }
constexpr bool kMaskedTail = true;
inline __mmask16 lanes_below(index_t n) { return static_cast<__mmask16>((1u << n) - 1); }
inline vr load_n(const float* p, index_t n) { return _mm512_maskz_loadu_ps(lanes_below(n), p); }
inline void store_n(float* p, vr v, index_t n) { _mm512_mask_storeu_ps(p, lanes_below(n), v); }
#elif defined(__AVX2__)
typedef __m256 vr;
inline vr ldu(const float* p) { return _mm256_loadu_ps(p); }
inline void stu(float* p, vr v) { _mm256_storeu_ps(p, v); }
inline vr vmax(vr a, vr b) { return _mm256_max_ps(a, b); }
constexpr bool kMaskedTail = true;
inline __m256i lanes_below(index_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vr load_n(const float* p, index_t n) { return _mm256_maskload_ps(p, lanes_below(n)); }
inline void store_n(float* p, vr v, index_t n) { _mm256_maskstore_ps(p, lanes_below(n), v); }
#elif defined(__SSE__)
typedef __m128 vr;
inline vr ldu(const float* p) { return _mm_loadu_ps(p); }
inline void stu(float* p, vr v) { _mm_storeu_ps(p, v); }
inline vr vmax(vr a, vr b) { return _mm_max_ps(a, b); }
constexpr bool kMaskedTail = false;
inline vr load_n(const float* p, index_t) { return ldu(p); }  // unused
inline void store_n(float*, vr, index_t) {}
#else
typedef vf vr;
inline vr ldu(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void stu(float* p, vr v) { *reinterpret_cast<vf*>(p) = v; }
inline vr vmax(vr a, vr b) { return a > b ? a : b; }  // MAXPS semantics
constexpr bool kMaskedTail = false;
inline vr load_n(const float* p, index_t) { return ldu(p); }  // unused
inline void store_n(float*, vr, index_t) {}
#endif

// Max pooling propagates NaN as torch's max_pool2d does: a window holding a NaN gives NaN.
// MAXPS drops a NaN operand that is not the second, so the kernels come in two flavours:
// kNaN = false, the plain MAXPS chain, for inputs known to hold no NaN; kNaN = true, which
// also tracks NaN taps: a compare per tap besides the MAXPS (a 2×2 window: one per two
// taps, max4). Without AVX-512 that measured 1.5× the plain loop on 3×3 stride-1 windows
// in cache, so where windows overlap a lot (each input read by 4+ windows) they first look
// for a NaN in the input rows they read (has_nan, once per row) and track only where there
// is one (max_rows). Less overlap, or AVX-512, tracks always: the scan's extra pass cost
// more than tracking there (3×3 stride 2 from memory: +35% against +0%).

// Does p[0, n) hold a NaN? One unordered compare per two vectors.
inline bool has_nan(const float* p, index_t n) {
  index_t i = 0;
#if defined(__AVX512F__)
  __mmask16 bad = 0;
  for (; i + 4 * VW <= n; i += 4 * VW)
    bad |= _mm512_cmp_ps_mask(ldu(p + i), ldu(p + i + VW), _CMP_UNORD_Q) |
           _mm512_cmp_ps_mask(ldu(p + i + 2 * VW), ldu(p + i + 3 * VW), _CMP_UNORD_Q);
  if (bad) return true;
#elif defined(__AVX2__)
  vr bad = _mm256_setzero_ps();
  for (; i + 4 * VW <= n; i += 4 * VW)
    bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(ldu(p + i), ldu(p + i + VW), _CMP_UNORD_Q),
                                         _mm256_cmp_ps(ldu(p + i + 2 * VW), ldu(p + i + 3 * VW), _CMP_UNORD_Q)));
  if (_mm256_movemask_ps(bad)) return true;
#elif defined(__SSE__)
  vr bad = _mm_setzero_ps();
  for (; i + 2 * VW <= n; i += 2 * VW) bad = _mm_or_ps(bad, _mm_cmpunord_ps(ldu(p + i), ldu(p + i + VW)));
  if (_mm_movemask_ps(bad)) return true;
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
  for (; i < n; i += VW) {  // the last < 4 vectors, the final one masked
    const vr x = i + VW <= n ? ldu(p + i) : load_n(p + i, n - i);
#if defined(__AVX512F__)
    if (_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q)) return true;
#else
    if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) return true;
#endif
  }
#endif
  bool any = false;
  for (; i < n; ++i) any |= p[i] != p[i];
  return any;
}

// NaN-tracking running max. MAXPS(x, m) returns m when either is NaN, so with m initialised
// from the first tap a NaN there sticks by itself; a NaN in a later tap is caught on the
// side: AVX-512 merges it in with a masked max (lanes where x is NaN take x), elsewhere a
// sticky CMPUNORDPS(bad, x) is all-ones once a tap was NaN (all-ones is itself a NaN) and
// is ORed in at the end.
struct MaxAcc {
  vr m;
#if !defined(__AVX512F__)
  vr bad;
#endif
  void init(vr first) {
    m = first;
#if !defined(__AVX512F__)
    bad = vr{};
#endif
  }
  void add(vr x) {
#if defined(__AVX512F__)
    m = _mm512_mask_max_ps(x, _mm512_cmp_ps_mask(x, x, _CMP_ORD_Q), x, m);
#elif defined(__AVX2__)
    m = _mm256_max_ps(x, m);
    bad = _mm256_cmp_ps(bad, x, _CMP_UNORD_Q);
#elif defined(__SSE__)
    m = _mm_max_ps(x, m);
    bad = _mm_cmpunord_ps(bad, x);
#else
    typedef int vi __attribute__((vector_size(POOL_VW * 4)));
    m = vmax(x, m);
    bad = (vf)((vi)bad | (x != x));
#endif
  }
  vr get() const {
#if defined(__AVX512F__)
    return m;
#elif defined(__AVX2__)
    return _mm256_or_ps(m, bad);
#elif defined(__SSE__)
    return _mm_or_ps(m, bad);
#else
    typedef int vi __attribute__((vector_size(POOL_VW * 4)));
    return (vf)((vi)m | (vi)bad);
#endif
  }
};

// Max of a 2×2 window's four taps, NaN-propagating: a max tree plus one unordered compare
// per pair of taps.
inline vr max4(vr a, vr b, vr c, vr d) {
#if defined(__AVX512F__)
  const __mmask16 ok = _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(a, b, _CMP_ORD_Q), c, d, _CMP_ORD_Q);
  return _mm512_mask_max_ps(_mm512_set1_ps(__builtin_nanf("")), ok, _mm512_max_ps(a, b), _mm512_max_ps(c, d));
#elif defined(__AVX2__)
  const vr bad = _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q), _mm256_cmp_ps(c, d, _CMP_UNORD_Q));
  return _mm256_or_ps(_mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d)), bad);
#else
  MaxAcc acc;
  acc.init(a);
  acc.add(b);
  acc.add(c);
  acc.add(d);
  return acc.get();
#endif
}

// Max over the window of NV vectors of channels (kTail: one vector of only `tail` < VW
// channels), accumulators in registers; 2×2 windows unrolled. Always inlined: as a call
// per window it costs AVX2 a fifth of its time at 3×3.
template <int NV, bool kNaN, bool kTail = false>
inline __attribute__((always_inline)) void vblock_max(float* y, const float* x0, index_t rs, index_t cs,
                                                      index_t kh0, index_t kh1, index_t kw0, index_t kw1,
                                                      index_t tail = 0) {
  auto ld = [&](const float* p, int v) { return kTail ? load_n(p + v * VW, tail) : ldu(p + v * VW); };
  auto st = [&](int v, vr r) {
    if (kTail) store_n(y + v * VW, r, tail);
    else stu(y + v * VW, r);
  };
  const float* x00 = x0 + kh0 * rs + kw0 * cs;
  if (kh1 - kh0 == 2 && kw1 - kw0 == 2) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const vr a = ld(x00, v), b = ld(x00 + cs, v), c = ld(x00 + rs, v), d = ld(x00 + rs + cs, v);
      st(v, kNaN ? max4(a, b, c, d) : vmax(vmax(a, b), vmax(c, d)));
    }
    return;
  }
  MaxAcc acc[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) acc[v].init(ld(x00, v));
  for (index_t kh = kh0; kh < kh1; ++kh)
    for (index_t kw = kw0; kw < kw1; ++kw) {  // tap (kh0, kw0) again: harmless, and measured faster
      const float* xp = x0 + kh * rs + kw * cs;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        if (kNaN) acc[v].add(ld(xp, v));
        else acc[v].m = vmax(ld(xp, v), acc[v].m);
      }
    }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) st(v, kNaN ? acc[v].get() : acc[v].m);
}

// Scalar channel tail of max pooling (builds without masked loads).
template <bool kNaN>
inline void sblock_max(float* y, const float* x0, index_t n, index_t rs, index_t cs, index_t kh0, index_t kh1,
                       index_t kw0, index_t kw1) {
  for (index_t j = 0; j < n; ++j) {
    float acc = x0[kh0 * rs + kw0 * cs + j];
    bool nan = false;
    for (index_t kh = kh0; kh < kh1; ++kh)
      for (index_t kw = kw0; kw < kw1; ++kw) {
        const float v = x0[kh * rs + kw * cs + j];
        acc = v > acc ? v : acc;
        if (kNaN) nan |= v != v;
      }
    y[j] = kNaN && nan ? __builtin_nanf("") : acc;
  }
}

// One output row of max pooling (window rows [kh0, kh1)).
template <bool kNaN>
void max_row(float* y, const PoolArgs& a, index_t oh, index_t kh0, index_t kh1) {
  const index_t C = a.C, rs = a.dh * a.W * C, cs = a.dw * C;
  const index_t ih0 = oh * a.sh - a.pt;
  for (index_t ow = 0; ow < a.OW; ++ow) {
    index_t kw0, kw1;
    tap_range(ow, a.sw, a.pl, a.dw, a.KW, a.W, kw0, kw1);
    const index_t iw0 = ow * a.sw - a.pl;
    const float* x0 = a.x + (ih0 * a.W + iw0) * C;  // tap (0,0); only valid taps are read
    float* yp = y + (oh * a.OW + ow) * C;
    if (kh0 == kh1 || kw0 == kw1) {  // dilated window with no tap inside the input: 0
      for (index_t c = 0; c < C; ++c) yp[c] = 0.f;
      continue;
    }
    index_t c = 0;
    for (; c + 4 * VW <= C; c += 4 * VW) vblock_max<4, kNaN>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1);
    if (c + 2 * VW <= C) { vblock_max<2, kNaN>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1); c += 2 * VW; }
    if (c + VW <= C) { vblock_max<1, kNaN>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1); c += VW; }
    if (c < C) {
      if (kMaskedTail) vblock_max<1, kNaN, true>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1, C - c);
      else sblock_max<kNaN>(yp + c, x0 + c, C - c, rs, cs, kh0, kh1, kw0, kw1);
    }
  }
}

// Output rows [oh0, oh1) of one image. Scanning (see above): each input row is scanned for
// a NaN once, before its first use, and only output rows whose window meets such a row
// track; rows are scanned in order, so the window's rows [r0, r1) hold a NaN iff the last
// NaN row scanned (every row < r1 is) is >= r0.
#if defined(__AVX512F__)
constexpr bool kScanRows = false;
#else
constexpr bool kScanRows = true;
#endif
void max_rows(float* y, const PoolArgs& a, index_t oh0, index_t oh1) {
  const bool always = !kScanRows || a.KH * a.KW <= 4 || a.KH * a.KW < 4 * a.sh * a.sw;
  const index_t row = a.W * a.C;
  index_t scanned = 0, last_nan = -1;
  for (index_t oh = oh0; oh < oh1; ++oh) {
    index_t kh0, kh1;
    tap_range(oh, a.sh, a.pt, a.dh, a.KH, a.H, kh0, kh1);
    if (always || kh0 == kh1) {
      max_row<true>(y, a, oh, kh0, kh1);
      continue;
    }
    const index_t ih0 = oh * a.sh - a.pt, r0 = ih0 + kh0 * a.dh, r1 = ih0 + (kh1 - 1) * a.dh + 1;
    for (scanned = imax(scanned, r0); scanned < r1; ++scanned)
      if (has_nan(a.x + scanned * row, row)) last_nan = scanned;
    if (last_nan >= r0) max_row<true>(y, a, oh, kh0, kh1);
    else max_row<false>(y, a, oh, kh0, kh1);
  }
}

// Average pooling: NV vectors of channels, accumulators in registers.
template <int NV>
inline void vblock_avg(float* y, const float* x0, index_t rs, index_t cs, index_t kh0, index_t kh1, index_t kw0,
                       index_t kw1, float scale) {
  vf acc[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) acc[v] = vf{};
  for (index_t kh = kh0; kh < kh1; ++kh)
    for (index_t kw = kw0; kw < kw1; ++kw) {
      const float* xp = x0 + kh * rs + kw * cs;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[v] += *reinterpret_cast<const vf*>(xp + v * VW);
    }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) *reinterpret_cast<vf*>(y + v * VW) = acc[v] * scale;
}

inline void sblock_avg(float* y, const float* x0, index_t n, index_t rs, index_t cs, index_t kh0, index_t kh1,
                       index_t kw0, index_t kw1, float scale) {
  for (index_t j = 0; j < n; ++j) {
    float acc = 0.f;
    for (index_t kh = kh0; kh < kh1; ++kh)
      for (index_t kw = kw0; kw < kw1; ++kw) acc += x0[kh * rs + kw * cs + j];
    y[j] = acc * scale;
  }
}

void avg_rows(float* y, const PoolArgs& a, index_t oh0, index_t oh1) {
  const index_t C = a.C, rs = a.dh * a.W * C, cs = a.dw * C;
  for (index_t oh = oh0; oh < oh1; ++oh) {
    index_t kh0, kh1, ph0, ph1;
    tap_range(oh, a.sh, a.pt, a.dh, a.KH, a.H, kh0, kh1);
    tap_range(oh, a.sh, 0, a.dh, a.KH, a.H + a.pt + a.pb, ph0, ph1);
    const index_t ih0 = oh * a.sh - a.pt;
    for (index_t ow = 0; ow < a.OW; ++ow) {
      index_t kw0, kw1, pw0, pw1;
      tap_range(ow, a.sw, a.pl, a.dw, a.KW, a.W, kw0, kw1);
      const index_t iw0 = ow * a.sw - a.pl;
      const float* x0 = a.x + (ih0 * a.W + iw0) * C;  // tap (0,0); only valid taps are read
      float* yp = y + (oh * a.OW + ow) * C;
      if (kh0 == kh1 || kw0 == kw1) {  // dilated window with no tap inside the input: 0
        for (index_t c = 0; c < C; ++c) yp[c] = 0.f;
        continue;
      }
      index_t cnt;
      if (a.count_include_pad) {
        tap_range(ow, a.sw, 0, a.dw, a.KW, a.W + a.pl + a.pr, pw0, pw1);
        cnt = (ph1 - ph0) * (pw1 - pw0);
      } else {
        cnt = (kh1 - kh0) * (kw1 - kw0);
      }
      const float scale = 1.f / static_cast<float>(cnt);
      index_t c = 0;
      for (; c + 4 * VW <= C; c += 4 * VW) vblock_avg<4>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1, scale);
      if (c + 2 * VW <= C) { vblock_avg<2>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1, scale); c += 2 * VW; }
      if (c + VW <= C) { vblock_avg<1>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1, scale); c += VW; }
      if (c < C) sblock_avg(yp + c, x0 + c, C - c, rs, cs, kh0, kh1, kw0, kw1, scale);
    }
  }
}

template <int NV>
inline void gap_vblock(float* y, const float* x, index_t HW, index_t C, float scale) {
  vf acc[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) acc[v] = vf{};
  for (index_t i = 0; i < HW; ++i) {
    const float* xp = x + i * C;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[v] += *reinterpret_cast<const vf*>(xp + v * VW);
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) *reinterpret_cast<vf*>(y + v * VW) = acc[v] * scale;
}

}  // namespace

void POOL_CAT(max_rows_, POOL_ISA)(float* y, const PoolArgs& a, index_t oh0, index_t oh1) { max_rows(y, a, oh0, oh1); }
void POOL_CAT(avg_rows_, POOL_ISA)(float* y, const PoolArgs& a, index_t oh0, index_t oh1) { avg_rows(y, a, oh0, oh1); }
void POOL_CAT(gap_, POOL_ISA)(float* y, const float* x, index_t HW, index_t C, index_t c0, index_t c1) {
  const float scale = 1.f / static_cast<float>(HW);
  index_t c = c0;
  for (; c + 4 * VW <= c1; c += 4 * VW) gap_vblock<4>(y + c, x + c, HW, C, scale);
  if (c + 2 * VW <= c1) { gap_vblock<2>(y + c, x + c, HW, C, scale); c += 2 * VW; }
  if (c + VW <= c1) { gap_vblock<1>(y + c, x + c, HW, C, scale); c += VW; }
  for (; c < c1; ++c) {
    float acc = 0.f;
    for (index_t i = 0; i < HW; ++i) acc += x[i * C + c];
    y[c] = acc * scale;
  }
}

}  // namespace engine::poolk
