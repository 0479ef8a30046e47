// The packed kernels (quant_packed.h), for any number of x rows: per tile, the 16 weight rows'
// codes are unpacked once and every x row takes 16 vpdpbusd against broadcast 4-byte groups of
// its two int8 parts (XBlock), then one conversion, one scale and one FMA (two with a minimum)
// for all 16 outputs. Nothing is summed across lanes, and a row's arithmetic is the same
// whatever other rows share its pass (its result too, bit for bit).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/quant_packed.h"

namespace engine {
namespace quant_packed_avx512vnni {
namespace {

// acc += w (u8) . the 4 bytes at x (s8) broadcast to every lane, as one instruction with an
// embedded broadcast (the compilers load and broadcast apart, one more uop per product).
typedef std::int32_t __attribute__((may_alias)) Bytes4;  // 4 of an XBlock's int8 values, read as one
inline __m512i dpbusd_broadcast(__m512i acc, __m512i w, const std::int8_t* x) {
  asm("vpdpbusd %[x]%{1to16%}, %[w], %[acc]"
      : [acc] "+v"(acc)
      : [w] "v"(w), [x] "m"(*reinterpret_cast<const Bytes4*>(x)));
  return acc;
}

// The tile's codes as 8 vectors, vector j lane n = row n's codes 4j..4j+3.
template <QuantType T>
inline void load_codes(const std::uint8_t* t, __m512i* w) {
  if constexpr (packed_nibbles(T)) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int v = 0; v < 4; ++v) {
      const __m512i raw = _mm512_load_si512(t + 64 * v);
      w[v] = _mm512_and_si512(raw, low4);
      w[v + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
    }
  } else {
    for (int j = 0; j < 8; ++j) w[j] = _mm512_load_si512(t + 64 * j);
  }
}

// The 16 rows' d and minimum (Q4_1: m, Q4_K: -(dmin*m); zeros for the others).
template <QuantType T>
inline void load_scales(const std::uint8_t* s, __m512& d, __m512& mn) {
  if constexpr (T == QuantType::Q4_K) {
    d = _mm512_load_ps(s);
    mn = _mm512_load_ps(s + 64);
  } else {
    d = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(s)));
    mn = T == QuantType::Q4_1 ? _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(s + 32)))
                              : _mm512_setzero_ps();
  }
}

constexpr index_t kPrefetchTiles = 4;

template <QuantType T, int MR>
void group_rows(const PackedRows& a, index_t g, index_t m0) {
  const QuantPacked& W = *a.w;
  const index_t nb = W.cols() / kXBlock, tile = W.tile_bytes();
  const XBlock* x[MR];
  const std::int32_t* xo[MR];
  __m512 acc[MR];
  for (int m = 0; m < MR; ++m) {
    x[m] = a.xq + (m0 + m) * nb;
    xo[m] = a.xoff + (m0 + m) * nb;
    acc[m] = _mm512_setzero_ps();
  }
  const std::uint8_t* t = W.tile(g, 0);
  for (index_t b = 0; b < nb; ++b, t += tile) {
    // The tiles of a group and the next group follow each other: with several rows, fetch a
    // few tiles ahead (the hardware prefetcher alone streamed the 32 MB output projection at
    // 5 GB/s at 8 rows, 2.8x slower than this; one row streams at 30 GB/s without, and slower
    // with the extra instructions).
    if constexpr (MR > 1)
      for (index_t l = 0; l < tile; l += 64)
        _mm_prefetch(reinterpret_cast<const char*>(t + kPrefetchTiles * tile + l), _MM_HINT_T0);
    __m512i w[8];
    load_codes<T>(t, w);
    __m512 d, mn;
    load_scales<T>(t + packed_code_bytes(T), d, mn);
    // Rows four at a time with j outside: 8 independent dot-product chains interleaved, so
    // vpdpbusd's latency is hidden without relying on the out-of-order window.
#pragma GCC unroll 2
    for (int m4 = 0; m4 < MR; m4 += 4) {
      constexpr int kR = 4;
      __m512i hi[kR], lo[kR];
#pragma GCC unroll 4
      for (int r = 0; r < kR; ++r) hi[r] = lo[r] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j)
#pragma GCC unroll 4
        for (int r = 0; r < kR; ++r)
          if (m4 + r < MR) {
            const XBlock& xb = x[m4 + r][b];
            hi[r] = dpbusd_broadcast(hi[r], w[j], xb.q + 4 * j);
            lo[r] = dpbusd_broadcast(lo[r], w[j], xb.lo + 4 * j);
          }
#pragma GCC unroll 4
      for (int r = 0; r < kR; ++r)
        if (m4 + r < MR) {
          const int m = m4 + r;
          const XBlock& xb = x[m][b];
          __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(hi[r], kXLoShift), lo[r]);
          if constexpr (packed_code_offset(T) != 0) dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(xo[m][b]));
          acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d, _mm512_set1_ps(xb.d)), acc[m]);
          if constexpr (T == QuantType::Q4_1 || T == QuantType::Q4_K)
            acc[m] = _mm512_fmadd_ps(mn, _mm512_set1_ps(xb.s), acc[m]);
        }
    }
  }
  const index_t n0 = g * kPackRows, valid = std::min<index_t>(kPackRows, W.rows() - n0);
  const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
  for (int m = 0; m < MR; ++m) {
    float* y = a.y + (m0 + m) * a.ldy + n0;
    __m512 v = acc[m];
    if (a.accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, y));
    _mm512_mask_storeu_ps(y, mask, v);
  }
}

using GroupFn = void (*)(const PackedRows&, index_t, index_t);

template <QuantType T>
GroupFn group_fn(int mr) {
  static constexpr GroupFn kFns[] = {group_rows<T, 1>, group_rows<T, 2>, group_rows<T, 3>, group_rows<T, 4>,
                                     group_rows<T, 5>, group_rows<T, 6>, group_rows<T, 7>, group_rows<T, 8>};
  return kFns[mr - 1];
}
// Rows per pass: 8 accumulators, 8 code vectors and the 8 dot-product chains of four rows fit
// the 32 registers (passes of 4 rows were ~1.2x slower at 8 rows: the codes unpacked twice).
constexpr int kMaxRows = 8;

GroupFn pick(QuantType t, int mr) {
  switch (t) {
    case QuantType::Q4_0: return group_fn<QuantType::Q4_0>(mr);
    case QuantType::Q4_1: return group_fn<QuantType::Q4_1>(mr);
    case QuantType::Q8_0: return group_fn<QuantType::Q8_0>(mr);
    default: return group_fn<QuantType::Q4_K>(mr);
  }
}

// quantize_row's arithmetic on one block in vectors; false (nothing written) where it takes
// its other branches: a NaN or inf in the block, or a scale with no finite reciprocal.
inline bool quantize_block(const float* x, XBlock& out) {
  const __m512 a0 = _mm512_loadu_ps(x), a1 = _mm512_loadu_ps(x + 16);
  const __m512 zero = _mm512_setzero_ps();
  // x - x is 0 exactly when x is finite
  if (_mm512_cmp_ps_mask(_mm512_sub_ps(a0, a0), zero, _CMP_EQ_OQ) != 0xFFFF ||
      _mm512_cmp_ps_mask(_mm512_sub_ps(a1, a1), zero, _CMP_EQ_OQ) != 0xFFFF)
    return false;
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a0), _mm512_abs_ps(a1)));
  constexpr int kMax = 127 << kXLoShift;
  const float d = amax / static_cast<float>(kMax), id = d > 0.f ? 1.f / d : 0.f;
  if (!(id - id == 0.f)) return false;
  const __m512i lim = _mm512_set1_epi32(kMax);
  __m512i v[2];
  __m128i q[2], lo[2];
  for (int h = 0; h < 2; ++h) {
    // nearest, ties to even (the default rounding mode, as std::nearbyint), clamped
    const __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(h ? a1 : a0, _mm512_set1_ps(id)));
    v[h] = _mm512_max_epi32(_mm512_min_epi32(r, lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
    // q = (v +- 64) / 128 truncated toward zero; lo = v - 128 q
    const __m512i sign = _mm512_srai_epi32(v[h], 31);
    const __m512i t = _mm512_add_epi32(v[h], _mm512_sub_epi32(_mm512_xor_si512(_mm512_set1_epi32(64), sign), sign));
    const __m512i qv = _mm512_srai_epi32(_mm512_add_epi32(t, _mm512_and_si512(sign, _mm512_set1_epi32(127))), 7);
    q[h] = _mm512_cvtepi32_epi8(qv);
    lo[h] = _mm512_cvtepi32_epi8(_mm512_sub_epi32(v[h], _mm512_slli_epi32(qv, kXLoShift)));
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out.q), q[0]);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out.q + 16), q[1]);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out.lo), lo[0]);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out.lo + 16), lo[1]);
  out.d = d;
  out.sum16[0] = _mm512_reduce_add_epi32(v[0]);
  out.sum16[1] = _mm512_reduce_add_epi32(v[1]);
  out.s = d * static_cast<float>(out.sum16[0] + out.sum16[1]);
  return true;
}

}  // namespace

void quantize_rows(const float* x, index_t ldx, index_t M, index_t K, int offset, XBlock* xq, std::int32_t* xoff) {
  const index_t nb = K / kXBlock;
  for (index_t m = 0; m < M; ++m)
    for (index_t b = 0; b < nb; ++b) {
      const float* xb = x + m * ldx + b * kXBlock;
      XBlock& out = xq[m * nb + b];
      if (!quantize_block(xb, out)) quantize_row(xb, kXBlock, &out);
      xoff[m * nb + b] = offset * (out.sum16[0] + out.sum16[1]);
    }
}

void matmul_groups(const PackedRows& a, index_t g0, index_t g1) {
  const int full = static_cast<int>(std::min<index_t>(a.M, kMaxRows));
  const int rest = static_cast<int>(a.M % kMaxRows);
  const GroupFn f_full = pick(a.w->type(), full), f_rest = rest ? pick(a.w->type(), rest) : nullptr;
  for (index_t g = g0; g < g1; ++g)  // g outside: the group's tiles stay in L1/L2 across passes
    for (index_t m0 = 0; m0 < a.M; m0 += kMaxRows)
      (a.M - m0 >= kMaxRows ? f_full : f_rest)(a, g, m0);
}

}  // namespace quant_packed_avx512vnni
}  // namespace engine
