// Reduce* (see engine/reduce.h): the per-ISA primitive tables and the driver that maps each
// ONNX reduction onto them (sum-like accumulation + a final transform, max / min, or the
// two passes of log-sum-exp), splitting the work over the pool.
#include <cmath>
#include <limits>
#include <type_traits>

#include "cpu/reduce_kernels.h"
#include "engine/cpu_features.h"

namespace engine {
namespace rd {

namespace portable {
#define RD_COL_BYTES 128  // 8 SSE registers
#include "cpu/reduce_impl.h"
#undef RD_COL_BYTES
}  // namespace portable

template <class T>
Prims<T> prims() {
  if constexpr (std::is_same<T, float>::value) {
    static const Prims<float> table[3] = {portable::prims_of<float>(), avx2::prims_f32(), avx512::prims_f32()};
    return table[static_cast<int>(cpu_isa())];
  } else if constexpr (std::is_same<T, double>::value) {
    static const Prims<double> table[3] = {portable::prims_of<double>(), avx2::prims_f64(), avx512::prims_f64()};
    return table[static_cast<int>(cpu_isa())];
  } else {
    return portable::prims_of<T>();  // integers vectorise well enough at the baseline ISA
  }
}

namespace {

// A float result stored into an integer type: NaN -> 0, out of range -> the nearest limit.
template <class T>
T saturate(double v) {
  if constexpr (std::is_floating_point<T>::value) {
    return static_cast<T>(v);
  } else {
    if (v != v) return T(0);
    if (v <= static_cast<double>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
    if (v >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  }
}

AccOp acc_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::L1: return AccOp::Abs;
    case ReduceOp::L2: case ReduceOp::SumSquare: return AccOp::SumSq;
    case ReduceOp::Prod: return AccOp::Prod;
    default: return AccOp::Sum;  // Sum, Mean, LogSum
  }
}

// The output value from a sum-like accumulator over n elements.
template <class T>
T finish(Wide<T> a, index_t n, ReduceOp op) {
  using A = Wide<T>;
  if constexpr (std::is_floating_point<T>::value) {
    switch (op) {
      case ReduceOp::Mean: return a / static_cast<A>(n);  // empty: 0/0 = NaN, as numpy
      case ReduceOp::L2: return std::sqrt(a);
      case ReduceOp::LogSum: return std::log(a);
      default: return a;
    }
  } else {
    switch (op) {
      case ReduceOp::Mean: return n == 0 ? T(0) : static_cast<T>(a / static_cast<A>(n));  // truncates, as numpy's cast
      case ReduceOp::L2: return saturate<T>(std::sqrt(static_cast<double>(a)));
      case ReduceOp::LogSum: return saturate<T>(std::log(static_cast<double>(a)));
      default: return static_cast<T>(a);  // wraps like an element-type sum
    }
  }
}

template <class T>
T merge_ext(T a, T b, bool is_min) {
  const bool take = is_min ? b < a : b > a;
  return (take || is_nan(b)) ? b : a;
}

template <class T>
void reduce_ext(T* y, const T* x, index_t outer, index_t n, index_t inner, bool is_min, const Prims<T>& P) {
  if (split_rows(outer, n, inner)) {
    for (index_t o = 0; o < outer; ++o)
      y[o] = split_row<T>(
          n, [&](index_t b, index_t len) { return P.row_ext(x + o * n + b, len, is_min); },
          [&](T a, T b) { return merge_ext(a, b, is_min); });
    return;
  }
  for_blocks(
      outer, n, inner, [&](index_t o) { y[o] = P.row_ext(x + o * n, n, is_min); },
      [&](index_t o, index_t j0, index_t cnt) {
        P.col_ext(y + o * inner + j0, x + o * n * inner + j0, n, inner, cnt, is_min);
      });
}

template <class T>
void reduce_acc(T* y, const T* x, index_t outer, index_t n, index_t inner, ReduceOp op, const Prims<T>& P) {
  using A = Wide<T>;
  const AccOp a = acc_op(op);
  if (split_rows(outer, n, inner)) {
    for (index_t o = 0; o < outer; ++o) {
      const A acc = split_row<A>(
          n, [&](index_t b, index_t len) { return P.row_acc(x + o * n + b, len, a); },
          [&](A p, A q) { return a == AccOp::Prod ? p * q : p + q; });
      y[o] = finish<T>(acc, n, op);
    }
    return;
  }
  for_blocks(
      outer, n, inner, [&](index_t o) { y[o] = finish<T>(P.row_acc(x + o * n, n, a), n, op); },
      [&](index_t o, index_t j0, index_t cnt) {
        A acc[kChunk];
        P.col_acc(acc, x + o * n * inner + j0, n, inner, cnt, a);
        for (index_t j = 0; j < cnt; ++j) y[o * inner + j0 + j] = finish<T>(acc[j], n, op);
      });
}

// log(sum(exp(x))) = m + log(sum(exp(x - m))) with m the max; an infinite or NaN max is the
// answer itself (all -inf or empty: -inf).
template <class T>
void reduce_lse(T* y, const T* x, index_t outer, index_t n, index_t inner, const Prims<T>& P) {
  using R = std::conditional_t<std::is_same<T, float>::value, float, double>;
  auto done = [](T m, R s) -> T {
    if constexpr (std::is_floating_point<T>::value) {
      return std::isfinite(m) ? static_cast<T>(m + std::log(s)) : m;
    } else {
      return saturate<T>(static_cast<double>(m) + std::log(static_cast<double>(s)));
    }
  };
  auto exp_sum = [](const T* xr, index_t len, T m) {
    R s = 0;
    for (index_t i = 0; i < len; ++i) s += std::exp(static_cast<R>(xr[i]) - static_cast<R>(m));
    return s;
  };
  if (split_rows(outer, n, inner)) {
    for (index_t o = 0; o < outer; ++o) {
      const T* xr = x + o * n;
      const T m = split_row<T>(
          n, [&](index_t b, index_t len) { return P.row_ext(xr + b, len, false); },
          [](T a, T b) { return merge_ext(a, b, false); });
      const R s = split_row<R>(
          n, [&](index_t b, index_t len) { return exp_sum(xr + b, len, m); }, [](R a, R b) { return a + b; });
      y[o] = done(m, s);
    }
    return;
  }
  for_blocks(
      outer, n, inner,
      [&](index_t o) {
        const T* xr = x + o * n;
        const T m = P.row_ext(xr, n, false);
        y[o] = done(m, exp_sum(xr, n, m));
      },
      [&](index_t o, index_t j0, index_t cnt) {
        T m[kChunk];
        R s[kChunk] = {};
        const T* xo = x + o * n * inner + j0;
        P.col_ext(m, xo, n, inner, cnt, false);
        for (index_t r = 0; r < n; ++r)
          for (index_t j = 0; j < cnt; ++j) s[j] += std::exp(static_cast<R>(xo[r * inner + j]) - static_cast<R>(m[j]));
        for (index_t j = 0; j < cnt; ++j) y[o * inner + j0 + j] = done(m[j], s[j]);
      });
}

}  // namespace

}  // namespace rd

template <class T>
void reduce(T* y, const T* x, index_t outer, index_t n, index_t inner, ReduceOp op) {
  ENGINE_CHECK(outer >= 0 && n >= 0 && inner >= 0, "reduce: negative size");
  if (outer == 0 || inner == 0) return;
  const rd::Prims<T> P = rd::prims<T>();
  if (op == ReduceOp::Max || op == ReduceOp::Min) return rd::reduce_ext(y, x, outer, n, inner, op == ReduceOp::Min, P);
  if constexpr (std::is_same<T, bool>::value) {
    throw Error("reduce: bool tensors support only max and min");
  } else {
    if (op == ReduceOp::LogSumExp) return rd::reduce_lse(y, x, outer, n, inner, P);
    rd::reduce_acc(y, x, outer, n, inner, op, P);
  }
}

#define RD_INSTANTIATE(T)                                   \
  template rd::Prims<T> rd::prims<T>();                     \
  template void reduce<T>(T*, const T*, index_t, index_t, index_t, ReduceOp);
RD_INSTANTIATE(float)
RD_INSTANTIATE(double)
RD_INSTANTIATE(std::int8_t)
RD_INSTANTIATE(std::uint8_t)
RD_INSTANTIATE(std::int16_t)
RD_INSTANTIATE(std::uint16_t)
RD_INSTANTIATE(std::int32_t)
RD_INSTANTIATE(std::uint32_t)
RD_INSTANTIATE(std::int64_t)
RD_INSTANTIATE(std::uint64_t)
RD_INSTANTIATE(bool)
#undef RD_INSTANTIATE

}  // namespace engine
