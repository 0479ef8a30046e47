// Winograd F(4×4, 3×3) convolution for 3×3, stride-1 filters on large maps (AVX-512): 36
// products per 6×6 input tile instead of 144 multiply-adds per 4×4 output tile and channel
// pair (4× fewer). Internal to conv.cpp.
#pragma once

#include "engine/common.h"
#include "engine/conv.h"

namespace engine {

class WinogradConv {
 public:
  // filter HWIO (3×3×C×OC), bias OC floats or null.
  WinogradConv(const Conv2DShape& s, const float* filter, const float* bias);
  ~WinogradConv();
  WinogradConv(const WinogradConv&) = delete;
  WinogradConv& operator=(const WinogradConv&) = delete;

  // As IndirectConv::run: y = act(conv(x) + bias [+ res]), output pixel stride ldy.
  void run(float* y, index_t ldy, const float* x, const float* res, index_t batch, Act act, float a,
           float b) const;

  // 3×3, stride 1, no dilation, groups 1, C and OC >= 16, enough output pixels to amortise
  // the transforms and a transformed filter (4× the filter) that streams in reasonable time;
  // AVX-512 only.
  static bool suits(const Conv2DShape& s);

 private:
  Conv2DShape s_;
  index_t np_ = 0;           // 32-channel panels of OC
  float* u_ = nullptr;       // [36][np][C][32]: G g Gᵀ, one packed GEMM operand per (r, q)
  float* bias_ = nullptr;    // np·32
  float* g_ = nullptr;       // the HWIO filter: tiles with an inf / NaN input are computed directly
};

}  // namespace engine
