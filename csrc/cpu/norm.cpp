// Row normalisation and inference batch norm (engine/norm.h): ISA dispatch and threading
// over rows. The row kernels are in norm_impl.h, compiled per ISA.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "engine/half.h"
#include "engine/cpu_features.h"
#include "engine/scratch.h"
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
  void batch_f32(float* y, const float* x, const float* scale, const float* bias, const float* mean,                \
                 const float* var, index_t r0, index_t r1, index_t C, index_t S, double eps);                       \
  void batch_f64(double* y, const double* x, const double* scale, const double* bias, const double* mean,           \
                 const double* var, index_t r0, index_t r1, index_t C, index_t S, double eps);                      \
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

template <class T>
using BatchFn = void (*)(T*, const T*, const T*, const T*, const T*, const T*, index_t, index_t, index_t, index_t,
                         double);

template <class T>
BatchFn<T> batch_fn() {
  if constexpr (std::is_same<T, float>::value) {
    static const BatchFn<float> table[3] = {portable::batch_rows<float>, avx2::batch_f32, avx512::batch_f32};
    return table[static_cast<int>(cpu_isa())];
  } else {
    static const BatchFn<double> table[3] = {portable::batch_rows<double>, avx2::batch_f64, avx512::batch_f64};
    return table[static_cast<int>(cpu_isa())];
  }
}

// A task normalises at least this many elements (three passes over each).
constexpr index_t kGrainNorm = 1 << 14;

template <class Fn>
void split_rows(index_t rows, index_t len, Fn&& run) {
  const index_t per_row = std::max<index_t>(len, 1);
  if (rows * per_row <= kGrainNorm) return run(0, rows);
  parallel_for(rows, std::max<index_t>(1, kGrainNorm / per_row), run);
}

}  // namespace
}  // namespace nm

template <class T>
void normalize_rows(T* y, float* mean, float* inv_std, const T* x, const T* scale, const T* bias, index_t rows,
                    index_t groups, index_t cps, index_t seg, double eps, NormMode mode) {
  ENGINE_CHECK(rows >= 0 && groups >= 1 && cps >= 0 && seg >= 0, "normalize_rows: bad sizes");
  const auto fn = nm::rows_fn<T>();
  const index_t len = cps * seg;
  auto run = [&](index_t r0, index_t r1) {
    fn(y + r0 * len, mean ? mean + r0 : nullptr, inv_std ? inv_std + r0 : nullptr, x + r0 * len, scale, bias, r0, r1,
       groups, cps, seg, eps, mode);
  };
  nm::split_rows(rows, len, run);
}

void normalize_rows_f16(std::uint16_t* y, float* mean, float* inv_std, const std::uint16_t* x, const float* scale,
                        const float* bias, index_t rows, index_t groups, index_t cps, index_t seg, double eps,
                        NormMode mode) {
  ENGINE_CHECK(rows >= 0 && groups >= 1 && cps >= 0 && seg >= 0, "normalize_rows: bad sizes");
  const auto fn = nm::rows_fn<float>();
  const index_t len = cps * seg;
  auto run = [&](index_t r0, index_t r1) {
    // One row at a time through two float buffers (grown once per thread to the longest row).
    float* in = thread_scratch<float, kScratchNormIn>(static_cast<size_t>(len));
    float* out = thread_scratch<float, kScratchNormOut>(static_cast<size_t>(len));
    for (index_t r = r0; r < r1; ++r) {
      half_to_float(in, x + r * len, len);
      fn(out, mean ? mean + r : nullptr, inv_std ? inv_std + r : nullptr, in, scale, bias, r, r + 1,
         groups, cps, seg, eps, mode);
      float_to_half(y + r * len, out, len);
    }
  };
  nm::split_rows(rows, len, run);
}

template <class T>
void batchnorm(T* y, const T* x, const T* scale, const T* bias, const T* mean, const T* var, index_t N, index_t C,
               index_t S, double eps) {
  ENGINE_CHECK(N >= 0 && C >= 0 && S >= 0, "batchnorm: negative size");
  const auto fn = nm::batch_fn<T>();
  nm::split_rows(N * C, S / 2, [&](index_t r0, index_t r1) {  // one pass: half the cost of a normalisation
    fn(y + r0 * S, x + r0 * S, scale, bias, mean, var, r0, r1, C, S, eps);
  });
}

template void batchnorm<float>(float*, const float*, const float*, const float*, const float*, const float*, index_t,
                               index_t, index_t, double);
template void batchnorm<double>(double*, const double*, const double*, const double*, const double*, const double*,
                                index_t, index_t, index_t, double);
template void normalize_rows<float>(float*, float*, float*, const float*, const float*, const float*, index_t, index_t,
                                    index_t, index_t, double, NormMode);
template void normalize_rows<double>(double*, float*, float*, const double*, const double*, const double*, index_t,
                                     index_t, index_t, index_t, double, NormMode);

}  // namespace engine
