// Pooling bodies, compiled once per ISA (POOL_ISA names the build). Everything sits in an
// anonymous namespace so no ISA-specific inline code is shared between translation units;
// the loops run over contiguous channels in fixed-size blocks and are auto-vectorised.
#include "pool_kernels.h"

#define POOL_CAT2(a, b) a##b
#define POOL_CAT(a, b) POOL_CAT2(a, b)

namespace engine::poolk {
namespace {

inline index_t imin(index_t a, index_t b) { return a < b ? a : b; }

// Taps k in [k0, k1) with 0 <= o*s - p + k*d < n.
inline void tap_range(index_t o, index_t s, index_t p, index_t d, index_t k, index_t n, index_t& k0, index_t& k1) {
  const index_t start = o * s - p;
  k0 = start >= 0 ? 0 : (-start + d - 1) / d;
  const index_t last = n - 1 - start;
  k1 = last < 0 ? 0 : imin(k, last / d + 1);
  if (k1 < k0) k1 = k0;
}

template <int CB, bool kFull>
inline void max_block(float* y, const float* x0, index_t n, index_t rs, index_t cs, index_t kh0, index_t kh1,
                      index_t kw0, index_t kw1) {
  const index_t len = kFull ? CB : n;
  float acc[CB];
  if (kh0 == kh1 || kw0 == kw1) {  // window entirely in padding: no element, write 0
    for (index_t j = 0; j < len; ++j) y[j] = 0.f;
    return;
  }
  {
    const float* xp = x0 + kh0 * rs + kw0 * cs;
    for (index_t j = 0; j < len; ++j) acc[j] = xp[j];
  }
  for (index_t kh = kh0; kh < kh1; ++kh)
    for (index_t kw = kw0; kw < kw1; ++kw) {
      const float* xp = x0 + kh * rs + kw * cs;
      for (index_t j = 0; j < len; ++j) acc[j] = xp[j] > acc[j] ? xp[j] : acc[j];
    }
  for (index_t j = 0; j < len; ++j) y[j] = acc[j];
}

template <int CB, bool kFull>
inline void avg_block(float* y, const float* x0, index_t n, index_t rs, index_t cs, index_t kh0, index_t kh1,
                      index_t kw0, index_t kw1, float scale) {
  const index_t len = kFull ? CB : n;
  float acc[CB];
  for (index_t j = 0; j < len; ++j) acc[j] = 0.f;
  for (index_t kh = kh0; kh < kh1; ++kh)
    for (index_t kw = kw0; kw < kw1; ++kw) {
      const float* xp = x0 + kh * rs + kw * cs;
      for (index_t j = 0; j < len; ++j) acc[j] += xp[j];
    }
  for (index_t j = 0; j < len; ++j) y[j] = acc[j] * scale;
}

template <bool kMax>
void rows(float* y, const PoolArgs& a, index_t oh0, index_t oh1) {
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
      float scale = 0.f;
      if (!kMax) {
        index_t cnt;
        if (a.count_include_pad) {
          tap_range(ow, a.sw, 0, a.dw, a.KW, a.W + a.pl + a.pr, pw0, pw1);
          cnt = (ph1 - ph0) * (pw1 - pw0);
        } else {
          cnt = (kh1 - kh0) * (kw1 - kw0);
        }
        scale = cnt > 0 ? 1.f / static_cast<float>(cnt) : 0.f;
      }
      index_t c = 0;
#define POOL_BLOCK(CB, FULL, N)                                                        \
  if (kMax) max_block<CB, FULL>(yp + c, x0 + c, N, rs, cs, kh0, kh1, kw0, kw1);     \
  else avg_block<CB, FULL>(yp + c, x0 + c, N, rs, cs, kh0, kh1, kw0, kw1, scale);
      for (; c + 64 <= C; c += 64) { POOL_BLOCK(64, true, 64) }
      if (c + 32 <= C) { POOL_BLOCK(32, true, 32) c += 32; }
      if (c + 16 <= C) { POOL_BLOCK(16, true, 16) c += 16; }
      if (c + 8 <= C) { POOL_BLOCK(8, true, 8) c += 8; }
      if (c < C) { POOL_BLOCK(8, false, C - c) }
#undef POOL_BLOCK
    }
  }
}

template <int CB, bool kFull>
inline void gap_block(float* y, const float* x, index_t n, index_t HW, index_t C, float scale) {
  const index_t len = kFull ? CB : n;
  float acc[CB];
  for (index_t j = 0; j < len; ++j) acc[j] = 0.f;
  for (index_t i = 0; i < HW; ++i) {
    const float* xp = x + i * C;
    for (index_t j = 0; j < len; ++j) acc[j] += xp[j];
  }
  for (index_t j = 0; j < len; ++j) y[j] = acc[j] * scale;
}

}  // namespace

void POOL_CAT(max_rows_, POOL_ISA)(float* y, const PoolArgs& a, index_t oh0, index_t oh1) { rows<true>(y, a, oh0, oh1); }
void POOL_CAT(avg_rows_, POOL_ISA)(float* y, const PoolArgs& a, index_t oh0, index_t oh1) { rows<false>(y, a, oh0, oh1); }
void POOL_CAT(gap_, POOL_ISA)(float* y, const float* x, index_t HW, index_t C, index_t c0, index_t c1) {
  const float scale = 1.f / static_cast<float>(HW);
  index_t c = c0;
  for (; c + 64 <= c1; c += 64) gap_block<64, true>(y + c, x + c, 64, HW, C, scale);
  if (c + 32 <= c1) { gap_block<32, true>(y + c, x + c, 32, HW, C, scale); c += 32; }
  if (c + 16 <= c1) { gap_block<16, true>(y + c, x + c, 16, HW, C, scale); c += 16; }
  if (c + 8 <= c1) { gap_block<8, true>(y + c, x + c, 8, HW, C, scale); c += 8; }
  if (c < c1) gap_block<8, false>(y + c, x + c, c1 - c, HW, C, scale);
}

}  // namespace engine::poolk
