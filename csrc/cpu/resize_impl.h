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
        const std::int32_t* __restrict it = a.idx + t * a.out_len + j0;
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

// Both of the last two axes in one pass: x [outer, H, W] -> y [outer, OH, OW], for output
// rows [j0, j1) and columns [q0, q1) of plane o. Each source row is resampled along W once
// into a ring of h.taps rows (slot = row mod taps: the rows one output row needs are
// consecutive), then output rows blend ring rows; nothing intermediate leaves the cache.
template <class T, class A>
void plane_2d_rows(T* y, const T* x, const ResizeAxis& h, const ResizeAxis& w, index_t o, index_t q0, index_t q1,
                   index_t j0, index_t j1) {
  const index_t H = h.in_len, W = w.in_len, OH = h.out_len, OW = w.out_len, th = h.taps, sw = q1 - q0;
  const A* wh = static_cast<const A*>(h.w);
  const A* ww = static_cast<const A*>(w.w);
  A ring[kResizeRing];
  index_t tag[kResizeMaxTaps2D];
  for (index_t k = 0; k < th; ++k) tag[k] = -1;
  const T* plane = x + o * H * W;
  const A fill = static_cast<A>(h.fill);
  A acc[kChunk];
  for (index_t j = j0; j < j1; ++j) {
    T* dst = y + (o * OH + j) * OW + q0;
    if (h.flags && h.flags[j]) {
      const T v = from_acc<T>(fill);
      for (index_t q = 0; q < sw; ++q) dst[q] = v;
      continue;
    }
    for (index_t t = 0; t < th; ++t) {  // the source rows this output row needs
      const index_t s = h.idx[t * OH + j], slot = s % th;
      if (tag[slot] == s) continue;
      tag[slot] = s;
      A* __restrict r = ring + slot * sw;
      const T* __restrict src = plane + s * W;
      for (index_t k = 0; k < w.taps; ++k) {
        const std::int32_t* __restrict it = w.idx + k * OW + q0;
        const A* __restrict wt = ww + k * OW + q0;
        if (k == 0) {
          for (index_t q = 0; q < sw; ++q) r[q] = wt[q] * to_acc<A>(src[it[q]]);
        } else {
          for (index_t q = 0; q < sw; ++q) r[q] += wt[q] * to_acc<A>(src[it[q]]);
        }
      }
    }
    for (index_t c0 = 0; c0 < sw; c0 += kChunk) {
      const index_t n = std::min(kChunk, sw - c0);
      A* a = acc;
      if constexpr (std::is_same<T, A>::value) a = dst + c0;
      for (index_t t = 0; t < th; ++t) {
        const index_t s = h.idx[t * OH + j];
        axpy<A>(a, ring + (s % th) * sw + c0, wh[t * OH + j], n, t == 0);
      }
      if (w.flags)
        for (index_t q = 0; q < n; ++q)
          if (w.flags[q0 + c0 + q]) a[q] = fill;
      if constexpr (!std::is_same<T, A>::value) store(dst + c0, a, n);
    }
  }
}

// -- type dispatch -------------------------------------------------------------------------

template <class T>
struct Tag {
  using type = T;
};

// f(Tag<element type>, Tag<accumulator>); false if this build does not take the type.
template <class F>
bool with_elem(DType elem, F&& f) {
  switch (elem) {
    case DType::F32: f(Tag<float>{}, Tag<float>{}); return true;
    case DType::F16: f(Tag<Half>{}, Tag<float>{}); return true;
#ifdef RS_ALL_TYPES
    case DType::F64: f(Tag<double>{}, Tag<double>{}); return true;
    case DType::I8: f(Tag<std::int8_t>{}, Tag<float>{}); return true;
    case DType::U8: f(Tag<std::uint8_t>{}, Tag<float>{}); return true;
    case DType::I16: f(Tag<std::int16_t>{}, Tag<float>{}); return true;
    case DType::U16: f(Tag<std::uint16_t>{}, Tag<float>{}); return true;
    case DType::I32: f(Tag<std::int32_t>{}, Tag<double>{}); return true;
    case DType::U32: f(Tag<std::uint32_t>{}, Tag<double>{}); return true;
    case DType::I64: f(Tag<std::int64_t>{}, Tag<double>{}); return true;
    case DType::U64: f(Tag<std::uint64_t>{}, Tag<double>{}); return true;
#endif
    default: return false;
  }
}

// x and y are each the element type or the accumulator.
bool axis_rows(void* y, DType ty, const void* x, DType tx, DType elem, const ResizeAxis& a, index_t r0,
               index_t r1) {
  return with_elem(elem, [&](auto te, auto ta) {
    using T = typename decltype(te)::type;
    using A = typename decltype(ta)::type;
    const bool xe = tx == elem, ye = ty == elem;
    if (xe && ye) pass<T, T, A>(y, x, a, r0, r1);
    else if (xe) pass<T, A, A>(y, x, a, r0, r1);
    else if (ye) pass<A, T, A>(y, x, a, r0, r1);
    else pass<A, A, A>(y, x, a, r0, r1);
  });
}

bool plane_2d(void* y, const void* x, DType elem, const ResizeAxis& h, const ResizeAxis& w, index_t o, index_t q0,
              index_t q1, index_t j0, index_t j1) {
  return with_elem(elem, [&](auto te, auto ta) {
    using T = typename decltype(te)::type;
    using A = typename decltype(ta)::type;
    plane_2d_rows<T, A>(static_cast<T*>(y), static_cast<const T*>(x), h, w, o, q0, q1, j0, j1);
  });
}

