// Embedding backward: scatter-add of dy rows into the table by index (engine/grad.h). The
// vocabulary is split over threads; each scans all indices and adds those in its range in
// index order, so duplicates never race and the sums do not depend on the thread count.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "cpu/grad_util.h"
#include "engine/grad.h"

namespace engine {
namespace {

template <class I>
index_t scatter(float* dw, const float* dy, const I* idx, index_t n, index_t V, index_t D, bool acc) {
  for (index_t i = 0; i < n; ++i)
    if (idx[i] < -V || idx[i] >= V) return i;
  if (!acc) gradu::split_elems(V * D, 1 << 18, [&](index_t i0, index_t i1) {
      std::memset(dw + i0, 0, static_cast<size_t>(i1 - i0) * sizeof(float));
    });
  auto range = [&](index_t v0, index_t v1) {
    for (index_t i = 0; i < n; ++i) {
      const index_t v = idx[i] < 0 ? static_cast<index_t>(idx[i]) + V : static_cast<index_t>(idx[i]);
      if (v < v0 || v >= v1) continue;
      float* __restrict d = dw + v * D;
      const float* __restrict g = dy + i * D;
      for (index_t j = 0; j < D; ++j) d[j] += g[j];
    }
  };
  if (n * D < (1 << 15) || V < 2) {
    range(0, V);
  } else {
    const index_t T = std::min<index_t>(num_threads(), V);
    parallel_for(T, 1, [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) range(V * t / T, V * (t + 1) / T);
    });
  }
  return -1;
}

}  // namespace

index_t embedding_backward(float* dw, const float* dy, const void* idx, DType idx_type, index_t n_idx, index_t V,
                           index_t D, bool accumulate) {
  ENGINE_CHECK(n_idx >= 0 && V >= 0 && D >= 0, "embedding_grad: negative size");
  ENGINE_CHECK(idx_type == DType::I32 || idx_type == DType::I64,
               std::string("embedding_grad: indices must be int32 or int64, got ") + dtype_name(idx_type));
  if (idx_type == DType::I32)
    return scatter(dw, dy, static_cast<const std::int32_t*>(idx), n_idx, V, D, accumulate);
  return scatter(dw, dy, static_cast<const std::int64_t*>(idx), n_idx, V, D, accumulate);
}

}  // namespace engine
