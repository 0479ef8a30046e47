// Winograd F(4×4, 3×3) tile transforms, compiled once per ISA (conv_winograd_avx512.cpp and
// conv_winograd_portable.cpp include it with WINO_SUFFIX set). Vectorised over channels: one GCC vector
// of VW channels at a time, the channel tail in scalars through the same templates.
//
//   input:  V = Bᵀ d B for a 6×6 input patch d (zeros outside the image); reports a
//           non-finite value in V
//   output: Y = Aᵀ m A (4×4) for the 6×6 products m, then bias, residual, activation
// Points 0, ±1, ±2, ∞ (Lavin & Gray 2016); Bᵀ and Aᵀ are spelled out row by row below.
#include "conv_kernels.h"

#if defined(__SSE__)
#include <immintrin.h>
#endif

#define WINO_CAT2(a, b) a##b
#define WINO_CAT(a, b) WINO_CAT2(a, b)

namespace engine::convk {
namespace {

#if defined(__AVX512F__)
constexpr int VW = 16;
#elif defined(__AVX2__)
constexpr int VW = 8;
#else
constexpr int VW = 4;
#endif
typedef float vf __attribute__((vector_size(VW * 4), aligned(4)));

template <class T> inline T load(const float* p);
template <> inline float load<float>(const float* p) { return *p; }
template <> inline vf load<vf>(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void store(float* p, float v) { *p = v; }
inline void store(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }

// Bᵀ applied to 6 values: out = Bᵀ in.
template <class T>
inline void bt6(const T* d, T* o) {
  o[0] = 4.f * d[0] - 5.f * d[2] + d[4];
  o[1] = -4.f * d[1] - 4.f * d[2] + d[3] + d[4];
  o[2] = 4.f * d[1] - 4.f * d[2] - d[3] + d[4];
  o[3] = -2.f * d[1] - d[2] + 2.f * d[3] + d[4];
  o[4] = 2.f * d[1] - d[2] - 2.f * d[3] + d[4];
  o[5] = 4.f * d[1] - 5.f * d[3] + d[5];
}

// Aᵀ applied to 6 values: out (4) = Aᵀ in.
template <class T>
inline void at6(const T* m, T* o) {
  const T p12 = m[1] + m[2], m12 = m[1] - m[2], p34 = m[3] + m[4], m34 = m[3] - m[4];
  o[0] = m[0] + p12 + p34;
  o[1] = m12 + 2.f * m34;
  o[2] = p12 + 4.f * p34;
  o[3] = m12 + 8.f * m34 + m[5];
}

// NaN-propagating activations (bound first: MAXPS/MINPS return the second operand on NaN).
inline float act1(float v, Act act, float a, float b) {
  if (act == Act::Relu) return v < 0.f ? 0.f : v;
  if (act == Act::LeakyRelu) return v < 0.f ? v * a : v;
  if (act == Act::Clip) return v < a ? a : (v > b ? b : v);
  return v;
}
inline vf act1(vf v, Act act, float a, float b) {
  const vf zero{};
#if defined(__AVX512F__)
  if (act == Act::Relu) return (vf)_mm512_max_ps(_mm512_setzero_ps(), (__m512)v);
  if (act == Act::Clip) return (vf)_mm512_min_ps(_mm512_set1_ps(b), _mm512_max_ps(_mm512_set1_ps(a), (__m512)v));
#endif
  if (act == Act::Relu) return v < zero ? zero : v;
  if (act == Act::LeakyRelu) return v < zero ? v * a : v;
  if (act == Act::Clip) return v < zero + a ? zero + a : (v > zero + b ? zero + b : v);
  return v;
}

inline bool finite(float v) { return v == v; }
inline bool finite(vf v) {
  for (int i = 0; i < VW; ++i)
    if (v[i] != v[i]) return false;
  return true;
}

// Returns false if the transformed patch holds an inf or NaN (v·0 is NaN then): an inf or NaN
// input always leaves one there (B is invertible), as does a transform that overflowed. The
// products would smear it over the whole tile, so the caller computes that tile directly.
template <class T>
inline bool in_tile(float* v, index_t vs, const WinoIn& w, index_t c) {
  T d[6][6], t[6][6], nf{};
  for (int r = 0; r < 6; ++r) {
    const index_t ih = w.ih0 + r;
    for (int q = 0; q < 6; ++q) {
      const index_t iw = w.iw0 + q;
      d[r][q] = ih >= 0 && ih < w.H && iw >= 0 && iw < w.W ? load<T>(w.img + (ih * w.W + iw) * w.C + c) : T{};
    }
  }
  for (int q = 0; q < 6; ++q) {  // columns: t = Bᵀ d
    T col[6], o[6];
    for (int r = 0; r < 6; ++r) col[r] = d[r][q];
    bt6(col, o);
    for (int r = 0; r < 6; ++r) t[r][q] = o[r];
  }
  for (int r = 0; r < 6; ++r) {  // rows: V = t B
    T o[6];
    bt6(t[r], o);
    for (int q = 0; q < 6; ++q) {
      store(v + (r * 6 + q) * vs + c, o[q]);
      nf += o[q] * 0.f;
    }
  }
  return finite(nf);
}

template <class T>
inline void out_tile(const WinoOut& w, index_t c) {
  T m[6][6], s[4][6];
  for (int r = 0; r < 6; ++r)
    for (int q = 0; q < 6; ++q) m[r][q] = load<T>(w.m + (r * 6 + q) * w.ms + c);
  for (int q = 0; q < 6; ++q) {  // columns: s = Aᵀ m
    T col[6], o[4];
    for (int r = 0; r < 6; ++r) col[r] = m[r][q];
    at6(col, o);
    for (int r = 0; r < 4; ++r) s[r][q] = o[r];
  }
  const T bias = load<T>(w.bias + c);
  for (int r = 0; r < w.rows; ++r) {  // rows: Y = s A, only the pixels inside the output
    T o[4];
    at6(s[r], o);
    for (int q = 0; q < w.cols; ++q) {
      T v = o[q] + bias;
      if (w.res) v += load<T>(w.res + r * w.res_row + q * w.ldr + c);
      store(w.y + r * w.y_row + q * w.ldy + c, act1(v, w.act, w.alpha, w.beta));
    }
  }
}

}  // namespace

bool WINO_CAT(wino_input_, WINO_SUFFIX)(float* v, index_t vs, const WinoIn& w) {
  bool ok = true;
  index_t c = 0;
  for (; c + VW <= w.C; c += VW) ok &= in_tile<vf>(v, vs, w, c);
  for (; c < w.C; ++c) ok &= in_tile<float>(v, vs, w, c);
  return ok;
}

void WINO_CAT(wino_output_, WINO_SUFFIX)(const WinoOut& w) {
  index_t c = 0;
  for (; c + VW <= w.OC; c += VW) out_tile<vf>(w, c);
  for (; c < w.OC; ++c) out_tile<float>(w, c);
}

}  // namespace engine::convk
