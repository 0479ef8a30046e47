// Attention dropout's keep/drop decisions (AttentionDropout in engine/attention.h): a counter-based
// hash of (seed, step, batch·q_heads + head, query row, key), so every kernel, layout, ISA and
// thread count draws the same mask, and the backward draws it again instead of storing it.
//
//   key  = head_key(drop, b·q_heads + h)            once per (batch, head): 64 bits
//   word = row_word(key, i)                          once per query row
//   keep = keep(bits(key, word, j), threshold(rate)) per probability
//
// The per-row and per-element parts are written over U = std::uint32_t or a vector of them (the
// kernels run query rows along the lanes). Everything is `static` so each translation unit, built
// with its own ISA flags, keeps its own copy.
#pragma once

#include <cmath>
#include <cstdint>

#include "engine/attention.h"

namespace engine {
namespace attdrop {

// splitmix64's finaliser.
static inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// murmur3's 32-bit finaliser: a bijection in which every input bit flips each output bit with
// probability about 1/2.
template <class U>
static inline U fmix32(U h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

static inline std::uint64_t head_key(const AttentionDropout& d, index_t bh) {
  return mix64(mix64(d.seed ^ mix64(d.step + 0x9E3779B97F4A7C15ull)) + static_cast<std::uint64_t>(bh));
}

template <class U>
static inline U row_word(std::uint64_t key, U i) {
  return fmix32((i * 0x9E3779B1u) ^ static_cast<std::uint32_t>(key));
}

// 32 random bits for (row, key j); distinct keys of one row give distinct inputs to fmix32.
template <class U>
static inline U bits(std::uint64_t key, U word, index_t j) {
  return fmix32(word ^ (static_cast<std::uint32_t>(j) * 0x85EBCA77u + static_cast<std::uint32_t>(key >> 32)));
}

// Kept iff the top 24 bits are >= threshold(rate): probability 1 − rate to within 2^-24.
static inline std::uint32_t threshold(double rate) { return static_cast<std::uint32_t>(std::ceil(rate * 16777216.0)); }

}  // namespace attdrop
}  // namespace engine
