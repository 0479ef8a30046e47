// Scaled dot-product attention (ONNX Attention, opset 23-25 semantics) and rotary position
// embedding (ONNX RotaryEmbedding, opset 23).
//
// attention() works per (batch, query head, block of query rows): S = scale·Q·Kᵀ, softcap,
// bias (attn_mask, causal and sliding-window frontiers, padding), softmax, S·V. The block
// (Attention::block in attention.cpp) materialises the scores of the keys its rows may attend;
// for float without a qk output the tiled online-softmax kernel (cpu/attention_flash.h) runs
// instead from 16 query rows on, and below that, in inference, the decode kernel
// (cpu/attention_decode.h: the query heads sharing a kv head together, long caches split over
// threads) (set_attention_kernel).
// Compute type = element type: float (float16 callers convert to float first) or double.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {

struct AttentionDims {
  index_t batch = 0, q_heads = 0, kv_heads = 0;  // q_heads % kv_heads == 0 (grouped-query)
  index_t q_len = 0, kv_len = 0;                 // kv_len counts past and new keys
  index_t head_dim = 0, v_head_dim = 0;
};

// Element (b, h, row, col) of a per-head matrix at data + b·sb + h·sh + row·sr + col: covers
// (batch, heads, seq, dim) tensors and (batch, seq, heads·dim) ones alike.
template <class T>
struct HeadView {
  T* data = nullptr;
  index_t sb = 0, sh = 0, sr = 0;
  T* row(index_t b, index_t h, index_t r) const { return data + b * sb + h * sh + r * sr; }
};

// attn_mask broadcast to (batch, q_heads, q_len, len): element strides, 0 on broadcast dims.
// Keys from `len` on are masked out (ONNX pads a short mask with -inf / false).
struct AttentionMask {
  const void* data = nullptr;  // null: no mask
  bool boolean = false;        // true: bool (true = attend); false: additive, the compute type
  index_t len = 0;
  index_t sb = 0, sh = 0, sq = 0;
};

// Attention dropout (training): probability (b, h, i, j) is kept, times 1/(1 − rate), when a
// counter-based hash of (seed, step, b·q_heads + h, i, j) clears the rate (cpu/attention_dropout.h),
// so the backward draws the same mask again instead of storing it. rate 0: none.
struct AttentionDropout {
  double rate = 0.0;  // [0, 1)
  std::uint64_t seed = 0, step = 0;
};

struct AttentionOptions {
  double scale = 1.0;          // applied to Q·Kᵀ
  double softcap = 0.0;        // > 0: s = softcap·tanh(s / softcap), before the bias
  bool causal = false;         // query i attends key j iff j <= i + offset
  index_t left_window = -1;    // >= 0: key j >= i + offset - left_window
  index_t right_window = -1;   // >= 0: key j <= i + offset + right_window
  index_t past_len = 0;        // the offset with an internal cache
  // Per batch: keys [0, n) are valid and the offset is n - q_len (an external cache); null: none.
  const std::int64_t* nonpad_kv_seqlen = nullptr;
  int qk_mode = 0;             // what `qk` receives: 0 scaled Q·Kᵀ, 1 + softcap, 2 + bias, 3 softmax
  // Training (float, no qk output; the flash kernel runs): per (b, q head, row) the log-sum-exp
  // of the row's biased scores at lse[(b·q_heads + h)·q_len + i] (+inf for a row with no key),
  // what attention_backward() recomputes the probabilities from; and attention dropout.
  float* lse = nullptr;
  AttentionDropout dropout;
};

// y (q rows of v_head_dim) per (b, q head); qk (kv_len columns; data null: not wanted).
// A query row with no key to attend gives zeros (in y and in mode-3 qk).
template <class T>
void attention(HeadView<T> y, HeadView<T> qk, HeadView<const T> q, HeadView<const T> k, HeadView<const T> v,
               const AttentionDims& dims, const AttentionMask& mask, const AttentionOptions& opt);

// The backward of attention() in float32 (training): dq, dk, dv (overwritten) from q, k, v, the
// forward's output o, its gradient dout and the forward's lse, with the forward's mask and options
// (dropout included; no softcap). Flash-attention-2 structure (cpu/attention_grad.h): the
// probabilities are recomputed per query tile and key block from lse, never stored whole; work is
// split over (batch, kv head) and, when those are fewer than the threads, over key ranges.
void attention_backward(HeadView<float> dq, HeadView<float> dk, HeadView<float> dv, HeadView<const float> q,
                        HeadView<const float> k, HeadView<const float> v, HeadView<const float> o,
                        HeadView<const float> dout, const float* lse, const AttentionDims& dims,
                        const AttentionMask& mask, const AttentionOptions& opt);

// The multipliers attention dropout applies: out (batch, q_heads, q_len, kv_len), each 0 or
// 1/(1 − rate). For tests: the mask the kernels draw, without running them.
void attention_dropout_mask(float* out, const AttentionDims& dims, const AttentionDropout& drop);

// Which block kernel attention() uses for float when the scores are not an output: Auto (the
// tiled online-softmax "flash" kernel from 16 query rows on and in training; the decode kernel
// below 16 rows in inference), Block (always materialised: S for all keys,
// softmax, S·V) or Flash (always flash). Process-wide; for tests and benchmarks.
enum class AttentionKernel { Auto = 0, Block = 1, Flash = 2 };
void set_attention_kernel(AttentionKernel k);
AttentionKernel attention_kernel();

// Rotary embedding of rows of head_dim elements: row (b, s, h) at x.row(b, h, s). The first
// `rot_dim` elements rotate by the angle of position pos[b·seq + s] (or s's own cache row when
// pos is null: cos/sin rows b·seq + s), pairs (k, k + rot_dim/2), or (2k, 2k+1) if interleaved.
// cos/sin: rows of rot_dim/2. Float32; float16 through T = std::uint16_t. y may equal x.
struct RotaryDims {
  index_t batch = 0, seq = 0, heads = 0, head_dim = 0, rot_dim = 0;
  bool interleaved = false;
};
template <class T>
void rotary_embedding(HeadView<T> y, HeadView<const T> x, const T* cos, const T* sin, const std::int64_t* pos,
                      const RotaryDims& dims);

}  // namespace engine
