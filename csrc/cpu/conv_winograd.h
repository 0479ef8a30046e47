// Winograd F(4×4, 3×3) convolution for 3×3, stride-1 filters on large maps (AVX-512): 36
// products per 6×6 input tile instead of 144 multiply-adds per 4×4 output tile and channel
// pair (4× fewer). Internal to conv.cpp.
#pragma once

#include "engine/common.h"
#include "engine/conv.h"

namespace engine {

class WinogradConv {
 public:
  // The layout for this shape; the transformed filters live wherever the caller keeps them.
  explicit WinogradConv(const Conv2DShape& s);

  // Floats of the transformed filters U and of the padded bias.
  size_t u_floats() const { return static_cast<size_t>(36 * np_ * s_.C * 32); }
  size_t bias_floats() const { return static_cast<size_t>(np_ * 32); }
  // filter HWIO (3×3×C×OC), bias OC floats or null, into u / bias_out (64-byte aligned).
  void pack(float* u, float* bias_out, const float* filter, const float* bias) const;

  // As IndirectConv::run: y = act(conv(x) + bias [+ res]), output pixel stride ldy, with u and
  // bias from pack() and g the HWIO filter itself (tiles whose transformed input has an inf or
  // NaN are computed directly from it).
  void run(float* y, index_t ldy, const float* x, const float* res, index_t batch, Act act, float a, float b,
           const float* u, const float* bias, const float* g) const;

  // 3×3, stride 1, no dilation, groups 1, C and OC >= 16, enough output pixels to amortise
  // the transforms and a transformed filter (4× the filter) that streams in reasonable time;
  // AVX-512 only.
  static bool suits(const Conv2DShape& s);

 private:
  Conv2DShape s_;
  index_t np_ = 0;  // 32-channel panels of OC
  // U = G g Gᵀ: [36][np][C][32], one packed GEMM operand per (r, q); bias [np·32].
};

}  // namespace engine
