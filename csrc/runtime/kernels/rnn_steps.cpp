// LSTM, GRU, RNN (ONNX semantics): step factories (see registry.h). Each kernel's inputs, outputs and
// parameters are documented above its factory.
#include <algorithm>
#include <string>

#include "cpu/attention_convert.h"
#include "engine/rnn.h"
#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

const char* cell_name(RnnCell c) { return c == RnnCell::Lstm ? "LSTM" : c == RnnCell::Gru ? "GRU" : "RNN"; }

RnnActivation act_param(const StepSpec& s, size_t code, size_t alpha) {
  const std::int64_t a = s.i(code);
  ENGINE_CHECK(a >= 0 && a < kRnnActCount, s.name + ": bad activation code");
  return {static_cast<RnnAct>(a), static_cast<float>(s.f(alpha)), static_cast<float>(s.f(alpha + 1))};
}

// What rnn and rnn_grad share: the layer's config from ints [cell, T, batch, In, H, D, d, layout,
// reverse, input_forget, linear_before_reset, act_f, act_g, act_h] and floats [clip, f_alpha,
// f_beta, g_alpha, g_beta, h_alpha, h_beta], and the strides (floats) of direction d's views of
// X, Y and the states, ONNX layouts. weight_layout (0 ONNX, 1 Keras) and bias_parts at
// ints[k], ints[k + 1].
struct Layer {
  RnnConfig cfg;
  const char* op;
  index_t T, B, In, H, D, d, GH;
  bool layout1;
  index_t x_t, x_b, st_off, state_b, y_off, y_t, y_b;
  int bias_parts;

  Layer(const StepSpec& s, size_t k) {
    const std::int64_t cell_code = s.i(0);
    ENGINE_CHECK(cell_code >= 0 && cell_code <= 2, s.name + ": bad cell code");
    cfg.cell = static_cast<RnnCell>(cell_code);
    op = cell_name(cfg.cell);
    T = s.i(1), B = s.i(2), In = s.i(3), H = s.i(4), D = s.i(5), d = s.i(6);
    layout1 = s.i(7) != 0;
    ENGINE_CHECK(T >= 0 && B >= 0 && In >= 0 && H >= 0 && (D == 1 || D == 2) && d >= 0 && d < D,
                 std::string(op) + ": bad sizes");
    cfg.seq_len = T, cfg.batch = B, cfg.input = In, cfg.hidden = H;
    cfg.reverse = s.i(8) != 0;
    cfg.input_forget = s.i(9) != 0;
    cfg.linear_before_reset = s.i(10) != 0;
    cfg.f = act_param(s, 11, 1), cfg.g = act_param(s, 12, 3), cfg.h = act_param(s, 13, 5);
    cfg.clip = static_cast<float>(s.f(0));
    cfg.keras_layout = s.i(k) != 0;
    bias_parts = static_cast<int>(s.i(k + 1));
    ENGINE_CHECK(s.i(k) == 0 || s.i(k) == 1, s.name + ": weight_layout must be 0 (ONNX) or 1 (Keras)");
    ENGINE_CHECK(bias_parts == 1 || bias_parts == 2, s.name + ": bias_parts must be 1 or 2");
    ENGINE_CHECK(!cfg.keras_layout || D == 1, s.name + ": Keras-layout weights are for one direction");
    ENGINE_CHECK(cfg.keras_layout || bias_parts == 2, s.name + ": ONNX biases are Wb then Rb (bias_parts 2)");
    GH = rnn_gates(cfg.cell) * H;
    x_t = layout1 ? In : B * In, x_b = layout1 ? T * In : In;
    st_off = layout1 ? d * H : d * B * H, state_b = layout1 ? D * H : H;
    y_off = layout1 ? d * H : d * B * H, y_t = layout1 ? D * H : D * B * H, y_b = layout1 ? T * D * H : H;
  }
  // This direction's W, R (raw) and biases (Wb, Rb or null).
  // (Also the gradients' parts, which share the layouts.)
  template <class F>
  F* w(F* p) const { return cfg.keras_layout ? p : p + d * GH * In; }
  template <class F>
  F* r(F* p) const { return cfg.keras_layout ? p : p + d * GH * H; }
  template <class F>
  F* wb(F* p) const { return cfg.keras_layout ? p : p + d * 2 * GH; }
  template <class F>
  F* rb(F* p) const { return bias_parts == 2 ? wb(p) + GH : nullptr; }
  // Rows of X in X's order, and this direction's tape.
  index_t row_t() const { return layout1 ? 1 : B; }
  index_t row_b() const { return layout1 ? T : 1; }
  float* tape(float* p) const { return p + d * T * B * rnn_tape_width(cfg.cell, H, In); }

  void check_lens(const std::int32_t* lens) const {
    if (lens)
      for (index_t b = 0; b < B; ++b)
        if (lens[b] < 0 || lens[b] > T)
          throw Error(std::string(op) + ": sequence_lens[" + std::to_string(b) + "] = " + std::to_string(lens[b]) +
                      " is outside [0, " + std::to_string(T) + "]");
  }
};

// rnn (float32): one direction of a recurrent layer (engine/rnn.h).
//   in  [X, W, R, Wp, Rp, B, P, initial_h, initial_c, sequence_lens (int32), mask (bool), workspace,
//        Bp]
//       X (T × batch × In, or batch × T × In by layout); W (D × GH × In), R (D × GH × H), B (D × 2GH),
//       P (D × 3H), states (layout 0: D × batch × H; 1: batch × D × H) as in ONNX; Wp, Rp: this
//       direction's W and R packed by rnn_pack_weights (In × cols, H × cols), both or neither;
//       without them W and R are packed into the workspace on each call. mask (batch × T):
//       Keras step masks (engine/rnn.h RnnIO::mask). Bp: this direction's B packed by
//       rnn_pack_bias (else packed on each call). All optional but X, workspace and W, R or
//       Wp, Rp. With weight_layout 1 (Keras; one direction): W (In × GH), R (H × GH), B (GH) or
//       (2 × GH) by bias_parts, Keras's gate order (engine/rnn.h rnn_weight_gate).
//   out the present ones of [Y, Y_h, Y_c] (flags below), ONNX layouts, then with has_tape the
//       tape (D × T·batch × rnn_tape_width, rows in step order: engine/rnn.h) rnn_grad reads.
//   ints [cell, T, batch, In, H, D, d, layout, reverse, input_forget, linear_before_reset,
//         act_f, act_g, act_h, has_y, has_y_h, has_y_c, workspace_floats, zero_output_for_mask,
//         has_tape, weight_layout, bias_parts]
//   floats [clip (<= 0: none), f_alpha, f_beta, g_alpha, g_beta, h_alpha, h_beta]
StepFn rnn_step(const StepSpec& s) {
  s.expect(13, s.out.size(), 22, 7);
  const Layer ly(s, 20);
  RnnConfig cfg = ly.cfg;
  const index_t H = ly.H, d = ly.d;
  const int in_x = s.in[0], in_w = s.in[1], in_r = s.in[2], in_wp = s.in[3], in_rp = s.in[4], in_b = s.in[5],
            in_p = s.in[6], in_h0 = s.in[7], in_c0 = s.in[8], in_len = s.in[9], in_mask = s.in[10],
            in_ws = s.in[11], in_bp = s.in[12];
  cfg.masked = in_mask >= 0;
  cfg.zero_output_for_mask = s.i(18) != 0;
  cfg.tape = s.i(19) != 0;
  ENGINE_CHECK(!cfg.masked || s.in_types[10] == DType::Bool, "rnn: mask must be bool");
  const bool has_y = s.i(14) != 0, has_yh = s.i(15) != 0, has_yc = s.i(16) != 0;
  ENGINE_CHECK(s.out.size() == static_cast<size_t>(has_y + has_yh + has_yc + cfg.tape),
               "rnn: output count differs from flags");
  ENGINE_CHECK(!has_yc || cfg.cell == RnnCell::Lstm, "rnn: Y_c is LSTM only");
  ENGINE_CHECK((in_wp >= 0) == (in_rp >= 0), "rnn: Wp and Rp come together");
  cfg.pack_weights = in_wp < 0;
  ENGINE_CHECK(in_x >= 0 && in_ws >= 0, "rnn: X and workspace are required");
  ENGINE_CHECK(!cfg.pack_weights || (in_w >= 0 && in_r >= 0), "rnn: W and R are required without Wp, Rp");
  ENGINE_CHECK(s.i(17) >= rnn_workspace_floats(cfg), "rnn: workspace too small");
  ENGINE_CHECK(in_len < 0 || s.in_types[9] == DType::I32, "rnn: sequence_lens must be int32");
  for (int i : {0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12})
    ENGINE_CHECK(s.in[i] < 0 || s.in_types[i] == DType::F32, "rnn: float32 inputs only (convert first)");

  int k = 0;
  const int out_y = has_y ? s.out[k++] : -1, out_yh = has_yh ? s.out[k++] : -1, out_yc = has_yc ? s.out[k++] : -1;
  const int out_tape = cfg.tape ? s.out[k++] : -1;

  return [=](void* const* sl) {
    const std::int32_t* lens = in_len >= 0 ? slot<const std::int32_t>(sl, in_len) : nullptr;
    ly.check_lens(lens);
    RnnIO io;
    io.x = slot<const float>(sl, in_x), io.x_t = ly.x_t, io.x_b = ly.x_b;
    if (cfg.pack_weights) {
      io.w = ly.w(slot<const float>(sl, in_w));
      io.r = ly.r(slot<const float>(sl, in_r));
    } else {
      io.w = slot<const float>(sl, in_wp);
      io.r = slot<const float>(sl, in_rp);
    }
    if (in_b >= 0) io.wb = ly.wb(slot<const float>(sl, in_b)), io.rb = ly.rb(slot<const float>(sl, in_b));
    if (in_bp >= 0) io.bias = slot<const float>(sl, in_bp);
    if (in_p >= 0) io.p = slot<const float>(sl, in_p) + d * 3 * H;
    if (in_h0 >= 0) io.h0 = slot<const float>(sl, in_h0) + ly.st_off;
    if (in_c0 >= 0) io.c0 = slot<const float>(sl, in_c0) + ly.st_off;
    io.state_b = ly.state_b;
    if (out_yh >= 0) io.y_h = slot<float>(sl, out_yh) + ly.st_off;
    if (out_yc >= 0) io.y_c = slot<float>(sl, out_yc) + ly.st_off;
    if (out_y >= 0) io.y = slot<float>(sl, out_y) + ly.y_off, io.y_t = ly.y_t, io.y_b = ly.y_b;
    if (out_tape >= 0) io.tape = ly.tape(slot<float>(sl, out_tape));
    io.seq_lens = lens;
    if (in_mask >= 0) io.mask = slot<const bool>(sl, in_mask);
    rnn_run(cfg, io, slot<float>(sl, in_ws));
  };
}

// rnn_grad (float32): one direction's backward through time (engine/rnn.h rnn_backward).
//   in  [X, W, R, tape, dY, dY_h, dY_c, sequence_lens (int32), mask (bool), workspace]
//       X, W, R, sequence_lens, mask as rnn's (raw weights, either layout); tape: rnn's with
//       has_tape; dY, dY_h, dY_c: gradients of Y, Y_h, Y_c (ONNX layouts), each optional.
//   out the wanted ones of [dX, dW, dR, dB, dh0, dc0] (outputs mask: bit k for the k-th),
//       shaped as X, W, R, B, initial_h, initial_c; this direction's part of each (dX: all of
//       it, overwritten, or added to with accumulate_dx: the second direction).
//   ints [cell, T, batch, In, H, D, d, layout, reverse, input_forget, linear_before_reset,
//         act_f, act_g, act_h, zero_output_for_mask, outputs, accumulate_dx, workspace_floats,
//         weight_layout, bias_parts]
//   floats as rnn's (clip must be <= 0: none)
StepFn rnn_grad_step(const StepSpec& s) {
  s.expect(10, s.out.size(), 20, 7);
  const Layer ly(s, 18);
  RnnConfig cfg = ly.cfg;
  const int in_x = s.in[0], in_w = s.in[1], in_r = s.in[2], in_tape = s.in[3], in_dy = s.in[4], in_dyh = s.in[5],
            in_dyc = s.in[6], in_len = s.in[7], in_mask = s.in[8], in_ws = s.in[9];
  cfg.masked = in_mask >= 0;
  cfg.zero_output_for_mask = s.i(14) != 0;
  const std::int64_t wanted = s.i(15);
  ENGINE_CHECK(wanted >= 0 && wanted < 64, "rnn_grad: bad outputs mask");
  int out[6];
  size_t k = 0;
  for (int j = 0; j < 6; ++j) out[j] = (wanted >> j) & 1 ? (k < s.out.size() ? s.out[k++] : -2) : -1;
  ENGINE_CHECK(k == s.out.size() && std::find(out, out + 6, -2) == out + 6,
               "rnn_grad: output count differs from the outputs mask");
  ENGINE_CHECK(out[5] < 0 || cfg.cell == RnnCell::Lstm, "rnn_grad: dc0 is LSTM only");
  ENGINE_CHECK(!(cfg.clip > 0.f), "rnn_grad: clip is not supported in training");
  ENGINE_CHECK(rnn_backward_supports(cfg.f) && rnn_backward_supports(cfg.g) && rnn_backward_supports(cfg.h),
               "rnn_grad: an activation whose derivative does not follow from its output");
  const bool acc_dx = s.i(16) != 0;
  ENGINE_CHECK(s.i(17) >= rnn_grad_workspace_floats(cfg), "rnn_grad: workspace too small");
  ENGINE_CHECK(in_x >= 0 && in_r >= 0 && in_tape >= 0 && in_ws >= 0,
               "rnn_grad: X, R, the tape and workspace are required");
  ENGINE_CHECK(out[0] < 0 || in_w >= 0, "rnn_grad: dX needs W");
  ENGINE_CHECK(!cfg.masked || s.in_types[8] == DType::Bool, "rnn_grad: mask must be bool");
  ENGINE_CHECK(in_len < 0 || s.in_types[7] == DType::I32, "rnn_grad: sequence_lens must be int32");
  for (int i : {0, 1, 2, 3, 4, 5, 6, 9})
    ENGINE_CHECK(s.in[i] < 0 || s.in_types[i] == DType::F32, "rnn_grad: float32 inputs only");
  const int bias_parts = ly.bias_parts;
  return [=](void* const* sl) {
    const std::int32_t* lens = in_len >= 0 ? slot<const std::int32_t>(sl, in_len) : nullptr;
    ly.check_lens(lens);
    RnnGradIO io;
    io.row_t = ly.row_t(), io.row_b = ly.row_b();
    if (in_w >= 0) io.w = ly.w(slot<const float>(sl, in_w));
    io.r = ly.r(slot<const float>(sl, in_r));
    io.tape = ly.tape(slot<float>(sl, in_tape));
    if (in_dy >= 0) io.dy = slot<const float>(sl, in_dy) + ly.y_off, io.dy_t = ly.y_t, io.dy_b = ly.y_b;
    if (in_dyh >= 0) io.dy_h = slot<const float>(sl, in_dyh) + ly.st_off;
    if (in_dyc >= 0) io.dy_c = slot<const float>(sl, in_dyc) + ly.st_off;
    io.state_b = ly.state_b;
    io.seq_lens = lens;
    if (in_mask >= 0) io.mask = slot<const bool>(sl, in_mask);
    if (out[0] >= 0) io.dx = slot<float>(sl, out[0]), io.accumulate_dx = acc_dx;
    if (out[1] >= 0) io.dw = ly.w(slot<float>(sl, out[1]));
    if (out[2] >= 0) io.dr = ly.r(slot<float>(sl, out[2]));
    if (out[3] >= 0) io.db = ly.wb(slot<float>(sl, out[3]));
    io.bias_parts = bias_parts;
    if (out[4] >= 0) io.dh0 = slot<float>(sl, out[4]) + ly.st_off;
    if (out[5] >= 0) io.dc0 = slot<float>(sl, out[5]) + ly.st_off;
    rnn_backward(cfg, io, slot<float>(sl, in_ws));
  };
}

// seq_float_convert (any): in [x], out [y]; ints [n]. float16 / float32 / float64 element-wise
// conversion (the types are the input's and the output's), for ops that compute float16 in float32.
StepFn float_convert_step(const StepSpec& s) {
  s.expect(1, 1, 1);
  const index_t n = s.i(0);
  const DType st = s.in_types[0], dt = s.out_types[0];
  ENGINE_CHECK(n >= 0, "seq_float_convert: n < 0");
  ENGINE_CHECK(seq::is_float_type(st) && seq::is_float_type(dt), "seq_float_convert: float types only");
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) { seq::convert_parallel(sl[out], dt, sl[in], st, n); };
}

}  // namespace

void register_rnn_steps(KernelRegistry& r) {
  r.add("rnn", DType::F32, rnn_step);
  r.add("rnn_grad", DType::F32, rnn_grad_step);
  r.add("seq_float_convert", DType::Any, float_convert_step);
}

}  // namespace engine
