// The vector passes over one row of logits that sampling is built from (lm_sampling.cpp holds
// the logic). Each is one streaming pass; s_i = (x_i - max) * inv_t is computed the same way in
// every pass, so a token's weight is the same number wherever it is looked at.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine::sampling {

// Weights exp(s) for s below this are taken as 0: no denormals, and a token e^-87 times less
// likely than the top one is never drawn.
constexpr float kMinScore = -87.f;

struct RowScan {
  float max;        // -inf when every logit is -inf
  index_t argmax;   // lowest id holding max (-1 when max is -inf)
  index_t bad;      // first id holding NaN or +inf, -1 when none
};
RowScan scan_row(const float* x, index_t n);

// Returns sum_i w_i, w_i = exp((x_i - max) * inv_t) (0 below kMinScore), summed per block of
// kBlock tokens into block_sums (double); w is stored when not null.
constexpr index_t kBlock = 512;
double weigh_row(float* w, double* block_sums, const float* x, index_t n, float max, float inv_t);

// The highest threshold c (a multiple of 1/kBucketsPerUnit, >= kMinScore) such that the tokens
// with s >= c weigh at least `need` (sum of w over the row; kMinScore when the row falls short):
// one pass that histograms the weight by s, so top-p's head is found without a sort.
constexpr int kBucketsPerUnit = 4;
float threshold_for_weight(const float* x, index_t n, float max, float inv_t, double need);

// The k-th largest of x[0, n) (1 <= k <= n, duplicates counted): a min-heap of the k best in one
// pass (a block of 4 is skipped with one compare once the heap is full) for small k, selection
// over a copy (heap_or_copy needs room for max(k, n) floats then) for large k.
float kth_largest(const float* x, index_t n, index_t k, float* heap_or_copy);

// A candidate token: its scaled logit s and weight exp(s).
struct Cand {
  float s;
  float w;
  std::int32_t id;
};
// Appends every token with s >= c (c >= kMinScore) to out, s filled, w not; returns the count.
index_t gather_above(Cand* out, const float* x, index_t n, float max, float inv_t, float c);
// Fills c[i].w = exp(c[i].s) and returns their sum.
double weigh_cands(Cand* c, index_t n);

}  // namespace engine::sampling
