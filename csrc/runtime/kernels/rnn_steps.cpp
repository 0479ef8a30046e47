// LSTM, GRU, RNN (ONNX semantics): step factories (see registry.h). Each kernel's inputs, outputs and
// parameters are documented above its factory.
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

// rnn (float32): one direction of a recurrent layer (engine/rnn.h).
//   in  [X, W, R, Wp, Rp, B, P, initial_h, initial_c, sequence_lens (int32), mask (bool), workspace,
//        Bp]
//       X (T × batch × In, or batch × T × In by layout); W (D × GH × In), R (D × GH × H), B (D × 2GH),
//       P (D × 3H), states (layout 0: D × batch × H; 1: batch × D × H) as in ONNX; Wp, Rp: this
//       direction's W and R packed by rnn_pack_weights (In × cols, H × cols), both or neither;
//       without them W and R are packed into the workspace on each call. mask (batch × T):
//       Keras step masks (engine/rnn.h RnnIO::mask). Bp: this direction's B packed by
//       rnn_pack_bias (else packed on each call). All optional but X, workspace and W, R or
//       Wp, Rp.
//   out the present ones of [Y, Y_h, Y_c] (flags below), ONNX layouts.
//   ints [cell, T, batch, In, H, D, d, layout, reverse, input_forget, linear_before_reset,
//         act_f, act_g, act_h, has_y, has_y_h, has_y_c, workspace_floats, zero_output_for_mask]
//   floats [clip (<= 0: none), f_alpha, f_beta, g_alpha, g_beta, h_alpha, h_beta]
StepFn rnn_step(const StepSpec& s) {
  s.expect(13, s.out.size(), 19, 7);
  const std::int64_t cell_code = s.i(0);
  ENGINE_CHECK(cell_code >= 0 && cell_code <= 2, "rnn: bad cell code");
  RnnConfig cfg;
  cfg.cell = static_cast<RnnCell>(cell_code);
  const char* op = cell_name(cfg.cell);
  const index_t T = s.i(1), B = s.i(2), In = s.i(3), H = s.i(4), D = s.i(5), d = s.i(6);
  const bool layout1 = s.i(7) != 0;
  ENGINE_CHECK(T >= 0 && B >= 0 && In >= 0 && H >= 0 && (D == 1 || D == 2) && d >= 0 && d < D,
               std::string(op) + ": bad sizes");
  cfg.seq_len = T, cfg.batch = B, cfg.input = In, cfg.hidden = H;
  cfg.reverse = s.i(8) != 0;
  cfg.input_forget = s.i(9) != 0;
  cfg.linear_before_reset = s.i(10) != 0;
  cfg.f = act_param(s, 11, 1), cfg.g = act_param(s, 12, 3), cfg.h = act_param(s, 13, 5);
  cfg.clip = static_cast<float>(s.f(0));
  const int in_x = s.in[0], in_w = s.in[1], in_r = s.in[2], in_wp = s.in[3], in_rp = s.in[4], in_b = s.in[5],
            in_p = s.in[6], in_h0 = s.in[7], in_c0 = s.in[8], in_len = s.in[9], in_mask = s.in[10],
            in_ws = s.in[11], in_bp = s.in[12];
  cfg.masked = in_mask >= 0;
  cfg.zero_output_for_mask = s.i(18) != 0;
  ENGINE_CHECK(!cfg.masked || s.in_types[10] == DType::Bool, "rnn: mask must be bool");
  const bool has_y = s.i(14) != 0, has_yh = s.i(15) != 0, has_yc = s.i(16) != 0;
  ENGINE_CHECK(s.out.size() == static_cast<size_t>(has_y + has_yh + has_yc), "rnn: output count differs from flags");
  ENGINE_CHECK(!has_yc || cfg.cell == RnnCell::Lstm, "rnn: Y_c is LSTM only");
  ENGINE_CHECK((in_wp >= 0) == (in_rp >= 0), "rnn: Wp and Rp come together");
  cfg.pack_weights = in_wp < 0;
  ENGINE_CHECK(in_x >= 0 && in_ws >= 0, "rnn: X and workspace are required");
  ENGINE_CHECK(!cfg.pack_weights || (in_w >= 0 && in_r >= 0), "rnn: W and R are required without Wp, Rp");
  ENGINE_CHECK(s.i(17) >= rnn_workspace_floats(cfg), "rnn: workspace too small");
  ENGINE_CHECK(in_len < 0 || s.in_types[9] == DType::I32, "rnn: sequence_lens must be int32");
  for (int i : {0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12})
    ENGINE_CHECK(s.in[i] < 0 || s.in_types[i] == DType::F32, "rnn: float32 inputs only (convert first)");
  const index_t GH = rnn_gates(cfg.cell) * H;

  // Strides (floats) of this direction's views.
  const index_t x_t = layout1 ? In : B * In, x_b = layout1 ? T * In : In;
  const index_t st_off = layout1 ? d * H : d * B * H, state_b = layout1 ? D * H : H;
  const index_t y_off = layout1 ? d * H : d * B * H, y_t = layout1 ? D * H : D * B * H, y_b = layout1 ? T * D * H : H;
  int k = 0;
  const int out_y = has_y ? s.out[k++] : -1, out_yh = has_yh ? s.out[k++] : -1, out_yc = has_yc ? s.out[k++] : -1;

  return [=](void* const* sl) {
    const std::int32_t* lens = in_len >= 0 ? slot<const std::int32_t>(sl, in_len) : nullptr;
    if (lens)
      for (index_t b = 0; b < B; ++b)
        if (lens[b] < 0 || lens[b] > T)
          throw Error(std::string(op) + ": sequence_lens[" + std::to_string(b) + "] = " + std::to_string(lens[b]) +
                      " is outside [0, " + std::to_string(T) + "]");
    RnnIO io;
    io.x = slot<const float>(sl, in_x), io.x_t = x_t, io.x_b = x_b;
    if (cfg.pack_weights) {
      io.w = slot<const float>(sl, in_w) + d * GH * In;
      io.r = slot<const float>(sl, in_r) + d * GH * H;
    } else {
      io.w = slot<const float>(sl, in_wp);
      io.r = slot<const float>(sl, in_rp);
    }
    if (in_b >= 0) io.wb = slot<const float>(sl, in_b) + d * 2 * GH, io.rb = io.wb + GH;
    if (in_bp >= 0) io.bias = slot<const float>(sl, in_bp);
    if (in_p >= 0) io.p = slot<const float>(sl, in_p) + d * 3 * H;
    if (in_h0 >= 0) io.h0 = slot<const float>(sl, in_h0) + st_off;
    if (in_c0 >= 0) io.c0 = slot<const float>(sl, in_c0) + st_off;
    io.state_b = state_b;
    if (out_yh >= 0) io.y_h = slot<float>(sl, out_yh) + st_off;
    if (out_yc >= 0) io.y_c = slot<float>(sl, out_yc) + st_off;
    if (out_y >= 0) io.y = slot<float>(sl, out_y) + y_off, io.y_t = y_t, io.y_b = y_b;
    io.seq_lens = lens;
    if (in_mask >= 0) io.mask = slot<const bool>(sl, in_mask);
    rnn_run(cfg, io, slot<float>(sl, in_ws));
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
  r.add("seq_float_convert", DType::Any, float_convert_step);
}

}  // namespace engine
