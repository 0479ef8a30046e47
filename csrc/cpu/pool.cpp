// PLACEHOLDER naive pooling (to be replaced).
#include "engine/pool.h"

#include <algorithm>
#include <limits>

namespace engine {

static index_t out_dim(index_t in, index_t k, index_t s, index_t d, index_t p0, index_t p1, bool ceil) {
  index_t span = in + p0 + p1 - d * (k - 1) - 1;
  return (ceil ? (span + s - 1) / s : span / s) + 1;
}
index_t Pool2DShape::OH() const { return out_dim(H, KH, stride_h, dil_h, pad_top, pad_bottom, ceil_mode); }
index_t Pool2DShape::OW() const { return out_dim(W, KW, stride_w, dil_w, pad_left, pad_right, ceil_mode); }
void Pool2DShape::validate() const { ENGINE_CHECK(OH() > 0 && OW() > 0, "pool2d: output would be empty"); }

template <bool kMax>
static void pool(float* y, const float* x, const Pool2DShape& s) {
  s.validate();
  const index_t OH = s.OH(), OW = s.OW();
  for (index_t n = 0; n < s.N; ++n)
    for (index_t oh = 0; oh < OH; ++oh)
      for (index_t ow = 0; ow < OW; ++ow)
        for (index_t c = 0; c < s.C; ++c) {
          float acc = kMax ? -std::numeric_limits<float>::infinity() : 0.f;
          index_t cnt = 0;
          for (index_t kh = 0; kh < s.KH; ++kh)
            for (index_t kw = 0; kw < s.KW; ++kw) {
              index_t ih = oh * s.stride_h - s.pad_top + kh * s.dil_h, iw = ow * s.stride_w - s.pad_left + kw * s.dil_w;
              if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
              float v = x[((n * s.H + ih) * s.W + iw) * s.C + c];
              acc = kMax ? std::max(acc, v) : acc + v;
              ++cnt;
            }
          if (!kMax) acc /= s.count_include_pad ? float(s.KH * s.KW) : float(std::max<index_t>(cnt, 1));
          y[((n * OH + oh) * OW + ow) * s.C + c] = acc;
        }
}

void maxpool2d_nhwc(float* y, const float* x, const Pool2DShape& s) { pool<true>(y, x, s); }
void avgpool2d_nhwc(float* y, const float* x, const Pool2DShape& s) { pool<false>(y, x, s); }
void global_avgpool_nhwc(float* y, const float* x, index_t N, index_t HW, index_t C) {
  for (index_t n = 0; n < N; ++n)
    for (index_t c = 0; c < C; ++c) {
      float acc = 0;
      for (index_t i = 0; i < HW; ++i) acc += x[(n * HW + i) * C + c];
      y[n * C + c] = acc / float(HW);
    }
}

}  // namespace engine
