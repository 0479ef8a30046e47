// Recurrent layers (see engine/rnn.h): the time loop of one direction.
//
// Per step: rec = h·Rᵀ (one GEMM over the batch; a GRU without linear_before_reset needs a
// second, (r ⊙ h)·Rhᵀ, once r is known), then one pass over each active batch row that adds
// X·Wᵀ and the biases, applies peepholes / clip / activations and updates the state in
// place. Rows whose sequence has ended keep their state and are skipped; their Y rows were
// zeroed up front. A row whose step is masked (Keras masks) is skipped the same way, and its
// Y row repeats the row's last output (or is zero). The gate pass is split over threads only
// when a step has enough rows.
#include "engine/rnn.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/elementwise.h"
#include "engine/threadpool.h"

namespace engine {

void rnn_activation(float* y, const float* x, index_t n, const RnnActivation& a) {
  const float al = a.alpha, be = a.beta;
  switch (a.act) {
    case RnnAct::Sigmoid: return activation(y, x, n, Act::Sigmoid);
    case RnnAct::Tanh: return activation(y, x, n, Act::Tanh);
    case RnnAct::Relu: return activation(y, x, n, Act::Relu);
    case RnnAct::HardSigmoid: return activation(y, x, n, Act::HardSigmoid, al, be);
    case RnnAct::LeakyRelu: return activation(y, x, n, Act::LeakyRelu, al);
    case RnnAct::Elu: return activation(y, x, n, Act::Elu, al);
    case RnnAct::Softplus: return activation(y, x, n, Act::Softplus);
    case RnnAct::Affine:
      for (index_t i = 0; i < n; ++i) y[i] = al * x[i] + be;
      return;
    case RnnAct::ThresholdedRelu:
      for (index_t i = 0; i < n; ++i) y[i] = x[i] >= al ? x[i] : 0.f;
      return;
    case RnnAct::ScaledTanh:
      for (index_t i = 0; i < n; ++i) y[i] = be * x[i];
      activation(y, y, n, Act::Tanh);
      for (index_t i = 0; i < n; ++i) y[i] *= al;
      return;
    case RnnAct::Softsign:
      for (index_t i = 0; i < n; ++i) y[i] = x[i] / (1.f + std::fabs(x[i]));
      return;
  }
  throw Error("rnn: unknown activation code " + std::to_string(static_cast<int>(a.act)));
}

void rnn_transpose(float* dst, const float* src, index_t rows, index_t cols) {
  constexpr index_t kTile = 32;
  for (index_t r0 = 0; r0 < rows; r0 += kTile)
    for (index_t c0 = 0; c0 < cols; c0 += kTile) {
      const index_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (index_t r = r0; r < r1; ++r)
        for (index_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
    }
}

index_t rnn_workspace_floats(const RnnConfig& cfg) {
  const index_t B = cfg.batch, H = cfg.hidden, GH = rnn_gates(cfg.cell) * H;
  const index_t states = cfg.cell == RnnCell::Lstm ? 2 : 1;  // h (+ c)
  const index_t gru_tmp = cfg.cell == RnnCell::Gru ? B * H : 0;
  const index_t seen = cfg.masked ? B : 0;  // per row: has an unmasked step run yet
  return B * GH + states * B * H + gru_tmp + GH + H + seen;
}

namespace {

inline void clip_row(float* x, index_t n, float c) {
  if (c <= 0.f) return;
  for (index_t i = 0; i < n; ++i) x[i] = std::min(c, std::max(-c, x[i]));
}

// g[k] += x[k] + bias[k]
inline void add_input(float* g, const float* x, const float* bias, index_t n) {
  for (index_t k = 0; k < n; ++k) g[k] += x[k] + bias[k];
}

struct Loop {
  const RnnConfig& cfg;
  const RnnIO& io;
  const RnnRecurrence& rr;
  index_t B, H, G, GH;
  float *rec, *hs, *cs, *tmp, *bias, *rbh, *seen;

  index_t len(index_t b) const { return io.seq_lens ? io.seq_lens[b] : cfg.seq_len; }
  // The time index batch row b processes at step s (s < len(b)).
  index_t time(index_t b, index_t s) const { return cfg.reverse ? len(b) - 1 - s : s; }
  // Whether row b updates its state at time t (false: a masked step).
  bool on(index_t b, index_t t) const { return !io.mask || io.mask[b * cfg.seq_len + t]; }
  const float* xw(index_t b, index_t t) const { return io.xw + t * io.xw_t + b * io.xw_b; }

  void lstm_row(index_t b, index_t t) const {
    float* g = rec + b * GH;
    add_input(g, xw(b, t), bias, GH);
    float *gi = g, *go = g + H, *gf = g + 2 * H, *gc = g + 3 * H;
    float *c = cs + b * H, *h = hs + b * H;
    const float* p = io.p;
    const float clip = cfg.clip;
    if (p) {
      for (index_t k = 0; k < H; ++k) gi[k] += p[k] * c[k];
      if (!cfg.input_forget)
        for (index_t k = 0; k < H; ++k) gf[k] += p[2 * H + k] * c[k];
    }
    clip_row(gi, H, clip);
    rnn_activation(gi, gi, H, cfg.f);
    if (cfg.input_forget) {
      for (index_t k = 0; k < H; ++k) gf[k] = 1.f - gi[k];
    } else {
      clip_row(gf, H, clip);
      rnn_activation(gf, gf, H, cfg.f);
    }
    clip_row(gc, H, clip);
    rnn_activation(gc, gc, H, cfg.g);
    for (index_t k = 0; k < H; ++k) c[k] = gf[k] * c[k] + gi[k] * gc[k];
    if (p)
      for (index_t k = 0; k < H; ++k) go[k] += p[H + k] * c[k];
    clip_row(go, H, clip);
    rnn_activation(go, go, H, cfg.f);
    rnn_activation(gc, c, H, cfg.h);
    for (index_t k = 0; k < H; ++k) h[k] = go[k] * gc[k];
  }

  // GRU z and r gates; without linear_before_reset also tmp = r ⊙ h for the second GEMM.
  void gru_zr_row(index_t b, index_t t) const {
    float* g = rec + b * GH;
    add_input(g, xw(b, t), bias, 2 * H);
    clip_row(g, 2 * H, cfg.clip);
    rnn_activation(g, g, 2 * H, cfg.f);
    if (!cfg.linear_before_reset) {
      const float *r = g + H, *h = hs + b * H;
      float* m = tmp + b * H;
      for (index_t k = 0; k < H; ++k) m[k] = r[k] * h[k];
    }
  }

  void gru_h_row(index_t b, index_t t) const {
    float* g = rec + b * GH;
    const float *z = g, *r = g + H, *x = xw(b, t) + 2 * H, *bh = bias + 2 * H;
    float *gh = g + 2 * H, *h = hs + b * H;
    if (cfg.linear_before_reset)
      for (index_t k = 0; k < H; ++k) gh[k] = x[k] + bh[k] + r[k] * (gh[k] + rbh[k]);
    else
      for (index_t k = 0; k < H; ++k) gh[k] += x[k] + bh[k];
    clip_row(gh, H, cfg.clip);
    rnn_activation(gh, gh, H, cfg.g);
    for (index_t k = 0; k < H; ++k) h[k] = (1.f - z[k]) * gh[k] + z[k] * h[k];
  }

  void rnn_row(index_t b, index_t t) const {
    float* g = rec + b * GH;
    add_input(g, xw(b, t), bias, H);
    clip_row(g, H, cfg.clip);
    rnn_activation(hs + b * H, g, H, cfg.f);
  }

  // fn(b, t) over the rows still running at step s; split over threads when big enough.
  template <class F>
  void rows(index_t s, F fn) const {
    auto run = [&](index_t b0, index_t b1) {
      for (index_t b = b0; b < b1; ++b)
        if (s < len(b) && on(b, time(b, s))) fn(b, time(b, s));
    };
    const index_t grain = std::max<index_t>(1, (index_t{1} << 14) / std::max<index_t>(GH, 1));
    if (B <= grain) return run(0, B);
    parallel_for(B, grain, run);
  }

  // rec[:, 0:N] = h·Rᵀ[:, 0:N]
  void recurrent_gemm(index_t N) const {
    if (rr.packed)
      sgemm_packed(false, B, 1.f, hs, H, *rr.packed, 0.f, rec, GH);
    else
      sgemm(false, false, B, N, H, 1.f, hs, H, rr.rt, GH, 0.f, rec, GH);
  }

  // Y row of (b, t) after step t: the state, or for a masked step the row's previous output
  // (the state, unless no step of the row has run yet) or zeros (zero_output_for_mask).
  void write_y(index_t b, index_t t) const {
    float* y = io.y + t * io.y_t + b * io.y_b;
    if (cfg.masked) {
      if (on(b, t)) {
        seen[b] = 1.f;
      } else if (cfg.zero_output_for_mask || seen[b] == 0.f) {
        std::memset(y, 0, sizeof(float) * H);
        return;
      }
    }
    std::memcpy(y, hs + b * H, sizeof(float) * H);
  }

  void run() const {
    const index_t T = cfg.seq_len;
    index_t steps = 0;
    for (index_t b = 0; b < B; ++b) steps = std::max(steps, len(b));
    if (io.y)
      for (index_t b = 0; b < B; ++b)
        for (index_t t = len(b); t < T; ++t) std::memset(io.y + t * io.y_t + b * io.y_b, 0, sizeof(float) * H);
    const bool gru_split = cfg.cell == RnnCell::Gru && !cfg.linear_before_reset;
    for (index_t s = 0; s < steps; ++s) {
      recurrent_gemm(gru_split ? 2 * H : GH);
      switch (cfg.cell) {
        case RnnCell::Lstm: rows(s, [&](index_t b, index_t t) { lstm_row(b, t); }); break;
        case RnnCell::Rnn: rows(s, [&](index_t b, index_t t) { rnn_row(b, t); }); break;
        case RnnCell::Gru:
          rows(s, [&](index_t b, index_t t) { gru_zr_row(b, t); });
          if (gru_split) sgemm(false, false, B, H, H, 1.f, tmp, H, rr.rt + 2 * H, GH, 0.f, rec + 2 * H, GH);
          rows(s, [&](index_t b, index_t t) { gru_h_row(b, t); });
          break;
      }
      if (io.y)
        for (index_t b = 0; b < B; ++b)
          if (s < len(b)) write_y(b, time(b, s));
    }
    // Final states; a sequence of length 0 reports zeros (as onnxruntime does).
    for (index_t b = 0; b < B; ++b) {
      const bool empty = len(b) == 0;
      if (io.y_h) {
        float* d = io.y_h + b * io.state_b;
        if (empty) std::memset(d, 0, sizeof(float) * H);
        else std::memcpy(d, hs + b * H, sizeof(float) * H);
      }
      if (io.y_c) {
        float* d = io.y_c + b * io.state_b;
        if (empty) std::memset(d, 0, sizeof(float) * H);
        else std::memcpy(d, cs + b * H, sizeof(float) * H);
      }
    }
  }
};

}  // namespace

void rnn_run(const RnnConfig& cfg, const RnnIO& io, const RnnRecurrence& r, float* ws) {
  const index_t B = cfg.batch, H = cfg.hidden, G = rnn_gates(cfg.cell), GH = G * H;
  if (B == 0 || H == 0) return;
  const bool lstm = cfg.cell == RnnCell::Lstm, gru = cfg.cell == RnnCell::Gru;
  Loop L{cfg, io, r, B, H, G, GH, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  float* p = ws;
  L.rec = p, p += B * GH;
  L.hs = p, p += B * H;
  if (lstm) L.cs = p, p += B * H;
  if (gru) L.tmp = p, p += B * H;
  L.bias = p, p += GH;
  L.rbh = p, p += H;
  if (cfg.masked) {
    L.seen = p;
    std::memset(L.seen, 0, sizeof(float) * B);
  }
  // One bias per gate (Wb + Rb), except GRU's h gate with linear_before_reset: Rbh sits inside r ⊙ (...).
  for (index_t k = 0; k < GH; ++k) L.bias[k] = (io.wb ? io.wb[k] : 0.f) + (io.rb ? io.rb[k] : 0.f);
  for (index_t k = 0; k < H; ++k) L.rbh[k] = 0.f;
  if (gru && cfg.linear_before_reset && io.rb)
    for (index_t k = 0; k < H; ++k) {
      L.bias[2 * H + k] = io.wb ? io.wb[2 * H + k] : 0.f;
      L.rbh[k] = io.rb[2 * H + k];
    }
  for (index_t b = 0; b < B; ++b) {
    if (io.h0) std::memcpy(L.hs + b * H, io.h0 + b * io.state_b, sizeof(float) * H);
    else std::memset(L.hs + b * H, 0, sizeof(float) * H);
    if (lstm) {
      if (io.c0) std::memcpy(L.cs + b * H, io.c0 + b * io.state_b, sizeof(float) * H);
      else std::memset(L.cs + b * H, 0, sizeof(float) * H);
    }
    if (gru) std::memset(L.tmp + b * H, 0, sizeof(float) * H);
  }
  L.run();
}

}  // namespace engine
