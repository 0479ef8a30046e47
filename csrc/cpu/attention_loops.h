// Attention's two products as plain loops the compiler vectorises, for problems too small for
// sgemm's packing to pay off (and for double). Compiled once per ISA: attention_loops_{avx512,
// avx2}.cpp and attention.cpp (baseline) include this file inside their own namespace after
// <algorithm> and engine/common.h. No includes here on purpose.

// S (rows × n) = scale · q (rows × dk) · kᵀ (k: n rows of dk)
template <class T>
void scores_loops(T* S, index_t rows, index_t n, index_t dk, T scale, const T* q, index_t ldq, const T* k,
                  index_t ldk) {
  constexpr int kLanes = 32 / sizeof(T);  // independent partial sums: one vector multiply-add per step
  for (index_t r = 0; r < rows; ++r)
    for (index_t j = 0; j < n; ++j) {
      const T *a = q + r * ldq, *b = k + j * ldk;
      T acc[kLanes] = {};
      index_t d = 0;
      for (; d + kLanes <= dk; d += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] += a[d + l] * b[d + l];
      for (; d < dk; ++d) acc[0] += a[d] * b[d];
      for (int h = kLanes / 2; h >= 1; h /= 2)
        for (int l = 0; l < h; ++l) acc[l] += acc[l + h];
      S[r * n + j] = acc[0] * scale;
    }
}

// y (rows × dv, row stride ldy) = P (rows × n) · v (n rows of dv)
template <class T>
void weighted_sum_loops(T* y, index_t ldy, const T* P, index_t rows, index_t n, index_t dv, const T* v, index_t ldv) {
  for (index_t r = 0; r < rows; ++r) {
    T* yr = y + r * ldy;
    std::fill(yr, yr + dv, T(0));
    for (index_t j = 0; j < n; ++j) {
      const T p = P[r * n + j], *vj = v + j * ldv;
      for (index_t d = 0; d < dv; ++d) yr[d] += p * vj[d];
    }
  }
}

template void scores_loops<float>(float*, index_t, index_t, index_t, float, const float*, index_t, const float*,
                                  index_t);
template void scores_loops<double>(double*, index_t, index_t, index_t, double, const double*, index_t,
                                   const double*, index_t);
template void weighted_sum_loops<float>(float*, index_t, const float*, index_t, index_t, index_t, const float*,
                                        index_t);
template void weighted_sum_loops<double>(double*, index_t, const double*, index_t, index_t, index_t, const double*,
                                         index_t);
