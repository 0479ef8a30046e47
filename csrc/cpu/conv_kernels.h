// Internal to the convolution family: the per-ISA kernels (conv_*_avx512.cpp, conv_*_avx2.cpp,
// conv_depthwise.cpp) and the arguments conv.cpp hands them. Not a public header.
#pragma once

#include <cstddef>

#include "engine/common.h"

namespace engine::convk {

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
  Act act;  // None / Relu / LeakyRelu in-kernel; the caller applies the rest
  float alpha;
};
void depthwise_rows_avx512(float* y, const DepthwiseArgs& a, index_t oh0, index_t oh1);
void depthwise_rows_avx2(float* y, const DepthwiseArgs& a, index_t oh0, index_t oh1);
void depthwise_rows_portable(float* y, const DepthwiseArgs& a, index_t oh0, index_t oh1);

}  // namespace engine::convk
