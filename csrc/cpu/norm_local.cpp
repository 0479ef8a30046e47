// LRN and Lp normalisation (engine/norm.h): both normalise by a statistic along the middle
// dim of (outer, n, inner), computed for a block of up to kChunk inner columns at a time so
// the loops vectorise across columns (Lp over contiguous rows when inner == 1).
#include <algorithm>
#include <cmath>

#include "engine/norm.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr index_t kChunk = 256;
constexpr index_t kGrainElems = 1 << 14;

// Calls fn(o, j0, cnt) for every block of columns; on the pool when big.
template <class Fn>
void for_column_blocks(index_t outer, index_t n, index_t inner, Fn&& fn) {
  const index_t nblk = (inner + kChunk - 1) / kChunk;
  auto task = [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) fn(t / nblk, (t % nblk) * kChunk, std::min(kChunk, inner - (t % nblk) * kChunk));
  };
  const index_t per_task = std::max<index_t>(1, n) * std::min(kChunk, inner);
  if (outer * nblk * per_task <= kGrainElems) return task(0, outer * nblk);
  parallel_for(outer * nblk, std::max<index_t>(1, kGrainElems / per_task), task);
}

}  // namespace

template <class T>
void lrn(T* y, const T* x, index_t N, index_t C, index_t S, index_t size, double alpha, double beta, double bias) {
  ENGINE_CHECK(N >= 0 && C >= 0 && S >= 0 && size >= 1, "lrn: bad sizes");
  const index_t before = (size - 1) / 2, after = size / 2;  // floor / ceil of (size - 1) / 2
  const T k = static_cast<T>(alpha / static_cast<double>(size)), b = static_cast<T>(bias), p = static_cast<T>(-beta);
  for_column_blocks(N, C, S, [&](index_t n, index_t j0, index_t cnt) {
    const T* xn = x + n * C * S + j0;
    T* yn = y + n * C * S + j0;
    T sq[kChunk];
    for (index_t c = 0; c < C; ++c) {
      for (index_t j = 0; j < cnt; ++j) sq[j] = 0;
      const index_t lo = std::max<index_t>(0, c - before), hi = std::min<index_t>(C - 1, c + after);
      for (index_t i = lo; i <= hi; ++i)
        for (index_t j = 0; j < cnt; ++j) sq[j] += xn[i * S + j] * xn[i * S + j];
      for (index_t j = 0; j < cnt; ++j) yn[c * S + j] = xn[c * S + j] * std::pow(b + k * sq[j], p);
    }
  });
}

// ||x||_p of a contiguous row, summed in independent lanes (vectorised without reordering).
template <class T>
T row_norm(const T* __restrict x, index_t n, int p) {
  constexpr int L = 16;
  T a[L] = {};
  index_t i = 0;
  if (p == 1) {
    for (; i + L <= n; i += L)
      for (int k = 0; k < L; ++k) a[k] += std::fabs(x[i + k]);
    for (int k = 0; i < n; ++i, ++k) a[k] += std::fabs(x[i]);
  } else {
    for (; i + L <= n; i += L)
      for (int k = 0; k < L; ++k) a[k] += x[i + k] * x[i + k];
    for (int k = 0; i < n; ++i, ++k) a[k] += x[i] * x[i];
  }
  for (int h = L / 2; h >= 1; h /= 2)
    for (int k = 0; k < h; ++k) a[k] += a[k + h];
  return p == 1 ? a[0] : std::sqrt(a[0]);
}

template <class T>
void lp_normalize(T* y, const T* x, index_t outer, index_t n, index_t inner, int p) {
  ENGINE_CHECK(outer >= 0 && n >= 0 && inner >= 0 && (p == 1 || p == 2), "lp_normalize: bad parameters");
  if (inner == 1) {
    auto rows = [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const T* __restrict xr = x + r * n;
        T* __restrict yr = y + r * n;
        const T norm = row_norm(xr, n, p);
        if (norm == T(0)) {
          for (index_t i = 0; i < n; ++i) yr[i] = T(0);
        } else {
          for (index_t i = 0; i < n; ++i) yr[i] = xr[i] / norm;
        }
      }
    };
    const index_t len = std::max<index_t>(n, 1);
    if (outer * len <= kGrainElems) return rows(0, outer);
    return parallel_for(outer, std::max<index_t>(1, kGrainElems / len), rows);
  }
  for_column_blocks(outer, n, inner, [&](index_t o, index_t j0, index_t cnt) {
    const T* xo = x + o * n * inner + j0;
    T* yo = y + o * n * inner + j0;
    T norm[kChunk] = {};
    for (index_t r = 0; r < n; ++r)
      for (index_t j = 0; j < cnt; ++j) {
        const T v = xo[r * inner + j];
        norm[j] += p == 1 ? std::fabs(v) : v * v;
      }
    for (index_t j = 0; j < cnt; ++j) norm[j] = p == 1 ? norm[j] : std::sqrt(norm[j]);
    for (index_t r = 0; r < n; ++r)
      for (index_t j = 0; j < cnt; ++j) yo[r * inner + j] = norm[j] == T(0) ? T(0) : xo[r * inner + j] / norm[j];
  });
}

template void lrn<float>(float*, const float*, index_t, index_t, index_t, index_t, double, double, double);
template void lrn<double>(double*, const double*, index_t, index_t, index_t, index_t, double, double, double);
template void lp_normalize<float>(float*, const float*, index_t, index_t, index_t, int);
template void lp_normalize<double>(double*, const double*, index_t, index_t, index_t, int);

}  // namespace engine
