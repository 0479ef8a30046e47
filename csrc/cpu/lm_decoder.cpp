// The decoder step (lm_decoder.h): embeddings, then per layer norm -> Q/K/V -> RoPE -> cache
// write -> attention -> output projection into the residual -> norm -> MLP into the residual,
// then the final norm and the output projection of the rows whose logits are asked for.
#include "cpu/lm_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif
#include <string>

#include "cpu/lm_attention.h"
#include "cpu/lm_rows.h"
#include "engine/norm.h"
#include "engine/threadpool.h"

namespace engine {

namespace {

void matmul(const float* x, index_t ldx, index_t M, const LmMatrix& w, float* y, index_t ldy, bool accumulate) {
  if (w.packed)
    quant_matmul_packed(x, ldx, M, *w.packed, w.data, y, ldy, accumulate);
  else
    quant_matmul(x, ldx, M, w.cols, w.data, w.type, w.rows, y, ldy, accumulate);
}

std::string str(index_t v) { return std::to_string(v); }

// Tells the kernel the pages wholly inside [p, p + bytes) may be reclaimed: the decoder reads
// packed copies now, so a memory-mapped file's blocks (touched once to pack them) need not stay
// resident. MADV_PAGEOUT never changes contents (clean file pages are dropped and read again on
// use, as embedding rows are; anonymous pages would go to swap, or stay), unlike MADV_DONTNEED.
void release_pages(const void* p, index_t bytes) {
#if defined(__linux__) && defined(MADV_PAGEOUT)
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto a = reinterpret_cast<std::uintptr_t>(p), b = a + static_cast<std::uintptr_t>(bytes);
  const std::uintptr_t lo = (a + page - 1) / page * page, hi = b / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_PAGEOUT);  // a hint: errors ignored
#else
  (void)p, (void)bytes;
#endif
}

}  // namespace

LmDecoder::LmDecoder(const LmSpec& spec, LmWeights weights, index_t max_sequences, index_t max_context,
                     index_t block_tokens, index_t blocks)
    : s_(spec), w_(std::move(weights)), max_context_(max_context),
      cache_(spec.n_layers, spec.n_kv_heads * spec.head_dim, block_tokens, blocks, max_sequences) {
  ENGINE_CHECK(s_.n_heads > 0 && s_.n_kv_heads > 0 && s_.n_heads % s_.n_kv_heads == 0,
               "decoder: n_heads (" + str(s_.n_heads) + ") must be a positive multiple of n_kv_heads (" +
                   str(s_.n_kv_heads) + ")");
  ENGINE_CHECK(static_cast<index_t>(w_.layers.size()) == s_.n_layers, "decoder: weights for " +
                   str(w_.layers.size()) + " layers, the spec has " + str(s_.n_layers));
  ENGINE_CHECK(max_context > 0, "decoder: max_context must be positive");
  ENGINE_CHECK(s_.rope || max_context <= s_.positions,
               "decoder: max_context " + str(max_context) + " exceeds the " + str(s_.positions) + " learned positions");
  ENGINE_CHECK(!s_.rope || (s_.rope_dim > 0 && s_.rope_dim % 2 == 0 && s_.rope_dim <= s_.head_dim),
               "decoder: rope_dim " + str(s_.rope_dim) + " must be even and in (0, head_dim]");
  for (index_t i = 0; i < s_.rope_dim / 2; ++i)
    inv_freq_.push_back(std::pow(s_.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(s_.rope_dim)));
  seen_.resize(max_sequences);
  if (!w_.output.data) w_.output = w_.tok_embeddings;  // tied: the same blocks, packed apart
  pack_weights();
}

// Repacks every quantized matrix the steps multiply by when the packed kernels run here (on
// other CPUs, or under a lower ISA cap later, the blocks' kernels read the file's blocks), a
// layer's Q, K, V and its gate, up as one matrix each where they share a type.
void LmDecoder::pack_weights() {
  fused_.resize(w_.layers.size());
  if (!quant_packed_active()) return;
  struct Job {
    std::vector<const LmMatrix*> parts;
    const QuantPacked** out;
  };
  std::vector<Job> jobs;
  auto packable = [](std::initializer_list<const LmMatrix*> ms) {
    for (const LmMatrix* m : ms)
      if (!m->data || !QuantPacked::supports(m->type) || m->type != (*ms.begin())->type ||
          m->cols != (*ms.begin())->cols)
        return false;
    return true;
  };
  for (std::size_t i = 0; i < w_.layers.size(); ++i) {
    LmLayer& L = w_.layers[i];
    FusedLayer& f = fused_[i];
    if (!L.wqkv.data && packable({&L.wq, &L.wk, &L.wv}))
      jobs.push_back({{&L.wq, &L.wk, &L.wv}, &f.qkv});
    else
      for (LmMatrix* m : {&L.wqkv, &L.wq, &L.wk, &L.wv})
        if (packable({m})) jobs.push_back({{m}, &m->packed});
    if (s_.swiglu && packable({&L.w_gate, &L.w_up}))
      jobs.push_back({{&L.w_gate, &L.w_up}, &f.gate_up});
    else
      for (LmMatrix* m : {&L.w_gate, &L.w_up})
        if (packable({m})) jobs.push_back({{m}, &m->packed});
    for (LmMatrix* m : {&L.wo, &L.w_down})
      if (packable({m})) jobs.push_back({{m}, &m->packed});
  }
  if (packable({&w_.output})) jobs.push_back({{&w_.output}, &w_.output.packed});
  packed_.resize(jobs.size());
  parallel_tasks(static_cast<std::int64_t>(jobs.size()), [&](std::int64_t j) {
    std::vector<QuantPacked::Part> parts;
    for (const LmMatrix* m : jobs[j].parts) parts.push_back({m->data, m->rows});
    packed_[j] = std::make_unique<QuantPacked>(parts, jobs[j].parts[0]->type, jobs[j].parts[0]->cols);
  });
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    *jobs[j].out = packed_[j].get();
    for (const LmMatrix* m : jobs[j].parts) release_pages(m->data, m->rows * quant_row_bytes(m->type, m->cols));
  }
}

index_t LmDecoder::open() {
  std::lock_guard<std::mutex> lock(mu_);
  return cache_.open();
}

void LmDecoder::close(index_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  cache_.close(seq);
}

index_t LmDecoder::length(index_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  ENGINE_CHECK(cache_.is_open(seq), "decoder: sequence " + str(seq) + " is not open");
  return cache_.length(seq);
}

void LmDecoder::truncate(index_t seq, index_t length) {
  std::lock_guard<std::mutex> lock(mu_);
  ENGINE_CHECK(cache_.is_open(seq), "decoder: sequence " + str(seq) + " is not open");
  ENGINE_CHECK(length >= 0 && length <= cache_.length(seq), "decoder: cannot truncate sequence " + str(seq) +
                   " of length " + str(cache_.length(seq)) + " to " + str(length));
  cache_.truncate(seq, length);
}

index_t LmDecoder::blocks_in_use() {
  std::lock_guard<std::mutex> lock(mu_);
  return cache_.blocks() - cache_.free_blocks();
}

index_t LmDecoder::logit_rows(const std::int64_t* counts, index_t B, bool all_logits) {
  if (!all_logits) return B;
  index_t T = 0;
  for (index_t b = 0; b < B; ++b) T += counts[b];
  return T;
}

void LmDecoder::check_step(const std::int64_t* seqs, const std::int64_t* counts, index_t B,
                           const std::int64_t* tokens) {
  ENGINE_CHECK(B > 0, "decoder.forward: no sequences");
  std::fill(seen_.begin(), seen_.end(), 0);
  index_t need = 0, t = 0;
  for (index_t b = 0; b < B; ++b) {
    const index_t seq = seqs[b];
    ENGINE_CHECK(cache_.is_open(seq), "decoder.forward: sequence " + str(seq) + " is not open");
    ENGINE_CHECK(!seen_[seq], "decoder.forward: sequence " + str(seq) + " appears twice in one step");
    seen_[seq] = 1;
    ENGINE_CHECK(counts[b] > 0, "decoder.forward: no tokens for sequence " + str(seq));
    const index_t len = cache_.length(seq) + counts[b];
    ENGINE_CHECK(len <= max_context_, "decoder.forward: sequence " + str(seq) + " would hold " + str(len) +
                                          " tokens, over max_context " + str(max_context_));
    for (index_t i = 0; i < counts[b]; ++i, ++t)
      ENGINE_CHECK(tokens[t] >= 0 && tokens[t] < s_.vocab, "decoder.forward: token id " + str(tokens[t]) +
                                                               " out of range [0, " + str(s_.vocab) + ")");
    need += cache_.blocks_needed(seq, len);
  }
  ENGINE_CHECK(need <= cache_.free_blocks(), "decoder.forward: the KV cache pool is exhausted (the step needs " +
                                                 str(need) + " more blocks, " + str(cache_.free_blocks()) + " free)");
}

void LmDecoder::reserve(index_t rows) {
  if (rows <= cap_rows_) return;
  const index_t D = s_.hidden, hd = s_.head_dim, F = s_.intermediate;
  x_.resize(rows * D), h_.resize(rows * D);
  qkv_.resize(rows * (s_.n_heads + 2 * s_.n_kv_heads) * hd);
  att_.resize(rows * s_.n_heads * hd);
  gate_.resize(s_.swiglu ? rows * 2 * F : 0), up_.resize(rows * F);
  row_pos_.resize(rows);
  rope_cs_.resize(rows * s_.rope_dim);
  cap_rows_ = rows;
}

void LmDecoder::forward(const std::int64_t* seqs, const std::int64_t* counts, index_t B, const std::int64_t* tokens,
                        bool all_logits, float* logits) {
  std::lock_guard<std::mutex> lock(mu_);
  check_step(seqs, counts, B, tokens);
  index_t T = 0;
  for (index_t b = 0; b < B; ++b) T += counts[b];
  reserve(T);
  batch_.resize(B);
  for (index_t b = 0, r = 0; b < B; r += counts[b], ++b) {
    const index_t pos0 = cache_.length(seqs[b]);
    batch_[b] = {seqs[b], r, counts[b], pos0};
    for (index_t i = 0; i < counts[b]; ++i) row_pos_[r + i] = pos0 + i;
  }
  T_ = T;
  if (s_.rope) lm_rope_angles(rope_cs_.data(), T, row_pos_.data(), s_.rope_dim, inv_freq_.data());
  for (index_t b = 0; b < B; ++b) cache_.grow(seqs[b], batch_[b].pos0 + counts[b]);
  try {
    embed(tokens);
    for (index_t i = 0; i < s_.n_layers; ++i) layer(i);
    const index_t D = s_.hidden, R = all_logits ? T : B;
    const NormMode mode = s_.rms_norm ? NormMode::Rms : NormMode::Layer;
    if (all_logits) {
      normalize_rows<float>(h_.data(), nullptr, nullptr, x_.data(), w_.norm, w_.norm_bias, T, 1, D, 1, s_.norm_eps, mode);
    } else {
      for (index_t b = 0; b < B; ++b) {
        const index_t last = batch_[b].row0 + batch_[b].rows - 1;
        normalize_rows<float>(h_.data() + b * D, nullptr, nullptr, x_.data() + last * D, w_.norm, w_.norm_bias, 1, 1,
                              D, 1, s_.norm_eps, mode);
      }
    }
    matmul(h_.data(), D, R, w_.output, logits, s_.vocab, false);
  } catch (...) {  // (the checks above make this unreachable short of a kernel fault)
    for (index_t b = 0; b < B; ++b) cache_.truncate(seqs[b], batch_[b].pos0);
    throw;
  }
}

void LmDecoder::embed(const std::int64_t* tokens) {
  const index_t D = s_.hidden;
  const LmMatrix& e = w_.tok_embeddings;
  for (index_t t = 0; t < T_; ++t) {
    float* xr = x_.data() + t * D;
    quant_dequantize_rows(e.data, e.type, D, tokens[t], tokens[t] + 1, xr);
    if (!s_.rope) {
      const float* p = w_.pos_embeddings + row_pos_[t] * D;
      for (index_t c = 0; c < D; ++c) xr[c] += p[c];
    }
  }
}

void LmDecoder::layer(index_t i) {
  const LmLayer& L = w_.layers[i];
  const index_t T = T_, D = s_.hidden, hd = s_.head_dim, H = s_.n_heads, KV = s_.n_kv_heads, F = s_.intermediate;
  const index_t QW = (H + 2 * KV) * hd, kv = KV * hd;
  const NormMode mode = s_.rms_norm ? NormMode::Rms : NormMode::Layer;
  float *x = x_.data(), *h = h_.data(), *qkv = qkv_.data();

  normalize_rows<float>(h, nullptr, nullptr, x, L.attn_norm, L.attn_norm_bias, T, 1, D, 1, s_.norm_eps, mode);
  // The fused matrices only where the packed kernels run now (engine.set_isa can lower the cap).
  const FusedLayer fused = quant_packed_active() ? fused_[i] : FusedLayer{};
  if (L.wqkv.data) {
    matmul(h, D, T, L.wqkv, qkv, QW, false);
    lm_add_bias(qkv, QW, T, L.bqkv, QW);
  } else {
    if (fused.qkv) {
      quant_matmul_packed(h, D, T, *fused.qkv, nullptr, qkv, QW, false);
    } else {
      matmul(h, D, T, L.wq, qkv, QW, false);
      matmul(h, D, T, L.wk, qkv + H * hd, QW, false);
      matmul(h, D, T, L.wv, qkv + (H * hd + kv), QW, false);
    }
    lm_add_bias(qkv, QW, T, L.bq, H * hd);
    lm_add_bias(qkv + H * hd, QW, T, L.bk, kv);
    lm_add_bias(qkv + H * hd + kv, QW, T, L.bv, kv);
  }
  if (s_.rope) {
    lm_rope(qkv, QW, T, H, hd, s_.rope_dim, s_.rope_interleaved, rope_cs_.data());
    lm_rope(qkv + H * hd, QW, T, KV, hd, s_.rope_dim, s_.rope_interleaved, rope_cs_.data());
  }
  const index_t bt = cache_.block_tokens();
  for (const LmAttentionBatch& b : batch_)
    for (index_t r = 0; r < b.rows; ++r) {
      const index_t pos = b.pos0 + r, blk = pos / bt, off = pos % bt;
      const float* src = qkv + (b.row0 + r) * QW + H * hd;
      std::memcpy(cache_.keys(b.seq, i, blk) + off * kv, src, kv * sizeof(float));
      std::memcpy(cache_.values(b.seq, i, blk) + off * kv, src + kv, kv * sizeof(float));
    }
  lm_attention(cache_, i, qkv, QW, att_.data(), H * hd, H, KV, hd, batch_.data(), static_cast<index_t>(batch_.size()),
               attention_);
  matmul(att_.data(), H * hd, T, L.wo, x, D, true);
  lm_add_bias(x, D, T, L.bo, D);

  normalize_rows<float>(h, nullptr, nullptr, x, L.ffn_norm, L.ffn_norm_bias, T, 1, D, 1, s_.norm_eps, mode);
  float* act = up_.data();
  index_t ld_act = F;
  if (fused.gate_up) {  // gate_ rows: gate | up
    quant_matmul_packed(h, D, T, *fused.gate_up, nullptr, gate_.data(), 2 * F, false);
    lm_silu_mul(gate_.data(), gate_.data() + F, 2 * F, T, F);
    act = gate_.data(), ld_act = 2 * F;
  } else if (s_.swiglu) {
    matmul(h, D, T, L.w_gate, gate_.data(), F, false);
    matmul(h, D, T, L.w_up, up_.data(), F, false);
    lm_silu_mul(gate_.data(), up_.data(), F, T, F);
    act = gate_.data();
  } else {
    matmul(h, D, T, L.w_up, up_.data(), F, false);
    lm_add_bias(up_.data(), F, T, L.b_up, F);
    lm_gelu_tanh(up_.data(), F, T, F);
  }
  matmul(act, ld_act, T, L.w_down, x, D, true);
  lm_add_bias(x, D, T, L.b_down, D);
}

}  // namespace engine
