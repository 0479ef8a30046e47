// Direct convolution for small input depth (first layers), AVX-512: each output pixel's OC
// values are zmm vectors; R pixels × NB 16-channel blocks of accumulators stay in registers
// while every tap (kh, kw, ci) broadcasts one input value and FMAs it with the packed filters.
#include <immintrin.h>

#include "conv_kernels.h"

namespace engine::convk {
namespace {

// FK > 0 fixes the filter to FK×FK taps over one input channel, stride 1, no dilation (the
// common first layer: a grey image and a 3×3 filter), so the tap loops unroll completely.
template <int R, int NB, int FK = 0>
inline void tile(float* y, const DirectArgs& a, const float* xrow, index_t ow0, index_t ob,
                 __mmask16 last_mask) {
  __m512 acc[R][NB];
  for (int b = 0; b < NB; ++b) {
    __m512 bv = _mm512_loadu_ps(a.bias + (ob + b) * 16);
    for (int r = 0; r < R; ++r) acc[r][b] = bv;
  }
  const index_t C = FK ? 1 : a.C, KW = FK ? FK : a.KW, KH = FK ? FK : a.KH;
  const index_t blk = KH * KW * C * 16;  // floats per 16-channel filter block
  const float* w0 = a.w + ob * blk;
  const index_t xs = FK ? 1 : a.sw * C;  // input stride between neighbouring output pixels
  const index_t dh = FK ? 1 : a.dh, dw = FK ? 1 : a.dw;
  const float* xbase = xrow + ow0 * xs;
#pragma GCC unroll 8
  for (index_t kh = 0; kh < KH; ++kh) {
    const float* xr = xbase + kh * dh * a.Wp * C;
#pragma GCC unroll 8
    for (index_t kw = 0; kw < KW; ++kw) {
      const float* xp = xr + kw * dw * C;
      const float* wp = w0 + (kh * KW + kw) * C * 16;
      for (index_t ci = 0; ci < C; ++ci) {
        __m512 wv[NB];
        for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_ps(wp + b * blk + ci * 16);
        for (int r = 0; r < R; ++r) {
          __m512 xv = _mm512_set1_ps(xp[r * xs + ci]);
          for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_fmadd_ps(xv, wv[b], acc[r][b]);
        }
      }
    }
  }
  // Locals: stores through y may alias `a` as far as the compiler knows.
  const __m512 zero = _mm512_setzero_ps();
  const __m512 alpha = _mm512_set1_ps(a.alpha);
  const bool relu = a.act == Act::Relu, leaky = a.act == Act::LeakyRelu;
  const __mmask16 mlast = ob + NB == a.OCp / 16 ? last_mask : static_cast<__mmask16>(0xFFFF);
  const index_t OC = a.OC;
  float* y0 = y + ow0 * OC + ob * 16;
  if (relu) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
      for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_max_ps(zero, acc[r][b]);  // NaN stays NaN
  } else if (leaky) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
      for (int b = 0; b < NB; ++b)
        acc[r][b] = _mm512_mask_mul_ps(acc[r][b], _mm512_cmp_ps_mask(acc[r][b], zero, _CMP_LT_OQ), acc[r][b], alpha);
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int b = 0; b < NB - 1; ++b) _mm512_storeu_ps(y0 + r * OC + b * 16, acc[r][b]);
    _mm512_mask_storeu_ps(y0 + r * OC + (NB - 1) * 16, mlast, acc[r][NB - 1]);
  }
}

template <int NB, int RMAX, int FK = 0>
inline void row(float* y, const DirectArgs& a, const float* xrow, index_t ob, __mmask16 mask) {
  index_t ow = 0;
  for (; ow + RMAX <= a.OW; ow += RMAX) tile<RMAX, NB, FK>(y, a, xrow, ow, ob, mask);
  index_t rem = a.OW - ow;
  // Remainder in halves so the tail stays register-blocked.
  if (rem >= 8) { tile<8, NB, FK>(y, a, xrow, ow, ob, mask); ow += 8; rem -= 8; }
  if (rem >= 4) { tile<4, NB, FK>(y, a, xrow, ow, ob, mask); ow += 4; rem -= 4; }
  if (rem >= 2) { tile<2, NB, FK>(y, a, xrow, ow, ob, mask); ow += 2; rem -= 2; }
  if (rem >= 1) tile<1, NB, FK>(y, a, xrow, ow, ob, mask);
}

template <int FK>
void rows(float* y, const DirectArgs& a, index_t oh0, index_t oh1, __mmask16 mask) {
  const index_t nblk = a.OCp / 16;
  for (index_t oh = oh0; oh < oh1; ++oh) {
    const float* xrow = a.x + oh * a.sh * a.Wp * a.C;
    float* yrow = y + oh * a.OW * a.OC;
    index_t ob = 0;
    for (; ob + 2 <= nblk; ob += 2) row<2, 12, FK>(yrow, a, xrow, ob, mask);
    if (ob < nblk) row<1, 12, FK>(yrow, a, xrow, ob, mask);
  }
}

}  // namespace

void direct_rows_avx512(float* y, const DirectArgs& a, index_t oh0, index_t oh1) {
  const index_t nblk = a.OCp / 16;
  const int tail = static_cast<int>(a.OC - (nblk - 1) * 16);
  const __mmask16 mask = static_cast<__mmask16>(tail == 16 ? 0xFFFF : ((1u << tail) - 1));
  if (a.C == 1 && a.KH == 3 && a.KW == 3 && a.sw == 1 && a.dh == 1 && a.dw == 1)
    rows<3>(y, a, oh0, oh1, mask);
  else
    rows<0>(y, a, oh0, oh1, mask);
}

}  // namespace engine::convk
