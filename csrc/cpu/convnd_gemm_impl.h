// The typed GEMM's kernel (see convnd_gemm.cpp), compiled once per ISA:
// convnd_gemm_{avx512,avx2,portable}.cpp define GEMM_VB (vector bytes), the register tile
// GEMM_MR × GEMM_NV and GEMM_NS, then include this file after the standard headers and
// "engine/nchw.h". Helpers sit in an anonymous namespace so no ISA-specific inline code is
// shared between translation units.
//
// C is computed in tiles of MR rows × NV vectors held in registers (GCC vector extensions)
// over the whole K: each step broadcasts MR elements of A and multiplies them into NV vectors
// of one row of B. B is read in place when its rows are contiguous and the tile is whole,
// otherwise the tile's K × NB panel is packed first (transposed B, the ragged last columns,
// zero-padded). Column panels outside, row tiles inside, so a panel is reused from cache.

#include "engine/scratch.h"

namespace engine {
namespace GEMM_NS {
namespace {

template <class U>
struct Vec {
  static constexpr index_t n = GEMM_VB / sizeof(U);
  typedef U type __attribute__((vector_size(GEMM_VB)));
};

constexpr index_t MR = GEMM_MR, NV = GEMM_NV;  // register tile: MR rows × NV vectors

// Products wrap around for integers (numpy's rule): signed types compute in their unsigned twin.
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
    if (v != v) return T(0);
    const double lo = static_cast<double>(std::numeric_limits<T>::lowest());
    const double hi = static_cast<double>(std::numeric_limits<T>::max());
    if (v <= lo) return std::numeric_limits<T>::lowest();
    if (v >= hi) return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  }
}

template <class U>
inline typename Vec<U>::type load(const void* p) {
  typename Vec<U>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// out (rows × NB, row-major) = A[i0 : i0+rows, :] · P (K × NB, row stride ldp).
template <int R, class T, class U>
inline void tile(U* out, const T* A, index_t a_row, index_t a_col, index_t i0, const T* P, index_t ldp, index_t K) {
  using V = typename Vec<U>::type;
  constexpr index_t n = Vec<U>::n;
  V acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (index_t v = 0; v < NV; ++v) acc[i][v] = V{};
  for (index_t k = 0; k < K; ++k) {
    V b[NV];
    for (index_t v = 0; v < NV; ++v) b[v] = load<U>(P + k * ldp + v * n);
    for (int i = 0; i < R; ++i) {
      const U a = static_cast<U>(A[(i0 + i) * a_row + k * a_col]);
      for (index_t v = 0; v < NV; ++v) acc[i][v] += a * b[v];
    }
  }
  for (int i = 0; i < R; ++i)
    for (index_t v = 0; v < NV; ++v) std::memcpy(out + i * NV * n + v * n, &acc[i][v], sizeof(V));
}

}  // namespace

// Rows [m0, m1) of C = alpha·op(A)·op(B) + beta·C (see gemm_strided in engine/nchw.h).
template <class T>
void rows(index_t m0, index_t m1, index_t N, index_t K, double alpha, const T* A, index_t a_row, index_t a_col,
          const T* B, index_t b_row, index_t b_col, double beta, T* C, index_t ldc) {
  using U = typename Wrap<T>::U;
  constexpr index_t NB = NV * Vec<U>::n;
  // alpha 1 and beta 0/1 stay in T's own arithmetic (exact for integers)
  const bool exact = alpha == 1.0 && (beta == 0.0 || beta == 1.0);
  U out[MR * NB];
  auto store = [&](index_t i, index_t j0, const U* v, index_t count) {
    T* c = C + i * ldc + j0;
    if (exact && beta == 0.0)
      for (index_t j = 0; j < count; ++j) c[j] = static_cast<T>(v[j]);
    else if (exact)
      for (index_t j = 0; j < count; ++j) c[j] = static_cast<T>(v[j] + static_cast<U>(c[j]));
    else
      for (index_t j = 0; j < count; ++j)
        c[j] = from_double<T>(alpha * double(static_cast<T>(v[j])) + (beta == 0.0 ? 0.0 : beta * double(c[j])));
  };
  for (index_t j0 = 0; j0 < N; j0 += NB) {
    const index_t nj = N - j0 < NB ? N - j0 : NB;
    const T* P = B + j0;
    index_t ldp = b_row;
    if (b_col != 1 || nj < NB) {  // pack the panel: K × NB, zero-padded
      T* buf = thread_scratch<T, kScratchConvNdPanel>(static_cast<size_t>(K * NB));
      for (index_t k = 0; k < K; ++k) {
        T* d = buf + k * NB;
        for (index_t j = 0; j < nj; ++j) d[j] = B[k * b_row + (j0 + j) * b_col];
        for (index_t j = nj; j < NB; ++j) d[j] = T(0);
      }
      P = buf, ldp = NB;
    }
    index_t i = m0;
    for (; i + MR <= m1; i += MR) {
      tile<MR>(out, A, a_row, a_col, i, P, ldp, K);
      for (index_t r = 0; r < MR; ++r) store(i + r, j0, out + r * NB, nj);
    }
    for (; i < m1; ++i) {
      tile<1>(out, A, a_row, a_col, i, P, ldp, K);
      store(i, j0, out, nj);
    }
  }
}

#define GEMM_ROWS(T)                                                                                     \
  template void rows<T>(index_t, index_t, index_t, index_t, double, const T*, index_t, index_t, const T*, \
                        index_t, index_t, double, T*, index_t);
GEMM_ROWS(double)
GEMM_ROWS(std::int32_t)
GEMM_ROWS(std::int64_t)
GEMM_ROWS(std::uint32_t)
GEMM_ROWS(std::uint64_t)

}  // namespace GEMM_NS
}  // namespace engine
