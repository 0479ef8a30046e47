// Recurrent layers, training (see engine/rnn.h): backpropagation through time over the tape
// the forward wrote.
//
// The recurrence runs backward over the steps in chunks of one register tile of batch rows
// (rows are independent, so the chunks are claimed by the threads and run all their steps
// alone). Per step: the gate math turns dh (and dc) into the gate gradients dG, one row of an
// N × G·H matrix (X's row order, the weights' column order), and dh_prev = dG·R is one tile
// product against R transposed into a zero-padded G·H × H panel. GRU without
// linear_before_reset needs two: h̃'s first (r's gradient depends on it), then z's and r's.
// The bias gradients are summed per chunk while dG is in L1, the chunks' sums added in order
// in double (the same for any thread count). The rest are three GEMMs over all steps at once:
// dX = dG·W, dW = dGᵀ·X, dR = dGᵀ·H_prev (GRU: h̃'s columns from its own operand).
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/rnn_kernels.h"
#include "engine/gemm.h"
#include "engine/rnn.h"
#include "engine/threadpool.h"

namespace engine {

namespace {

constexpr index_t kMinTileRows = 3;  // the smallest mr of any ISA's kernels (rnn_kernels_*.cpp)

index_t padded(index_t n) { return (n + kRnnBlock - 1) / kRnnBlock * kRnnBlock; }

// Workspace offsets in floats, each rounded up to a cache line.
struct GradWorkspace {
  index_t dg, dgr, panel, dh, dc, tile, db, chunks, db_stride, total;
  explicit GradWorkspace(const RnnConfig& cfg) {
    const index_t B = cfg.batch, H = cfg.hidden, Hp = padded(H), N = cfg.seq_len * B;
    const index_t GH = rnn_gates(cfg.cell) * H;
    const bool lbr = cfg.cell == RnnCell::Gru && cfg.linear_before_reset;
    index_t at = 0;
    auto take = [&](index_t n) {
      const index_t o = at;
      at += (n + 15) / 16 * 16;
      return o;
    };
    chunks = (B + kMinTileRows - 1) / kMinTileRows;
    db_stride = (GH + H + 15) / 16 * 16;
    dg = take(N * GH);
    dgr = take(lbr ? N * H : 0);
    panel = take(GH * Hp);
    dh = take(B * Hp);
    dc = take(cfg.cell == RnnCell::Lstm ? B * Hp : 0);
    tile = take(B * Hp);
    db = take(chunks * db_stride);
    total = at;
  }
};

struct Backward {
  const RnnConfig& cfg;
  const RnnGradIO& io;
  const rnnk::Kernels& K;
  index_t B, H, In, T, G, GH, Hp, width;
  bool lbr, split;  // GRU linear_before_reset; GRU without (two products per step)
  float *dg, *dgr, *panel, *dh, *dc, *tile, *db;
  index_t db_stride;
  rnnk::GradParams params;

  index_t len(index_t b) const { return io.seq_lens ? io.seq_lens[b] : T; }
  index_t time(index_t b, index_t s) const { return cfg.reverse ? len(b) - 1 - s : s; }
  bool on(index_t b, index_t t) const { return !io.mask || io.mask[b * T + t]; }
  index_t row(index_t b, index_t t) const { return t * io.row_t + b * io.row_b; }
  const float* dy(index_t b, index_t t) const { return io.dy ? io.dy + t * io.dy_t + b * io.dy_b : nullptr; }

  void add_row(float* d, const float* s) const {
    for (index_t j = 0; j < H; ++j) d[j] += s[j];
  }

  // Rows [r0, r1): every step, last to first.
  void chunk(index_t c, index_t r0, index_t r1) const {
    rnnk::GradParams P = params;
    P.db = db + c * db_stride;
    std::memset(P.db, 0, sizeof(float) * db_stride);
    index_t first_on[rnnk::kMaxRows];
    index_t smax = 0;
    for (index_t b = r0; b < r1; ++b) {
      const index_t n = len(b);
      smax = std::max(smax, n);
      index_t s = 0;
      while (s < n && !on(b, time(b, s))) ++s;
      first_on[b - r0] = s;
      // The state gradients at the end; a row of length 0 reports zeros whatever its states.
      float* h = dh + b * Hp;
      if (n > 0 && io.dy_h) std::memcpy(h, io.dy_h + b * io.state_b, sizeof(float) * H);
      else std::memset(h, 0, sizeof(float) * H);
      if (dc) {
        float* cc = dc + b * Hp;
        if (n > 0 && io.dy_c) std::memcpy(cc, io.dy_c + b * io.state_b, sizeof(float) * H);
        else std::memset(cc, 0, sizeof(float) * H);
      }
      for (index_t t = n; t < T; ++t) zero_gates(row(b, t));  // steps the row never ran
    }
    rnnk::GradRow rows[rnnk::kMaxRows];
    const float* a_zr[rnnk::kMaxRows];  // dG rows: every gate, or GRU's z and r
    const float* a_h[rnnk::kMaxRows];   // GRU: h̃'s dG (split) or dgr (linear_before_reset) rows
    index_t owner[rnnk::kMaxRows];
    float* const tl = tile + r0 * Hp;
    for (index_t s = smax - 1; s >= 0; --s) {
      int m = 0;
      for (index_t b = r0; b < r1; ++b) {
        if (s >= len(b)) continue;
        const index_t t = time(b, s), n = row(b, t);
        if (!on(b, t)) {  // masked: the state passes through; Y repeated h_prev unless zeroed
          zero_gates(n);
          if (io.dy && !cfg.zero_output_for_mask && s > first_on[b - r0]) add_row(dh + b * Hp, dy(b, t));
          continue;
        }
        float* g = dg + n * GH;
        rows[m] = {io.tape + n * width, dy(b, t), dh + b * Hp, dc ? dc + b * Hp : nullptr, g,
                   dgr ? dgr + n * H : nullptr, tl + m * Hp};
        a_zr[m] = g;
        a_h[m] = split ? g + 2 * H : lbr ? dgr + n * H : g;
        owner[m++] = b;
      }
      if (m == 0) continue;
      if (split) {
        P.phase = rnnk::GradPhase::GruH;
        K.cells_backward(P, m, rows);
        K.tile(m, Hp, nullptr, a_h, H, panel + 2 * H * Hp, a_h, 0, panel, Hp, tl, Hp);
        P.phase = rnnk::GradPhase::GruR;
        K.cells_backward(P, m, rows);
        K.tile(m, Hp, nullptr, a_zr, 2 * H, panel, a_zr, 0, panel, Hp, tl, Hp);
      } else {
        P.phase = rnnk::GradPhase::Whole;
        K.cells_backward(P, m, rows);
        if (lbr) K.tile(m, Hp, nullptr, a_zr, 2 * H, panel, a_h, H, panel + 2 * H * Hp, Hp, tl, Hp);
        else K.tile(m, Hp, nullptr, a_zr, GH, panel, a_zr, 0, panel, Hp, tl, Hp);
      }
      for (int k = 0; k < m; ++k) add_row(dh + owner[k] * Hp, tl + k * Hp);
    }
    for (index_t b = r0; b < r1; ++b) {
      if (io.dh0) std::memcpy(io.dh0 + b * io.state_b, dh + b * Hp, sizeof(float) * H);
      if (io.dc0) std::memcpy(io.dc0 + b * io.state_b, dc + b * Hp, sizeof(float) * H);
    }
  }

  // dG row n of a step that did not run: zeros (the GEMMs read every row).
  void zero_gates(index_t n) const {
    std::memset(dg + n * GH, 0, sizeof(float) * GH);
    if (dgr) std::memset(dgr + n * H, 0, sizeof(float) * H);
  }
};

void zero(float* p, index_t n) {
  if (p && n > 0) std::memset(p, 0, sizeof(float) * n);
}

}  // namespace

index_t rnn_tape_width(RnnCell cell, index_t hidden) {
  return (cell == RnnCell::Lstm ? 7 : cell == RnnCell::Gru ? 5 : 2) * hidden;
}

bool rnn_backward_supports(const RnnActivation& a) {
  switch (a.act) {
    case RnnAct::Sigmoid: case RnnAct::Tanh: case RnnAct::Relu: case RnnAct::HardSigmoid: case RnnAct::Affine:
    case RnnAct::Softsign: case RnnAct::Softplus:
      return true;
    case RnnAct::LeakyRelu: return a.alpha >= 0.f;  // the sign of y is the sign of x
    case RnnAct::Elu: return a.alpha > 0.f;
    case RnnAct::ScaledTanh: return a.alpha != 0.f;
    default: return false;  // ThresholdedRelu: y does not say which side of alpha x was
  }
}

index_t rnn_grad_workspace_floats(const RnnConfig& cfg) { return GradWorkspace(cfg).total; }

void rnn_backward(const RnnConfig& cfg, const RnnGradIO& io, float* ws) {
  const index_t B = cfg.batch, H = cfg.hidden, T = cfg.seq_len, In = cfg.input;
  const index_t G = rnn_gates(cfg.cell), GH = G * H, N = T * B;
  ENGINE_CHECK(cfg.clip <= 0.f, "rnn backward: clip is not supported in training");
  ENGINE_CHECK(rnn_backward_supports(cfg.f) && rnn_backward_supports(cfg.g) && rnn_backward_supports(cfg.h),
               "rnn backward: an activation without a derivative from its output");
  ENGINE_CHECK(io.bias_parts == 1 || io.bias_parts == 2, "rnn backward: bias_parts must be 1 or 2");
  if (N == 0 || H == 0) {  // nothing ran: zero gradients
    zero(io.dw, GH * In), zero(io.dr, GH * H), zero(io.db, io.bias_parts * GH);
    if (!io.accumulate_dx) zero(io.dx, N * In);
    for (index_t b = 0; b < B; ++b) {  // only this direction's rows
      if (io.dh0) zero(io.dh0 + b * io.state_b, H);
      if (io.dc0) zero(io.dc0 + b * io.state_b, H);
    }
    return;
  }
  ENGINE_CHECK(io.tape && io.r && io.x, "rnn backward: X, R and the tape are required");
  const GradWorkspace at(cfg);
  const rnnk::Kernels& kern = rnnk::kernels_for(cpu_isa());
  ENGINE_CHECK(kern.mr >= kMinTileRows, "rnn backward: tile rows below the workspace's assumption");
  const bool lbr = cfg.cell == RnnCell::Gru && cfg.linear_before_reset;
  Backward bw{cfg, io, kern, B, H, In, T, G, GH, padded(H), rnn_tape_width(cfg.cell, H), lbr,
              cfg.cell == RnnCell::Gru && !lbr, ws + at.dg, lbr ? ws + at.dgr : nullptr, ws + at.panel,
              ws + at.dh, cfg.cell == RnnCell::Lstm ? ws + at.dc : nullptr, ws + at.tile, ws + at.db,
              at.db_stride, {}};
  rnnk::GradParams& P = bw.params;
  P.cell = cfg.cell;
  P.input_forget = cfg.input_forget;
  P.f = cfg.f, P.g = cfg.g, P.h = cfg.h;
  P.hidden = H;
  for (int g = 0; g < G; ++g) P.col[g] = rnn_weight_gate(cfg.cell, cfg.keras_layout, g);

  // R as the G·H × Hp panel of dh_prev = dG·R: element (weight column k, unit j).
  const index_t Hp = bw.Hp;
  for (index_t k = 0; k < GH; ++k) {
    float* p = bw.panel + k * Hp;
    if (cfg.keras_layout)
      for (index_t j = 0; j < H; ++j) p[j] = io.r[j * GH + k];
    else
      std::memcpy(p, io.r + k * H, sizeof(float) * H);
    std::memset(p + H, 0, sizeof(float) * (Hp - H));
  }

  const index_t chunk_rows = kern.mr, chunks = (B + chunk_rows - 1) / chunk_rows;
  ENGINE_CHECK(chunks <= at.chunks, "rnn backward: workspace too small for the chunks");
  parallel_tasks(chunks, [&](std::int64_t c) { bw.chunk(c, c * chunk_rows, std::min(B, (c + 1) * chunk_rows)); });


  if (io.db) {  // the chunks' sums in order
    std::vector<double> acc(static_cast<size_t>(GH + H), 0.0);
    for (index_t c = 0; c < chunks; ++c) {
      const float* p = bw.db + c * at.db_stride;
      for (index_t j = 0; j < GH + H; ++j) acc[j] += p[j];
    }
    for (index_t j = 0; j < GH; ++j) io.db[j] = static_cast<float>(acc[j]);
    if (io.bias_parts == 2) {
      std::memcpy(io.db + GH, io.db, sizeof(float) * GH);  // R's biases add where W's do
      if (lbr)  // but for h̃'s, inside r ⊙ (·)
        for (index_t u = 0; u < H; ++u) io.db[GH + P.col[2] * H + u] = static_cast<float>(acc[GH + u]);
    }
  }
  const float* dg = bw.dg;
  const bool keras = cfg.keras_layout;
  if (io.dx) {
    const float beta = io.accumulate_dx ? 1.f : 0.f;
    if (keras) sgemm(false, true, N, In, GH, 1.f, dg, GH, io.w, GH, beta, io.dx, In);
    else sgemm(false, false, N, In, GH, 1.f, dg, GH, io.w, In, beta, io.dx, In);
  }
  if (io.dw) {
    if (keras) sgemm(true, false, In, GH, N, 1.f, io.x, In, dg, GH, 0.f, io.dw, GH);
    else sgemm(true, false, GH, In, N, 1.f, dg, GH, io.x, In, 0.f, io.dw, In);
  }
  if (io.dr) {
    // Segments of R's gate columns: (first column, columns, dG-side operand and its ld, the
    // H_prev-side operand, in tape rows).
    const index_t width = bw.width;
    const float* hprev = io.tape + width - H;
    struct Seg {
      index_t c0, n;
      const float* a;
      index_t lda;
      const float* h;
    };
    Seg segs[2];
    int ns = 0;
    if (cfg.cell != RnnCell::Gru) {
      segs[ns++] = {0, GH, dg, GH, hprev};
    } else {  // z, r, then h̃ (GRU's gate order is the same in both layouts)
      segs[ns++] = {0, 2 * H, dg, GH, hprev};
      if (lbr) segs[ns++] = {2 * H, H, bw.dgr, H, hprev};
      else segs[ns++] = {2 * H, H, dg + 2 * H, GH, io.tape + 3 * H};  // r ⊙ h_prev
    }
    for (int i = 0; i < ns; ++i) {
      const Seg& sg = segs[i];
      if (keras) sgemm(true, false, H, sg.n, N, 1.f, sg.h, width, sg.a, sg.lda, 0.f, io.dr + sg.c0, GH);
      else sgemm(true, false, sg.n, H, N, 1.f, sg.a, sg.lda, sg.h, width, 0.f, io.dr + sg.c0 * H, H);
    }
  }
}

}  // namespace engine
