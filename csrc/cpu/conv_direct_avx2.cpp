// Direct convolution for small input depth (first layers), AVX2+FMA: as the AVX-512 kernel,
// with each 16-channel filter block held as two ymm vectors.
#include <immintrin.h>

#include "conv_kernels.h"

namespace engine::convk {
namespace {

inline __m256i lane_mask(int n) {  // first n lanes (0..8) set
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

template <int R, int NB>
inline void tile(float* y, const DirectArgs& a, const float* xrow, index_t ow0, index_t ob, int tail) {
  constexpr int V = 2 * NB;
  __m256 acc[R][V];
  for (int v = 0; v < V; ++v) {
    __m256 bv = _mm256_loadu_ps(a.bias + ob * 16 + v * 8);
    for (int r = 0; r < R; ++r) acc[r][v] = bv;
  }
  const index_t C = a.C, KW = a.KW, KH = a.KH;
  const index_t blk = KH * KW * C * 16;
  const float* w0 = a.w + ob * blk;
  const index_t xs = a.sw * C;
  const float* xbase = xrow + ow0 * xs;
  for (index_t kh = 0; kh < KH; ++kh) {
    const float* xr = xbase + kh * a.dh * a.Wp * C;
    for (index_t kw = 0; kw < KW; ++kw) {
      const float* xp = xr + kw * a.dw * C;
      const float* wp = w0 + (kh * KW + kw) * C * 16;
      for (index_t ci = 0; ci < C; ++ci) {
        __m256 wv[V];
        for (int v = 0; v < V; ++v) wv[v] = _mm256_loadu_ps(wp + (v / 2) * blk + ci * 16 + (v % 2) * 8);
        for (int r = 0; r < R; ++r) {
          __m256 xv = _mm256_broadcast_ss(xp + r * xs + ci);
          for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(xv, wv[v], acc[r][v]);
        }
      }
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  const __m256 alpha = _mm256_set1_ps(a.alpha);
  // Locals: stores through y may alias `a` as far as the compiler knows.
  const bool has_tail = ob + NB == a.OCp / 16 && tail != 16;
  const bool relu = a.act == Act::Relu, leaky = a.act == Act::LeakyRelu;
  const index_t OC = a.OC;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float* yp = y + (ow0 + r) * OC + ob * 16;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      __m256 x = acc[r][v];
      if (relu) x = _mm256_max_ps(zero, x);  // zero first: NaN stays NaN
      else if (leaky) x = _mm256_blendv_ps(x, _mm256_mul_ps(x, alpha), _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
      if (has_tail && v >= V - 2) {
        int n = tail - (v - (V - 2)) * 8;
        n = n < 0 ? 0 : (n > 8 ? 8 : n);
        _mm256_maskstore_ps(yp + v * 8, lane_mask(n), x);
      } else {
        _mm256_storeu_ps(yp + v * 8, x);
      }
    }
  }
}

template <int NB, int RMAX>
inline void row(float* y, const DirectArgs& a, const float* xrow, index_t ob, int tail) {
  index_t ow = 0;
  for (; ow + RMAX <= a.OW; ow += RMAX) tile<RMAX, NB>(y, a, xrow, ow, ob, tail);
  index_t rem = a.OW - ow;
  if (rem >= 4 && RMAX > 4) { tile<4, NB>(y, a, xrow, ow, ob, tail); ow += 4; rem -= 4; }
  if (rem >= 2) { tile<2, NB>(y, a, xrow, ow, ob, tail); ow += 2; rem -= 2; }
  if (rem >= 1) tile<1, NB>(y, a, xrow, ow, ob, tail);
}

}  // namespace

void direct_rows_avx2(float* y, const DirectArgs& a, index_t oh0, index_t oh1) {
  const index_t nblk = a.OCp / 16;
  const int tail = static_cast<int>(a.OC - (nblk - 1) * 16);
  for (index_t oh = oh0; oh < oh1; ++oh) {
    const float* xrow = a.x + oh * a.sh * a.Wp * a.C;
    float* yrow = y + oh * a.OW * a.OC;
    index_t ob = 0;
    for (; ob + 2 <= nblk; ob += 2) row<2, 3>(yrow, a, xrow, ob, tail);
    if (ob < nblk) row<1, 6>(yrow, a, xrow, ob, tail);
  }
}

}  // namespace engine::convk
