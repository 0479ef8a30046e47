// Recurrent layers with ONNX LSTM / GRU / RNN semantics, float32, one direction per call
// (a bidirectional layer is two calls writing the two halves of its outputs).
//
// The caller computes the input projection X·Wᵀ for every time step first (one GEMM over
// all steps and directions); rnn_run then runs the time loop: per step one recurrent GEMM
// h·Rᵀ (R pre-packed once, or Rᵀ read in place) and one fused pass over the gates (biases,
// peepholes, clip, activations, state update). Weights are in ONNX gate order (LSTM i,o,f,c;
// GRU z,r,h); other frameworks' layers map onto it by permuting weights at import.
#pragma once

#include <cstdint>

#include "engine/common.h"
#include "engine/gemm.h"

namespace engine {

enum class RnnCell : int { Rnn = 0, Gru = 1, Lstm = 2 };

inline int rnn_gates(RnnCell c) { return c == RnnCell::Lstm ? 4 : c == RnnCell::Gru ? 3 : 1; }

// The ONNX recurrent activation functions (alpha/beta as in the ONNX RNN docs).
enum class RnnAct : int {
  Sigmoid = 0,
  Tanh,
  Relu,
  HardSigmoid,      // min(max(alpha·x + beta, 0), 1)
  Affine,           // alpha·x + beta
  LeakyRelu,        // x >= 0 ? x : alpha·x
  ThresholdedRelu,  // x >= alpha ? x : 0
  ScaledTanh,       // alpha·tanh(beta·x)
  Elu,              // x >= 0 ? x : alpha·(exp(x) - 1)
  Softsign,         // x / (1 + |x|)
  Softplus,         // log(1 + exp(x))
};
constexpr int kRnnActCount = 11;

struct RnnActivation {
  RnnAct act = RnnAct::Sigmoid;
  float alpha = 0.f, beta = 0.f;
};

// y[i] = act(x[i]) for n floats, y may equal x.
void rnn_activation(float* y, const float* x, index_t n, const RnnActivation& a);

struct RnnConfig {
  RnnCell cell = RnnCell::Lstm;
  index_t seq_len = 0, batch = 0, hidden = 0;
  bool reverse = false;
  float clip = 0.f;                  // > 0: every gate pre-activation is clipped to ±clip
  bool input_forget = false;         // LSTM: f = 1 - i
  bool linear_before_reset = false;  // GRU: h gate uses r ⊙ (h·Rhᵀ + Rbh)
  RnnActivation f, g, h;             // LSTM f, g, h; GRU f, g; RNN f
  // Keras step masks (RnnIO::mask): a masked step keeps the state; its Y row is the previous
  // step's output (zeros before the first unmasked step), or zeros with zero_output_for_mask.
  bool masked = false;
  bool zero_output_for_mask = false;
};

// One direction's data. Strides are in floats; optional pointers may be null.
struct RnnIO {
  // X·Wᵀ of time step t, batch row b: xw + t·xw_t + b·xw_b, G·H gate values, no bias.
  const float* xw = nullptr;
  index_t xw_t = 0, xw_b = 0;
  const float* wb = nullptr;  // G·H input biases (null: none)
  const float* rb = nullptr;  // G·H recurrent biases (null: none)
  const float* p = nullptr;   // LSTM peepholes, 3·H (i, o, f); null: none
  // States: initial h/c and final Y_h/Y_c, row b at ptr + b·state_b (H floats).
  const float* h0 = nullptr;
  const float* c0 = nullptr;
  float* y_h = nullptr;
  float* y_c = nullptr;
  index_t state_b = 0;
  // Y of step t, batch row b at y + t·y_t + b·y_b (H floats); zero past a row's length.
  float* y = nullptr;
  index_t y_t = 0, y_b = 0;
  const std::int32_t* seq_lens = nullptr;  // per batch row, each in [0, seq_len]; null: all seq_len
  // Per (batch row, time step) flags, row b's step t at mask[b·seq_len + t] (Keras's (batch,
  // time) layout whatever the layout of X); 0 skips the step (RnnConfig::masked must be set).
  const bool* mask = nullptr;
};

// The recurrence weights of one direction: Rᵀ (H × G·H, row-major) and, optionally, the same
// pre-packed for sgemm_packed (for a GRU without linear_before_reset: only the z and r
// columns, H × 2H, since the h gate's product needs r first).
struct RnnRecurrence {
  const float* rt = nullptr;
  const PackedMatrixB* packed = nullptr;
};

// Floats of workspace rnn_run needs.
index_t rnn_workspace_floats(const RnnConfig& cfg);

// Runs the time loop. seq_lens must already be checked (0 <= len <= seq_len).
void rnn_run(const RnnConfig& cfg, const RnnIO& io, const RnnRecurrence& r, float* workspace);

// dst (cols × rows) = srcᵀ (src rows × cols, row-major).
void rnn_transpose(float* dst, const float* src, index_t rows, index_t cols);

}  // namespace engine
