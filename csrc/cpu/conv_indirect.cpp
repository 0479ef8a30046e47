// Indirect convolution driver (see conv_indirect.h).
//
//   M = N·OH·OW output pixels in tiles of 14 (a tile may span output rows and images: every
//   pixel has its own pointer per tap), N = OC in panels of 32. A tap is one (kh, kw) of C
//   floats, or with a small input depth one filter row: its KW·C floats are one run of the
//   input row; a run that crosses the left/right edge is copied, zero-filled, into scratch.
//   Threads: one rectangle of tiles × panels each. Few pixels and a big filter (late layers)
//   split the panels, so each core streams its half of the filter once; many pixels split
//   the tiles. The split with the lowest estimate of FMA time + filter traffic wins.
//   Per thread: tiles in blocks whose input rows fit in L2; per block the tap pointer table is
//   built once, then either tile by tile over all the thread's panels (a filter share that
//   fits in L2), or panel by panel over the block's tiles (the panel stays in L2 across them).
//   The micro-kernel accumulates taps × C in registers and writes each tile once.
#include "conv_indirect.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "conv_kernels.h"
#include "engine/cpu_features.h"
#include "engine/elementwise.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {

namespace {

constexpr int MR = convk::kIndirectMR, NR = convk::kIndirectNR;

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

bool act_in_kernel(Act a, bool simd) {
  if (a == Act::None || a == Act::Identity) return true;
  return simd && (a == Act::Relu || a == Act::LeakyRelu || a == Act::Clip);
}

}  // namespace

// The same tile as the AVX-512 kernel, in scalar code (bias + residual; the caller applies
// every activation): used only when the ISA was lowered after the filters were packed.
void convk::indirect_tile_scalar(const convk::IndirectTile& t) {
  for (int i = 0; i < t.m; ++i)
    for (int j = 0; j < t.n; ++j) {
      float acc = 0.f;
      const float* b = t.b + j;
      for (index_t c0 = 0; c0 < t.C; c0 += t.cb)
        for (index_t tap = 0; tap < t.taps; ++tap) {
          const float* a = t.a[tap * MR + i];
          for (index_t c = c0; c < std::min(t.C, c0 + t.cb); ++c, b += NR) acc += a[c] * *b;
        }
      acc += t.bias[j];
      if (t.res) acc += t.res[i * t.ldr + j];
      t.y[i * t.ldy + j] = acc;
    }
}

bool IndirectConv::suits(const Conv2DShape& s) {
  // C <= 4 takes the direct small-C kernel; a zero row of C floats and int offsets must fit.
  return s.groups == 1 && s.C > 4 && cpu_isa() == Isa::Avx512 && s.C <= (index_t(1) << 20);
}

IndirectConv::IndirectConv(const Conv2DShape& s) : s_(s) {
  rows_ = s.dil_w == 1 && s.KW > 1 && s.C < 16;
  taps_ = rows_ ? s.KH : s.KH * s.KW;
  depth_ = rows_ ? s.KW * s.C : s.C;
  np_ = (s.OC + NR - 1) / NR;
  // Blocks of the sum: with several taps, 64 floats of 16 pixels' input (~12 KiB for a 3×3
  // filter) stay in L1 while the taps sweep them; one tap needs no blocking.
  cb_ = taps_ > 1 ? std::min<index_t>(depth_, 64) : depth_;
}

void IndirectConv::pack(float* w, float* bias_out, const float* filter, const float* bias) const {
  const Conv2DShape& s = s_;
  const index_t K = taps_ * depth_, OC = s.OC, full = OC / NR;  // panels with 32 real channels
  // Panel p holds, in the kernel's order (block c0, tap, float c of the tap), HWIO row
  // tap·depth + c (a filter row's KW·C floats are contiguous in HWIO too), columns
  // [32p, 32p + 32). The filter is read row by row (in order: one stream) and each row is
  // scattered over the panels.
  parallel_for(K, std::max<index_t>(1, (1 << 14) / std::max<index_t>(1, OC)), [&](std::int64_t r0, std::int64_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t tap = r / depth_, c = r % depth_, c0 = c / cb_ * cb_;
      const index_t cbl = std::min(cb_, depth_ - c0);
      const index_t k = c0 * taps_ + tap * cbl + (c - c0);  // the row's place in every panel
      const float* src = filter + r * OC;
      float* d = w + k * NR;
      for (index_t p = 0; p < full; ++p) std::memcpy(d + p * K * NR, src + p * NR, NR * sizeof(float));
      if (full < np_) {
        const index_t nj = OC - full * NR;
        float* dp = d + full * K * NR;
        std::memcpy(dp, src + full * NR, nj * sizeof(float));
        std::fill(dp + nj, dp + NR, 0.f);
      }
    }
  });
  for (index_t j = 0; j < np_ * NR; ++j) bias_out[j] = bias && j < OC ? bias[j] : 0.f;
}

void IndirectConv::run(float* y, index_t ldy, const float* x, const float* res, index_t batch, Act act,
                       float a, float b, const float* wp, const float* pbias) const {
  const Conv2DShape& s = s_;
  const index_t OH = s.OH(), OW = s.OW(), P = OH * OW, M = batch * P, OC = s.OC, C = s.C;
  const index_t taps = taps_, depth = depth_, K = taps * depth, mt = (M + MR - 1) / MR;
  const bool simd = cpu_isa() == Isa::Avx512;
  auto kernel = simd ? convk::indirect_tile_avx512 : convk::indirect_tile_scalar;
  const bool post_act = !act_in_kernel(act, simd);

  // Tiles per block: the input rows a block reads (its pixels' share plus the halo of the
  // filter's extra rows) stay within ~768 KiB of L2, next to one filter panel; the pointer
  // table stays around 2048 taps' worth.
  const double in_px = double(s.stride_h) * s.stride_w * C * 4;
  const double halo = double((s.KH - 1) * s.dil_h) * s.W * C * 4;
  const index_t blk_tiles = std::clamp<index_t>(
      static_cast<index_t>(std::max(0.0, 768.0 * 1024 - halo) / (in_px * MR)), 1, std::max<index_t>(1, 2048 / taps));

  // Row taps: output columns whose run leaves the input width get a zero-filled copy.
  index_t edge_cols = 0;
  if (rows_)
    for (index_t ow = 0; ow < OW; ++ow) {
      const index_t iw0 = ow * s.stride_w - s.pad_left;
      edge_cols += iw0 < 0 || iw0 + s.KW > s.W;
    }
  const index_t blk_rows = std::min<index_t>(OH * batch, (blk_tiles * MR + OW - 1) / OW + 1);
  const size_t patch_floats = static_cast<size_t>(blk_rows * edge_cols * taps * depth);

  // Thread split: estimated cycles = FMAs / 32 per cycle + filter bytes / 8 per cycle.
  const int T = num_threads();
  const double flops = 2.0 * M * K * OC;
  int tm = 1, tn = 1;
  if (T > 1 && flops > 2e5) {
    double best = -1;
    for (int m = 1; m <= T; ++m) {
      if (T % m) continue;
      const int n = T / m;
      if (m > mt || n > np_) continue;
      const index_t tiles = (mt + m - 1) / m, panels = (np_ + n - 1) / n;
      const index_t blocks = (tiles + blk_tiles - 1) / blk_tiles;
      const double cost = double(tiles) * panels * MR * NR * K / 32.0 + double(blocks) * panels * K * NR * 4 / 8.0;
      if (best < 0 || cost < best) best = cost, tm = m, tn = n;
    }
  }

  // All scratch from the calling thread, before the work is split: a zero row, then per task
  // a pointer table and the edge runs.
  const int ntasks = tm * tn;
  const size_t zero_bytes = align64(static_cast<size_t>(depth) * sizeof(float));
  const size_t table_bytes = align64(static_cast<size_t>(blk_tiles * taps * MR) * sizeof(void*));
  const size_t task_bytes = table_bytes + align64(patch_floats * sizeof(float));
  char* scratch = thread_scratch<char, kScratchConvIndirect>(zero_bytes + ntasks * task_bytes);
  const float* zero = reinterpret_cast<const float*>(scratch);
  std::memset(scratch, 0, zero_bytes);

  auto rect = [&](int task, index_t t0, index_t t1, index_t p0, index_t p1) {
    auto** table = reinterpret_cast<const float**>(scratch + zero_bytes + task * task_bytes);
    float* patches = reinterpret_cast<float*>(scratch + zero_bytes + task * task_bytes + table_bytes);
    // A small filter share stays in L2 whole: each tile then sweeps all its panels while the
    // tile's inputs are in L1. A big one is swept panel by panel over a block of tiles.
    const bool panel_outer = double(p1 - p0) * K * NR * 4 > 384.0 * 1024;
    for (index_t tb = t0; tb < t1; tb += blk_tiles) {
      const index_t tn_ = std::min(blk_tiles, t1 - tb);
      float* patch = patches;
      // table[(tile·taps + tap)·MR + i]: input run of pixel i of the tile for this tap.
      for (index_t ti = 0; ti < tn_; ++ti) {
        const float** tt = table + ti * taps * MR;
        for (int i = 0; i < MR; ++i) {
          const index_t m = (tb + ti) * MR + i;
          if (m >= M) {  // rows past M (unused) repeat the last one
            for (index_t tap = 0; tap < taps; ++tap) tt[tap * MR + i] = tt[tap * MR + i - 1];
            continue;
          }
          const index_t n = m / P, oh = (m % P) / OW, ow = m % OW;
          const float* img = x + n * s.H * s.W * C;
          const index_t ih0 = oh * s.stride_h - s.pad_top, iw0 = ow * s.stride_w - s.pad_left;
          for (index_t tap = 0; tap < taps; ++tap) {
            const index_t kh = rows_ ? tap : tap / s.KW, kw = rows_ ? 0 : tap % s.KW;
            const index_t ih = ih0 + kh * s.dil_h, iw = iw0 + kw * s.dil_w;
            const float* ptr = zero;
            if (ih < 0 || ih >= s.H) {
            } else if (!rows_) {
              if (iw >= 0 && iw < s.W) ptr = img + (ih * s.W + iw) * C;
            } else if (iw >= 0 && iw + s.KW <= s.W) {
              ptr = img + (ih * s.W + iw) * C;
            } else {  // the run crosses the left or right edge
              for (index_t j = 0; j < s.KW; ++j) {
                const bool in = iw + j >= 0 && iw + j < s.W;
                if (in) std::memcpy(patch + j * C, img + (ih * s.W + iw + j) * C, C * sizeof(float));
                else std::memset(patch + j * C, 0, C * sizeof(float));
              }
              ptr = patch;
              patch += depth;
            }
            tt[tap * MR + i] = ptr;
          }
        }
      }
      auto run_tile = [&](index_t ti, index_t p) {
        convk::IndirectTile t;
        t.taps = taps;
        t.C = depth;
        t.cb = cb_;
        t.b = wp + p * K * NR;
        t.bias = pbias + p * NR;
        t.n = static_cast<int>(std::min<index_t>(NR, OC - p * NR));
        t.act = post_act ? Act::None : act;
        t.alpha = a;
        t.beta = b;
        t.ldy = ldy;
        t.ldr = OC;
        const index_t m0 = (tb + ti) * MR;
        t.a = table + ti * taps * MR;
        t.m = static_cast<int>(std::min<index_t>(MR, M - m0));
        t.y = y + m0 * ldy + p * NR;
        t.res = res ? res + m0 * OC + p * NR : nullptr;
        t.pf = nullptr;
        t.pf_lines = 0;
        t.pf_step = 0;
        if (panel_outer && tn_ > 1 && ti > 0 && p + 1 < p1) {
          // Tiles 1.. of this panel (read from L2 after tile 0 pulled it in) fetch the next
          // panel a share each, so memory streams the filter evenly instead of in bursts.
          const index_t lines = K * NR * 4 / 64, share = (lines + tn_ - 2) / (tn_ - 1);
          const index_t l0 = std::min(lines, (ti - 1) * share);
          t.pf = wp + (p + 1) * K * NR + l0 * 16;
          t.pf_lines = std::min(share, lines - l0);
          t.pf_step = static_cast<int>(std::min<index_t>(8, (t.pf_lines + K / 4) / std::max<index_t>(1, K / 4)));
        }
        kernel(t);
        if (post_act)
          for (int i = 0; i < t.m; ++i) activation(t.y + i * ldy, t.y + i * ldy, t.n, act, a, b);
      };
      if (panel_outer) {
        for (index_t p = p0; p < p1; ++p)
          for (index_t ti = 0; ti < tn_; ++ti) run_tile(ti, p);
      } else {
        for (index_t ti = 0; ti < tn_; ++ti)
          for (index_t p = p0; p < p1; ++p) run_tile(ti, p);
      }
    }
  };
  if (ntasks == 1) {
    rect(0, 0, mt, 0, np_);
    return;
  }
  parallel_tasks(ntasks, [&](std::int64_t task) {
    const index_t im = task / tn, in = task % tn;
    const index_t t0 = mt * im / tm, t1 = mt * (im + 1) / tm;
    const index_t p0 = np_ * in / tn, p1 = np_ * (in + 1) / tn;
    if (t0 < t1 && p0 < p1) rect(static_cast<int>(task), t0, t1, p0, p1);
  });
}

}  // namespace engine
