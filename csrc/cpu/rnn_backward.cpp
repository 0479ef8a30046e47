// Recurrent layers, training (see engine/rnn.h): backpropagation through time over the tape
// the forward wrote.
//
// The steps run backward in blocks of a few (block_steps). Within a block the batch rows go in
// chunks of one register tile (rows are independent: the chunks are claimed by the threads).
// Per step: the gate math turns dh (and dc) into dG, the gradients of the gate
// pre-activations (a row of the block's dG, in the weights' column order), then tile products
// while dG is in L1: dh_prev = dG·R against R laid out as a zero-padded G·H × H panel (GRU
// without linear_before_reset needs two: h̃'s first, as r's gradient depends on it), and the
// step's dx = dG·W against a G·H × In panel. The bias gradients are summed per chunk on the way,
// the chunks' sums added in order in double (the same for any thread count). Each block's rows
// then go through one GEMM while they are in L2 (a task beside the next block's chunks, two dG
// buffers alternating), adding to the weight gradients: [dR; dW] += [H_prev, X]ᵀ·dG, the tape
// holding h_prev and x side by side (GRU's h̃ columns of dR take their own operand: r ⊙ h_prev,
// or dG ⊙ r with linear_before_reset).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu/rnn_kernels.h"
#include "engine/gemm.h"
#include "engine/rnn.h"
#include "engine/threadpool.h"

namespace engine {

namespace {

constexpr index_t kMinTileRows = 3;  // the smallest mr of any ISA's kernels (rnn_kernels_*.cpp)

index_t padded(index_t n) { return (n + kRnnBlock - 1) / kRnnBlock * kRnnBlock; }

// Steps per block: the weight GEMM runs after each block of steps, over the block's dG rows
// (S·batch of them) while they are in L2, so dG needs only a block's rows (~512 KiB).
index_t block_steps(const RnnConfig& cfg) {
  const index_t B = std::max<index_t>(cfg.batch, 1), GH = rnn_gates(cfg.cell) * std::max<index_t>(cfg.hidden, 1);
  index_t S = std::max<index_t>(1, (131072 / GH) / B);
  S = std::max(S, (256 + B - 1) / B);  // and enough rows for a GEMM
  return std::max<index_t>(1, std::min(S, cfg.seq_len));
}

// Workspace offsets in floats, each rounded up to a cache line.
struct GradWorkspace {
  index_t dg, dgr, r_panel, w_panel, dh, dc, tile, db, wgrad, first_on, chunks, db_stride, tile_stride, total;
  explicit GradWorkspace(const RnnConfig& cfg) {
    const index_t B = cfg.batch, H = cfg.hidden, In = cfg.input, rows = block_steps(cfg) * B;
    const index_t Hp = padded(H), Ip = padded(In), GH = rnn_gates(cfg.cell) * H;
    const bool lbr = cfg.cell == RnnCell::Gru && cfg.linear_before_reset;
    index_t at = 0;
    auto take = [&](index_t n) {
      const index_t o = at;
      at += (n + 15) / 16 * 16;
      return o;
    };
    chunks = (B + kMinTileRows - 1) / kMinTileRows;
    db_stride = (GH + H + 15) / 16 * 16;
    tile_stride = Hp + Ip;  // a row's dh_prev product, then its dx
    dg = take(2 * rows * GH);  // two blocks: one being written, the last one in its GEMM
    dgr = take(lbr ? 2 * rows * H : 0);
    r_panel = take(GH * Hp);
    w_panel = take(GH * Ip);
    dh = take(B * Hp);
    dc = take(cfg.cell == RnnCell::Lstm ? B * Hp : 0);
    tile = take(B * tile_stride);
    db = take(chunks * db_stride);
    wgrad = take((H + In) * GH);
    first_on = take(B);  // int32 per row
    total = at;
  }
};

struct Backward {
  const RnnConfig& cfg;
  const RnnGradIO& io;
  const rnnk::Kernels& K;
  index_t B, H, In, T, GH, Hp, Ip, width, ts;  // ts: a tile row's floats
  bool lbr, split;  // GRU linear_before_reset; GRU without (two products per step)
  float *dg2[2], *dgr2[2];  // the two blocks' dG (and GRU linear_before_reset's dG ⊙ r) rows
  float *r_panel, *w_panel, *dh, *dc, *tile, *db;
  index_t db_stride;
  std::int32_t* first_on;
  rnnk::GradParams params;

  index_t len(index_t b) const { return io.seq_lens ? io.seq_lens[b] : T; }
  index_t time(index_t b, index_t s) const { return cfg.reverse ? len(b) - 1 - s : s; }
  bool on(index_t b, index_t t) const { return !io.mask || io.mask[b * T + t]; }
  index_t xrow(index_t b, index_t t) const { return t * io.row_t + b * io.row_b; }
  const float* dy(index_t b, index_t t) const { return io.dy ? io.dy + t * io.dy_t + b * io.dy_b : nullptr; }

  static void add(float* d, const float* s, index_t n) {
    for (index_t j = 0; j < n; ++j) d[j] += s[j];
  }

  // Rows [r0, r1) before the first block: the state gradients at the end (a row of length 0
  // reports zeros whatever its states), the first step each row runs, dx of the steps past
  // its end.
  void start(index_t c, index_t r0, index_t r1) const {
    std::memset(db + c * db_stride, 0, sizeof(float) * db_stride);
    for (index_t b = r0; b < r1; ++b) {
      const index_t n = len(b);
      index_t s = 0;
      while (s < n && !on(b, time(b, s))) ++s;
      first_on[b] = static_cast<std::int32_t>(s);
      float* h = dh + b * Hp;
      if (n > 0 && io.dy_h) std::memcpy(h, io.dy_h + b * io.state_b, sizeof(float) * H);
      else std::memset(h, 0, sizeof(float) * H);
      if (dc) {
        float* cc = dc + b * Hp;
        if (n > 0 && io.dy_c) std::memcpy(cc, io.dy_c + b * io.state_b, sizeof(float) * H);
        else std::memset(cc, 0, sizeof(float) * H);
      }
      if (io.dx && !io.accumulate_dx)
        for (index_t t = n; t < T; ++t) std::memset(io.dx + xrow(b, t) * In, 0, sizeof(float) * In);
    }
  }

  // Rows [r0, r1) of chunk c, steps [s0, s1), last to first, into block buffer `buf`.
  void run(index_t c, index_t r0, index_t r1, index_t s0, index_t s1, int buf) const {
    float* const dg = dg2[buf];
    float* const dgr = dgr2[buf];
    // dG row k of the block: a step that did not run has none (the GEMMs read every row).
    auto no_gates = [&](index_t k) {
      std::memset(dg + k * GH, 0, sizeof(float) * GH);
      if (dgr) std::memset(dgr + k * H, 0, sizeof(float) * H);
    };
    rnnk::GradParams P = params;
    P.db = db + c * db_stride;
    rnnk::GradRow rows[rnnk::kMaxRows];
    const float* a_g[rnnk::kMaxRows];  // dG rows
    const float* a_h[rnnk::kMaxRows];  // GRU: h̃'s dG (split) or dgr (linear_before_reset) rows
    index_t owner[rnnk::kMaxRows];
    float* const tl = tile + r0 * ts;
    for (index_t s = s1 - 1; s >= s0; --s) {
      if (s >= 1) prefetch(r0, r1, s - 1);
      int m = 0;
      for (index_t b = r0; b < r1; ++b) {
        const index_t k = (s - s0) * B + b;  // the row in the block's dG
        if (s >= len(b)) {
          no_gates(k);
          continue;
        }
        const index_t t = time(b, s);
        if (!on(b, t)) {  // masked: the state passes through; Y repeated h_prev unless zeroed
          no_gates(k);
          if (io.dx && !io.accumulate_dx) std::memset(io.dx + xrow(b, t) * In, 0, sizeof(float) * In);
          if (io.dy && !cfg.zero_output_for_mask && s > first_on[b]) add(dh + b * Hp, dy(b, t), H);
          continue;
        }
        float* g = dg + k * GH;
        rows[m] = {io.tape + (s * B + b) * width, dy(b, t), dh + b * Hp, dc ? dc + b * Hp : nullptr, g,
                   dgr ? dgr + k * H : nullptr, tl + m * ts};
        a_g[m] = g;
        a_h[m] = split ? g + 2 * H : lbr ? dgr + k * H : g;
        owner[m++] = xrow(b, t);
      }
      if (m == 0) continue;
      if (split) {
        P.phase = rnnk::GradPhase::GruH;
        K.cells_backward(P, m, rows);
        K.tile(m, Hp, nullptr, a_h, H, r_panel + 2 * H * Hp, a_h, 0, r_panel, Hp, tl, ts);
        P.phase = rnnk::GradPhase::GruR;
        K.cells_backward(P, m, rows);
        K.tile(m, Hp, nullptr, a_g, 2 * H, r_panel, a_g, 0, r_panel, Hp, tl, ts);
      } else {
        P.phase = rnnk::GradPhase::Whole;
        K.cells_backward(P, m, rows);
        if (lbr) K.tile(m, Hp, nullptr, a_g, 2 * H, r_panel, a_h, H, r_panel + 2 * H * Hp, Hp, tl, ts);
        else K.tile(m, Hp, nullptr, a_g, GH, r_panel, a_g, 0, r_panel, Hp, tl, ts);
      }
      if (io.dx) K.tile(m, Ip, nullptr, a_g, GH, w_panel, a_g, 0, w_panel, Ip, tl + Hp, ts);
      for (int k = 0; k < m; ++k) {
        add(rows[k].dh, tl + k * ts, H);
        if (!io.dx) continue;
        float* dx = io.dx + owner[k] * In;
        if (io.accumulate_dx) add(dx, tl + k * ts + Hp, In);
        else std::memcpy(dx, tl + k * ts + Hp, sizeof(float) * In);
      }
    }
  }

  // Step s's tape and dY rows, requested while the step before it (in this backward order)
  // computes: a step's rows sit a whole step of the batch apart from the last one's, a jump the
  // hardware prefetchers do not follow.
  void prefetch(index_t r0, index_t r1, index_t s) const {
    for (index_t b = r0; b < r1; ++b) {
      if (s >= len(b)) continue;
      const char* p = reinterpret_cast<const char*>(io.tape + (s * B + b) * width);
      for (index_t o = 0; o < width * index_t(sizeof(float)); o += 64) __builtin_prefetch(p + o);
      if (const float* d = dy(b, time(b, s)))
        for (index_t o = 0; o < H; o += 16) __builtin_prefetch(d + o);
    }
  }

  void finish(index_t r0, index_t r1) const {
    for (index_t b = r0; b < r1; ++b) {
      if (io.dh0) std::memcpy(io.dh0 + b * io.state_b, dh + b * Hp, sizeof(float) * H);
      if (io.dc0) std::memcpy(io.dc0 + b * io.state_b, dc + b * Hp, sizeof(float) * H);
    }
  }
};

void zero(float* p, index_t n) {
  if (p && n > 0) std::memset(p, 0, sizeof(float) * n);
}

// dst (K × Kp, zero-padded columns) = the panel of a product against a weight matrix:
// element (weight column k, j) = src[k·sk + j·sj], for j < J.
void weight_panel(float* dst, const float* src, index_t K, index_t J, index_t Jp, index_t sk, index_t sj) {
  for (index_t k = 0; k < K; ++k) {
    float* p = dst + k * Jp;
    if (sj == 1) std::memcpy(p, src + k * sk, sizeof(float) * J);
    else
      for (index_t j = 0; j < J; ++j) p[j] = src[k * sk + j * sj];
    std::memset(p + J, 0, sizeof(float) * (Jp - J));
  }
}

}  // namespace

int rnn_tape_fields(RnnCell cell) { return cell == RnnCell::Lstm ? 6 : cell == RnnCell::Gru ? 5 : 2; }

index_t rnn_tape_width(RnnCell cell, index_t hidden, index_t input) {
  return rnn_tape_fields(cell) * hidden + padded(input);
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
  ENGINE_CHECK(io.tape && io.r && (io.w || !io.dx), "rnn backward: R, the tape and (for dX) W are required");
  const GradWorkspace at(cfg);
  const rnnk::Kernels& kern = rnnk::kernels_for(cpu_isa());
  ENGINE_CHECK(kern.mr >= kMinTileRows, "rnn backward: tile rows below the workspace's assumption");
  const bool lbr = cfg.cell == RnnCell::Gru && cfg.linear_before_reset, keras = cfg.keras_layout;
  const index_t Hp = padded(H), Ip = padded(In), width = rnn_tape_width(cfg.cell, H, In);
  const index_t S = block_steps(cfg);
  float* const dgr0 = lbr ? ws + at.dgr : nullptr;
  Backward bw{cfg, io, kern, B, H, In, T, GH, Hp, Ip, width, at.tile_stride, lbr, cfg.cell == RnnCell::Gru && !lbr,
              {ws + at.dg, ws + at.dg + S * B * GH}, {dgr0, dgr0 ? dgr0 + S * B * H : nullptr}, ws + at.r_panel,
              ws + at.w_panel, ws + at.dh,
              cfg.cell == RnnCell::Lstm ? ws + at.dc : nullptr, ws + at.tile, ws + at.db, at.db_stride,
              reinterpret_cast<std::int32_t*>(ws + at.first_on), {}};
  rnnk::GradParams& P = bw.params;
  P.cell = cfg.cell;
  P.input_forget = cfg.input_forget;
  P.f = cfg.f, P.g = cfg.g, P.h = cfg.h;
  P.hidden = H;
  for (int g = 0; g < G; ++g) P.col[g] = rnn_weight_gate(cfg.cell, keras, g);

  // Panels (weight column k, j): R's for dh_prev = dG·R, W's for dx = dG·W.
  if (keras) weight_panel(bw.r_panel, io.r, GH, H, Hp, 1, GH);
  else weight_panel(bw.r_panel, io.r, GH, H, Hp, H, 1);
  if (io.dx) {
    if (keras) weight_panel(bw.w_panel, io.w, GH, In, Ip, 1, GH);
    else weight_panel(bw.w_panel, io.w, GH, In, Ip, In, 1);
  }

  // The weight gradients accumulate block by block in C: tape columns [a0, a0 + na) (h_prev
  // then x: dR's part, then dW's) against the G·H gate columns; Keras: C is (na × G·H), ONNX
  // (G·H × na).
  const bool want_r = io.dr != nullptr, want_w = io.dw != nullptr, want_rw = want_r || want_w;
  const index_t hp = (rnn_tape_fields(cfg.cell) - 1) * H;
  const index_t a0 = want_r ? hp : hp + H, na = (want_r ? H : 0) + (want_w ? In : 0), w_at = want_r ? H : 0;
  float* C = ws + at.wgrad;
  // C's part for tape columns [t0, t0 + nt) (at c_at of na) and gate columns [c0, c0 + n), from
  // b (the block's rows, ld ldb) over tape rows [row0, row0 + rows).
  auto wgemm = [&](index_t t0, index_t nt, index_t c_at, const float* b, index_t ldb, index_t c0, index_t n,
                   index_t row0, index_t rows, float beta) {
    const float* a = io.tape + row0 * width + t0;
    if (keras) sgemm(true, false, nt, n, rows, 1.f, a, width, b, ldb, beta, C + c_at * GH + c0, GH);
    else sgemm(true, false, n, nt, rows, 1.f, b, ldb, a, width, beta, C + c0 * na + c_at, na);
  };
  auto weight_block = [&](index_t row0, index_t rows, float beta, int buf) {
    const float* dg = bw.dg2[buf];
    if (cfg.cell != RnnCell::Gru) return wgemm(a0, na, 0, dg, GH, 0, GH, row0, rows, beta);
    // GRU (the same gate order in both layouts): z and r from (h_prev, x); h̃'s x part from
    // dG, its recurrent part from r ⊙ h_prev (tape field 3), or dG ⊙ r (dgr) with
    // linear_before_reset.
    wgemm(a0, na, 0, dg, GH, 0, 2 * H, row0, rows, beta);
    if (want_w) wgemm(hp + H, In, w_at, dg + 2 * H, GH, 2 * H, H, row0, rows, beta);
    if (want_r) {
      if (lbr) wgemm(hp, H, 0, bw.dgr2[buf], H, 2 * H, H, row0, rows, beta);
      else wgemm(3 * H, H, 0, dg + 2 * H, GH, 2 * H, H, row0, rows, beta);
    }
  };

  const index_t chunk_rows = kern.mr, chunks = (B + chunk_rows - 1) / chunk_rows;
  ENGINE_CHECK(chunks <= at.chunks, "rnn backward: workspace too small for the chunks");
  auto rows_of = [&](std::int64_t c) { return std::make_pair(c * chunk_rows, std::min(B, (c + 1) * chunk_rows)); };
  parallel_tasks(chunks, [&](std::int64_t c) { bw.start(c, rows_of(c).first, rows_of(c).second); });
  index_t smax = 0;
  for (index_t b = 0; b < B; ++b) smax = std::max(smax, bw.len(b));
  // Blocks of steps, last first, alternating between two dG buffers: the GEMM of a block runs
  // as one more task beside the next block's chunks (on one thread, nested), so the threads
  // share both; the last block's GEMM runs alone (on all of them).
  struct Done {
    index_t s0, s1;
    int buf;
  } prev{0, 0, -1};
  auto gemm_of = [&](const Done& d) { weight_block(d.s0 * B, (d.s1 - d.s0) * B, d.s1 == smax ? 0.f : 1.f, d.buf); };
  int buf = 0;
  for (index_t s1 = smax; s1 > 0; buf ^= 1) {
    const index_t s0 = std::max<index_t>(0, s1 - S);
    const bool gemm = want_rw && prev.buf >= 0;
    parallel_tasks(chunks + (gemm ? 1 : 0), [&](std::int64_t task) {  // the GEMM first: the longest task
      const std::int64_t c = gemm ? task - 1 : task;
      if (c < 0) gemm_of(prev);
      else bw.run(c, rows_of(c).first, rows_of(c).second, s0, s1, buf);
    });
    prev = {s0, s1, buf};
    s1 = s0;
  }
  if (want_rw && prev.buf >= 0) gemm_of(prev);
  for (index_t c = 0; c < chunks; ++c) bw.finish(rows_of(c).first, rows_of(c).second);

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
  if (!want_rw) return;
  if (smax == 0) {  // no step ran
    zero(io.dr, GH * H), zero(io.dw, GH * In);
    return;
  }
  for (index_t i = 0; i < na; ++i) {  // C into dR and dW
    const bool r = want_r && i < H;
    float* dst = r ? io.dr : io.dw;
    const index_t j = r ? i : i - w_at, cols = r ? H : In;
    if (keras) std::memcpy(dst + j * GH, C + i * GH, sizeof(float) * GH);
    else
      for (index_t k = 0; k < GH; ++k) dst[k * cols + j] = C[k * na + i];
  }
}

}  // namespace engine
