// Token sampling: the per-row filter chain and draw (the order and semantics are in
// lm_sampling.h; the vector passes in lm_sampling_passes.cpp).
#include "cpu/lm_sampling.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cpu/lm_sampling_passes.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {
namespace {
using sampling::Cand;
using sampling::kMinScore;

// thread_scratch tags private to this file (outside engine::ScratchTag's values).
enum : int { kTagRow = 1001, kTagCand, kTagWeights, kTagBlocks, kTagSelect };

constexpr float kInf = std::numeric_limits<float>::infinity();
// Top-p's first candidate threshold (s = scaled logit - max): tokens within e^8 of the top one.
// A real model's nucleus usually lies inside; when not, a histogram pass finds a lower one.
constexpr float kFirstThreshold = -8.f;

// The order the filters see tokens in: logit descending, id ascending on ties.
inline bool before(const Cand& a, const Cand& b) { return a.s > b.s || (a.s == b.s && a.id < b.id); }

std::string row_name(index_t b) { return "sample: row " + std::to_string(b); }

void check_params(const SamplingRow& p, index_t b, index_t V) {
  const std::string row = row_name(b);
  ENGINE_CHECK(std::isfinite(p.temperature) && p.temperature >= 0.f,
               row + ": temperature must be finite and >= 0, got " + std::to_string(p.temperature));
  ENGINE_CHECK(p.top_k >= 0, row + ": top_k must be >= 0 (0 = off), got " + std::to_string(p.top_k));
  ENGINE_CHECK(p.top_p > 0.f && p.top_p <= 1.f, row + ": top_p must be in (0, 1], got " + std::to_string(p.top_p));
  ENGINE_CHECK(p.min_p >= 0.f && p.min_p <= 1.f, row + ": min_p must be in [0, 1], got " + std::to_string(p.min_p));
  ENGINE_CHECK(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.f,
               row + ": repetition_penalty must be finite and > 0, got " + std::to_string(p.repetition_penalty));
  ENGINE_CHECK(p.history_len >= 0 && (p.history_len == 0 || p.history), row + ": history is missing");
  for (index_t i = 0; i < p.history_len; ++i)
    ENGINE_CHECK(p.history[i] >= 0 && p.history[i] < V,
                 row + ": history id " + std::to_string(p.history[i]) + " at position " + std::to_string(i) +
                     " is outside the vocabulary [0, " + std::to_string(V) + ")");
}

// The row the filters see: the logits themselves, or a copy with the repetition penalty applied.
// Each penalised value comes from the original logit, so an id repeated in the history is
// penalised once (transformers gathers, then scatters).
const float* penalised_row(const float* x, index_t V, const SamplingRow& p) {
  if (p.repetition_penalty == 1.f || p.history_len == 0) return x;
  float* row = thread_scratch<float, kTagRow>(static_cast<std::size_t>(V));
  std::copy(x, x + V, row);
  const float pen = p.repetition_penalty;
  for (index_t i = 0; i < p.history_len; ++i) {
    const float v = x[p.history[i]];
    row[p.history[i]] = v < 0.f ? v * pen : v / pen;
  }
  return row;
}

// Draws from every token with its full weight (no filter): one pass stores the weights and
// their block sums, then the walk skips whole blocks.
index_t draw_unfiltered(const float* x, index_t V, float max, float inv_t, double u) {
  float* w = thread_scratch<float, kTagWeights>(static_cast<std::size_t>(V));
  double* blocks = thread_scratch<double, kTagBlocks>(static_cast<std::size_t>(V / sampling::kBlock + 1));
  const double total = sampling::weigh_row(w, blocks, x, V, max, inv_t);
  const double target = u * total;
  double cum = 0;
  index_t last = -1;
  for (index_t b0 = 0, blk = 0; b0 < V; b0 += sampling::kBlock, ++blk) {
    if (blocks[blk] == 0.0) continue;
    const index_t b1 = std::min(b0 + sampling::kBlock, V);
    if (cum + blocks[blk] <= target) {
      cum += blocks[blk];
      for (index_t i = b1 - 1; i >= b0; --i)
        if (w[i] > 0.f) { last = i; break; }
      continue;
    }
    for (index_t i = b0; i < b1; ++i) {
      if (w[i] == 0.f) continue;
      last = i;
      cum += w[i];
      if (cum > target) return i;
    }
  }
  return last;  // rounding left the target at the very end: the last token with weight
}

// Reorders c[0, n) so that c[0, r) is the top-p head: the smallest set of first tokens (in
// `before` order) whose weight reaches `need`; returns r (n when the whole set falls short).
// A quickselect by mass: expected linear time, no sort of the whole candidate set.
index_t top_p_head(Cand* c, index_t n, double need) {
  index_t lo = 0, hi = n;
  while (hi - lo > 16) {
    // Median of three (by position) as the pivot, moved to the front of the range.
    Cand* a = c + lo;
    Cand* m = c + lo + (hi - lo) / 2;
    Cand* z = c + hi - 1;
    Cand* piv = before(*a, *m) ? (before(*m, *z) ? m : (before(*a, *z) ? z : a))
                               : (before(*a, *z) ? a : (before(*m, *z) ? z : m));
    std::swap(c[lo], *piv);
    const Cand p = c[lo];
    Cand* mid = std::partition(c + lo + 1, c + hi, [&](const Cand& t) { return before(t, p); });
    // c[lo+1, mid) come before the pivot: put the pivot right after them.
    const index_t pos = (mid - c) - 1;
    std::swap(c[lo], c[pos]);
    double mass = 0;
    for (index_t i = lo; i < pos; ++i) mass += c[i].w;
    if (mass >= need) {
      hi = pos;
    } else if (mass + p.w >= need) {
      return pos + 1;
    } else {
      need -= mass + p.w;
      lo = pos + 1;
    }
  }
  std::sort(c + lo, c + hi, before);
  double cum = 0;
  for (index_t i = lo; i < hi; ++i) {
    cum += c[i].w;
    if (cum >= need) return i + 1;
  }
  return hi;
}

// The k-th largest logit (1 <= k < V). Sampling select: the r-th largest of a strided sample of
// kSample logits, r a few deviations above k's expected rank in it, is below the k-th largest
// with high probability, so one vector pass gathers a few times k tokens and nth_element finds
// the k-th among them. When the guess comes up short, the heap pass over the whole row.
float kth_largest_logit(const float* x, index_t V, index_t k) {
  constexpr index_t kSample = 1024;
  if (V > 4 * kSample && k * 16 < V) {
    float sample[kSample];
    const index_t stride = V / kSample;
    for (index_t i = 0; i < kSample; ++i) sample[i] = x[i * stride];
    const double expect = static_cast<double>(k) * kSample / V;
    const index_t r = std::min<index_t>(kSample, static_cast<index_t>(expect + 3.0 * std::sqrt(expect) + 4.0));
    std::nth_element(sample, sample + (r - 1), sample + kSample, std::greater<float>());
    Cand* c = thread_scratch<Cand, kTagSelect>(static_cast<std::size_t>(V));
    // s = (x - 0) * 1 = x: the gather in logit space.
    const index_t n = sampling::gather_above(c, x, V, 0.f, 1.f, sample[r - 1]);
    if (n >= k) {
      std::nth_element(c, c + (k - 1), c + n, [](const Cand& a, const Cand& b) { return a.s > b.s; });
      return c[k - 1].s;
    }
  }
  float* buf = thread_scratch<float, kTagWeights>(static_cast<std::size_t>(V));
  return sampling::kth_largest(x, V, k, buf);
}

// The kept tokens of a row after top-k, top-p and min-p, with their weights, in c[0, return).
index_t kept_set(Cand* c, const float* x, index_t V, float max, float inv_t, const SamplingRow& p) {
  const bool k_on = p.top_k > 0 && p.top_k < V;
  const bool p_on = p.top_p < 1.f;
  const float ln_min = p.min_p > 0.f ? std::log(p.min_p) : -kInf;
  index_t n = 0;
  double norm = 0;  // what top-p normalises over: the top-k set's weight, or the whole row's
  if (k_on) {
    // The top-k set is every token at or above the k-th largest logit (ties kept, as in
    // transformers' TopK); without top-p, min-p's cut may be the higher one to gather from.
    const float kth = (kth_largest_logit(x, V, p.top_k) - max) * inv_t;
    float th = std::max(kth, kMinScore);
    if (!p_on) th = std::max(th, ln_min);
    n = sampling::gather_above(c, x, V, max, inv_t, th);
    norm = sampling::weigh_cands(c, n);
  } else if (!p_on) {  // min-p alone: exactly its own cut
    n = sampling::gather_above(c, x, V, max, inv_t, std::max(ln_min, kMinScore));
    sampling::weigh_cands(c, n);
  } else {
    // Top-p (and maybe min-p): gather the tokens near the top; when they weigh less than top_p
    // of the row (a flat distribution), one histogram pass finds a threshold that holds enough.
    double* blocks = thread_scratch<double, kTagBlocks>(static_cast<std::size_t>(V / sampling::kBlock + 1));
    norm = sampling::weigh_row(nullptr, blocks, x, V, max, inv_t);
    const double need = static_cast<double>(p.top_p) * norm;
    float th = std::max(kFirstThreshold, ln_min);
    n = sampling::gather_above(c, x, V, max, inv_t, th);
    if (sampling::weigh_cands(c, n) < need && th > ln_min) {
      // One bucket lower than the histogram says: its sums and ours round differently.
      th = sampling::threshold_for_weight(x, V, max, inv_t, need) - 1.f / sampling::kBucketsPerUnit;
      th = std::max({th, ln_min, kMinScore});
      n = sampling::gather_above(c, x, V, max, inv_t, th);
      sampling::weigh_cands(c, n);
    }
  }
  if (p_on) n = top_p_head(c, n, static_cast<double>(p.top_p) * norm);
  if (p.min_p > 0.f) n = std::partition(c, c + n, [&](const Cand& t) { return t.s >= ln_min; }) - c;
  return n;
}

index_t draw_kept(const Cand* c, index_t n, double u) {
  double total = 0;
  for (index_t i = 0; i < n; ++i) total += c[i].w;
  const double target = u * total;
  double cum = 0;
  for (index_t i = 0; i < n; ++i) {
    cum += c[i].w;
    if (cum > target) return c[i].id;
  }
  return c[n - 1].id;
}

bool filtered(const SamplingRow& p, index_t V) {
  return (p.top_k > 0 && p.top_k < V) || p.top_p < 1.f || p.min_p > 0.f;
}

// One row: the token, or an error message (rows may run on pool threads, which must not throw).
index_t sample_row(const float* x0, index_t V, const SamplingRow& p, std::uint64_t& state, index_t b,
                   std::string& err) {
  const float* x = penalised_row(x0, V, p);
  const sampling::RowScan scan = sampling::scan_row(x, V);
  if (scan.bad >= 0) {
    err = row_name(b) + ": logit " + (std::isnan(x[scan.bad]) ? "NaN" : "+inf") + " at token " +
          std::to_string(scan.bad) + (x != x0 ? " (after the repetition penalty)" : "");
    return -1;
  }
  if (scan.max == -kInf) {
    err = row_name(b) + ": every logit is -inf, nothing to sample";
    return -1;
  }
  const double u = uniform01(state);  // drawn on every row, greedy too: one step per call
  const float inv_t = p.temperature > 0.f ? 1.f / p.temperature : kInf;
  if (!std::isfinite(inv_t)) return scan.argmax;  // greedy (or a temperature too small to invert)
  if (!filtered(p, V)) return draw_unfiltered(x, V, scan.max, inv_t, u);
  Cand* c = thread_scratch<Cand, kTagCand>(static_cast<std::size_t>(V));
  const index_t n = kept_set(c, x, V, scan.max, inv_t, p);
  return draw_kept(c, n, u);
}

// Rows per task when B is large enough to split over the pool: a row is tens of microseconds.
constexpr index_t kRowsPerTask = 4;

}  // namespace

void sample_tokens(std::int32_t* out, std::uint64_t* rng, const float* logits, index_t ld, index_t B, index_t V,
                   const SamplingRow* rows) {
  ENGINE_CHECK(B >= 0 && V > 0, "sample: need at least one vocabulary entry, got V=" + std::to_string(V));
  ENGINE_CHECK(V <= std::numeric_limits<std::int32_t>::max(), "sample: vocabulary too large for int32 ids");
  ENGINE_CHECK(B <= 1 || ld >= V, "sample: row stride " + std::to_string(ld) + " < vocabulary " + std::to_string(V));
  for (index_t b = 0; b < B; ++b) check_params(rows[b], b, V);
  // States advance in a copy, committed only when every row succeeded.
  std::vector<std::uint64_t> state(rng, rng + B);
  std::vector<std::int32_t> tok(static_cast<std::size_t>(B));
  std::vector<std::string> err(static_cast<std::size_t>(B));
  auto run = [&](std::int64_t b0, std::int64_t b1) {
    for (index_t b = b0; b < b1; ++b) {
      try {  // nothing may escape a pool thread (scratch allocation can throw)
        tok[b] = static_cast<std::int32_t>(sample_row(logits + b * ld, V, rows[b], state[b], b, err[b]));
      } catch (const std::exception& e) {
        err[b] = row_name(b) + ": " + e.what();
      }
    }
  };
  if (B >= 2 * kRowsPerTask)
    parallel_for(B, kRowsPerTask, run);
  else
    run(0, B);
  for (index_t b = 0; b < B; ++b) ENGINE_CHECK(err[b].empty(), err[b]);
  std::copy(tok.begin(), tok.end(), out);
  std::copy(state.begin(), state.end(), rng);
}

// The kept set of one row with its renormalised probabilities, in id order (for tests: the
// same filter code the draw uses; the unfiltered case keeps every token with a weight).
index_t sample_support(std::int32_t* ids, double* probs, const float* x0, index_t V, const SamplingRow& p) {
  check_params(p, 0, V);
  const float* x = penalised_row(x0, V, p);
  const sampling::RowScan scan = sampling::scan_row(x, V);
  ENGINE_CHECK(scan.bad < 0 && scan.max != -kInf, "sample_support: logits hold NaN/+inf or are all -inf");
  const float inv_t = p.temperature > 0.f ? 1.f / p.temperature : kInf;
  if (!std::isfinite(inv_t)) {
    ids[0] = static_cast<std::int32_t>(scan.argmax);
    probs[0] = 1.0;
    return 1;
  }
  Cand* c = thread_scratch<Cand, kTagCand>(static_cast<std::size_t>(V));
  index_t n;
  if (filtered(p, V)) {
    n = kept_set(c, x, V, scan.max, inv_t, p);
  } else {
    n = sampling::gather_above(c, x, V, scan.max, inv_t, kMinScore);
    sampling::weigh_cands(c, n);
  }
  std::sort(c, c + n, [](const Cand& a, const Cand& b) { return a.id < b.id; });
  double total = 0;
  for (index_t i = 0; i < n; ++i) total += c[i].w;
  for (index_t i = 0; i < n; ++i) {
    ids[i] = c[i].id;
    probs[i] = c[i].w / total;
  }
  return n;
}

}  // namespace engine
