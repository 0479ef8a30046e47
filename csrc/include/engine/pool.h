// Pooling in NHWC, vectorised over channels.
#pragma once

#include "engine/common.h"

namespace engine {

struct Pool2DShape {
  index_t N = 1, H = 0, W = 0, C = 0;
  index_t KH = 1, KW = 1;
  index_t stride_h = 1, stride_w = 1;
  index_t dil_h = 1, dil_w = 1;
  index_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  bool ceil_mode = false;
  bool count_include_pad = false;  // AvgPool: divide by KH·KW instead of the valid count
  index_t OH() const;
  index_t OW() const;
  void validate() const;
};

void maxpool2d_nhwc(float* y, const float* x, const Pool2DShape& s);
void avgpool2d_nhwc(float* y, const float* x, const Pool2DShape& s);
// y: N×C, x: N×(HW)×C
void global_avgpool_nhwc(float* y, const float* x, index_t N, index_t HW, index_t C);

}  // namespace engine
