// Indirect (implicit-GEMM) convolution for groups == 1 on AVX-512: the filters packed once
// into 32-channel panels; each call walks tiles of output pixels with one input pointer per
// pixel and tap (no im2col copy, no padded copy of the input). Internal to conv.cpp.
#pragma once

#include "engine/common.h"
#include "engine/conv.h"

namespace engine {

class IndirectConv {
 public:
  // filter HWIO (KH×KW×C×OC), bias OC floats or null. Throws before allocating on bad input.
  IndirectConv(const Conv2DShape& s, const float* filter, const float* bias);
  ~IndirectConv();
  IndirectConv(const IndirectConv&) = delete;
  IndirectConv& operator=(const IndirectConv&) = delete;

  // y = act(conv(x) + bias [+ res]); res (optional) is laid out like y (N×OH×OW×OC) and may
  // be y itself. Runs the AVX-512 kernel, or a scalar loop over the same packing when the
  // ISA was lowered after packing (tests).
  void run(float* y, const float* x, const float* res, index_t batch, Act act, float a, float b) const;

  // Whether this shape should take the indirect path on this CPU (decided at pack time).
  static bool suits(const Conv2DShape& s);

 private:
  Conv2DShape s_;
  index_t taps_ = 0, np_ = 0;  // filter taps (KH·KW), 32-channel panels
  index_t cb_ = 0;             // input channels per block of the sum
  float* w_ = nullptr;         // [np][C/cb][taps][cb][32]
  float* bias_ = nullptr;      // [np][32]
};

}  // namespace engine
