// Negative log-likelihood loss (engine/norm.h); SoftmaxCrossEntropyLoss is a log-softmax
// followed by this. One pass on the calling thread (the work is one gather per sample), sums
// in double; a target out of range throws before anything is returned.
#include <cstdint>
#include <string>

#include "engine/norm.h"

namespace engine {

template <class T, class I>
void nll_loss(T* loss, const T* logp, const I* target, const T* weight, index_t N, index_t C, index_t D,
              LossReduction reduction, bool has_ignore, std::int64_t ignore_index) {
  ENGINE_CHECK(N >= 0 && C >= 0 && D >= 0, "nll_loss: negative size");
  double total = 0, weights = 0;
  for (index_t n = 0; n < N; ++n) {
    for (index_t d = 0; d < D; ++d) {
      const std::int64_t t = static_cast<std::int64_t>(target[n * D + d]);
      const index_t at = n * D + d;
      if (has_ignore && t == ignore_index) {
        if (reduction == LossReduction::None) loss[at] = T(0);
        continue;
      }
      if (t < 0 || t >= C)
        throw Error("NegativeLogLikelihoodLoss: target " + std::to_string(t) + " out of range [0, " +
                    std::to_string(C) + ")");
      const double w = weight ? static_cast<double>(weight[t]) : 1.0;
      const double l = -static_cast<double>(logp[(n * C + t) * D + d]) * w;
      if (reduction == LossReduction::None) {
        loss[at] = static_cast<T>(l);
      } else {
        total += l;
        weights += w;
      }
    }
  }
  if (reduction == LossReduction::Sum) loss[0] = static_cast<T>(total);
  if (reduction == LossReduction::Mean) loss[0] = static_cast<T>(total / weights);
}

#define NM_NLL(T, I)                                                                                             \
  template void nll_loss<T, I>(T*, const T*, const I*, const T*, index_t, index_t, index_t, LossReduction, bool, \
                               std::int64_t);
NM_NLL(float, std::int32_t)
NM_NLL(float, std::int64_t)
NM_NLL(double, std::int32_t)
NM_NLL(double, std::int64_t)
#undef NM_NLL

}  // namespace engine
