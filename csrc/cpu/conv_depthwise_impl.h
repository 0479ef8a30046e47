// Depthwise convolution body, compiled once per ISA (conv_depthwise.cpp, *_avx2.cpp,
// *_avx512.cpp include it with DW_ENTRY set). Everything here sits in an anonymous namespace
// so no ISA-specific inline code is shared between translation units. The inner loops run
// over contiguous channels with compile-time trip counts and are auto-vectorised.
#include "conv_kernels.h"

#if defined(__SSE__)
#include <immintrin.h>
#endif

namespace engine::convk {
namespace {

constexpr int kCB = 64;  // channels per register block

inline index_t imax(index_t a, index_t b) { return a > b ? a : b; }
inline index_t imin(index_t a, index_t b) { return a < b ? a : b; }

// First/last+1 tap index k with 0 <= o*s - p + k*d < n.
inline void tap_range(index_t o, index_t s, index_t p, index_t d, index_t k, index_t n, index_t& k0, index_t& k1) {
  index_t start = o * s - p;
  if (d == 1) {  // no division on the common path
    k0 = imax(0, -start);
    k1 = imin(k, n - start);
  } else {
    k0 = start >= 0 ? 0 : (-start + d - 1) / d;
    index_t last = n - 1 - start;  // k*d <= last
    k1 = last < 0 ? 0 : imin(k, last / d + 1);
  }
  if (k1 < k0) k1 = k0;
}

#if defined(__AVX512F__)
#define DW_VW 16
#elif defined(__AVX2__)
#define DW_VW 8
#else
#define DW_VW 4
#endif
constexpr int VW = DW_VW;
typedef float vf __attribute__((vector_size(DW_VW * 4), aligned(4)));

// max(0, x) as one MAXPS with zero first: MAXPS returns its second operand on NaN, so a NaN
// stays NaN as in torch (GCC compiles `x < 0 ? 0 : x` to a compare and a mask instead).
inline vf relu(vf x) {
#if defined(__AVX512F__)
  return (vf)_mm512_max_ps(_mm512_setzero_ps(), (__m512)x);
#elif defined(__AVX2__)
  return (vf)_mm256_max_ps(_mm256_setzero_ps(), (__m256)x);
#elif defined(__SSE__)
  return (vf)_mm_max_ps(_mm_setzero_ps(), (__m128)x);
#else
  return x < vf{} ? vf{} : x;
#endif
}

// min(hi, max(lo, x)) (ReLU6): the bounds first, so NaN stays NaN as with relu.
inline vf clip(vf x, vf lo, vf hi) {
#if defined(__AVX512F__)
  return (vf)_mm512_min_ps((__m512)hi, _mm512_max_ps((__m512)lo, (__m512)x));
#elif defined(__AVX2__)
  return (vf)_mm256_min_ps((__m256)hi, _mm256_max_ps((__m256)lo, (__m256)x));
#elif defined(__SSE__)
  return (vf)_mm_min_ps((__m128)hi, _mm_max_ps((__m128)lo, (__m128)x));
#else
  return x < lo ? lo : (x > hi ? hi : x);
#endif
}

// The in-kernel activations on one vector.
inline vf act_v(vf x, const DepthwiseArgs& a) {
  const vf zero{};
  if (a.act == Act::Relu) return relu(x);
  if (a.act == Act::LeakyRelu) return x > zero ? x : x * a.alpha;
  if (a.act == Act::Clip) return clip(x, zero + a.alpha, zero + a.beta);
  return x;
}

// multiplier 1: NV vectors of channels, accumulators in registers.
template <int NV>
inline void vblock(float* y, const DepthwiseArgs& a, const float* xpix0, const float* w0, const float* bias,
                   index_t kh0, index_t kh1, index_t kw0, index_t kw1) {
  vf acc[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) acc[v] = bias ? *reinterpret_cast<const vf*>(bias + v * VW) : vf{};
  const index_t C = a.C;
  for (index_t kh = kh0; kh < kh1; ++kh) {
    const float* xr = xpix0 + kh * a.dh * a.W * C;
    const float* wr = w0 + kh * a.KW * C;
    for (index_t kw = kw0; kw < kw1; ++kw) {
      const float* xp = xr + kw * a.dw * C;
      const float* wp = wr + kw * C;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        acc[v] += *reinterpret_cast<const vf*>(xp + v * VW) * *reinterpret_cast<const vf*>(wp + v * VW);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) *reinterpret_cast<vf*>(y + v * VW) = act_v(acc[v], a);
}

// multiplier 1, R horizontally adjacent output pixels whose taps are all inside in W: each
// filter vector is loaded once for the R pixels.
template <int R, int NV>
inline void vblock_r(float* y, const DepthwiseArgs& a, const float* xpix0, const float* w0, const float* bias,
                     index_t kh0, index_t kh1) {
  vf acc[R][NV];
  const index_t C = a.C, xs = a.sw * C;
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const vf b = bias ? *reinterpret_cast<const vf*>(bias + v * VW) : vf{};
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r][v] = b;
  }
  for (index_t kh = kh0; kh < kh1; ++kh) {
    const float* xr = xpix0 + kh * a.dh * a.W * C;
    const float* wr = w0 + kh * a.KW * C;
    for (index_t kw = 0; kw < a.KW; ++kw) {
      const float* xp = xr + kw * a.dw * C;
      const float* wp = wr + kw * C;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const vf wv = *reinterpret_cast<const vf*>(wp + v * VW);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[r][v] += *reinterpret_cast<const vf*>(xp + r * xs + v * VW) * wv;
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) *reinterpret_cast<vf*>(y + r * C + v * VW) = act_v(acc[r][v], a);
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
    for (index_t j = 0; j < len; ++j) acc[j] = acc[j] < 0.f ? 0.f : acc[j];  // NaN stays NaN
  } else if (a.act == Act::LeakyRelu) {
    const float al = a.alpha;
    for (index_t j = 0; j < len; ++j) acc[j] = acc[j] > 0.f ? acc[j] : acc[j] * al;
  } else if (a.act == Act::Clip) {
    const float lo = a.alpha, hi = a.beta;
    for (index_t j = 0; j < len; ++j) acc[j] = acc[j] < lo ? lo : (acc[j] > hi ? hi : acc[j]);  // NaN stays
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
    // Output columns whose every tap lies inside the input width: [ow_lo, ow_hi).
    const index_t ow_lo = (a.pl + a.sw - 1) / a.sw;
    const index_t ow_hi = a.W + a.pl - a.dw * (a.KW - 1) - 1 < 0 ? 0 : (a.W + a.pl - a.dw * (a.KW - 1) - 1) / a.sw + 1;
    constexpr index_t R = 4;
    for (index_t ow = 0; ow < a.OW; ++ow) {
      if (M == 1 && C >= VW && ow >= ow_lo && ow + R <= ow_hi && ow + R <= a.OW) {
        const float* xq = a.x + (ih0 * a.W + ow * a.sw - a.pl) * C;
        float* yq = y + (oh * a.OW + ow) * C;
        const float* b = a.bias;
        index_t c = 0;
        for (; c + 4 * VW <= C; c += 4 * VW) vblock_r<R, 4>(yq + c, a, xq + c, a.w + c, b ? b + c : b, kh0, kh1);
        if (c + 2 * VW <= C) { vblock_r<R, 2>(yq + c, a, xq + c, a.w + c, b ? b + c : b, kh0, kh1); c += 2 * VW; }
        if (c + VW <= C) { vblock_r<R, 1>(yq + c, a, xq + c, a.w + c, b ? b + c : b, kh0, kh1); c += VW; }
        if (c < C) {  // channel tail: per pixel
          for (index_t r = 0; r < R; ++r)
            block<kCB, false>(yq + r * C + c, 1, a, xq + r * a.sw * C + c, a.w + c, b ? b + c : b, C - c, kh0, kh1, 0, a.KW);
        }
        ow += R - 1;
        continue;
      }
      index_t kw0, kw1;
      tap_range(ow, a.sw, a.pl, a.dw, a.KW, a.W, kw0, kw1);
      const index_t iw0 = ow * a.sw - a.pl;
      // Pointer of tap (0, 0): may lie outside the image; only in-range taps are touched.
      const float* xpix0 = a.x + (ih0 * a.W + iw0) * C;
      float* yp = y + (oh * a.OW + ow) * OC;
      if (M == 1) {
        index_t c = 0;
        const float* b = a.bias;
        for (; c + 4 * VW <= C; c += 4 * VW) vblock<4>(yp + c, a, xpix0 + c, a.w + c, b ? b + c : b, kh0, kh1, kw0, kw1);
        if (c + 2 * VW <= C) { vblock<2>(yp + c, a, xpix0 + c, a.w + c, b ? b + c : b, kh0, kh1, kw0, kw1); c += 2 * VW; }
        if (c + VW <= C) { vblock<1>(yp + c, a, xpix0 + c, a.w + c, b ? b + c : b, kh0, kh1, kw0, kw1); c += VW; }
        if (c < C) block<kCB, false>(yp + c, 1, a, xpix0 + c, a.w + c, b ? b + c : b, C - c, kh0, kh1, kw0, kw1);
        continue;
      }
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
