// Recurrent layers with ONNX LSTM / GRU / RNN semantics, float32, one direction per call
// (a bidirectional layer is two calls writing the two halves of its outputs).
//
// rnn_run runs the whole layer: per time step one product x·Wᵀ + h·Rᵀ over register tiles
// (x·Wᵀ of all steps projected first for a few rows, fused into the step otherwise) and the
// gate math on each tile while it is in L1. Weights are in ONNX gate order (LSTM i,o,f,c; GRU
// z,r,h); other frameworks' layers map onto it by permuting weights at import. The kernel
// reads W, R and the biases packed by rnn_pack_weights / rnn_pack_bias (once for weights;
// per call into the workspace otherwise). Threads: see csrc/cpu/rnn_loop.cpp.
#pragma once

#include <cstdint>

#include "engine/common.h"

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

struct RnnConfig {
  RnnCell cell = RnnCell::Lstm;
  index_t seq_len = 0, batch = 0, input = 0, hidden = 0;
  bool reverse = false;
  float clip = 0.f;                  // > 0: every gate pre-activation is clipped to ±clip
  bool input_forget = false;         // LSTM: f = 1 - i
  bool linear_before_reset = false;  // GRU: h gate uses r ⊙ (h·Rhᵀ + Rbh)
  RnnActivation f, g, h;             // LSTM f, g, h; GRU f, g; RNN f
  // Keras step masks (RnnIO::mask): a masked step keeps the state; its Y row is the previous
  // step's output (zeros before the first unmasked step), or zeros with zero_output_for_mask.
  bool masked = false;
  bool zero_output_for_mask = false;
  bool pack_weights = false;         // W, R come raw (RnnIO::w_raw, r_raw): pack per call
  // W, R and the biases in Keras's layout and gate order instead of ONNX's (rnn_weight_gate):
  // kernel (In × G·H), recurrent_kernel (H × G·H), biases G·H each (Keras LSTM i,f,c,o).
  bool keras_layout = false;
  bool tape = false;                 // training: RnnIO::tape receives what rnn_backward reads
};

// The column block of ONNX gate g (LSTM i,o,f,c; GRU z,r,h) in the weights' gate order: g for
// ONNX's layout, Keras's i,f,c,o for an LSTM in Keras's (GRU and RNN orders are the same).
inline int rnn_weight_gate(RnnCell cell, bool keras_layout, int g) {
  static constexpr int kKerasLstm[4] = {0, 3, 1, 2};
  return keras_layout && cell == RnnCell::Lstm ? kKerasLstm[g] : g;
}

// The packed weight layout. Hidden units go in blocks of kRnnBlock; per block the columns of
// the gates the cell needs together sit side by side (column (j·groups + g)·kRnnBlock + u of a
// part: block j, group g, unit u), so a register tile covers whole blocks and one thread can
// own a range of blocks, all of their gates. Packed Wᵀ (In rows) and Rᵀ (H rows) share the
// columns. In memory a part is a run of tile groups (tile_blocks blocks, fewer in the last),
// each a K × (its columns) row-major panel: one contiguous stream per tile.
// Parts: most cells have one; GRU without linear_before_reset has two, (z, r) and h, because
// h's product needs r first. GRU with linear_before_reset keeps x·Wₕᵀ and h·Rₕᵀ apart in
// two column groups (W fills one, R the other, zeros elsewhere).
constexpr index_t kRnnBlock = 16;

struct RnnLayout {
  int parts = 1;
  int groups[2] = {0, 0};          // column groups per block, per part
  index_t tile_blocks[2] = {0, 0}; // blocks per tile group, per part (divides 4)
  index_t offset[2] = {0, 0};      // first column of each part
  index_t blocks = 0;              // ceil(H / kRnnBlock)
  index_t cols = 0;                // packed columns in all

  index_t tiles(int p) const { return (blocks + tile_blocks[p] - 1) / tile_blocks[p]; }
  // Tile group i of part p: its first column, and its width in columns.
  index_t tile_col(int p, index_t i) const { return offset[p] + i * tile_blocks[p] * groups[p] * kRnnBlock; }
  index_t tile_cols(int p, index_t i) const {
    const index_t nb = blocks - i * tile_blocks[p];
    return (nb < tile_blocks[p] ? nb : tile_blocks[p]) * groups[p] * kRnnBlock;
  }
};
RnnLayout rnn_layout(RnnCell cell, bool linear_before_reset, index_t hidden);

// dst (K × layout.cols floats, tile panels as above) = src (G·H × K, ONNX W or R of one
// direction; with keras_layout Keras's K × G·H kernel or recurrent_kernel) packed;
// `recurrent` says which (it decides GRU linear_before_reset's h groups). Padding is zero.
void rnn_pack_weights(float* dst, const float* src, index_t K, RnnCell cell, bool linear_before_reset,
                      index_t hidden, bool recurrent, bool keras_layout = false);

// dst (layout.cols floats, plain column order): the biases each packed column adds, Wb and Rb
// (G·H each, ONNX order, or Keras's with keras_layout; either may be null) summed where W's and
// R's rows meet.
void rnn_pack_bias(float* dst, const float* wb, const float* rb, RnnCell cell, bool linear_before_reset,
                   index_t hidden, bool keras_layout = false);

// One direction's data. Strides are in floats; optional pointers may be null.
struct RnnIO {
  // Input of time step t, batch row b: x + t·x_t + b·x_b (cfg.input floats).
  const float* x = nullptr;
  index_t x_t = 0, x_b = 0;
  // Packed Wᵀ (In × cols) and Rᵀ (H × cols); with cfg.pack_weights, raw ONNX W (G·H × In) and
  // R (G·H × H) instead, packed into the workspace on each call.
  const float* w = nullptr;
  const float* r = nullptr;
  const float* wb = nullptr;  // G·H input biases (null: none)
  const float* rb = nullptr;  // G·H recurrent biases (null: none)
  const float* bias = nullptr;  // wb, rb packed by rnn_pack_bias; null: packed on each call
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
  // With cfg.tape: the tape, seq_len·batch rows of rnn_tape_width floats in step order: row
  // s·batch + b is batch row b's s-th step (time step s, or len - 1 - s for a reverse layer).
  float* tape = nullptr;
};

// Floats of workspace rnn_run needs.
index_t rnn_workspace_floats(const RnnConfig& cfg);

// Runs one direction. seq_lens must already be checked (0 <= len <= seq_len).
void rnn_run(const RnnConfig& cfg, const RnnIO& io, float* workspace);

// ---------------------------------------------------------------------------------------
// Training: backpropagation through time (csrc/cpu/rnn_backward.cpp).
//
// The tape row of a step that ran holds, H floats each (activations applied):
//   LSTM  i, o, f, c̃ (the gates), c_prev, h_prev
//   GRU   z, r, h̃, then linear_before_reset: h·Rₕᵀ + Rbₕ, else r ⊙ h_prev; then h_prev
//   RNN   h, h_prev
// then the step's input x (In floats; the row padded to a multiple of 16 floats), so that
// (h_prev, x) is one operand of the weight gradients. A row of a step that did not run (past
// the row's length, or masked) is zeros. Default activations and any whose derivative follows
// from its output (rnn_backward_supports); no clip, no peepholes.
int rnn_tape_fields(RnnCell cell);  // the H-wide fields
index_t rnn_tape_width(RnnCell cell, index_t hidden, index_t input);
bool rnn_backward_supports(const RnnActivation& a);

// One direction's gradients. X and dX are N × In matrices (N = seq_len·batch), the row of time
// step t, batch row b at t·row_t + b·row_b; the tape's rows are in step order (RnnIO::tape);
// other strides in floats. Outputs are optional (null: not computed).
struct RnnGradIO {
  index_t row_t = 0, row_b = 0;  // X's and dX's rows
  // This direction's raw weights: ONNX W (G·H × In), R (G·H × H); Keras's kernel (In × G·H),
  // recurrent_kernel (H × G·H) with cfg.keras_layout.
  const float* w = nullptr;
  const float* r = nullptr;
  const float* tape = nullptr;  // N × rnn_tape_width rows
  // Output gradients (null: none reaches that output); layouts as RnnIO's y, y_h, y_c.
  const float* dy = nullptr;
  index_t dy_t = 0, dy_b = 0;
  const float* dy_h = nullptr;
  const float* dy_c = nullptr;
  index_t state_b = 0;  // dy_h, dy_c, dh0, dc0: row b at ptr + b·state_b
  const std::int32_t* seq_lens = nullptr;
  const bool* mask = nullptr;
  float* dx = nullptr;  // N × In; accumulate_dx adds into it (the second direction)
  bool accumulate_dx = false;
  float* dw = nullptr;  // W's layout
  float* dr = nullptr;  // R's layout
  // Bias gradients: input biases (G·H), then recurrent biases (G·H) when bias_parts is 2.
  float* db = nullptr;
  int bias_parts = 2;
  float* dh0 = nullptr;
  float* dc0 = nullptr;
};

index_t rnn_grad_workspace_floats(const RnnConfig& cfg);
void rnn_backward(const RnnConfig& cfg, const RnnGradIO& io, float* workspace);

}  // namespace engine
