// Indirect (implicit-GEMM) convolution for groups == 1 on AVX-512: the filters packed (once,
// or per call for a trained filter) into 32-channel panels; each call walks tiles of output pixels with one input pointer per
// pixel and tap (no im2col copy, no padded copy of the input). Internal to conv.cpp.
#pragma once

#include "engine/common.h"
#include "engine/conv.h"

namespace engine {

class IndirectConv {
 public:
  // The layout for this shape; the filters live wherever the caller keeps them (pack()).
  explicit IndirectConv(const Conv2DShape& s);

  // Floats of the packed filters and of the packed bias.
  size_t w_floats() const { return static_cast<size_t>(np_ * taps_ * depth_ * 32); }
  size_t bias_floats() const { return static_cast<size_t>(np_ * 32); }
  // filter HWIO (KH×KW×C×OC), bias OC floats or null, into w / bias_out (64-byte aligned).
  void pack(float* w, float* bias_out, const float* filter, const float* bias) const;

  // y = act(conv(x) + bias [+ res]) with filters packed by pack(): output pixel m's OC
  // channels at y + m·ldy (ldy >= OC); res (optional) is N×OH×OW×OC and may be y itself (then
  // ldy = OC). Runs the AVX-512 kernel, or a scalar loop over the same packing when the ISA
  // was lowered after the layout was chosen.
  void run(float* y, index_t ldy, const float* x, const float* res, index_t batch, Act act, float a, float b,
           const float* w, const float* bias) const;

  // Whether this shape takes the indirect path on this CPU (decided at pack time).
  static bool suits(const Conv2DShape& s);

 private:
  Conv2DShape s_;
  // Row taps: with a small input depth (first layers) one filter row's KW taps are one run of
  // KW·C contiguous input floats, so a "tap" is a filter row and its depth is KW·C.
  bool rows_ = false;
  index_t taps_ = 0, depth_ = 0;  // taps per output pixel and floats per tap
  index_t np_ = 0;                // 32-channel panels
  index_t cb_ = 0;                // floats per block of the sum
  // Packed filters: [np][depth/cb][taps][cb][32]; bias [np][32].
};

}  // namespace engine
