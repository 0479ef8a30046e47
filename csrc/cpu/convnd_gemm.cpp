// The typed GEMM behind the NCHW / linear ops for element types sgemm does not cover: double
// and the integer types (products wrap around, as numpy's). The kernel (register tiles over
// the whole K, convnd_gemm_impl.h) is compiled per ISA and chosen here; row blocks of C
// split over the pool for big products.
#include <algorithm>
#include <cstdint>

#include "engine/cpu_features.h"
#include "engine/nchw.h"
#include "engine/threadpool.h"

namespace engine {

#define GEMM_DECLARE(NS)                                                                                  \
  namespace NS {                                                                                          \
  template <class T>                                                                                      \
  void rows(index_t m0, index_t m1, index_t N, index_t K, double alpha, const T* A, index_t a_row,        \
            index_t a_col, const T* B, index_t b_row, index_t b_col, double beta, T* C, index_t ldc);     \
  }
GEMM_DECLARE(gemm_typed_avx512)
GEMM_DECLARE(gemm_typed_avx2)
GEMM_DECLARE(gemm_typed_portable)

namespace {
constexpr double kParallelFlops = 1e6;
constexpr index_t kRowBlock = 16;
}  // namespace

template <class T>
void gemm_strided(index_t M, index_t N, index_t K, double alpha, const T* A, index_t a_row, index_t a_col,
                  const T* B, index_t b_row, index_t b_col, double beta, T* C, index_t ldc) {
  ENGINE_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size");
  if (M == 0 || N == 0) return;
  const Isa isa = cpu_isa();
  auto fn = isa == Isa::Avx512 ? gemm_typed_avx512::rows<T>
            : isa == Isa::Avx2 ? gemm_typed_avx2::rows<T>
                               : gemm_typed_portable::rows<T>;
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const index_t blocks = (M + kRowBlock - 1) / kRowBlock;
  if (flops < kParallelFlops || blocks == 1)
    return fn(0, M, N, K, alpha, A, a_row, a_col, B, b_row, b_col, beta, C, ldc);
  parallel_for(blocks, 1, [&](std::int64_t b0, std::int64_t b1) {
    fn(b0 * kRowBlock, std::min(M, b1 * kRowBlock), N, K, alpha, A, a_row, a_col, B, b_row, b_col, beta, C, ldc);
  });
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
