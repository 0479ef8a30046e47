// Indirect convolution driver (see conv_indirect.h).
//
//   M = N·OH·OW output pixels in tiles of 14 (a tile may span output rows and images: every
//   pixel has its own pointer per tap), N = OC in panels of 32.
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
#include <new>

#include "conv_kernels.h"
#include "engine/cpu_features.h"
#include "engine/elementwise.h"
#include "engine/threadpool.h"

namespace engine {

namespace {

constexpr int MR = convk::kIndirectMR, NR = convk::kIndirectNR;

// Grow-only, 64-byte aligned, per thread: the tap pointer table and a zero row for padding.
struct Buf {
  void* p = nullptr;
  size_t cap = 0;  // bytes
  ~Buf() { std::free(p); }
  void* get(size_t bytes, bool zeroed) {
    if (bytes > cap) {
      std::free(p);
      p = nullptr;
      cap = 0;
      const size_t b = (bytes + 63) / 64 * 64;
      p = std::aligned_alloc(64, b);
      if (!p) throw std::bad_alloc();
      if (zeroed) std::memset(p, 0, b);
      cap = b;
    }
    return p;
  }
};
thread_local Buf t_table, t_zero;

float* aligned_floats(size_t n) {
  void* p = std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  return static_cast<float*>(p);
}

bool act_in_kernel(Act a, bool simd) {
  if (a == Act::None || a == Act::Identity) return true;
  return simd && (a == Act::Relu || a == Act::LeakyRelu || a == Act::Clip);
}

// The same tile as the AVX-512 kernel, in scalar code (bias + residual; the caller applies
// every activation): used only when the ISA was lowered after the filters were packed.
void tile_scalar(const convk::IndirectTile& t) {
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
      if (t.res) acc += t.res[i * t.ldy + j];
      t.y[i * t.ldy + j] = acc;
    }
}

}  // namespace

bool IndirectConv::suits(const Conv2DShape& s) {
  // C <= 4 takes the direct small-C kernel; a zero row of C floats and int offsets must fit.
  return s.groups == 1 && s.C > 4 && cpu_isa() == Isa::Avx512 && s.C <= (index_t(1) << 20);
}

IndirectConv::IndirectConv(const Conv2DShape& s, const float* filter, const float* bias) : s_(s) {
  taps_ = s.KH * s.KW;
  np_ = (s.OC + NR - 1) / NR;
  // Channel blocks: with several taps, 64 channels of 16 pixels' input rows (~12 KiB for a
  // 3×3 filter) stay in L1 while the taps sweep them; one tap needs no blocking.
  cb_ = taps_ > 1 ? std::min<index_t>(s.C, 64) : s.C;
  const index_t K = taps_ * s.C;
  w_ = aligned_floats(static_cast<size_t>(np_ * K * NR));
  bias_ = aligned_floats(static_cast<size_t>(np_ * NR));
  // Panel p, in the kernel's order (block c0, tap, channel c): the HWIO filter's row
  // tap·C + c, columns [32p, 32p + 32).
  for (index_t p = 0; p < np_; ++p) {
    const index_t j0 = p * NR, nj = std::min<index_t>(NR, s.OC - j0);
    float* d = w_ + p * K * NR;
    for (index_t c0 = 0; c0 < s.C; c0 += cb_)
      for (index_t tap = 0; tap < taps_; ++tap)
        for (index_t c = c0; c < std::min(s.C, c0 + cb_); ++c, d += NR) {
          std::memcpy(d, filter + (tap * s.C + c) * s.OC + j0, nj * sizeof(float));
          std::fill(d + nj, d + NR, 0.f);
        }
    for (index_t j = 0; j < NR; ++j) bias_[j0 + j] = bias && j < nj ? bias[j0 + j] : 0.f;
  }
}

IndirectConv::~IndirectConv() {
  std::free(w_);
  std::free(bias_);
}

void IndirectConv::run(float* y, const float* x, const float* res, index_t batch, Act act, float a,
                       float b) const {
  const Conv2DShape& s = s_;
  const index_t OH = s.OH(), OW = s.OW(), P = OH * OW, M = batch * P, OC = s.OC, C = s.C;
  const index_t K = taps_ * C, mt = (M + MR - 1) / MR;
  const bool simd = cpu_isa() == Isa::Avx512;
  auto kernel = simd ? convk::indirect_tile_avx512 : tile_scalar;
  const bool post_act = !act_in_kernel(act, simd);

  // Tiles per block: the input rows a block reads (its pixels' share plus the halo of the
  // filter's extra rows) stay within ~768 KiB of L2, next to one filter panel.
  const double in_px = double(s.stride_h) * s.stride_w * C * 4;
  const double halo = double((s.KH - 1) * s.dil_h) * s.W * C * 4;
  const index_t blk_tiles =
      std::max<index_t>(1, static_cast<index_t>(std::max(0.0, 768.0 * 1024 - halo) / (in_px * MR)));

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

  const index_t taps = taps_;
  auto rect = [&](index_t t0, index_t t1, index_t p0, index_t p1) {
    const float* zero = static_cast<const float*>(t_zero.get(static_cast<size_t>(C) * sizeof(float), true));
    // A small filter share stays in L2 whole: each tile then sweeps all its panels while the
    // tile's inputs are in L1. A big one is swept panel by panel over a block of tiles.
    const bool panel_outer = double(p1 - p0) * K * NR * 4 > 384.0 * 1024;
    for (index_t tb = t0; tb < t1; tb += blk_tiles) {
      const index_t tn_ = std::min(blk_tiles, t1 - tb);
      auto** table = static_cast<const float**>(t_table.get(static_cast<size_t>(tn_ * taps * MR) * sizeof(void*), false));
      // table[(tile·taps + tap)·MR + i]: input row of pixel i of the tile for this tap.
      for (index_t ti = 0; ti < tn_; ++ti) {
        const float** tt = table + ti * taps * MR;
        for (int i = 0; i < MR; ++i) {
          const index_t m = std::min((tb + ti) * MR + i, M - 1);  // rows past M repeat the last
          const index_t n = m / P, oh = (m % P) / OW, ow = m % OW;
          const float* img = x + n * s.H * s.W * C;
          const index_t ih0 = oh * s.stride_h - s.pad_top, iw0 = ow * s.stride_w - s.pad_left;
          for (index_t kh = 0; kh < s.KH; ++kh) {
            const index_t ih = ih0 + kh * s.dil_h;
            for (index_t kw = 0; kw < s.KW; ++kw) {
              const index_t iw = iw0 + kw * s.dil_w;
              const bool in = ih >= 0 && ih < s.H && iw >= 0 && iw < s.W;
              tt[(kh * s.KW + kw) * MR + i] = in ? img + (ih * s.W + iw) * C : zero;
            }
          }
        }
      }
      auto run_tile = [&](index_t ti, index_t p) {
        convk::IndirectTile t;
        t.taps = taps;
        t.C = C;
        t.cb = cb_;
        t.b = w_ + p * K * NR;
        t.bias = bias_ + p * NR;
        t.n = static_cast<int>(std::min<index_t>(NR, OC - p * NR));
        t.act = post_act ? Act::None : act;
        t.alpha = a;
        t.beta = b;
        t.ldy = OC;
        const index_t m0 = (tb + ti) * MR;
        t.a = table + ti * taps * MR;
        t.m = static_cast<int>(std::min<index_t>(MR, M - m0));
        t.y = y + m0 * OC + p * NR;
        t.res = res ? res + m0 * OC + p * NR : nullptr;
        kernel(t);
        if (post_act)
          for (int i = 0; i < t.m; ++i) activation(t.y + i * OC, t.y + i * OC, t.n, act, a, b);
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
  if (tm * tn == 1) {
    rect(0, mt, 0, np_);
    return;
  }
  parallel_tasks(tm * tn, [&](std::int64_t task) {
    const index_t im = task / tn, in = task % tn;
    const index_t t0 = mt * im / tm, t1 = mt * (im + 1) / tm;
    const index_t p0 = np_ * in / tn, p1 = np_ * (in + 1) / tn;
    if (t0 < t1 && p0 < p1) rect(t0, t1, p0, p1);
  });
}

}  // namespace engine
