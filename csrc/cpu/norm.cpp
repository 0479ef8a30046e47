// Row normalisation (engine/norm.h): ISA dispatch and threading over rows. The row kernel
// is norm_impl.h, compiled per ISA.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "engine/cpu_features.h"
#include "engine/norm.h"
#include "engine/threadpool.h"

namespace engine {
namespace nm {

#define NM_DECLARE(ns)                                                                                              \
  namespace ns {                                                                                                    \
  void rows_f32(float* y, float* mean, float* inv, const float* x, const float* scale, const float* bias, index_t r0, \
                index_t r1, index_t groups, index_t cps, index_t seg, double eps, NormMode mode);                    \
  void rows_f64(double* y, float* mean, float* inv, const double* x, const double* scale, const double* bias,       \
                index_t r0, index_t r1, index_t groups, index_t cps, index_t seg, double eps, NormMode mode);       \
  }
NM_DECLARE(avx2)
NM_DECLARE(avx512)
#undef NM_DECLARE

namespace portable {
#include "cpu/norm_impl.h"
}  // namespace portable

namespace {

template <class T>
using RowsFn = void (*)(T*, float*, float*, const T*, const T*, const T*, index_t, index_t, index_t, index_t, index_t,
                        double, NormMode);

template <class T>
RowsFn<T> rows_fn() {
  if constexpr (std::is_same<T, float>::value) {
    static const RowsFn<float> table[3] = {portable::norm_rows<float>, avx2::rows_f32, avx512::rows_f32};
    return table[static_cast<int>(cpu_isa())];
  } else {
    static const RowsFn<double> table[3] = {portable::norm_rows<double>, avx2::rows_f64, avx512::rows_f64};
    return table[static_cast<int>(cpu_isa())];
  }
}

// A task normalises at least this many elements (three passes over each).
constexpr index_t kGrainNorm = 1 << 14;

}  // namespace
}  // namespace nm

template <class T>
void normalize_rows(T* y, float* mean, float* inv_std, const T* x, const T* scale, const T* bias, index_t rows,
                    index_t groups, index_t cps, index_t seg, double eps, NormMode mode) {
  ENGINE_CHECK(rows >= 0 && groups >= 1 && cps >= 0 && seg >= 0, "normalize_rows: bad sizes");
  const auto fn = nm::rows_fn<T>();
  const index_t len = std::max<index_t>(cps * seg, 1);
  auto run = [&](index_t r0, index_t r1) { fn(y, mean, inv_std, x, scale, bias, r0, r1, groups, cps, seg, eps, mode); };
  if (rows * len <= nm::kGrainNorm) return run(0, rows);
  parallel_for(rows, std::max<index_t>(1, nm::kGrainNorm / len), run);
}

template void normalize_rows<float>(float*, float*, float*, const float*, const float*, const float*, index_t, index_t,
                                    index_t, index_t, double, NormMode);
template void normalize_rows<double>(double*, float*, float*, const double*, const double*, const double*, index_t,
                                     index_t, index_t, index_t, double, NormMode);

}  // namespace engine
