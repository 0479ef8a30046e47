// AVX2+FMA SGEMM micro-kernel: a 6×16 tile of C in 12 ymm accumulators; two 8-float B
// vectors and 6 A broadcasts per k step. Edge columns via maskload/maskstore, edge rows are
// separate instantiations; few-row tiles split K over several accumulator sets.
#include <immintrin.h>

#include <array>
#include <utility>

#include "cpu/gemm_internal.h"

namespace engine {
namespace gemm {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;

constexpr int ku_for(int m) { return m == 1 ? 4 : (m <= 3 ? 2 : 1); }

template <int AM>
inline __attribute__((always_inline)) float a_at(const float* A, index_t rsa, index_t csa, int i,
                                                 index_t k) {
  return AM == ACol ? A[i + k * csa] : A[i * rsa + k];
}

template <int M, int AM>
void kernel(int m, int n, index_t K, const float* A, index_t rsa, index_t csa, const float* B, index_t ldb,
            float* C, index_t ldc, const TileParams& p, const float* bias) {
  constexpr int KU = ku_for(M);
  __m256 acc[KU][M][2];
#pragma GCC unroll 64
  for (int u = 0; u < KU; ++u)
#pragma GCC unroll 64
    for (int i = 0; i < M; ++i) acc[u][i][0] = acc[u][i][1] = _mm256_setzero_ps();

  index_t k = 0;
#pragma GCC unroll 2
  for (; k + KU <= K; k += KU) {
    const float* b = B + k * ldb;
#pragma GCC unroll 64
    for (int u = 0; u < KU; ++u) {
      const __m256 b0 = _mm256_loadu_ps(b + u * ldb);
      const __m256 b1 = _mm256_loadu_ps(b + u * ldb + 8);
#pragma GCC unroll 64
      for (int i = 0; i < M; ++i) {
        const __m256 av = _mm256_broadcast_ss(&A[AM == ACol ? i + (k + u) * csa : i * rsa + k + u]);
        acc[u][i][0] = _mm256_fmadd_ps(av, b0, acc[u][i][0]);
        acc[u][i][1] = _mm256_fmadd_ps(av, b1, acc[u][i][1]);
      }
    }
  }
  for (; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(B + k * ldb);
    const __m256 b1 = _mm256_loadu_ps(B + k * ldb + 8);
#pragma GCC unroll 64
    for (int i = 0; i < M; ++i) {
      const __m256 av = _mm256_set1_ps(a_at<AM>(A, rsa, csa, i, k));
      acc[0][i][0] = _mm256_fmadd_ps(av, b0, acc[0][i][0]);
      acc[0][i][1] = _mm256_fmadd_ps(av, b1, acc[0][i][1]);
    }
  }

  const bool full = n >= NR;
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8), iota);
  auto ld = [&](const float* c, int h) {
    return full ? _mm256_loadu_ps(c) : _mm256_maskload_ps(c, h ? m1 : m0);
  };
  auto st = [&](float* c, int h, __m256 v) {
    if (full) _mm256_storeu_ps(c, v);
    else _mm256_maskstore_ps(c, h ? m1 : m0, v);
  };
  const __m256 valpha = _mm256_set1_ps(p.alpha);
  const __m256 vbeta = _mm256_set1_ps(p.beta);
  __m256 bc0 = _mm256_setzero_ps(), bc1 = _mm256_setzero_ps();
  if (p.bias_mode == BiasCol) {
    bc0 = ld(bias, 0);
    bc1 = ld(bias + 8, 1);
  }
#pragma GCC unroll 64
  for (int i = 0; i < M; ++i) {
    __m256 v0 = acc[0][i][0], v1 = acc[0][i][1];
#pragma GCC unroll 64
    for (int u = 1; u < KU; ++u) {
      v0 = _mm256_add_ps(v0, acc[u][i][0]);
      v1 = _mm256_add_ps(v1, acc[u][i][1]);
    }
    float* c = C + i * ldc;
    v0 = _mm256_mul_ps(v0, valpha);
    v1 = _mm256_mul_ps(v1, valpha);
    if (p.beta == 1.f) {
      v0 = _mm256_add_ps(v0, ld(c, 0));
      v1 = _mm256_add_ps(v1, ld(c + 8, 1));
    } else if (p.beta != 0.f) {
      v0 = _mm256_fmadd_ps(vbeta, ld(c, 0), v0);
      v1 = _mm256_fmadd_ps(vbeta, ld(c + 8, 1), v1);
    }
    if (p.bias_mode == BiasCol) {
      v0 = _mm256_add_ps(v0, bc0);
      v1 = _mm256_add_ps(v1, bc1);
    } else if (p.bias_mode == BiasRow) {
      const __m256 br = _mm256_set1_ps(bias[i]);
      v0 = _mm256_add_ps(v0, br);
      v1 = _mm256_add_ps(v1, br);
    }
    if (p.res) {
      v0 = _mm256_add_ps(v0, ld(p.res + i * p.ldr, 0));
      v1 = _mm256_add_ps(v1, ld(p.res + i * p.ldr + 8, 1));
    }
    if (p.relu) {  // zero first: MAXPS returns its second operand on NaN, so NaN stays NaN
      v0 = _mm256_max_ps(_mm256_setzero_ps(), v0);
      v1 = _mm256_max_ps(_mm256_setzero_ps(), v1);
    } else if (p.clip) {  // bound first, as for relu
      v0 = _mm256_min_ps(_mm256_set1_ps(p.hi), _mm256_max_ps(_mm256_set1_ps(p.lo), v0));
      v1 = _mm256_min_ps(_mm256_set1_ps(p.hi), _mm256_max_ps(_mm256_set1_ps(p.lo), v1));
    }
    st(c, 0, v0);
    st(c + 8, 1, v1);
  }
}

template <int AM, std::size_t... I>
constexpr auto make_table(std::index_sequence<I...>) {
  return std::array<MicroKernel, sizeof...(I)>{{&kernel<int(I) + 1, AM>...}};
}

template <int AM>
void dispatch(int m, int n, index_t k, const float* A, index_t rsa, index_t csa, const float* B, index_t ldb,
              float* C, index_t ldc, const TileParams& p, const float* bias) {
  static constexpr auto table = make_table<AM>(std::make_index_sequence<MR>{});
  table[m - 1](m, n, k, A, rsa, csa, B, ldb, C, ldc, p, bias);
}

}  // namespace

const KernelSet& kernels_avx2() {
  static const KernelSet ks{Isa::Avx2, MR, NR, /*kc=*/256, /*mc=*/6 * 24, /*nc=*/1024,
                            &dispatch<ACol>, &dispatch<ARow>};
  return ks;
}

}  // namespace gemm
}  // namespace engine
