// Indirect convolution micro-kernel, AVX-512: M output pixels × 32 output channels in 2·M zmm
// accumulators (M <= 14). Each k step loads the two 16-channel filter vectors of the panel
// and broadcasts one input value per pixel from that pixel's row pointer for the current tap,
// so the same loop serves every stride, dilation and padding (padded taps read a zero row).
// The accumulators stay in registers over all taps and channels: the output is written once,
// with bias, residual and activation applied on the way out. Optionally the tile prefetches a
// share of the next filter panel into L2 as it goes (the driver's big-filter order).
#include <immintrin.h>

// GCC 12 reports the _mm512_undefined_ps() inside _mm512_max_ps as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <array>
#include <utility>

#include "conv_kernels.h"

namespace engine::convk {
namespace {

constexpr int MR = kIndirectMR, NR = kIndirectNR;

template <int M, int NV>
void tile(const IndirectTile& t) {
  __m512 acc[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  const float* b = t.b;
  const index_t C = t.C, taps = t.taps;
  const char* pf = reinterpret_cast<const char*>(t.pf);
  const char* const pf_end = pf + t.pf_lines * 64;
  const int pf_step = t.pf_step;
  for (index_t c0 = 0; c0 < C; c0 += t.cb) {
    const index_t cn = C - c0 < t.cb ? C - c0 : t.cb;
    for (index_t tap = 0; tap < taps; ++tap) {
      const float* const* ap = t.a + tap * MR;
      const float* p[M];
#pragma GCC unroll 16
      for (int i = 0; i < M; ++i) p[i] = ap[i] + c0;
      index_t k = 0;
      for (; k + 4 <= cn; k += 4) {
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) {
          const __m512 b0 = _mm512_load_ps(b + u * NR);
          const __m512 b1 = NV == 2 ? _mm512_load_ps(b + u * NR + 16) : b0;
#pragma GCC unroll 16
          for (int i = 0; i < M; ++i) {
            const __m512 av = _mm512_set1_ps(p[i][k + u]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            if (NV == 2) acc[i][NV - 1] = _mm512_fmadd_ps(av, b1, acc[i][NV - 1]);
          }
        }
        b += 4 * NR;
        for (int j = 0; j < pf_step; ++j)
          if (pf < pf_end) {
            _mm_prefetch(pf, _MM_HINT_T1);
            pf += 64;
          }
      }
      for (; k < cn; ++k, b += NR) {
        const __m512 b0 = _mm512_load_ps(b);
        const __m512 b1 = NV == 2 ? _mm512_load_ps(b + 16) : b0;
#pragma GCC unroll 16
        for (int i = 0; i < M; ++i) {
          const __m512 av = _mm512_set1_ps(p[i][k]);
          acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
          if (NV == 2) acc[i][NV - 1] = _mm512_fmadd_ps(av, b1, acc[i][NV - 1]);
        }
      }
    }
  }

  const int n = t.n;
  const __mmask16 k0 = n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
  const __mmask16 k1 = n >= 32 ? __mmask16(0xFFFF) : (n > 16 ? __mmask16((1u << (n - 16)) - 1) : __mmask16(0));
  const __mmask16 km[2] = {k0, k1};
  __m512 bias[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) bias[v] = _mm512_load_ps(t.bias + 16 * v);
  const __m512 zero = _mm512_setzero_ps();
  const __m512 lo = _mm512_set1_ps(t.alpha), hi = _mm512_set1_ps(t.beta);
  const Act act = t.act;
  const float* res = t.res;
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
    float* y = t.y + i * t.ldy;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      __m512 o = _mm512_add_ps(acc[i][v], bias[v]);
      if (res) o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(km[v], res + i * t.ldr + 16 * v));
      // Zero / bound first: MAXPS and MINPS return their second operand on NaN, so NaN stays.
      if (act == Act::Relu) o = _mm512_max_ps(zero, o);
      else if (act == Act::LeakyRelu) o = _mm512_mask_mul_ps(o, _mm512_cmp_ps_mask(o, zero, _CMP_LT_OQ), o, lo);
      else if (act == Act::Clip) o = _mm512_min_ps(hi, _mm512_max_ps(lo, o));
      _mm512_mask_storeu_ps(y + 16 * v, km[v], o);
    }
  }
}

template <int NV, std::size_t... I>
constexpr auto make_table(std::index_sequence<I...>) {
  return std::array<void (*)(const IndirectTile&), sizeof...(I)>{{&tile<int(I) + 1, NV>...}};
}

}  // namespace

void indirect_tile_avx512(const IndirectTile& t) {
  static constexpr auto full = make_table<2>(std::make_index_sequence<MR>{});
  static constexpr auto half = make_table<1>(std::make_index_sequence<MR>{});
  (t.n > 16 ? full : half)[t.m - 1](t);
}

}  // namespace engine::convk
