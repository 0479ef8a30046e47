// PLACEHOLDER naive convolution (to be replaced).
#include "engine/conv.h"

#include <vector>

#include "engine/elementwise.h"

namespace engine {

struct PackedConv2D::Impl {
  std::vector<float> w, b;
};

void Conv2DShape::validate() const {
  ENGINE_CHECK(groups >= 1 && C % groups == 0 && OC % groups == 0, "conv2d: channels not divisible by groups");
  ENGINE_CHECK(OH() > 0 && OW() > 0, "conv2d: output would be empty");
}

PackedConv2D::PackedConv2D(const Conv2DShape& s, const float* filter, const float* bias)
    : shape_(s), impl_(new Impl) {
  s.validate();
  impl_->w.assign(filter, filter + s.KH * s.KW * (s.C / s.groups) * s.OC);
  if (bias) impl_->b.assign(bias, bias + s.OC);
}
PackedConv2D::~PackedConv2D() = default;

void conv2d_nhwc(float* y, const float* x, const PackedConv2D& pw, index_t batch, Act act, float a, float b) {
  const Conv2DShape& s = pw.shape();
  const index_t OH = s.OH(), OW = s.OW(), cg = s.C / s.groups, og = s.OC / s.groups;
  const float* w = pw.impl().w.data();
  for (index_t n = 0; n < batch; ++n)
    for (index_t oh = 0; oh < OH; ++oh)
      for (index_t ow = 0; ow < OW; ++ow) {
        float* out = y + ((n * OH + oh) * OW + ow) * s.OC;
        for (index_t oc = 0; oc < s.OC; ++oc) {
          index_t g = oc / og;
          float acc = pw.impl().b.empty() ? 0.f : pw.impl().b[oc];
          for (index_t kh = 0; kh < s.KH; ++kh)
            for (index_t kw = 0; kw < s.KW; ++kw) {
              index_t ih = oh * s.stride_h - s.pad_top + kh * s.dil_h;
              index_t iw = ow * s.stride_w - s.pad_left + kw * s.dil_w;
              if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
              const float* in = x + ((n * s.H + ih) * s.W + iw) * s.C + g * cg;
              for (index_t ci = 0; ci < cg; ++ci) acc += in[ci] * w[((kh * s.KW + kw) * cg + ci) * s.OC + oc];
            }
          out[oc] = acc;
        }
        if (act != Act::None) activation(out, out, s.OC, act, a, b);
      }
}

}  // namespace engine
