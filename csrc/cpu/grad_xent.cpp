// Softmax cross-entropy, loss and gradient in one pass over the logits (engine/grad.h).
// Rows are split in fixed chunks; each chunk's weighted loss sum is kept in double and the
// chunks are added in order, so the loss does not depend on the thread count.
#include <cstdint>
#include <vector>

#include "cpu/grad_kernels.h"
#include "cpu/grad_util.h"
#include "engine/grad.h"

namespace engine {
namespace {

template <class I>
index_t first_bad_label(const I* lab, index_t N, index_t C) {
  for (index_t i = 0; i < N; ++i)
    if (lab[i] < 0 || static_cast<std::int64_t>(lab[i]) >= C) return i;
  return -1;
}

// label(i) >= 0 for sparse labels, -1 with target rows.
template <class Label>
void xent(float* loss, float* dlogits, const float* logits, Label label, const float* target, const float* weight,
          const float* dloss, index_t N, index_t C, XentReduction red) {
  ENGINE_CHECK(N >= 0 && C >= 1, "softmax_xent: expected N >= 0 and C >= 1, got N=" + gradu::str(N) +
                                     ", C=" + gradu::str(C));
  ENGINE_CHECK(static_cast<int>(red) >= 0 && static_cast<int>(red) <= 3,
               "softmax_xent: unknown reduction " + std::to_string(static_cast<int>(red)));
  double denom = 1;
  if (red == XentReduction::Mean) denom = static_cast<double>(N);
  if (red == XentReduction::WeightedMean) {
    denom = 0;
    for (index_t i = 0; i < N; ++i) denom += weight ? weight[i] : 1.0;
  }
  const double upstream = red != XentReduction::None && dloss ? dloss[0] : 1.0;
  const float common = static_cast<float>(upstream / denom);
  const auto& k = gradk::kernels();
  const gradu::Chunks chunks(N, C);
  double* part = thread_scratch<double, gradu::kTagPartials>(static_cast<std::size_t>(chunks.count) + 1);
  chunks.run(C, [&](index_t ci, index_t r0, index_t r1) {
    double acc = 0;
    for (index_t i = r0; i < r1; ++i) {
      const float w = weight ? weight[i] : 1.f;
      const float s = red == XentReduction::None ? (dloss ? dloss[i] : 1.f) * w : common * w;
      const float l = k.xent_row(dlogits ? dlogits + i * C : nullptr, logits + i * C, C, label(i),
                                 target ? target + i * C : nullptr, s);
      if (red == XentReduction::None) loss[i] = w * l;
      else acc += static_cast<double>(w) * l;
    }
    part[ci] = acc;
  });
  if (red == XentReduction::None) return;
  double total = 0;
  for (index_t c = 0; c < chunks.count; ++c) total += part[c];
  loss[0] = static_cast<float>(red == XentReduction::Sum ? total : total / denom);
}

}  // namespace

index_t softmax_xent_sparse(float* loss, float* dlogits, const float* logits, const void* labels, DType label_type,
                            const float* weight, const float* dloss, index_t N, index_t C, XentReduction red) {
  ENGINE_CHECK(label_type == DType::I32 || label_type == DType::I64,
               std::string("softmax_xent: labels must be int32 or int64, got ") + dtype_name(label_type));
  if (label_type == DType::I32) {
    const auto* lab = static_cast<const std::int32_t*>(labels);
    if (const index_t bad = first_bad_label(lab, N, C); bad >= 0) return bad;
    xent(loss, dlogits, logits, [lab](index_t i) { return static_cast<index_t>(lab[i]); }, nullptr, weight, dloss,
         N, C, red);
  } else {
    const auto* lab = static_cast<const std::int64_t*>(labels);
    if (const index_t bad = first_bad_label(lab, N, C); bad >= 0) return bad;
    xent(loss, dlogits, logits, [lab](index_t i) { return static_cast<index_t>(lab[i]); }, nullptr, weight, dloss,
         N, C, red);
  }
  return -1;
}

void softmax_xent_dense(float* loss, float* dlogits, const float* logits, const float* target, const float* weight,
                        const float* dloss, index_t N, index_t C, XentReduction red) {
  xent(loss, dlogits, logits, [](index_t) { return index_t(-1); }, target, weight, dloss, N, C, red);
}

}  // namespace engine
