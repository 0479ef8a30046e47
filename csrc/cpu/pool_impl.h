// Pooling bodies, compiled once per ISA (POOL_ISA names the build). Everything sits in an
// anonymous namespace so no ISA-specific inline code is shared between translation units;
// the loops run over contiguous channels in fixed-size blocks and are auto-vectorised.
#include "pool_kernels.h"

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

// NV vectors of channels, accumulators in registers.
template <int NV, bool kMax>
inline void vblock(float* y, const float* x0, index_t rs, index_t cs, index_t kh0, index_t kh1, index_t kw0,
                   index_t kw1, float scale) {
  vf acc[NV];
  if (kMax) {
    const float* xp = x0 + kh0 * rs + kw0 * cs;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[v] = *reinterpret_cast<const vf*>(xp + v * VW);
  } else {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[v] = vf{} ;
  }
  for (index_t kh = kh0; kh < kh1; ++kh)
    for (index_t kw = kw0; kw < kw1; ++kw) {
      const float* xp = x0 + kh * rs + kw * cs;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        vf xv = *reinterpret_cast<const vf*>(xp + v * VW);
        if (kMax) acc[v] = xv > acc[v] ? xv : acc[v];
        else acc[v] += xv;
      }
    }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) *reinterpret_cast<vf*>(y + v * VW) = kMax ? acc[v] : acc[v] * scale;
}

template <bool kMax>
inline void sblock(float* y, const float* x0, index_t n, index_t rs, index_t cs, index_t kh0, index_t kh1,
                   index_t kw0, index_t kw1, float scale) {
  for (index_t j = 0; j < n; ++j) {
    float acc = kMax ? x0[kh0 * rs + kw0 * cs + j] : 0.f;
    for (index_t kh = kh0; kh < kh1; ++kh)
      for (index_t kw = kw0; kw < kw1; ++kw) {
        const float v = x0[kh * rs + kw * cs + j];
        acc = kMax ? (v > acc ? v : acc) : acc + v;
      }
    y[j] = kMax ? acc : acc * scale;
  }
}

template <bool kMax>
void rows(float* y, const PoolArgs& a, index_t oh0, index_t oh1) {
  const index_t C = a.C, rs = a.dh * a.W * C, cs = a.dw * C;
  for (index_t oh = oh0; oh < oh1; ++oh) {
    index_t kh0, kh1, ph0 = 0, ph1 = 0;
    tap_range(oh, a.sh, a.pt, a.dh, a.KH, a.H, kh0, kh1);
    if (!kMax) tap_range(oh, a.sh, 0, a.dh, a.KH, a.H + a.pt + a.pb, ph0, ph1);
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
      float scale = 0.f;
      if (!kMax) {
        index_t cnt;
        if (a.count_include_pad) {
          tap_range(ow, a.sw, 0, a.dw, a.KW, a.W + a.pl + a.pr, pw0, pw1);
          cnt = (ph1 - ph0) * (pw1 - pw0);
        } else {
          cnt = (kh1 - kh0) * (kw1 - kw0);
        }
        scale = 1.f / static_cast<float>(cnt);
      }
      index_t c = 0;
      for (; c + 4 * VW <= C; c += 4 * VW) vblock<4, kMax>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1, scale);
      if (c + 2 * VW <= C) { vblock<2, kMax>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1, scale); c += 2 * VW; }
      if (c + VW <= C) { vblock<1, kMax>(yp + c, x0 + c, rs, cs, kh0, kh1, kw0, kw1, scale); c += VW; }
      if (c < C) sblock<kMax>(yp + c, x0 + c, C - c, rs, cs, kh0, kh1, kw0, kw1, scale);
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

void POOL_CAT(max_rows_, POOL_ISA)(float* y, const PoolArgs& a, index_t oh0, index_t oh1) { rows<true>(y, a, oh0, oh1); }
void POOL_CAT(avg_rows_, POOL_ISA)(float* y, const PoolArgs& a, index_t oh0, index_t oh1) { rows<false>(y, a, oh0, oh1); }
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
