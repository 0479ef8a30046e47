// Training batch normalisation (engine/norm.h; inference is in norm.cpp): per channel, the
// batch mean and population variance over (N, S) (accumulated in double), then the
// transform and the running statistics.
#include <algorithm>
#include <cmath>

#include "engine/norm.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr index_t kGrainElems = 1 << 16;

template <class T>
void shift_scale(T* __restrict y, const T* __restrict x, index_t n, T mean, T a, T b) {
  for (index_t j = 0; j < n; ++j) y[j] = (x[j] - mean) * a + b;
}

}  // namespace

template <class T>
void batchnorm_train(T* y, T* running_mean, T* running_var, const T* x, const T* scale, const T* bias,
                     const T* mean, const T* var, index_t N, index_t C, index_t S, double eps, double momentum) {
  ENGINE_CHECK(N >= 0 && C >= 0 && S >= 0, "batchnorm: negative size");
  const double count = static_cast<double>(N * S);
  auto run = [&](index_t c0, index_t c1) {
    for (index_t c = c0; c < c1; ++c) {
      double sum = 0, sq = 0;
      for (index_t n = 0; n < N; ++n) {
        const T* xr = x + (n * C + c) * S;
        for (index_t j = 0; j < S; ++j) sum += xr[j];
      }
      const double m = sum / count;
      for (index_t n = 0; n < N; ++n) {
        const T* xr = x + (n * C + c) * S;
        for (index_t j = 0; j < S; ++j) sq += (xr[j] - m) * (xr[j] - m);
      }
      const double v = sq / count;
      const T a = static_cast<T>(scale[c] / std::sqrt(v + eps));
      for (index_t n = 0; n < N; ++n)
        shift_scale(y + (n * C + c) * S, x + (n * C + c) * S, S, static_cast<T>(m), a, bias[c]);
      running_mean[c] = static_cast<T>(mean[c] * momentum + m * (1 - momentum));
      running_var[c] = static_cast<T>(var[c] * momentum + v * (1 - momentum));
    }
  };
  if (N * C * S <= kGrainElems) return run(0, C);
  parallel_for(C, std::max<index_t>(1, kGrainElems / std::max<index_t>(N * S, 1)), run);
}

#define NM_BATCH(T)                                                                                                \
  template void batchnorm_train<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, index_t, index_t,   \
                                   index_t, double, double);
NM_BATCH(float)
NM_BATCH(double)
#undef NM_BATCH

}  // namespace engine
