// 2-D convolution in NHWC with HWIO filters (Keras's layouts), groups (incl. depthwise),
// stride, dilation and explicit padding; bias and activation fused into the epilogue.
// Filters are transformed once (PackedConv2D) into what the chosen algorithm wants, or, for a
// filter that changes between calls (a trained one), on every call (DynamicConv2D).
#pragma once

#include <cstddef>
#include <memory>

#include "engine/common.h"

namespace engine {

struct Conv2DShape {
  index_t N = 1, H = 0, W = 0, C = 0;  // input  N×H×W×C
  index_t OC = 0, KH = 1, KW = 1;      // filter KH×KW×(C/groups)×OC
  index_t stride_h = 1, stride_w = 1;
  index_t dil_h = 1, dil_w = 1;
  index_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  index_t groups = 1;
  index_t OH() const { return (H + pad_top + pad_bottom - dil_h * (KH - 1) - 1) / stride_h + 1; }
  index_t OW() const { return (W + pad_left + pad_right - dil_w * (KW - 1) - 1) / stride_w + 1; }
  void validate() const;  // throws engine::Error naming the bad field
};

// The chosen algorithm, its packed layout and the kernels that run it (conv.cpp).
struct ConvLayout;

class PackedConv2D : public KernelState {
 public:
  // filter: HWIO, KH×KW×(C/groups)×OC, contiguous. bias: OC entries or null.
  PackedConv2D(const Conv2DShape& shape, const float* filter, const float* bias);
  ~PackedConv2D();
  PackedConv2D(const PackedConv2D&) = delete;
  PackedConv2D& operator=(const PackedConv2D&) = delete;
  const Conv2DShape& shape() const { return shape_; }
  // The algorithm chosen at pack time: "pointwise", "direct", "depthwise", "winograd",
  // "indirect" or "im2col" (for tests and diagnostics).
  const char* algorithm() const;
  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  Conv2DShape shape_;
  std::unique_ptr<Impl> impl_;
};

// How a DynamicConv2D's filter is laid out: HWIO (Keras, KH×KW×(C/groups)×OC), OIHW (ONNX /
// torch, OC×(C/groups)×KH×KW), or DataGrad: the HWIO filter of the stride-1 convolution whose
// input gradient this one computes (KH×KW×(OC/groups)×C: that conv's input has this one's OC
// channels); this conv then correlates its input (that conv's output gradient) with the filter
// flipped in space and transposed within each group.
enum class FilterLayout : int { HWIO = 0, OIHW = 1, DataGrad = 2 };

// A convolution whose filter and bias are read when it runs: weights an optimizer updates
// between calls. The algorithm is chosen from the shape as PackedConv2D chooses it (the same
// kernels, the same results); each call packs the filter and bias into the caller's
// workspace (workspace_floats() floats, any alignment), so nothing is allocated per call and
// calls on different workspaces may run at once.
class DynamicConv2D : public KernelState {
 public:
  explicit DynamicConv2D(const Conv2DShape& shape, FilterLayout layout = FilterLayout::HWIO);
  ~DynamicConv2D();
  DynamicConv2D(const DynamicConv2D&) = delete;
  DynamicConv2D& operator=(const DynamicConv2D&) = delete;
  const Conv2DShape& shape() const { return shape_; }
  FilterLayout layout() const { return layout_; }
  const char* algorithm() const;
  std::size_t workspace_floats() const;

  // As conv2d_nhwc (pool_h = 0) or conv2d_maxpool_nhwc (pool_h, pool_w >= 1: no residual,
  // ldy = OC), with the filter (in layout()) and bias (OC floats or null) given now.
  void run(float* y, const float* x, const float* filter, const float* bias, float* workspace, index_t batch,
           Act act = Act::None, float act_alpha = 0.f, float act_beta = 0.f, const float* residual = nullptr,
           index_t ldy = 0, index_t pool_h = 0, index_t pool_w = 0) const;

 private:
  Conv2DShape shape_;
  FilterLayout layout_;
  std::unique_ptr<ConvLayout> plan_;
};

// y: N×OH×OW×OC, x: N×H×W×C. shape.N may differ from the packed shape's N (batch size
// is free); all other fields must match. act/act_alpha/act_beta as in Epilogue.
// residual (optional, a skip connection): N×OH×OW×OC, added before the activation,
// y = act(conv(x) + bias + residual); it may be y itself but must not overlap x.
// ldy (0: OC): the output pixels' stride, so that several convs can write their channels
// side by side into one concatenated output (y then points at this conv's first channel).
void conv2d_nhwc(float* y, const float* x, const PackedConv2D& w, index_t batch, Act act = Act::None,
                 float act_alpha = 0.f, float act_beta = 0.f, const float* residual = nullptr,
                 index_t ldy = 0);

// A convolution followed by a non-overlapping max-pool (window pool_h×pool_w, stride equal to
// the window, no padding, floor mode): y is N×(OH/pool_h)×(OW/pool_w)×OC. For the direct
// (first-layer) algorithm the conv rows of one pooled row are computed into a per-thread band
// and pooled at once, so the conv output never leaves L1; other algorithms run the two steps.
void conv2d_maxpool_nhwc(float* y, const float* x, const PackedConv2D& w, index_t batch,
                         index_t pool_h, index_t pool_w, Act act = Act::None,
                         float act_alpha = 0.f, float act_beta = 0.f);

}  // namespace engine
