// The typed GEMM behind the NCHW / linear ops for element types sgemm does not cover: double
// and the integer types (products wrap around, as numpy's: signed types compute in their
// unsigned twin, so overflow is defined). Blocked so that an MB×NB accumulator tile lives in
// L1 and a KB×NB block of B in L2; the j loop is unit-stride whenever B's rows are, which the
// compiler vectorises. Rows of C split over the pool for big products.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "engine/nchw.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

template <class T>
struct Wrap {
  using U = T;
};
template <>
struct Wrap<std::int32_t> {
  using U = std::uint32_t;
};
template <>
struct Wrap<std::int64_t> {
  using U = std::uint64_t;
};

// double -> T as numpy's astype: truncation toward zero (saturated here instead of undefined).
template <class T>
T from_double(double v) {
  if constexpr (std::is_floating_point<T>::value) {
    return static_cast<T>(v);
  } else {
    if (std::isnan(v)) return T(0);
    const double lo = static_cast<double>(std::numeric_limits<T>::lowest());
    const double hi = static_cast<double>(std::numeric_limits<T>::max());
    if (v <= lo) return std::numeric_limits<T>::lowest();
    if (v >= hi) return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  }
}

constexpr index_t MB = 8, NB = 256, KB = 256;
constexpr double kParallelFlops = 1e6;

}  // namespace

template <class T>
void gemm_strided(index_t M, index_t N, index_t K, double alpha, const T* A, index_t a_row, index_t a_col,
                  const T* B, index_t b_row, index_t b_col, double beta, T* C, index_t ldc) {
  using U = typename Wrap<T>::U;
  ENGINE_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size");
  if (M == 0 || N == 0) return;
  // alpha 1 and beta 0/1 stay in T's own arithmetic (exact for integers).
  const bool exact = alpha == 1.0 && (beta == 0.0 || beta == 1.0);
  const bool dot_form = b_col != 1 && b_row == 1 && a_col == 1;  // op(B) = Bᵀ stored row-major
  const index_t row_blocks = (M + MB - 1) / MB;
  auto run = [&](std::int64_t rb0, std::int64_t rb1) {
    U acc[MB][NB];
    for (index_t rb = rb0; rb < rb1; ++rb) {
      const index_t i0 = rb * MB, mi = std::min(MB, M - i0);
      for (index_t j0 = 0; j0 < N; j0 += NB) {
        const index_t nj = std::min(NB, N - j0);
        if (dot_form) {
          for (index_t i = 0; i < mi; ++i) {
            const T* a = A + (i0 + i) * a_row;
            for (index_t j = 0; j < nj; ++j) {
              const T* b = B + (j0 + j) * b_col;
              U s0 = 0, s1 = 0, s2 = 0, s3 = 0;
              index_t k = 0;
              for (; k + 4 <= K; k += 4) {
                s0 += U(a[k]) * U(b[k]);
                s1 += U(a[k + 1]) * U(b[k + 1]);
                s2 += U(a[k + 2]) * U(b[k + 2]);
                s3 += U(a[k + 3]) * U(b[k + 3]);
              }
              for (; k < K; ++k) s0 += U(a[k]) * U(b[k]);
              acc[i][j] = (s0 + s1) + (s2 + s3);
            }
          }
        } else {
          for (index_t i = 0; i < mi; ++i) std::fill(acc[i], acc[i] + nj, U(0));
          for (index_t k0 = 0; k0 < K; k0 += KB) {
            const index_t k1 = std::min(K, k0 + KB);
            for (index_t i = 0; i < mi; ++i) {
              U* ac = acc[i];
              const T* arow = A + (i0 + i) * a_row;
              for (index_t k = k0; k < k1; ++k) {
                const U a = U(arow[k * a_col]);
                const T* b = B + k * b_row + j0 * b_col;
                if (b_col == 1)
                  for (index_t j = 0; j < nj; ++j) ac[j] += a * U(b[j]);
                else
                  for (index_t j = 0; j < nj; ++j) ac[j] += a * U(b[j * b_col]);
              }
            }
          }
        }
        for (index_t i = 0; i < mi; ++i) {
          T* c = C + (i0 + i) * ldc + j0;
          const U* ac = acc[i];
          if (exact && beta == 0.0)
            for (index_t j = 0; j < nj; ++j) c[j] = T(ac[j]);
          else if (exact)
            for (index_t j = 0; j < nj; ++j) c[j] = T(ac[j] + U(c[j]));
          else
            for (index_t j = 0; j < nj; ++j)
              c[j] = from_double<T>(alpha * double(T(ac[j])) + (beta == 0.0 ? 0.0 : beta * double(c[j])));
        }
      }
    }
  };
  const double flops = 2.0 * double(M) * double(N) * double(K);
  if (flops < kParallelFlops || row_blocks == 1) return run(0, row_blocks);
  parallel_for(row_blocks, 1, run);
}

template void gemm_strided<double>(index_t, index_t, index_t, double, const double*, index_t, index_t,
                                   const double*, index_t, index_t, double, double*, index_t);
template void gemm_strided<std::int32_t>(index_t, index_t, index_t, double, const std::int32_t*, index_t, index_t,
                                         const std::int32_t*, index_t, index_t, double, std::int32_t*, index_t);
template void gemm_strided<std::int64_t>(index_t, index_t, index_t, double, const std::int64_t*, index_t, index_t,
                                         const std::int64_t*, index_t, index_t, double, std::int64_t*, index_t);
template void gemm_strided<std::uint32_t>(index_t, index_t, index_t, double, const std::uint32_t*, index_t,
                                          index_t, const std::uint32_t*, index_t, index_t, double, std::uint32_t*,
                                          index_t);
template void gemm_strided<std::uint64_t>(index_t, index_t, index_t, double, const std::uint64_t*, index_t,
                                          index_t, const std::uint64_t*, index_t, index_t, double, std::uint64_t*,
                                          index_t);

}  // namespace engine
