// A decoder-only transformer (Llama family, GPT-2) run one batched step at a time: every new
// token of every sequence in a step goes through each weight matrix in one quant_matmul call,
// attention reads each sequence's keys and values from a pool of fixed-size cache blocks
// (lm_kv_cache.h). The decoder holds pointers to the weights (the caller keeps them alive) and,
// where the CPU has AVX-512 VNNI, its own repacked copy of the quantized matrices (QuantPacked:
// the blocks are then read only for embedding rows), and reuses its activations between steps.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/lm_attention.h"
#include "cpu/lm_kv_cache.h"
#include "engine/common.h"
#include "engine/quant.h"

namespace engine {

struct LmSpec {
  index_t vocab = 0, hidden = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, intermediate = 0;
  bool rms_norm = true;        // else LayerNorm (with a bias)
  double norm_eps = 1e-5;
  bool swiglu = true;          // else GELU (tanh) of up + b_up
  bool rope = true;            // else learned positions (pos_embeddings)
  index_t positions = 0;       // rows of pos_embeddings (learned)
  double rope_theta = 10000.0;
  index_t rope_dim = 0;        // rotated dims per head (even, <= head_dim)
  bool rope_interleaved = false;  // pairs (2i, 2i+1), else halves (i, i + rope_dim/2)
};

// One weight matrix: `rows` outputs of `cols` inputs, ggml row layout of `type`; `packed`, when
// the decoder has repacked it for the VNNI kernels (engine/quant.h QuantPacked), the same weights.
struct LmMatrix {
  const void* data = nullptr;
  QuantType type = QuantType::F32;
  index_t rows = 0, cols = 0;
  const QuantPacked* packed = nullptr;
};

// Null pointers: absent (no bias; separate Q/K/V when wqkv.data is null, and the reverse).
struct LmLayer {
  const float *attn_norm = nullptr, *attn_norm_bias = nullptr;
  LmMatrix wqkv, wq, wk, wv, wo;
  const float *bqkv = nullptr, *bq = nullptr, *bk = nullptr, *bv = nullptr, *bo = nullptr;
  const float *ffn_norm = nullptr, *ffn_norm_bias = nullptr;
  LmMatrix w_gate, w_up, w_down;
  const float *b_up = nullptr, *b_down = nullptr;
};

struct LmWeights {
  LmMatrix tok_embeddings, output;  // output.data null: tied to tok_embeddings
  const float* pos_embeddings = nullptr;
  std::vector<LmLayer> layers;
  const float *norm = nullptr, *norm_bias = nullptr;
};

class LmDecoder {
 public:
  LmDecoder(const LmSpec& spec, LmWeights weights, index_t max_sequences, index_t max_context,
            index_t block_tokens, index_t blocks);

  index_t open();
  void close(index_t seq);
  index_t length(index_t seq);
  void truncate(index_t seq, index_t length);
  index_t blocks_in_use();
  index_t blocks_total() const { return cache_.blocks(); }
  index_t vocab() const { return s_.vocab; }

  // Appends counts[b] tokens (consecutive in `tokens`) to sequence seqs[b] for b < B and writes
  // logits: the last new row of each sequence (B rows) or, with all_logits, every new row.
  // Checks everything first: on a bad call nothing changes.
  void forward(const std::int64_t* seqs, const std::int64_t* counts, index_t B, const std::int64_t* tokens,
               bool all_logits, float* logits);
  // Rows of logits forward() writes for these counts.
  static index_t logit_rows(const std::int64_t* counts, index_t B, bool all_logits);

 private:
  void check_step(const std::int64_t* seqs, const std::int64_t* counts, index_t B, const std::int64_t* tokens);
  void reserve(index_t rows);
  void embed(const std::int64_t* tokens);
  void layer(index_t i);
  void pack_weights();

  LmSpec s_;
  LmWeights w_;
  std::vector<std::unique_ptr<QuantPacked>> packed_;
  // Per layer, where the packed kernels run: Q|K|V and gate|up packed as one matrix each (null
  // when the layer's matrices cannot be: mixed types, a fused wqkv already, GELU MLP).
  struct FusedLayer {
    const QuantPacked* qkv = nullptr;
    const QuantPacked* gate_up = nullptr;
  };
  std::vector<FusedLayer> fused_;
  index_t max_context_;
  KvCache cache_;
  std::mutex mu_;
  // The step being run (rows of all sequences, each sequence's rows consecutive).
  index_t T_ = 0, B_ = 0;
  std::vector<index_t> row_pos_;
  std::vector<LmAttentionBatch> batch_;
  LmAttentionScratch attention_;
  std::vector<double> inv_freq_;
  std::vector<float> rope_cs_;  // the step rows' rotations (lm_rope_angles)
  std::vector<char> seen_;
  // Activations, sized for the most rows seen: residual x, normed h, q|k|v, attention output,
  // FFN gate / up (gate_ holds gate|up rows, 2F wide, when they are fused).
  index_t cap_rows_ = 0;
  std::vector<float> x_, h_, qkv_, att_, gate_, up_;
};

}  // namespace engine
