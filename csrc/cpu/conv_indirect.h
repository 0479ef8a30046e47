// Indirect (implicit-GEMM) convolution for groups == 1 on AVX-512: the filters packed once
// into 32-channel panels; each call walks tiles of output pixels with one input pointer per
// pixel and tap (no im2col copy, no padded copy of the input). Internal to conv.cpp.
#pragma once

#include "engine/common.h"
#include "engine/conv.h"

namespace engine {

class IndirectConv {
 public:
  // filter HWIO (KH×KW×C×OC), bias OC floats or null.
  IndirectConv(const Conv2DShape& s, const float* filter, const float* bias);
  ~IndirectConv();
  IndirectConv(const IndirectConv&) = delete;
  IndirectConv& operator=(const IndirectConv&) = delete;

  // y = act(conv(x) + bias [+ res]): output pixel m's OC channels at y + m·ldy (ldy >= OC);
  // res (optional) is N×OH×OW×OC and may be y itself (then ldy = OC). Runs the AVX-512
  // kernel, or a scalar loop over the same packing when the ISA was lowered after packing.
  void run(float* y, index_t ldy, const float* x, const float* res, index_t batch, Act act, float a,
           float b) const;

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
  float* w_ = nullptr;            // [np][depth/cb][taps][cb][32]
  float* bias_ = nullptr;         // [np][32]
};

}  // namespace engine
