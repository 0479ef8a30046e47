// Reduction primitives (see reduce_kernels.h), written once as plain loops the compiler
// vectorises and compiled per ISA: reduce.cpp includes this inside engine::rd::portable
// (every element type), reduce_{avx2,avx512}.cpp inside their own namespace (float32 and
// float64). Include after <cmath>, <limits> and "cpu/reduce_kernels.h"; no includes here
// because this file lands inside a namespace.
//
// A row is reduced into L independent lanes (lane k takes elements k, k + L, ...), merged
// pairwise at the end: the compiler keeps the lanes in vector registers without having to
// reorder float additions itself, and the result does not depend on the ISA's width.

// Bytes of lanes per row reduction: two AVX-512 registers (independent dependency chains).
constexpr int kLaneBytes = 128;
#ifndef RD_COL_BYTES
#error "define RD_COL_BYTES (column accumulators in registers, bytes) before including reduce_impl.h"
#endif
constexpr int kColBytes = RD_COL_BYTES;

template <class A>
static inline A abs_of(A v) {
  if constexpr (std::is_unsigned<A>::value) {
    return v;
  } else if constexpr (std::is_floating_point<A>::value) {
    return std::fabs(v);
  } else {
    return v < A(0) ? -v : v;
  }
}

struct SumF {
  template <class A> static A step(A a, A v) { return a + v; }
  template <class A> static A merge(A a, A b) { return a + b; }
};
struct SumSqF {
  template <class A> static A step(A a, A v) { return a + v * v; }
  template <class A> static A merge(A a, A b) { return a + b; }
};
struct AbsF {
  template <class A> static A step(A a, A v) { return a + abs_of(v); }
  template <class A> static A merge(A a, A b) { return a + b; }
};
struct ProdF {
  template <class A> static A step(A a, A v) { return a * v; }
  template <class A> static A merge(A a, A b) { return a * b; }
};
// A NaN taken once stays: NaN compares false both ways, and a new NaN replaces it.
struct MaxF {
  template <class A> static A step(A a, A v) { return (v > a || is_nan(v)) ? v : a; }
  template <class A> static A merge(A a, A b) { return step(a, b); }
};
struct MinF {
  template <class A> static A step(A a, A v) { return (v < a || is_nan(v)) ? v : a; }
  template <class A> static A merge(A a, A b) { return step(a, b); }
};

template <class F, class T, class A>
static A lanes(const T* __restrict x, index_t n, A init) {
  constexpr int L = kLaneBytes / sizeof(A) < 8 ? 8 : kLaneBytes / sizeof(A);
  A a[L];
  for (int k = 0; k < L; ++k) a[k] = init;
  index_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) a[k] = F::step(a[k], static_cast<A>(x[i + k]));
  for (int k = 0; i < n; ++i, ++k) a[k] = F::step(a[k], static_cast<A>(x[i]));
  for (int h = L / 2; h >= 1; h /= 2)
    for (int k = 0; k < h; ++k) a[k] = F::merge(a[k], a[k + h]);
  return a[0];
}

// Columns in blocks of B accumulators that stay in registers for the whole run of n rows
// (kColBytes: set per ISA by the including file), then the remainder through memory.
template <class F, class T, class A>
static void columns(A* __restrict acc, const T* __restrict x, index_t n, index_t inner, index_t cnt, A init) {
  constexpr int B = kColBytes / sizeof(A);
  index_t j = 0;
  for (; j + B <= cnt; j += B) {
    A a[B];
    for (int k = 0; k < B; ++k) a[k] = init;
    for (index_t r = 0; r < n; ++r) {
      const T* __restrict xr = x + r * inner + j;
      for (int k = 0; k < B; ++k) a[k] = F::step(a[k], static_cast<A>(xr[k]));
    }
    for (int k = 0; k < B; ++k) acc[j + k] = a[k];
  }
  if (j == cnt) return;
  for (index_t i = j; i < cnt; ++i) acc[i] = init;
  for (index_t r = 0; r < n; ++r) {
    const T* __restrict xr = x + r * inner;
    for (index_t i = j; i < cnt; ++i) acc[i] = F::step(acc[i], static_cast<A>(xr[i]));
  }
}

template <class T>
static T lowest_of() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                              : std::numeric_limits<T>::lowest();
}
template <class T>
static T highest_of() {
  return std::numeric_limits<T>::has_infinity ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::max();
}

template <class T>
static Wide<T> row_acc(const T* x, index_t n, AccOp op) {
  using A = Wide<T>;
  switch (op) {
    case AccOp::Sum: return lanes<SumF>(x, n, A(0));
    case AccOp::SumSq: return lanes<SumSqF>(x, n, A(0));
    case AccOp::Abs: return lanes<AbsF>(x, n, A(0));
    case AccOp::Prod: return lanes<ProdF>(x, n, A(1));
  }
  return A(0);
}

// Max / min of a float row: plain max / min lanes (one compare and blend per vector), and a
// separate lane mask of NaNs seen, so the dependency chain stays short; any NaN -> NaN.
template <bool is_min, class T>
static T lanes_ext_float(const T* __restrict x, index_t n) {
  using M = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  constexpr int L = kLaneBytes / sizeof(T);
  T a[L];
  M nan[L] = {};
  for (int k = 0; k < L; ++k) a[k] = is_min ? highest_of<T>() : lowest_of<T>();
  index_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) {
      const T v = x[i + k];
      a[k] = (is_min ? v < a[k] : v > a[k]) ? v : a[k];
      nan[k] |= static_cast<M>(v != v);
    }
  for (int k = 0; i < n; ++i, ++k) {
    const T v = x[i];
    a[k] = (is_min ? v < a[k] : v > a[k]) ? v : a[k];
    nan[k] |= static_cast<M>(v != v);
  }
  M any = 0;
  for (int k = 0; k < L; ++k) any |= nan[k];
  if (any) return std::numeric_limits<T>::quiet_NaN();
  for (int h = L / 2; h >= 1; h /= 2)
    for (int k = 0; k < h; ++k) a[k] = (is_min ? a[k + h] < a[k] : a[k + h] > a[k]) ? a[k + h] : a[k];
  return a[0];
}

template <class T>
static T row_ext(const T* x, index_t n, bool is_min) {
  if constexpr (std::is_floating_point<T>::value) {
    return is_min ? lanes_ext_float<true>(x, n) : lanes_ext_float<false>(x, n);
  } else {
    return is_min ? lanes<MinF>(x, n, highest_of<T>()) : lanes<MaxF>(x, n, lowest_of<T>());
  }
}

template <class T>
static void col_acc(Wide<T>* acc, const T* x, index_t n, index_t inner, index_t cnt, AccOp op) {
  using A = Wide<T>;
  switch (op) {
    case AccOp::Sum: return columns<SumF>(acc, x, n, inner, cnt, A(0));
    case AccOp::SumSq: return columns<SumSqF>(acc, x, n, inner, cnt, A(0));
    case AccOp::Abs: return columns<AbsF>(acc, x, n, inner, cnt, A(0));
    case AccOp::Prod: return columns<ProdF>(acc, x, n, inner, cnt, A(1));
  }
}

template <class T>
static void col_ext(T* acc, const T* x, index_t n, index_t inner, index_t cnt, bool is_min) {
  if (is_min)
    columns<MinF>(acc, x, n, inner, cnt, highest_of<T>());
  else
    columns<MaxF>(acc, x, n, inner, cnt, lowest_of<T>());
}

template <class T>
static Prims<T> prims_of() {
  if constexpr (std::is_same<T, bool>::value) {
    return Prims<T>{nullptr, row_ext<T>, nullptr, col_ext<T>};  // bool: ReduceMax / ReduceMin only
  } else {
    return Prims<T>{row_acc<T>, row_ext<T>, col_acc<T>, col_ext<T>};
  }
}
