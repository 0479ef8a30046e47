// Token sampling for language models: one call draws one token for each of B rows of logits.
//
// Per row, in this order (the order of llama.cpp's default chain and of transformers'
// generate): repetition penalty -> temperature -> top-k -> top-p -> min-p -> draw.
//   repetition penalty  over the row's history ids (each id once, duplicates do not compound):
//                       logit > 0 -> logit / p, else logit * p (transformers' semantics)
//   temperature 0       greedy: the argmax, lowest id on ties; the filters cannot change it
//   top-k (0 = off)     keep every token whose logit >= the k-th largest (ties at the edge kept)
//   top-p (1 = off)     keep the smallest head (logit descending, id ascending) whose
//                       probability, renormalised over what top-k kept, reaches top_p
//   min-p (0 = off)     keep tokens with probability >= min_p * the top token's probability
//   draw                from the kept tokens renormalised, with u from the row's RNG
// Each row has one 64-bit RNG state (splitmix64) advanced exactly once per call, greedy rows
// included, so a row's tokens depend only on its seed, its logits and its parameters, never on
// the other rows of the batch. Probabilities below e^-87 of the top token's count as 0.
//
// No full sort of the vocabulary: only the tokens above a threshold that provably holds the kept
// set are gathered (top-k: the k-th largest logit, by sampling select; min-p: its own cut;
// top-p: e^-8 of the top, or, for a flat distribution, a threshold from a histogram of weight),
// and top-p's head is cut from them by a quickselect on mass. The work is a few vector passes
// over the row plus something proportional to the head of the distribution.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {

struct SamplingRow {
  float temperature = 1.f;         // >= 0, finite; 0 = greedy
  std::int64_t top_k = 0;          // >= 0; 0 or >= vocab = off
  float top_p = 1.f;               // (0, 1]; 1 = off
  float min_p = 0.f;               // [0, 1]; 0 = off
  float repetition_penalty = 1.f;  // > 0; 1 = off
  const std::int32_t* history = nullptr;  // ids the penalty applies to (any order, repeats fine)
  index_t history_len = 0;
};

// out[b] = the token drawn for row b of logits (B rows of V floats, row b at logits + b*ld).
// rng[b] is row b's state, advanced once. Throws engine::Error naming the row (and nothing is
// written, no state advanced) for a NaN or +inf logit, a row whose logits are all -inf, a
// history id outside [0, V) or a parameter out of range. logits are never modified.
void sample_tokens(std::int32_t* out, std::uint64_t* rng, const float* logits, index_t ld, index_t B, index_t V,
                   const SamplingRow* rows);

// The kept set of one row (the same filters the draw applies), in id order, with each token's
// probability renormalised over the set: ids and probs need room for V entries; returns the
// count. Greedy gives the argmax with probability 1. For tests and for inspecting a setting.
index_t sample_support(std::int32_t* ids, double* probs, const float* logits, index_t V, const SamplingRow& row);

// The RNG: splitmix64 (Steele, Lea, Flood 2014). Exposed so tests can replay a draw.
inline std::uint64_t splitmix64_next(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// A uniform double in [0, 1) from the top 53 bits.
inline double uniform01(std::uint64_t& state) { return static_cast<double>(splitmix64_next(state) >> 11) * 0x1.0p-53; }

}  // namespace engine
