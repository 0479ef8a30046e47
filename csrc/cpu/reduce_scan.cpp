// ArgMax / ArgMin, Hardmax, CumSum and the float64 softmax (see engine/reduce.h): scans
// along the middle dim of an (outer, n, inner) view, by rows when inner == 1, else by
// blocks of columns (vectorised across inner).
#include <cmath>
#include <limits>
#include <type_traits>

#include "cpu/reduce_kernels.h"

namespace engine {
namespace rd {
namespace {

// Index of the first (or last) extreme of a contiguous row: the extreme by the vectorised
// max / min (NaN-propagating, so a NaN makes the first NaN the answer, as numpy), then a
// scan for where it is.
template <class T>
std::int64_t row_arg(const T* x, index_t n, bool is_min, bool last, const Prims<T>& P) {
  const T m = P.row_ext(x, n, is_min);
  const bool nan = is_nan(m);
  auto hit = [&](index_t i) { return nan ? is_nan(x[i]) : x[i] == m; };
  if (last) {
    for (index_t i = n - 1; i > 0; --i)
      if (hit(i)) return i;
    return 0;
  }
  for (index_t i = 0; i < n; ++i)
    if (hit(i)) return i;
  return 0;
}

// idx[j] = arg extreme of x[:, j] for j < cnt (x: n rows of stride inner).
template <class T>
void col_arg(std::int64_t* idx, const T* x, index_t n, index_t inner, index_t cnt, bool is_min, bool last) {
  T best[kChunk];
  for (index_t j = 0; j < cnt; ++j) {
    best[j] = x[j];
    idx[j] = 0;
  }
  for (index_t r = 1; r < n; ++r) {
    const T* xr = x + r * inner;
    for (index_t j = 0; j < cnt; ++j) {
      const T v = xr[j], b = best[j];
      const bool better = is_min ? (last ? v <= b : v < b) : (last ? v >= b : v > b);
      if (better || (is_nan(v) && (last || !is_nan(b)))) {
        best[j] = v;
        idx[j] = r;
      }
    }
  }
}

template <class T>
void softmax_row(T* y, const T* x, index_t n, bool log) {
  T m = -std::numeric_limits<T>::infinity();
  for (index_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  T s = 0;
  for (index_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
  if (log) {
    const T sh = m + std::log(s);
    for (index_t i = 0; i < n; ++i) y[i] = x[i] - sh;
  } else {
    for (index_t i = 0; i < n; ++i) y[i] = std::exp(x[i] - m) / s;
  }
}

template <class T>
void softmax_cols(T* y, const T* x, index_t n, index_t inner, index_t cnt, bool log) {
  T m[kChunk], s[kChunk];
  for (index_t j = 0; j < cnt; ++j) {
    m[j] = -std::numeric_limits<T>::infinity();
    s[j] = 0;
  }
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < cnt; ++j) m[j] = x[r * inner + j] > m[j] ? x[r * inner + j] : m[j];
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < cnt; ++j) s[j] += std::exp(x[r * inner + j] - m[j]);
  for (index_t j = 0; j < cnt; ++j) s[j] = log ? m[j] + std::log(s[j]) : T(1) / s[j];
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < cnt; ++j) {
      const T v = x[r * inner + j];
      y[r * inner + j] = log ? v - s[j] : std::exp(v - m[j]) * s[j];
    }
}

}  // namespace
}  // namespace rd

template <class T>
void arg_reduce(std::int64_t* y, const T* x, index_t outer, index_t n, index_t inner, bool is_min, bool last) {
  ENGINE_CHECK(outer >= 0 && n >= 1 && inner >= 0, "arg_reduce: bad sizes");
  const rd::Prims<T> P = rd::prims<T>();
  rd::for_blocks(
      outer, n, inner, [&](index_t o) { y[o] = rd::row_arg(x + o * n, n, is_min, last, P); },
      [&](index_t o, index_t j0, index_t cnt) {
        rd::col_arg(y + o * inner + j0, x + o * n * inner + j0, n, inner, cnt, is_min, last);
      });
}

template <class T>
void hardmax(T* y, const T* x, index_t outer, index_t n, index_t inner) {
  ENGINE_CHECK(outer >= 0 && n >= 0 && inner >= 0, "hardmax: negative size");
  if (n == 0) return;
  const rd::Prims<T> P = rd::prims<T>();
  rd::for_blocks(
      outer, n, inner,
      [&](index_t o) {
        const std::int64_t at = rd::row_arg(x + o * n, n, false, false, P);  // before y (may be x) is cleared
        T* yr = y + o * n;
        for (index_t i = 0; i < n; ++i) yr[i] = T(0);
        yr[at] = T(1);
      },
      [&](index_t o, index_t j0, index_t cnt) {
        std::int64_t idx[rd::kChunk];
        const index_t base = o * n * inner + j0;
        rd::col_arg(idx, x + base, n, inner, cnt, false, false);
        for (index_t r = 0; r < n; ++r)
          for (index_t j = 0; j < cnt; ++j) y[base + r * inner + j] = T(0);
        for (index_t j = 0; j < cnt; ++j) y[base + idx[j] * inner + j] = T(1);
      });
}

// a + b, wrapping for integers (computed unsigned: no signed overflow).
template <class T>
inline T add(T a, T b) {
  if constexpr (std::is_integral<T>::value) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
  } else {
    return a + b;
  }
}

template <class T>
void cumsum(T* y, const T* x, index_t outer, index_t n, index_t inner, bool exclusive, bool reverse) {
  ENGINE_CHECK(outer >= 0 && n >= 0 && inner >= 0, "cumsum: negative size");
  if (n == 0) return;
  const index_t first = reverse ? n - 1 : 0, step = reverse ? -1 : 1;
  rd::for_blocks(
      outer, n, inner,
      [&](index_t o) {
        const T* xr = x + o * n;
        T* yr = y + o * n;
        T acc = 0;
        for (index_t k = 0, i = first; k < n; ++k, i += step) {
          const T v = xr[i];
          if (exclusive) {
            yr[i] = acc;
            acc = add(acc, v);
          } else {
            acc = add(acc, v);
            yr[i] = acc;
          }
        }
      },
      [&](index_t o, index_t j0, index_t cnt) {
        // Each row from the previous output row (just written, in cache) and one input row.
        const index_t base = o * n * inner + j0;
        T* y0 = y + base + first * inner;
        const T* x0 = x + base + first * inner;
        for (index_t j = 0; j < cnt; ++j) y0[j] = exclusive ? T(0) : x0[j];
        for (index_t k = 1, r = first + step; k < n; ++k, r += step) {
          T* __restrict yr = y + base + r * inner;
          const T* __restrict yp = yr - step * inner;
          const T* __restrict xp = x + base + (exclusive ? r - step : r) * inner;
          for (index_t j = 0; j < cnt; ++j) yr[j] = add(yp[j], xp[j]);
        }
      });
}

void softmax_f64(double* y, const double* x, index_t outer, index_t n, index_t inner, bool log) {
  ENGINE_CHECK(outer >= 0 && n >= 0 && inner >= 0, "softmax: negative size");
  if (n == 0) return;
  rd::for_blocks(
      outer, n, inner, [&](index_t o) { rd::softmax_row(y + o * n, x + o * n, n, log); },
      [&](index_t o, index_t j0, index_t cnt) {
        const index_t base = o * n * inner + j0;
        rd::softmax_cols(y + base, x + base, n, inner, cnt, log);
      });
}

#define RD_ARG(T) \
  template void arg_reduce<T>(std::int64_t*, const T*, index_t, index_t, index_t, bool, bool);
#define RD_CUMSUM(T) template void cumsum<T>(T*, const T*, index_t, index_t, index_t, bool, bool);
RD_ARG(float)
RD_ARG(double)
RD_ARG(std::int8_t)
RD_ARG(std::uint8_t)
RD_ARG(std::int16_t)
RD_ARG(std::uint16_t)
RD_ARG(std::int32_t)
RD_ARG(std::uint32_t)
RD_ARG(std::int64_t)
RD_ARG(std::uint64_t)
RD_CUMSUM(float)
RD_CUMSUM(double)
RD_CUMSUM(std::int8_t)
RD_CUMSUM(std::uint8_t)
RD_CUMSUM(std::int16_t)
RD_CUMSUM(std::uint16_t)
RD_CUMSUM(std::int32_t)
RD_CUMSUM(std::uint32_t)
RD_CUMSUM(std::int64_t)
RD_CUMSUM(std::uint64_t)
template void hardmax<float>(float*, const float*, index_t, index_t, index_t);
template void hardmax<double>(double*, const double*, index_t, index_t, index_t);
#undef RD_ARG
#undef RD_CUMSUM

}  // namespace engine
