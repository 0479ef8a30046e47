// Depthwise convolution body, compiled once per ISA (conv_depthwise.cpp, *_avx2.cpp,
// *_avx512.cpp include it with DW_ENTRY set). Everything here sits in an anonymous namespace
// so no ISA-specific inline code is shared between translation units. The inner loops run
// over contiguous channels with compile-time trip counts and are auto-vectorised.
#include "conv_kernels.h"

namespace engine::convk {
namespace {

constexpr int kCB = 64;  // channels per register block

inline index_t imax(index_t a, index_t b) { return a > b ? a : b; }
inline index_t imin(index_t a, index_t b) { return a < b ? a : b; }

// First/last+1 tap index k with 0 <= o*s - p + k*d < n.
inline void tap_range(index_t o, index_t s, index_t p, index_t d, index_t k, index_t n, index_t& k0, index_t& k1) {
  index_t start = o * s - p;
  k0 = start >= 0 ? 0 : (-start + d - 1) / d;
  index_t last = n - 1 - start;  // k*d <= last
  k1 = last < 0 ? 0 : imin(k, last / d + 1);
  if (k1 < k0) k1 = k0;
}

template <int CB, bool kFull>
inline void block(float* y, index_t ystride, const DepthwiseArgs& a, const float* xpix0, const float* w0,
                  const float* bias, index_t n, index_t kh0, index_t kh1, index_t kw0, index_t kw1) {
  const index_t len = kFull ? CB : n;
  float acc[CB];
  for (index_t j = 0; j < len; ++j) acc[j] = bias ? bias[j * ystride] : 0.f;
  const index_t C = a.C, mC = a.mult * a.C;
  for (index_t kh = kh0; kh < kh1; ++kh) {
    const float* xr = xpix0 + kh * a.dh * a.W * C;
    const float* wr = w0 + kh * a.KW * mC;
    for (index_t kw = kw0; kw < kw1; ++kw) {
      const float* xp = xr + kw * a.dw * C;
      const float* wp = wr + kw * mC;
      for (index_t j = 0; j < len; ++j) acc[j] += xp[j] * wp[j];
    }
  }
  if (a.act == Act::Relu) {
    for (index_t j = 0; j < len; ++j) acc[j] = acc[j] > 0.f ? acc[j] : 0.f;
  } else if (a.act == Act::LeakyRelu) {
    const float al = a.alpha;
    for (index_t j = 0; j < len; ++j) acc[j] = acc[j] > 0.f ? acc[j] : acc[j] * al;
  }
  if (ystride == 1)
    for (index_t j = 0; j < len; ++j) y[j] = acc[j];
  else
    for (index_t j = 0; j < len; ++j) y[j * ystride] = acc[j];
}

void rows(float* y, const DepthwiseArgs& a, index_t oh0, index_t oh1) {
  const index_t C = a.C, M = a.mult, OC = C * M;
  for (index_t oh = oh0; oh < oh1; ++oh) {
    index_t kh0, kh1;
    tap_range(oh, a.sh, a.pt, a.dh, a.KH, a.H, kh0, kh1);
    const index_t ih0 = oh * a.sh - a.pt;  // input row of tap kh = 0 (may be negative)
    for (index_t ow = 0; ow < a.OW; ++ow) {
      index_t kw0, kw1;
      tap_range(ow, a.sw, a.pl, a.dw, a.KW, a.W, kw0, kw1);
      const index_t iw0 = ow * a.sw - a.pl;
      // Pointer of tap (0, 0): may lie outside the image; only in-range taps are touched.
      const float* xpix0 = a.x + (ih0 * a.W + iw0) * C;
      float* yp = y + (oh * a.OW + ow) * OC;
      for (index_t m = 0; m < M; ++m) {
        const float* wm = a.w + m * C;
        const float* bm = a.bias ? a.bias + m : nullptr;
        index_t c = 0;
        for (; c + kCB <= C; c += kCB)
          block<kCB, true>(yp + c * M + m, M, a, xpix0 + c, wm + c, bm ? bm + c * M : nullptr, kCB, kh0, kh1, kw0, kw1);
        if (c < C)
          block<kCB, false>(yp + c * M + m, M, a, xpix0 + c, wm + c, bm ? bm + c * M : nullptr, C - c, kh0, kh1, kw0, kw1);
      }
    }
  }
}

}  // namespace

void DW_ENTRY(float* y, const DepthwiseArgs& a, index_t oh0, index_t oh1) { rows(y, a, oh0, oh1); }

}  // namespace engine::convk
