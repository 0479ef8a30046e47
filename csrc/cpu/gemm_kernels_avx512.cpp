// AVX-512 SGEMM micro-kernel: a 14×32 tile of C in 28 zmm accumulators. Each k step loads
// two 16-float vectors of the packed B panel and broadcasts 14 elements of A.
// Edge columns use write masks; edge rows are separate instantiations (m = 1..14).
// Few-row tiles (m <= 3, the GEMV / small-batch path) split K over several accumulator
// sets so the FMA latency chain does not limit the streaming of B.
#include <immintrin.h>

// GCC 12 reports the _mm512_undefined_ps() inside _mm512_max_ps as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <array>
#include <utility>

#include "cpu/gemm_internal.h"

namespace engine {
namespace gemm {
namespace {

constexpr int MR = 14;
constexpr int NR = 32;

constexpr int kAPrefetch = 256;  // floats ahead

constexpr int ku_for(int m) { return m == 1 ? 4 : (m <= 3 ? 2 : 1); }

template <int AM>
inline __attribute__((always_inline)) float a_at(const float* A, index_t rsa, index_t csa, int i,
                                                 index_t k) {
  return AM == ACol ? A[i + k * csa] : A[i * rsa + k];
}

// MASKB: B is read in place and this tile is narrower than NR, so B loads are masked to the
// n valid columns (no packing of a ragged edge panel).
template <int M, int AM, int NV, bool MASKB>
inline __attribute__((always_inline)) void kernel_impl(int m, int n, index_t K, const float* A, index_t rsa, index_t csa, const float* B, index_t ldb,
            float* C, index_t ldc, const TileParams& p, const float* bias) {
  constexpr int KU = ku_for(M);
  const __mmask16 k0 = n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
  const __mmask16 k1 = n >= 32 ? __mmask16(0xFFFF) : (n > 16 ? __mmask16((1u << (n - 16)) - 1) : __mmask16(0));
  auto ldb0 = [&](const float* x) { return MASKB ? _mm512_maskz_loadu_ps(k0, x) : _mm512_loadu_ps(x); };
  auto ldb1 = [&](const float* x) {
    return NV == 2 ? (MASKB ? _mm512_maskz_loadu_ps(k1, x + 16) : _mm512_loadu_ps(x + 16)) : _mm512_setzero_ps();
  };
  __m512 acc[KU][M][2];
#pragma GCC unroll 64
  for (int u = 0; u < KU; ++u)
#pragma GCC unroll 64
    for (int i = 0; i < M; ++i) acc[u][i][0] = acc[u][i][1] = _mm512_setzero_ps();

  // Fetch the C tile while the FMAs run (it is read or written only at the end).
#pragma GCC unroll 64
  for (int i = 0; i < M; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
    if (NV == 2) _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + n - 1), _MM_HINT_T0);
  }

  index_t k = 0;
  if (AM == ACol) {
    const float* a = A;
    const float* b = B;
#pragma GCC unroll 2
    for (; k + KU <= K; k += KU) {
#pragma GCC unroll 64
      for (int u = 0; u < KU; ++u) {
        const __m512 b0 = ldb0(b + u * ldb);
        const __m512 b1 = ldb1(b + u * ldb);
#pragma GCC unroll 64
        for (int i = 0; i < M; ++i) {
          const __m512 av = _mm512_set1_ps(a[u * csa + i]);
          acc[u][i][0] = _mm512_fmadd_ps(av, b0, acc[u][i][0]);
          if (NV == 2) acc[u][i][1] = _mm512_fmadd_ps(av, b1, acc[u][i][1]);
        }
      }
      a += KU * csa;
      b += KU * ldb;
    }
  } else {
    // Rows 3q..3q+2 are addressed from base pointer q as [base + r*rsa*4] (scale 4 or 8), so
    // five bases, rsa and the B pointer fit in registers with no spills.
    constexpr int NB = (M + 2) / 3;
    const float* base[NB];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) base[q] = A + 3 * q * rsa;
    const float* b = B;
#pragma GCC unroll 2
    for (; k + KU <= K; k += KU) {
#pragma GCC unroll 64
      for (int u = 0; u < KU; ++u) {
        const __m512 b0 = ldb0(b + u * ldb);
        const __m512 b1 = ldb1(b + u * ldb);
#pragma GCC unroll 64
        for (int i = 0; i < M; ++i) {
          const __m512 av = _mm512_set1_ps(base[i / 3][(i % 3) * rsa + u]);
          acc[u][i][0] = _mm512_fmadd_ps(av, b0, acc[u][i][0]);
          if (NV == 2) acc[u][i][1] = _mm512_fmadd_ps(av, b1, acc[u][i][1]);
        }
      }
      // A's rows were usually just written by another core (the previous layer): fetch
      // them well ahead so the cross-core transfers overlap the FMAs (GEMV: -4 µs at K=5408).
      if (M <= 3 && (k & 15) == 0)
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) _mm_prefetch(reinterpret_cast<const char*>(base[i / 3] + (i % 3) * rsa + kAPrefetch), _MM_HINT_T0);
#pragma GCC unroll 8
      for (int q = 0; q < NB; ++q) base[q] += KU;
      b += KU * ldb;
    }
  }
  for (; k < K; ++k) {  // K tail when KU > 1
    const __m512 b0 = ldb0(B + k * ldb);
    const __m512 b1 = ldb1(B + k * ldb);
#pragma GCC unroll 64
    for (int i = 0; i < M; ++i) {
      const __m512 av = _mm512_set1_ps(a_at<AM>(A, rsa, csa, i, k));
      acc[0][i][0] = _mm512_fmadd_ps(av, b0, acc[0][i][0]);
      if (NV == 2) acc[0][i][1] = _mm512_fmadd_ps(av, b1, acc[0][i][1]);
    }
  }

  const __m512 valpha = _mm512_set1_ps(p.alpha);
  const __m512 vbeta = _mm512_set1_ps(p.beta);
  __m512 bc0 = _mm512_setzero_ps(), bc1 = _mm512_setzero_ps();
  if (p.bias_mode == BiasCol) {
    bc0 = _mm512_maskz_loadu_ps(k0, bias);
    if (NV == 2) bc1 = _mm512_maskz_loadu_ps(k1, bias + 16);
  }
#pragma GCC unroll 64
  for (int i = 0; i < M; ++i) {
    __m512 v0 = acc[0][i][0], v1 = acc[0][i][1];
#pragma GCC unroll 64
    for (int u = 1; u < KU; ++u) {
      v0 = _mm512_add_ps(v0, acc[u][i][0]);
      v1 = _mm512_add_ps(v1, acc[u][i][1]);
    }
    float* c = C + i * ldc;
    v0 = _mm512_mul_ps(v0, valpha);
    v1 = _mm512_mul_ps(v1, valpha);
    if (p.beta == 1.f) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(k0, c));
      if (NV == 2) v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(k1, c + 16));
    } else if (p.beta != 0.f) {
      v0 = _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(k0, c), v0);
      if (NV == 2) v1 = _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(k1, c + 16), v1);
    }
    if (p.bias_mode == BiasCol) {
      v0 = _mm512_add_ps(v0, bc0);
      v1 = _mm512_add_ps(v1, bc1);
    } else if (p.bias_mode == BiasRow) {
      const __m512 br = _mm512_set1_ps(bias[i]);
      v0 = _mm512_add_ps(v0, br);
      v1 = _mm512_add_ps(v1, br);
    }
    if (p.res) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(k0, p.res + i * p.ldr));
      if (NV == 2) v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(k1, p.res + i * p.ldr + 16));
    }
    if (p.relu) {  // zero first: MAXPS returns its second operand on NaN, so NaN stays NaN
      v0 = _mm512_max_ps(_mm512_setzero_ps(), v0);
      v1 = _mm512_max_ps(_mm512_setzero_ps(), v1);
    } else if (p.clip) {  // bound first, as for relu
      v0 = _mm512_min_ps(_mm512_set1_ps(p.hi), _mm512_max_ps(_mm512_set1_ps(p.lo), v0));
      v1 = _mm512_min_ps(_mm512_set1_ps(p.hi), _mm512_max_ps(_mm512_set1_ps(p.lo), v1));
    }
    _mm512_mask_storeu_ps(c, k0, v0);
    if (NV == 2) _mm512_mask_storeu_ps(c + 16, k1, v1);
  }
}

template <int M, int AM, int NV>
void kernel(int m, int n, index_t K, const float* A, index_t rsa, index_t csa, const float* B, index_t ldb,
            float* C, index_t ldc, const TileParams& p, const float* bias) {
  if (p.mask_b)
    kernel_impl<M, AM, NV, true>(m, n, K, A, rsa, csa, B, ldb, C, ldc, p, bias);
  else
    kernel_impl<M, AM, NV, false>(m, n, K, A, rsa, csa, B, ldb, C, ldc, p, bias);
}

template <int AM, int NV, std::size_t... I>
constexpr auto make_table(std::index_sequence<I...>) {
  return std::array<MicroKernel, sizeof...(I)>{{&kernel<int(I) + 1, AM, NV>...}};
}

// Tiles at most 16 columns wide (narrow layers, ragged edges) use a one-vector instantiation
// that skips the second half of the FMAs.
template <int AM>
void dispatch(int m, int n, index_t k, const float* A, index_t rsa, index_t csa, const float* B, index_t ldb,
              float* C, index_t ldc, const TileParams& p, const float* bias) {
  static constexpr auto full = make_table<AM, 2>(std::make_index_sequence<MR>{});
  static constexpr auto half = make_table<AM, 1>(std::make_index_sequence<MR>{});
  (n > 16 ? full : half)[m - 1](m, n, k, A, rsa, csa, B, ldb, C, ldc, p, bias);
}

// m rows of A against nb rows of B, 16 k at a time; the K tail uses masked loads.
template <int M, int NB>
void dot_t(index_t K, const float* A, index_t lda, const float* B, index_t ldb, float* out) {
  __m512 acc[M][NB];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 16
    for (int r = 0; r < NB; ++r) acc[i][r] = _mm512_setzero_ps();
  auto step = [&](index_t k, __mmask16 mask) {
    __m512 a[M], b[NB];
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) a[i] = _mm512_maskz_loadu_ps(mask, A + i * lda + k);
#pragma GCC unroll 16
    for (int r = 0; r < NB; ++r) b[r] = _mm512_maskz_loadu_ps(mask, B + r * ldb + k);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 16
      for (int r = 0; r < NB; ++r) acc[i][r] = _mm512_fmadd_ps(a[i], b[r], acc[i][r]);
  };
  index_t k = 0;
  for (; k + 16 <= K; k += 16) step(k, __mmask16(0xFFFF));
  if (k < K) step(k, __mmask16((1u << (K - k)) - 1));
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 16
    for (int r = 0; r < NB; ++r) out[i * 4 + r] = _mm512_reduce_add_ps(acc[i][r]);
}

template <int M>
void dot_m(int nb, index_t K, const float* A, index_t lda, const float* B, index_t ldb, float* out) {
  switch (nb) {
    case 1: return dot_t<M, 1>(K, A, lda, B, ldb, out);
    case 2: return dot_t<M, 2>(K, A, lda, B, ldb, out);
    case 3: return dot_t<M, 3>(K, A, lda, B, ldb, out);
    default: return dot_t<M, 4>(K, A, lda, B, ldb, out);
  }
}

void dot(int m, int nb, index_t K, const float* A, index_t lda, const float* B, index_t ldb,
         float* out) {
  switch (m) {
    case 1: return dot_m<1>(nb, K, A, lda, B, ldb, out);
    case 2: return dot_m<2>(nb, K, A, lda, B, ldb, out);
    case 3: return dot_m<3>(nb, K, A, lda, B, ldb, out);
    default: return dot_m<4>(nb, K, A, lda, B, ldb, out);
  }
}

}  // namespace

const KernelSet& kernels_avx512() {
  static const KernelSet ks{Isa::Avx512, MR, NR, /*kc=*/256, /*mc=*/14 * 12, /*nc=*/1024,
                            &dispatch<ACol>, &dispatch<ARow>, /*masked_b=*/true, &dot};
  return ks;
}

}  // namespace gemm
}  // namespace engine
