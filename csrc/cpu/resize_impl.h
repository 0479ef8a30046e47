// The separable resize pass (see ResizeAxis in engine/resize.h), written once and compiled
// per ISA: resize_{avx512,avx2,portable}.cpp include this file inside their own namespace
// (engine::rs_<isa>) after the standard headers, <immintrin.h> on x86 and
// "cpu/resize_kernels.h". The portable build defines RS_ALL_TYPES and takes every element
// type; the AVX builds take float32 and float16 (where the time goes), the rest falls back.
//
// Loops are written for the auto-vectoriser: along the contiguous axis (inner > 1) each tap
// is an axpy over a chunk of the row; along the last axis (inner == 1) each tap is a gather.
// Accumulation is in Acc (float or double); float16 converts with F16C where compiled in.

constexpr index_t kChunk = 256;  // accumulator chunk on the stack

// -- element <-> accumulator ---------------------------------------------------------------

template <class A, class T>
inline A to_acc(T v) { return static_cast<A>(v); }
template <>
inline float to_acc<float, Half>(Half v) { return half_bits_to_float(v.bits); }

template <class T, class A>
inline T from_acc(A v) {
  if constexpr (std::is_floating_point<T>::value) {
    return static_cast<T>(v);
  } else {  // integers: round half to even, saturate (NaN -> 0), like ONNX's reference
    const A r = std::nearbyint(v);
    if (!(r == r)) return T(0);
    if (r <= static_cast<A>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
    if (r >= static_cast<A>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(r);
  }
}
template <>
inline Half from_acc<Half, float>(float v) { return Half{float_to_half_bits(v)}; }

// acc[i] (=|+=) w · x[i] for i < n.
template <class A, class T>
inline void axpy(A* __restrict acc, const T* __restrict x, A w, index_t n, bool first) {
  if (first) {
    for (index_t i = 0; i < n; ++i) acc[i] = w * to_acc<A>(x[i]);
  } else {
    for (index_t i = 0; i < n; ++i) acc[i] += w * to_acc<A>(x[i]);
  }
}

template <class T, class A>
inline void store(T* __restrict y, const A* __restrict acc, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = from_acc<T>(acc[i]);
}

#if defined(__F16C__)
template <>
inline void axpy<float, Half>(float* __restrict acc, const Half* __restrict x, float w, index_t n, bool first) {
  index_t i = 0;
  const __m256 vw = _mm256_set1_ps(w);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(vw, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
    _mm256_storeu_ps(acc + i, first ? v : _mm256_add_ps(_mm256_loadu_ps(acc + i), v));
  }
  for (; i < n; ++i) {
    const float v = w * half_bits_to_float(x[i].bits);
    acc[i] = first ? v : acc[i] + v;
  }
}

template <>
inline void store<Half, float>(Half* __restrict y, const float* __restrict acc, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(acc + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) y[i] = Half{float_to_half_bits(acc[i])};
}
#endif

// -- the pass ------------------------------------------------------------------------------

// inner > 1: rows are (o, j) pairs; every tap adds a whole source row, chunk by chunk.
template <class Tx, class Ty, class A>
void rows_inner(Ty* y, const Tx* x, const ResizeAxis& a, index_t r0, index_t r1) {
  const A* w = static_cast<const A*>(a.w);
  const A fill = static_cast<A>(a.fill);
  A buf[kChunk];
  for (index_t r = r0; r < r1; ++r) {
    const index_t o = r / a.out_len, j = r % a.out_len;
    Ty* dst = y + r * a.inner;
    if (a.flags && a.flags[j]) {
      const Ty v = from_acc<Ty>(fill);
      for (index_t i = 0; i < a.inner; ++i) dst[i] = v;
      continue;
    }
    const Tx* src = x + o * a.in_len * a.inner;
    for (index_t i0 = 0; i0 < a.inner; i0 += kChunk) {
      const index_t n = std::min(kChunk, a.inner - i0);
      A* acc = buf;
      if constexpr (std::is_same<Ty, A>::value) acc = dst + i0;
      for (index_t t = 0; t < a.taps; ++t) {
        const index_t k = t * a.out_len + j;
        axpy<A>(acc, src + a.idx[k] * a.inner + i0, w[k], n, t == 0);
      }
      if constexpr (!std::is_same<Ty, A>::value) store(dst + i0, acc, n);
    }
  }
}

// inner == 1: rows are whole output lines; every tap is a gather along the line.
template <class Tx, class Ty, class A>
void rows_last(Ty* y, const Tx* x, const ResizeAxis& a, index_t r0, index_t r1) {
  const A* w = static_cast<const A*>(a.w);
  const A fill = static_cast<A>(a.fill);
  A buf[kChunk];
  for (index_t r = r0; r < r1; ++r) {
    const Tx* __restrict src = x + r * a.in_len;
    Ty* dst = y + r * a.out_len;
    for (index_t j0 = 0; j0 < a.out_len; j0 += kChunk) {
      const index_t n = std::min(kChunk, a.out_len - j0);
      A* __restrict acc = buf;
      if constexpr (std::is_same<Ty, A>::value) acc = dst + j0;
      for (index_t t = 0; t < a.taps; ++t) {
        const std::int64_t* __restrict it = a.idx + t * a.out_len + j0;
        const A* __restrict wt = w + t * a.out_len + j0;
        if (t == 0) {
          for (index_t q = 0; q < n; ++q) acc[q] = wt[q] * to_acc<A>(src[it[q]]);
        } else {
          for (index_t q = 0; q < n; ++q) acc[q] += wt[q] * to_acc<A>(src[it[q]]);
        }
      }
      if (a.flags) {
        for (index_t q = 0; q < n; ++q)
          if (a.flags[j0 + q]) acc[q] = fill;
      }
      if constexpr (!std::is_same<Ty, A>::value) store(dst + j0, acc, n);
    }
  }
}

template <class Tx, class Ty, class A>
void pass(void* y, const void* x, const ResizeAxis& a, index_t r0, index_t r1) {
  if (a.inner == 1)
    rows_last<Tx, Ty, A>(static_cast<Ty*>(y), static_cast<const Tx*>(x), a, r0, r1);
  else
    rows_inner<Tx, Ty, A>(static_cast<Ty*>(y), static_cast<const Tx*>(x), a, r0, r1);
}

// Element type T with accumulator A: x and y are each T or A.
template <class T, class A>
bool typed(void* y, DType ty, const void* x, DType tx, DType elem, const ResizeAxis& a, index_t r0, index_t r1) {
  const bool xe = tx == elem, ye = ty == elem;
  if (xe && ye) pass<T, T, A>(y, x, a, r0, r1);
  else if (xe) pass<T, A, A>(y, x, a, r0, r1);
  else if (ye) pass<A, T, A>(y, x, a, r0, r1);
  else pass<A, A, A>(y, x, a, r0, r1);
  return true;
}

bool axis_rows(void* y, DType ty, const void* x, DType tx, DType elem, const ResizeAxis& a, index_t r0,
               index_t r1) {
  switch (elem) {
    case DType::F32: return typed<float, float>(y, ty, x, tx, elem, a, r0, r1);
    case DType::F16: return typed<Half, float>(y, ty, x, tx, elem, a, r0, r1);
#ifdef RS_ALL_TYPES
    case DType::F64: return typed<double, double>(y, ty, x, tx, elem, a, r0, r1);
    case DType::I8: return typed<std::int8_t, float>(y, ty, x, tx, elem, a, r0, r1);
    case DType::U8: return typed<std::uint8_t, float>(y, ty, x, tx, elem, a, r0, r1);
    case DType::I16: return typed<std::int16_t, float>(y, ty, x, tx, elem, a, r0, r1);
    case DType::U16: return typed<std::uint16_t, float>(y, ty, x, tx, elem, a, r0, r1);
    case DType::I32: return typed<std::int32_t, double>(y, ty, x, tx, elem, a, r0, r1);
    case DType::U32: return typed<std::uint32_t, double>(y, ty, x, tx, elem, a, r0, r1);
    case DType::I64: return typed<std::int64_t, double>(y, ty, x, tx, elem, a, r0, r1);
    case DType::U64: return typed<std::uint64_t, double>(y, ty, x, tx, elem, a, r0, r1);
#endif
    default: return false;
  }
}

// -- float16 <-> float32 rows ------------------------------------------------------------

void f16_to_f32(float* y, const std::uint16_t* x, index_t n) {
  index_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
#endif
  for (; i < n; ++i) y[i] = half_bits_to_float(x[i]);
}

void f32_to_f16(std::uint16_t* y, const float* x, index_t n) {
  index_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; i < n; ++i) y[i] = float_to_half_bits(x[i]);
}
