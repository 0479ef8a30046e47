// Recurrent layers (see engine/rnn.h): the time loop of one direction and its threads.
//
// A work item is (time step, part, batch rows, unit blocks). For each group of blocks whose
// columns fit one register tile, the rows still running go through the tile product
// x·Wᵀ + h·Rᵀ a few at a time, and the gate math runs on each tile while it is in L1: the
// weights of a block group stay in L1 across the row tiles (one row tile: all groups'
// products first, then the gate math of all blocks at once). h is double-buffered (step s
// reads hs[s & 1], writes hs[(s + 1) & 1]) so threads owning different units of the same
// rows never read a half-updated state; rows not running at a step (ended, or masked) carry
// their state over. Ended rows' Y was zeroed up front; a masked row's Y repeats its last
// output (zeros before its first unmasked step, or with zero_output_for_mask).
//
// Threads (one pool job for the whole loop, never one per step):
//  * rows: chunks of batch rows run all steps, claimed by the threads; rows are independent,
//    so nothing is shared until the end. Used from batch 2 on.
//  * units: batch 1 with a large hidden size. Each thread owns a range of unit blocks (its
//    share of the weights stays in its own L1/L2) and the threads meet at a spin barrier per
//    step. Items are claimed, not assigned: a thread that joins late (asleep when the job
//    started) or never (nested call) leaves its share to the others instead of stalling them.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu/rnn_kernels.h"
#include "engine/rnn.h"
#include "engine/threadpool.h"

namespace engine {

using rnnk::CellParams;
using rnnk::CellRow;
using rnnk::Phase;

namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Few rows: x·Wᵀ of every step is computed first, as one product over all T·B rows (W read
// once, not per step), into a buffer of T·B × cols floats that stays in L2; the steps then
// stream only R. Many rows: fused per step (the rows of a tile already share W, and a
// T·B × cols buffer would go through memory).
bool project_first(const RnnConfig& cfg, const RnnLayout& L) {
  return cfg.batch <= 4 && double(cfg.seq_len) * double(cfg.batch) * double(L.cols) <= 256.0 * 1024;
}

// Workspace offsets in floats, each rounded up to a cache line.
struct Workspace {
  index_t bias, h, c, z, rh, first_on, w, r, xw, total;
  explicit Workspace(const RnnConfig& cfg) {
    const index_t B = cfg.batch, H = cfg.hidden;
    const RnnLayout L = rnn_layout(cfg.cell, cfg.linear_before_reset, H);
    const bool lstm = cfg.cell == RnnCell::Lstm, split = L.parts == 2;
    index_t at = 0;
    auto take = [&](index_t n) {
      const index_t o = at;
      at += (n + 15) / 16 * 16;
      return o;
    };
    bias = take(L.cols);
    h = take(2 * B * H);
    c = take(lstm ? B * H : 0);
    z = take(split ? B * H : 0);
    rh = take(split ? B * H : 0);
    first_on = take(cfg.masked ? B : 0);  // int32 per row
    w = take(cfg.pack_weights ? cfg.input * L.cols : 0);
    r = take(cfg.pack_weights ? H * L.cols : 0);
    xw = take(project_first(cfg, L) ? cfg.seq_len * B * L.cols : 0);
    total = at;
  }
};

struct Loop {
  static constexpr index_t kWideCols = 512;  // one-row-tile steps: the widest product kept whole
  const RnnConfig& cfg;
  const RnnIO& io;
  const rnnk::Kernels& K;
  RnnLayout L;
  index_t B, H, In, T, steps = 0;
  index_t tape_width = 0, tape_x = 0;  // the tape's row width and x's offset in it
  index_t slice_blocks = 1;  // units mode: slices are whole multiples of every part's tile group
  const float *wp, *rp, *bias;
  float *hs[2], *cs, *zb, *rh, *xw;  // xw: null unless projecting first
  const std::int32_t* first_on;

  index_t len(index_t b) const { return io.seq_lens ? io.seq_lens[b] : cfg.seq_len; }
  // The time index batch row b processes at step s (s < len(b)).
  index_t time(index_t b, index_t s) const { return cfg.reverse ? len(b) - 1 - s : s; }
  // Whether row b updates its state at time t (false: a masked step).
  bool on(index_t b, index_t t) const { return !io.mask || io.mask[b * cfg.seq_len + t]; }
  bool running(index_t b, index_t s) const { return s < len(b) && on(b, time(b, s)); }
  const float* x(index_t b, index_t t) const { return io.x + t * io.x_t + b * io.x_b; }
  float* tape_row(index_t b, index_t s) const { return io.tape ? io.tape + (s * B + b) * tape_width : nullptr; }

  CellParams params(int part) const {
    CellParams P;
    P.cell = cfg.cell;
    P.phase = L.parts == 1 ? Phase::Whole : part == 0 ? Phase::GruZr : Phase::GruH;
    P.input_forget = cfg.input_forget;
    P.clip = cfg.clip;
    P.f = cfg.f, P.g = cfg.g, P.h = cfg.h;
    P.hidden = H;
    P.groups = L.groups[part];
    P.bias = bias + L.offset[part];
    P.p = io.p;
    return P;
  }

  // xw rows (t, b) for b in [r0, r1), all t, columns of blocks [j0, j1) of every part.
  void project(index_t r0, index_t r1, index_t j0, index_t j1) const {
    const float* a[rnnk::kMaxRows];
    // Rows t·B + b: one run over all of them when the range is every row, else a run per t.
    const index_t runs = r0 == 0 && r1 == B ? 1 : T, run_rows = runs == 1 ? T * B : r1 - r0;
    for (int p = 0; p < L.parts; ++p)
      for (index_t i = j0 / L.tile_blocks[p]; i * L.tile_blocks[p] < j1; ++i) {
        const index_t col = L.tile_col(p, i), n = L.tile_cols(p, i);
        for (index_t t = 0; t < runs; ++t)
          for (index_t k = 0; k < run_rows; k += K.mr) {
            const int m = static_cast<int>(std::min<index_t>(K.mr, run_rows - k));
            const index_t row0 = runs == 1 ? k : t * B + r0 + k;
            for (int q = 0; q < m; ++q) a[q] = x((row0 + q) % B, (row0 + q) / B);
            K.tile(m, n, nullptr, a, In, wp + In * col, a, 0, wp + In * col, n, xw + row0 * L.cols + col, L.cols);
          }
      }
  }

  // The operands of one row tile: up to K.mr rows from b on that run at step s (b advances
  // past them).
  struct RowTile {
    int m = 0;
    const float* a1[rnnk::kMaxRows];
    const float* a2[rnnk::kMaxRows];
    const float* xrow[rnnk::kMaxRows];  // projected x·Wᵀ rows, when projecting first
    const float* init[rnnk::kMaxRows];
    CellRow row[rnnk::kMaxRows];
  };
  void gather(RowTile& R, index_t& b, index_t r1, index_t s, const float* a2base) const {
    const float* hp = hs[s & 1];
    float* hn = hs[(s + 1) & 1];
    for (R.m = 0; b < r1 && R.m < K.mr; ++b) {
      if (!running(b, s)) continue;
      const index_t t = time(b, s);
      const int m = R.m++;
      R.a1[m] = x(b, t);
      R.a2[m] = a2base + b * H;
      if (xw) R.xrow[m] = xw + (t * B + b) * L.cols;
      R.row[m] = {hp + b * H, hn + b * H, cs ? cs + b * H : nullptr, io.y ? io.y + t * io.y_t + b * io.y_b : nullptr,
                  zb ? zb + b * H : nullptr, rh ? rh + b * H : nullptr, tape_row(b, s)};
    }
  }
  void cells(const CellParams& P, int rows, const CellRow* row, const float* tile, index_t ldt, index_t j0,
             index_t nb) const {
    (io.tape ? K.cells_tape : K.cells)(P, rows, row, tile, ldt, j0, nb);
  }
  // tile[0:m][0:n] = the product for tile group i of `part`.
  void product(RowTile& R, int part, index_t i, float* tile, index_t ldt) const {
    const index_t col = L.tile_col(part, i), n = L.tile_cols(part, i);
    const float* r = rp + H * col;
    if (xw)
      for (int m = 0; m < R.m; ++m) R.init[m] = R.xrow[m] + col;
    K.tile(R.m, n, xw ? R.init : nullptr, R.a1, xw ? 0 : In, xw ? r : wp + In * col, R.a2, H, r, n, tile, ldt);
  }

  // Step s, part `part`, rows [r0, r1), unit blocks [j0, j1). Tile groups alternate direction
  // step by step: weights a little larger than L1 then start each step with the groups the
  // last one left in L1 (a cyclic order would evict every group just before its next use).
  void step(index_t s, int part, index_t r0, index_t r1, index_t j0, index_t j1) const {
    const CellParams P = params(part);
    const index_t nbt = L.tile_blocks[part], gw = L.groups[part] * kRnnBlock;
    const float* a2base = P.phase == Phase::GruH ? rh : hs[s & 1];  // GRU: the h gate multiplies r ⊙ h
    const index_t i0 = j0 / nbt, i1 = (j1 + nbt - 1) / nbt, c0 = L.tile_col(part, i0);
    const index_t wide = L.tile_col(part, i1 - 1) + L.tile_cols(part, i1 - 1) - c0;
    auto group = [&](index_t k) { return s & 1 ? i1 - 1 - k : i0 + k; };
    RowTile R;
    if (r1 - r0 <= K.mr && wide <= kWideCols) {
      // One row tile (batch 1): all the products first, then the gate math of all the blocks
      // in one call, so it interleaves their lanes.
      alignas(64) float tile[rnnk::kMaxRows * kWideCols];
      index_t b = r0;
      gather(R, b, r1, s, a2base);
      if (R.m > 0) {
        for (index_t k = 0; k < i1 - i0; ++k) product(R, part, group(k), tile + L.tile_col(part, group(k)) - c0, wide);
        cells(P, R.m, R.row, tile, wide, i0 * nbt, wide / gw);
      }
    } else {
      alignas(64) float tile[rnnk::kMaxRows * rnnk::kMaxTileCols];
      for (index_t k = 0; k < i1 - i0; ++k) {
        const index_t i = group(k), n = L.tile_cols(part, i);
        for (index_t b = r0;;) {
          gather(R, b, r1, s, a2base);
          if (R.m == 0) break;
          product(R, part, i, tile, n);
          cells(P, R.m, R.row, tile, n, i * nbt, n / gw);
        }
      }
    }
    if (part == L.parts - 1) carry(s, r0, r1, j0, j1);
    if (io.tape && part == 0 && j0 == 0)  // the step's inputs into the tape (x, once per row)
      for (index_t b = r0; b < r1; ++b)
        if (running(b, s)) stream_copy(tape_row(b, s) + tape_x, x(b, time(b, s)), In);
  }

  // dst[0:n] = src[0:n], bypassing the caches where dst is aligned (the tape).
  static void stream_copy(float* dst, const float* src, index_t n) {
    index_t k = 0;
#if defined(__x86_64__)
    if ((reinterpret_cast<std::uintptr_t>(dst) & 15) == 0) {
      for (; k + 4 <= n; k += 4) _mm_stream_ps(dst + k, _mm_loadu_ps(src + k));
    }
#endif
    for (; k < n; ++k) dst[k] = src[k];
  }

  // Rows not running at step s keep their state; a masked row's Y repeats its last output.
  void carry(index_t s, index_t r0, index_t r1, index_t j0, index_t j1) const {
    const index_t u0 = j0 * kRnnBlock, n = std::min(H, j1 * kRnnBlock) - u0;
    const float* hp = hs[s & 1];
    float* hn = hs[(s + 1) & 1];
    for (index_t b = r0; b < r1; ++b) {
      if (running(b, s)) continue;
      std::memcpy(hn + b * H + u0, hp + b * H + u0, sizeof(float) * n);
      if (s >= len(b)) continue;
      if (float* tp = tape_row(b, s)) {  // a masked step's tape row is zeros
        for (index_t f = 0; f < tape_x; f += H) std::memset(tp + f + u0, 0, sizeof(float) * n);
        if (j0 == 0) std::memset(tp + tape_x, 0, sizeof(float) * (tape_width - tape_x));
      }
      if (!io.y) continue;
      float* y = io.y + time(b, s) * io.y_t + b * io.y_b + u0;
      if (cfg.zero_output_for_mask || first_on[b] >= s) std::memset(y, 0, sizeof(float) * n);
      else std::memcpy(y, hp + b * H + u0, sizeof(float) * n);
    }
  }

  // Sub-step q of every row and block range: the projection first (when there is one), then
  // each step's parts in order.
  index_t substeps() const { return (xw ? 1 : 0) + steps * L.parts; }
  void substep(index_t q, index_t r0, index_t r1, index_t j0, index_t j1) const {
    if (xw) {
      if (q == 0) return project(r0, r1, j0, j1);
      --q;
    }
    step(q / L.parts, static_cast<int>(q % L.parts), r0, r1, j0, j1);
#if defined(__x86_64__)
    if (io.tape) _mm_sfence();  // the tape's streaming stores, visible before this item counts as done
#endif
  }

  void rows_range(index_t r0, index_t r1) const {
    for (index_t q = 0, n = substeps(); q < n; ++q) substep(q, r0, r1, 0, L.blocks);
  }

  // Rows mode: chunks of one row tile (fewer rows when B < nt·mr; not fewer otherwise: a
  // tile of few rows streams all the weights per step for little work). A thread takes a
  // free chunk and runs a burst of kBurst sub-steps of it, then releases it and goes on with
  // the same chunk if it can, so each thread keeps to its chunks. On a busy machine a thread
  // may be preempted for milliseconds: holding a chunk for a burst (~10 µs of work) rather
  // than for the whole loop, it leaves the rest of that chunk to the other threads.
  void run_rows(int nt) const {
    constexpr index_t kBurst = 4;
    const index_t rows = std::min<index_t>(K.mr, (B + nt - 1) / nt);
    const index_t chunks = (B + rows - 1) / rows, subs = substeps();
    struct alignas(64) Chunk {
      std::atomic<index_t> next{0};  // its first sub-step not run yet
      std::atomic<bool> busy{false};
    };
    std::unique_ptr<Chunk[]> chunk(new Chunk[chunks]);
    std::atomic<index_t> finished{0};
    // Runs a burst of chunk i if it is free and unfinished; false otherwise.
    auto burst = [&](index_t i) {
      Chunk& c = chunk[i];
      bool idle = false;
      if (c.next.load(std::memory_order_relaxed) >= subs || c.busy.load(std::memory_order_relaxed) ||
          !c.busy.compare_exchange_strong(idle, true, std::memory_order_acquire))
        return false;
      const index_t q0 = c.next.load(std::memory_order_relaxed), q1 = std::min(subs, q0 + kBurst);
      for (index_t q = q0; q < q1; ++q) substep(q, i * rows, std::min(B, (i + 1) * rows), 0, L.blocks);
      c.next.store(q1, std::memory_order_relaxed);
      c.busy.store(false, std::memory_order_release);
      if (q1 == subs) finished.fetch_add(1, std::memory_order_release);
      return q1 > q0;
    };
    parallel_tasks(nt, [&](std::int64_t self) {
      index_t at = chunks * self / nt;  // start on an own share of the chunks
      while (finished.load(std::memory_order_acquire) < chunks) {
        bool ran = false;
        for (index_t k = 0; k < chunks && !ran; ++k)
          if (burst((at + k) % chunks)) at = (at + k) % chunks, ran = true;
        if (!ran) cpu_relax();
      }
    });
  }

  // Units mode: slice i owns blocks [j0(i), j0(i + 1)); thread i works on slice i first.
  // `done` counts finished (sub-step, slice) items, so done >= q·ns means every item before
  // sub-step q has finished (an item of q is only claimed after that). A thread that waits
  // long at the barrier takes over slices nobody claimed (a thread not there yet); the
  // claim counters and `done` sit on their own cache lines, so the steady state moves only
  // `done` between cores.
  void run_units(int ns) const {
    constexpr int kMaxSlices = 16;
    constexpr int kSpinsBeforeTakeover = 16;
    ns = std::min(ns, kMaxSlices);
    const index_t units = (L.blocks + slice_blocks - 1) / slice_blocks;
    auto j0 = [&](std::int64_t i) { return std::min(L.blocks, units * i / ns * slice_blocks); };
    struct alignas(64) Counter {
      std::atomic<std::int64_t> v{0};
    };
    Counter done, next[kMaxSlices];  // next[i]: the sub-step slice i is open for
    const std::int64_t subs = substeps();
    auto claim = [&](int i, std::int64_t q) {
      std::int64_t expect = q;
      if (next[i].v.load(std::memory_order_relaxed) != q ||
          !next[i].v.compare_exchange_strong(expect, q + 1, std::memory_order_acq_rel))
        return;
      substep(q, 0, B, j0(i), j0(i + 1));
      done.v.fetch_add(1, std::memory_order_acq_rel);
    };
    parallel_tasks(ns, [&](std::int64_t self) {
      const int me = static_cast<int>(self);
      for (;;) {
        const std::int64_t q = done.v.load(std::memory_order_acquire) / ns;
        if (q >= subs) return;
        claim(me, q);
        for (int spins = 1; done.v.load(std::memory_order_acquire) < (q + 1) * ns; ++spins) {
          if (spins % kSpinsBeforeTakeover == 0)
            for (int k = 1; k < ns; ++k) claim((me + k) % ns, q);
          cpu_relax();
        }
      }
    });
  }

  void run() const {
    const int nt = num_threads();
    const double step_flops = 2.0 * double(B) * double((xw ? 0 : In) + H) * double(L.cols);
    // Rows: no synchronisation until the end, so whenever each thread gets a row and enough
    // work to pay for its wake-up (tens of µs when asleep) many times over.
    if (nt > 1 && B >= 2 && step_flops * double(steps) / nt >= 1e6)
      return run_rows(static_cast<int>(std::min<index_t>(nt, B)));
    // Units (one row): a barrier per step, and a thread preempted on a busy machine stalls
    // the others, so only when a slice's product is big enough (R about 128 × 512 or more,
    // beyond L1, so the split also halves each core's L2 traffic) that this is rare and small.
    const int ns = static_cast<int>(std::min<index_t>(nt, (L.blocks + slice_blocks - 1) / slice_blocks));
    if (B == 1 && ns > 1 && step_flops / ns >= 64e3) return run_units(ns);
    rows_range(0, B);
  }
};

}  // namespace

index_t rnn_workspace_floats(const RnnConfig& cfg) { return Workspace(cfg).total; }

void rnn_run(const RnnConfig& cfg, const RnnIO& io, float* ws) {
  const index_t B = cfg.batch, H = cfg.hidden, T = cfg.seq_len, In = cfg.input;
  if (B == 0 || H == 0) return;
  const Workspace at(cfg);
  Loop lp{cfg, io, rnnk::kernels_for(cpu_isa()), rnn_layout(cfg.cell, cfg.linear_before_reset, H), B, H, In, T};
  const RnnLayout& L = lp.L;
  lp.slice_blocks = std::max(L.tile_blocks[0], L.tile_blocks[L.parts - 1]);
  lp.xw = project_first(cfg, L) ? ws + at.xw : nullptr;
  if (cfg.tape) {
    ENGINE_CHECK(io.tape, "rnn: the tape is missing");
    lp.tape_width = rnn_tape_width(cfg.cell, H, In);
    lp.tape_x = rnn_tape_fields(cfg.cell) * H;
  }
  if (cfg.pack_weights) {
    rnn_pack_weights(ws + at.w, io.w, In, cfg.cell, cfg.linear_before_reset, H, false, cfg.keras_layout);
    rnn_pack_weights(ws + at.r, io.r, H, cfg.cell, cfg.linear_before_reset, H, true, cfg.keras_layout);
    lp.wp = ws + at.w, lp.rp = ws + at.r;
  } else {
    lp.wp = io.w, lp.rp = io.r;
  }
  if (io.bias) {
    lp.bias = io.bias;
  } else {
    rnn_pack_bias(ws + at.bias, io.wb, io.rb, cfg.cell, cfg.linear_before_reset, H, cfg.keras_layout);
    lp.bias = ws + at.bias;
  }
  lp.hs[0] = ws + at.h, lp.hs[1] = ws + at.h + B * H;
  lp.cs = cfg.cell == RnnCell::Lstm ? ws + at.c : nullptr;
  lp.zb = L.parts == 2 ? ws + at.z : nullptr;
  lp.rh = L.parts == 2 ? ws + at.rh : nullptr;
  for (index_t b = 0; b < B; ++b) {
    if (io.h0) std::memcpy(lp.hs[0] + b * H, io.h0 + b * io.state_b, sizeof(float) * H);
    else std::memset(lp.hs[0] + b * H, 0, sizeof(float) * H);
    if (lp.cs) {
      if (io.c0) std::memcpy(lp.cs + b * H, io.c0 + b * io.state_b, sizeof(float) * H);
      else std::memset(lp.cs + b * H, 0, sizeof(float) * H);
    }
    lp.steps = std::max(lp.steps, lp.len(b));
  }
  lp.first_on = nullptr;
  if (cfg.masked) {
    auto* first = reinterpret_cast<std::int32_t*>(ws + at.first_on);
    for (index_t b = 0; b < B; ++b) {
      index_t s = 0;
      while (s < lp.len(b) && !lp.on(b, lp.time(b, s))) ++s;
      first[b] = static_cast<std::int32_t>(s);
    }
    lp.first_on = first;
  }
  for (index_t b = 0; b < B; ++b)
    for (index_t t = lp.len(b); t < T; ++t) {  // past the row's end (t: as a time, and as a step)
      if (io.y) std::memset(io.y + t * io.y_t + b * io.y_b, 0, sizeof(float) * H);
      if (float* tp = lp.tape_row(b, t)) std::memset(tp, 0, sizeof(float) * lp.tape_width);
    }
  lp.run();
  // Final states; a sequence of length 0 reports zeros (as onnxruntime does).
  const float* hf = lp.hs[lp.steps & 1];
  for (index_t b = 0; b < B; ++b) {
    const bool empty = lp.len(b) == 0;
    if (io.y_h) {
      float* d = io.y_h + b * io.state_b;
      if (empty) std::memset(d, 0, sizeof(float) * H);
      else std::memcpy(d, hf + b * H, sizeof(float) * H);
    }
    if (io.y_c) {
      float* d = io.y_c + b * io.state_b;
      if (empty) std::memset(d, 0, sizeof(float) * H);
      else std::memcpy(d, lp.cs + b * H, sizeof(float) * H);
    }
  }
}

}  // namespace engine
