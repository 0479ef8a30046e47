// The vector passes over one row of logits that sampling is built from (lm_sampling.cpp holds
// the logic; lm_sampling_passes_impl.h the passes, compiled per ISA and chosen at run time). Each
// is one streaming pass; s_i = (x_i - max) * inv_t is computed the same way in every pass, so a
// token's weight is the same number wherever it is looked at.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine::sampling {

// Weights exp(s) for s below this are taken as 0: no denormals, and a token e^-87 times less
// likely than the top one is never drawn.
constexpr float kMinScore = -87.f;
constexpr index_t kBlock = 512;    // weigh_row's block of tokens
constexpr int kBucketsPerUnit = 4;  // threshold_for_weight's resolution in s

struct RowScan {
  float max;        // -inf when every logit is -inf
  index_t argmax;   // lowest id holding max (-1 when max is -inf)
  index_t bad;      // first id holding NaN or +inf, -1 when none
};

// A candidate token: its scaled logit s and weight exp(s).
struct Cand {
  float s;
  float w;
  std::int32_t id;
};

struct Passes {
  // max, first argmax, first NaN/+inf of x[0, n).
  RowScan (*scan_row)(const float* x, index_t n);
  // Returns sum_i w_i, w_i = exp((x_i - max) * inv_t) (0 below kMinScore), summed per block of
  // kBlock tokens into block_sums (double); w is stored when not null.
  double (*weigh_row)(float* w, double* block_sums, const float* x, index_t n, float max, float inv_t);
  // The highest threshold c (a multiple of 1/kBucketsPerUnit, >= kMinScore) such that the tokens
  // with s >= c weigh at least `need` (kMinScore when the row falls short): one pass that
  // histograms the weight by s, so top-p's head is found without a sort.
  float (*threshold_for_weight)(const float* x, index_t n, float max, float inv_t, double need);
  // The k-th largest of x[0, n) (1 <= k <= n, duplicates counted): a min-heap of the k best in
  // one pass (a vector of x skipped with one compare once the heap is full) for small k,
  // selection over a copy for large k; buf needs room for n floats.
  float (*kth_largest)(const float* x, index_t n, index_t k, float* buf);
  // Appends every token with s >= c to out, s filled, w not; returns the count. (c < kMinScore
  // gathers tokens whose weight is 0; with max = 0, inv_t = 1 it gathers logits >= c.)
  index_t (*gather_above)(Cand* out, const float* x, index_t n, float max, float inv_t, float c);
  // Fills c[i].w = exp(c[i].s) and returns their sum.
  double (*weigh_cands)(Cand* c, index_t n);
};

// The passes for the ISA in use (engine::cpu_isa()).
const Passes& passes();

inline RowScan scan_row(const float* x, index_t n) { return passes().scan_row(x, n); }
inline double weigh_row(float* w, double* block_sums, const float* x, index_t n, float max, float inv_t) {
  return passes().weigh_row(w, block_sums, x, n, max, inv_t);
}
inline float threshold_for_weight(const float* x, index_t n, float max, float inv_t, double need) {
  return passes().threshold_for_weight(x, n, max, inv_t, need);
}
inline float kth_largest(const float* x, index_t n, index_t k, float* buf) {
  return passes().kth_largest(x, n, k, buf);
}
inline index_t gather_above(Cand* out, const float* x, index_t n, float max, float inv_t, float c) {
  return passes().gather_above(out, x, n, max, inv_t, c);
}
inline double weigh_cands(Cand* c, index_t n) { return passes().weigh_cands(c, n); }

}  // namespace engine::sampling
