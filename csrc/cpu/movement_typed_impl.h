// Typed loops of the movement family; included by movement_typed_{avx512,avx2,portable}.cpp
// inside their own namespace, so each ISA gets its own compilation (see movement_typed.h).
// _Float16 is GCC's half type: with -mf16c its conversions are vcvtph2ps/vcvtps2ph, vectorised
// with the loops; in the portable build they are libgcc's exact software conversions.

template <class T, class C>
struct Arith {  // T: storage, C: the type the arithmetic is done in
  static void add(void* d, const void* s, index_t n) {
    T* dp = static_cast<T*>(d);
    const T* sp = static_cast<const T*>(s);
    for (index_t i = 0; i < n; ++i) dp[i] = static_cast<T>(static_cast<C>(dp[i]) + static_cast<C>(sp[i]));
  }
  static void mul(void* d, const void* s, index_t n) {
    T* dp = static_cast<T*>(d);
    const T* sp = static_cast<const T*>(s);
    for (index_t i = 0; i < n; ++i) dp[i] = static_cast<T>(static_cast<C>(dp[i]) * static_cast<C>(sp[i]));
  }
  static void max(void* d, const void* s, index_t n) {
    T* dp = static_cast<T*>(d);
    const T* sp = static_cast<const T*>(s);
    for (index_t i = 0; i < n; ++i) {
      const C a = static_cast<C>(dp[i]), b = static_cast<C>(sp[i]);
      dp[i] = static_cast<T>(b > a ? b : a);
    }
  }
  static void min(void* d, const void* s, index_t n) {
    T* dp = static_cast<T*>(d);
    const T* sp = static_cast<const T*>(s);
    for (index_t i = 0; i < n; ++i) {
      const C a = static_cast<C>(dp[i]), b = static_cast<C>(sp[i]);
      dp[i] = static_cast<T>(b < a ? b : a);
    }
  }
};

// bool as numpy reduces it: add/max are "or", mul/min are "and".
struct BoolArith {
  static void any(void* d, const void* s, index_t n) {
    auto* dp = static_cast<std::uint8_t*>(d);
    const auto* sp = static_cast<const std::uint8_t*>(s);
    for (index_t i = 0; i < n; ++i) dp[i] = (dp[i] | sp[i]) != 0;
  }
  static void all(void* d, const void* s, index_t n) {
    auto* dp = static_cast<std::uint8_t*>(d);
    const auto* sp = static_cast<const std::uint8_t*>(s);
    for (index_t i = 0; i < n; ++i) dp[i] = (dp[i] & sp[i]) != 0;
  }
};

template <class T, class C>
ReduceRowFn pick(Reduction op) {
  switch (op) {
    case Reduction::Add: return &Arith<T, C>::add;
    case Reduction::Mul: return &Arith<T, C>::mul;
    case Reduction::Max: return &Arith<T, C>::max;
    case Reduction::Min: return &Arith<T, C>::min;
    default: return nullptr;
  }
}

ReduceRowFn reduce_row(DType type, Reduction op) {
  switch (type) {
    case DType::F32: return pick<float, float>(op);
    case DType::F64: return pick<double, double>(op);
    case DType::F16: return pick<_Float16, float>(op);
    case DType::I8: return pick<std::int8_t, std::int8_t>(op);
    case DType::I16: return pick<std::int16_t, std::int16_t>(op);
    case DType::I32: return pick<std::int32_t, std::int32_t>(op);
    case DType::I64: return pick<std::int64_t, std::int64_t>(op);
    case DType::U8: return pick<std::uint8_t, std::uint8_t>(op);
    case DType::U16: return pick<std::uint16_t, std::uint16_t>(op);
    case DType::U32: return pick<std::uint32_t, std::uint32_t>(op);
    case DType::U64: return pick<std::uint64_t, std::uint64_t>(op);
    case DType::Bool:
      if (op == Reduction::Add || op == Reduction::Max) return &BoolArith::any;
      if (op == Reduction::Mul || op == Reduction::Min) return &BoolArith::all;
      return nullptr;
    default: return nullptr;
  }
}

template <class T, class C>
void range_t(void* y, const void* start, const void* delta, index_t n) {
  T* yp = static_cast<T*>(y);
  const C s = static_cast<C>(*static_cast<const T*>(start)), d = static_cast<C>(*static_cast<const T*>(delta));
  for (index_t i = 0; i < n; ++i) yp[i] = static_cast<T>(s + static_cast<C>(i) * d);
}

bool range(void* y, DType type, const void* start, const void* delta, index_t n, bool stash_double) {
  switch (type) {
    case DType::F32: range_t<float, double>(y, start, delta, n); return true;
    case DType::F64: range_t<double, double>(y, start, delta, n); return true;
    case DType::F16:
      if (stash_double) range_t<_Float16, double>(y, start, delta, n);
      else range_t<_Float16, float>(y, start, delta, n);
      return true;
    case DType::I16: range_t<std::int16_t, std::int64_t>(y, start, delta, n); return true;
    case DType::I32: range_t<std::int32_t, std::int64_t>(y, start, delta, n); return true;
    case DType::I64: range_t<std::int64_t, std::int64_t>(y, start, delta, n); return true;
    default: return false;
  }
}
