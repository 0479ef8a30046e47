// Pooling in NHWC, vectorised over channels (kernels: pool_impl.h, one build per ISA).
// Output size as torch/ONNX: floor (or ceil with ceil_mode) of the padded span over the
// stride, plus one; in ceil mode a last window that would start inside the bottom/right
// padding is dropped. Windows are clipped to the input: max takes the valid elements only;
// avg divides by the valid count, or with count_include_pad by the taps inside the padded
// input (torch's rule, so a ceil-mode window hanging past the padding is not over-counted).
#include "engine/pool.h"

#include <algorithm>
#include <string>

#include "engine/cpu_features.h"
#include "engine/threadpool.h"
#include "pool_kernels.h"

namespace engine {

namespace {

index_t out_dim(index_t in, index_t k, index_t s, index_t d, index_t p0, index_t p1, bool ceil) {
  const index_t span = in + p0 + p1 - d * (k - 1) - 1;
  if (span < 0 || s < 1) return 0;
  index_t o = (ceil ? (span + s - 1) / s : span / s) + 1;
  if (ceil && (o - 1) * s >= in + p0) --o;
  return o;
}

std::string str(index_t v) { return std::to_string(v); }

constexpr double kParallelWork = 2e5;  // element reads below which pooling stays on the caller

}  // namespace

index_t Pool2DShape::OH() const { return out_dim(H, KH, stride_h, dil_h, pad_top, pad_bottom, ceil_mode); }
index_t Pool2DShape::OW() const { return out_dim(W, KW, stride_w, dil_w, pad_left, pad_right, ceil_mode); }

void Pool2DShape::validate() const {
  auto pos = [](index_t v, const char* name) {
    ENGINE_CHECK(v >= 1, std::string("pool2d: ") + name + " must be >= 1, got " + str(v));
  };
  pos(N, "N"); pos(H, "H"); pos(W, "W"); pos(C, "C"); pos(KH, "KH"); pos(KW, "KW");
  pos(stride_h, "stride_h"); pos(stride_w, "stride_w"); pos(dil_h, "dil_h"); pos(dil_w, "dil_w");
  const index_t eh = dil_h * (KH - 1) + 1, ew = dil_w * (KW - 1) + 1;
  auto pad = [](index_t v, index_t ext, const char* name, const char* kname) {
    ENGINE_CHECK(v >= 0, std::string("pool2d: ") + name + " must be >= 0, got " + str(v));
    ENGINE_CHECK(v < ext, std::string("pool2d: ") + name + " (" + str(v) + ") must be smaller than the dilated " +
                              kname + " (" + str(ext) + ")");
  };
  pad(pad_top, eh, "pad_top", "kernel height"); pad(pad_bottom, eh, "pad_bottom", "kernel height");
  pad(pad_left, ew, "pad_left", "kernel width"); pad(pad_right, ew, "pad_right", "kernel width");
  ENGINE_CHECK(eh <= H + pad_top + pad_bottom,
               "pool2d: dilated kernel height " + str(eh) + " (KH=" + str(KH) + ", dil_h=" + str(dil_h) +
                   ") exceeds padded input height " + str(H + pad_top + pad_bottom));
  ENGINE_CHECK(ew <= W + pad_left + pad_right,
               "pool2d: dilated kernel width " + str(ew) + " (KW=" + str(KW) + ", dil_w=" + str(dil_w) +
                   ") exceeds padded input width " + str(W + pad_left + pad_right));
  ENGINE_CHECK(OH() > 0 && OW() > 0, "pool2d: output would be empty (OH=" + str(OH()) + ", OW=" + str(OW()) + ")");
}

namespace {

template <bool kMax>
void pool(float* y, const float* x, const Pool2DShape& s) {
  s.validate();
  const index_t OH = s.OH(), OW = s.OW();
  poolk::PoolArgs pa{nullptr, s.H, s.W, s.C, s.KH, s.KW, s.stride_h, s.stride_w, s.dil_h, s.dil_w,
                     s.pad_top, s.pad_left, s.pad_bottom, s.pad_right, OW, s.count_include_pad};
  const Isa isa = cpu_isa();
  auto fn = kMax ? (isa == Isa::Avx512 ? poolk::max_rows_avx512
                    : isa == Isa::Avx2 ? poolk::max_rows_avx2
                                       : poolk::max_rows_portable)
                 : (isa == Isa::Avx512 ? poolk::avg_rows_avx512
                    : isa == Isa::Avx2 ? poolk::avg_rows_avx2
                                       : poolk::avg_rows_portable);
  const double row_work = static_cast<double>(OW) * s.KH * s.KW * s.C;
  const index_t grain = std::max<index_t>(1, static_cast<index_t>(kParallelWork / row_work));
  parallel_for(s.N * OH, grain, [&](std::int64_t r0, std::int64_t r1) {
    poolk::PoolArgs a = pa;
    while (r0 < r1) {
      const index_t n = r0 / OH, oh0 = r0 % OH, oh1 = std::min<index_t>(OH, oh0 + (r1 - r0));
      a.x = x + n * s.H * s.W * s.C;
      fn(y + n * OH * OW * s.C, a, oh0, oh1);
      r0 += oh1 - oh0;
    }
  });
}

}  // namespace

void maxpool2d_nhwc(float* y, const float* x, const Pool2DShape& s) { pool<true>(y, x, s); }
void avgpool2d_nhwc(float* y, const float* x, const Pool2DShape& s) { pool<false>(y, x, s); }

void global_avgpool_nhwc(float* y, const float* x, index_t N, index_t HW, index_t C) {
  ENGINE_CHECK(N >= 0 && HW >= 1 && C >= 1, "global_avgpool: expected N >= 0, HW >= 1, C >= 1, got N=" + str(N) +
                                                ", HW=" + str(HW) + ", C=" + str(C));
  const Isa isa = cpu_isa();
  auto fn = isa == Isa::Avx512 ? poolk::gap_avx512 : isa == Isa::Avx2 ? poolk::gap_avx2 : poolk::gap_portable;
  // Tasks: (image, 64-channel chunk) pairs.
  const index_t cchunks = (C + 63) / 64;
  const double task_work = static_cast<double>(HW) * std::min<index_t>(C, 64);
  const index_t grain = std::max<index_t>(1, static_cast<index_t>(kParallelWork / task_work));
  parallel_for(N * cchunks, grain, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      const index_t n = t / cchunks, c0 = (t % cchunks) * 64, c1 = std::min<index_t>(C, c0 + 64);
      fn(y + n * C, x + n * HW * C, HW, C, c0, c1);
    }
  });
}

}  // namespace engine
