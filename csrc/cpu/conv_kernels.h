// Internal to the convolution family: the per-ISA kernels (conv_*_avx512.cpp, conv_*_avx2.cpp,
// conv_depthwise.cpp) and the arguments conv.cpp hands them. Not a public header.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#include "engine/common.h"

namespace engine::convk {

// Packed filters: n floats, 64-byte aligned so the kernels' vector loads never split cache
// lines; released with std::free. (Per-call scratch comes from engine/scratch.h.)
inline float* aligned_floats(size_t n) {
  void* p = std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  return static_cast<float*>(p);
}

// Direct convolution for groups == 1 and a small input depth (first layers, C = 1..4):
// vectorised over output channels, register-blocked over output pixels of one row.
// Filters are packed as [OC/16][KH][KW][C][16] (OC zero-padded to a multiple of 16), bias as
// OCp floats. x is one image already padded: Hp×Wp×C (so every tap is in bounds).
struct DirectArgs {
  const float* x;      // padded image
  index_t Hp, Wp, C;
  const float* w;      // packed filters
  const float* bias;   // OCp floats (zeros when the conv has none)
  index_t OC, OCp, KH, KW, sh, sw, dh, dw;
  index_t OW;
  Act act;             // only None / Relu / LeakyRelu are applied in-kernel
  float alpha;
};
// Computes output rows [oh0, oh1) of one image into y (y points at the image's output).
void direct_rows_avx512(float* y, const DirectArgs& a, index_t oh0, index_t oh1);
void direct_rows_avx2(float* y, const DirectArgs& a, index_t oh0, index_t oh1);

// Depthwise (groups == C, OC = C·mult). Filters packed as [KH][KW][mult][C], bias OC floats
// (or null). x: one image H×W×C (unpadded, the kernel clips taps). Output rows [oh0, oh1).
struct DepthwiseArgs {
  const float* x;
  index_t H, W, C, mult;
  const float* w;
  const float* bias;
  index_t KH, KW, sh, sw, dh, dw, pt, pl;
  index_t OW;
  Act act;  // None / Relu / LeakyRelu / Clip in-kernel; the caller applies the rest
  float alpha, beta;
};
void depthwise_rows_avx512(float* y, const DepthwiseArgs& a, index_t oh0, index_t oh1);
void depthwise_rows_avx2(float* y, const DepthwiseArgs& a, index_t oh0, index_t oh1);
void depthwise_rows_portable(float* y, const DepthwiseArgs& a, index_t oh0, index_t oh1);

// Indirect (implicit-GEMM) convolution, groups == 1: a tile of up to kIndirectMR output pixels
// × one kIndirectNR-wide panel of output channels, accumulated in registers over every tap
// and input channel, then bias (+ residual) (+ activation) and one store. The input is never
// copied: for each tap the caller hands one pointer per pixel (its C input channels, or a
// zero row where the tap falls in the padding). The sum runs over blocks of cb input channels,
// all taps within a block, so a block's inputs stay in L1 across the taps. Filters are packed
// as panels [OC/NR][C/cb][taps][cb][NR] (the last block may be shorter; zero-padded columns),
// bias as NR floats per panel.
constexpr int kIndirectMR = 14, kIndirectNR = 32;
struct IndirectTile {
  const float* const* a;  // [taps][kIndirectMR] row pointers (rows >= m unused)
  index_t taps, C, cb;
  const float* b;         // this panel: taps·C rows of kIndirectNR floats
  const float* bias;      // kIndirectNR floats (zeros when the conv has none)
  float* y;               // output tile: row i at y + i·ldy
  index_t ldy;
  const float* res;       // residual tile, row i at res + i·ldr (or null): added before the activation
  index_t ldr;
  int m, n;               // valid rows (1..MR) and columns (1..NR)
  Act act;                // None / Relu / LeakyRelu / Clip in registers; others by the caller
  float alpha, beta;
  // Prefetch into L2 while computing: pf_lines 64-byte lines from pf (the next filter panel's
  // share), at most pf_step per 4 k steps. pf_lines = 0: none.
  const float* pf;
  index_t pf_lines;
  int pf_step;
};
void indirect_tile_avx512(const IndirectTile& t);
// The same in scalar code, activation left to the caller (the ISA was lowered after packing).
void indirect_tile_scalar(const IndirectTile& t);

// Winograd F(4×4, 3×3) transforms (conv_winograd_impl.h). Input: the 6×6 patch of img at
// (ih0, iw0) (zeros outside H×W), all C channels, transformed into v[(r·6 + q)·vs + c].
struct WinoIn {
  const float* img;  // one image, H×W×C
  index_t H, W, C, ih0, iw0;
};
// Output: the 36 products m[(r·6 + q)·ms + c] of one tile become its rows × cols pixels:
// pixel (r, q) channel c at y[r·y_row + q·ldy + c] = act(Y + bias[c] + res[r·res_row + q·ldr + c]).
struct WinoOut {
  const float* m;
  index_t ms, OC;
  const float* bias;
  float* y;
  index_t y_row, ldy;
  const float* res;  // or null
  index_t res_row, ldr;
  int rows, cols;
  Act act;  // None / Relu / LeakyRelu / Clip; the caller applies the rest
  float alpha, beta;
};
bool wino_input_avx512(float* v, index_t vs, const WinoIn& w);  // false: inf / NaN in v
void wino_output_avx512(const WinoOut& w);
bool wino_input_portable(float* v, index_t vs, const WinoIn& w);
void wino_output_portable(const WinoOut& w);

}  // namespace engine::convk
