// Internal to the reduction kernels: the per-ISA primitives (reduce_impl.h, compiled by
// reduce.cpp for the portable path and by reduce_{avx2,avx512}.cpp for float32 / float64),
// the types they share with the drivers, and the drivers' work splitting.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "engine/reduce.h"
#include "engine/threadpool.h"

namespace engine {
namespace rd {

// What a sum-like reduction accumulates per element (max / min have their own primitive).
enum class AccOp : int { Sum = 0, SumSq, Abs, Prod };

// Sums of integers accumulate in 64 bits (the result wraps to the element type exactly as
// an element-type sum would; the mean of int8 values needs the true sum).
template <class T, class = void>
struct WideOf {
  using type = T;
};
template <class T>
struct WideOf<T, std::enable_if_t<std::is_integral<T>::value && !std::is_same<T, bool>::value>> {
  using type = std::conditional_t<std::is_signed<T>::value, std::int64_t, std::uint64_t>;
};
template <class T>
using Wide = typename WideOf<T>::type;

template <class A>
inline bool is_nan(A v) {
  if constexpr (std::is_floating_point<A>::value) {
    return v != v;
  } else {
    (void)v;
    return false;
  }
}

// The primitives, each over one contiguous row of n (row_*) or over `cnt` neighbouring
// columns of an (n, inner) block (col_*: acc[j] over x[r * inner + j], r < n, j < cnt).
// Max / min propagate NaN. bool has only the max / min ones.
template <class T>
struct Prims {
  Wide<T> (*row_acc)(const T* x, index_t n, AccOp op);
  T (*row_ext)(const T* x, index_t n, bool is_min);
  void (*col_acc)(Wide<T>* acc, const T* x, index_t n, index_t inner, index_t cnt, AccOp op);
  void (*col_ext)(T* acc, const T* x, index_t n, index_t inner, index_t cnt, bool is_min);
};

// The primitives for the ISA in use (cpu_isa()); instantiated in reduce.cpp for every type.
template <class T>
Prims<T> prims();

#define RD_DECLARE_ISA(ns)   \
  namespace ns {             \
  Prims<float> prims_f32();  \
  Prims<double> prims_f64(); \
  }
RD_DECLARE_ISA(avx2)
RD_DECLARE_ISA(avx512)
#undef RD_DECLARE_ISA

// Work splitting shared by the drivers. Reductions are memory-bound: a task is at least
// kGrain elements. Column blocks keep kChunk accumulators on the stack.
constexpr index_t kGrain = 1 << 15;
constexpr index_t kChunk = 256;

// Calls row(o) for every row o (inner == 1), or cols(o, j0, cnt) for every block of up to
// kChunk columns of every outer slab; on the pool when there is enough work.
template <class Row, class Cols>
void for_blocks(index_t outer, index_t n, index_t inner, Row&& row, Cols&& cols) {
  const index_t len = std::max<index_t>(n, 1);
  const index_t work = outer * len * inner;
  if (inner == 1) {
    auto task = [&](index_t o0, index_t o1) {
      for (index_t o = o0; o < o1; ++o) row(o);
    };
    if (work <= kGrain) return task(0, outer);
    return parallel_for(outer, std::max<index_t>(1, kGrain / len), task);
  }
  const index_t nblk = (inner + kChunk - 1) / kChunk;
  auto task = [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t o = t / nblk, j0 = (t % nblk) * kChunk;
      cols(o, j0, std::min(kChunk, inner - j0));
    }
  };
  if (work <= kGrain) return task(0, outer * nblk);
  parallel_for(outer * nblk, std::max<index_t>(1, kGrain / (len * kChunk)), task);
}

// One long row reduced in up to 64 pieces on the pool, merged in a fixed order (the result
// depends on n only, not on the thread count): part(begin, len) -> A, merge(A, A) -> A.
template <class A, class Part, class Merge>
A split_row(index_t n, Part&& part, Merge&& merge) {
  constexpr index_t kMaxParts = 64;
  const index_t parts = std::max<index_t>(1, std::min<index_t>(kMaxParts, n / kGrain));
  A acc[kMaxParts];
  parallel_for(parts, 1, [&](index_t p0, index_t p1) {
    for (index_t p = p0; p < p1; ++p) {
      const index_t b = n * p / parts, e = n * (p + 1) / parts;
      acc[p] = part(b, e - b);
    }
  });
  A r = acc[0];
  for (index_t p = 1; p < parts; ++p) r = merge(r, acc[p]);
  return r;
}

// Rows long enough, and few enough, that splitting each one beats one task per row.
inline bool split_rows(index_t outer, index_t n, index_t inner) {
  return inner == 1 && n >= 4 * kGrain && outer < num_threads();
}

}  // namespace rd
}  // namespace engine
