// Pooling backward, NHWC (engine/grad.h). Windows overlap, so work is split by (image,
// channel chunk): each task owns its part of dx and scatter-adds into it without races. The
// window loops are in grad_spatial_impl.h; the global pools are here.
#include <algorithm>
#include <cstring>
#include <limits>

#include "cpu/grad_kernels.h"
#include "cpu/grad_util.h"
#include "engine/grad.h"

namespace engine {
namespace {

constexpr index_t kChunk = 64;          // channels per task
constexpr double kParallelWork = 2e5;   // element visits below which a pool stays on the caller

// f(n, c0, c1) for every (image, channel chunk), over the pool when work (per image) is big.
template <class F>
void tasks(index_t N, index_t C, double work_per_image, F&& f) {
  const index_t nc = (C + kChunk - 1) / kChunk;
  auto run = [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) f(t / nc, (t % nc) * kChunk, std::min(C, (t % nc + 1) * kChunk));
  };
  const double per_task = work_per_image / static_cast<double>(nc);
  if (per_task * N * nc < kParallelWork) return run(0, N * nc);
  parallel_for(N * nc, std::max<index_t>(1, static_cast<index_t>(kParallelWork / std::max(per_task, 1.0))), run);
}

void zero_slice(float* p, index_t pixels, index_t C, index_t c0, index_t c1) {
  for (index_t i = 0; i < pixels; ++i) std::memset(p + i * C + c0, 0, static_cast<size_t>(c1 - c0) * sizeof(float));
}

template <bool kMax>
void pool_backward(float* dx, const float* dy, const float* x, const Pool2DShape& s, bool relu = false) {
  s.validate();
  const gradk::PoolGeom g{s.H, s.W, s.C, s.OH(), s.OW(), s.KH, s.KW, s.stride_h, s.stride_w, s.dil_h, s.dil_w,
                          s.pad_top, s.pad_left, s.pad_bottom, s.pad_right, s.count_include_pad, relu};
  const auto& k = gradk::kernels();
  const index_t in_img = s.H * s.W * s.C, out_img = g.OH * g.OW * s.C;
  tasks(s.N, s.C, static_cast<double>(out_img) * s.KH * s.KW + in_img, [&](index_t n, index_t c0, index_t c1) {
    float* d = dx + n * in_img;  // the kernels zero what they do not write
    if (kMax) k.maxpool(d, dy + n * out_img, x + n * in_img, g, c0, c1);
    else k.avgpool(d, dy + n * out_img, g, c0, c1);
  });
}

void check_global(const char* what, index_t N, index_t HW, index_t C) {
  ENGINE_CHECK(N >= 0 && HW >= 1 && C >= 1, std::string(what) + ": expected N >= 0, HW >= 1, C >= 1, got N=" +
                                                gradu::str(N) + ", HW=" + gradu::str(HW) + ", C=" + gradu::str(C));
}

}  // namespace

void maxpool2d_backward(float* dx, const float* dy, const float* x, const Pool2DShape& s, bool relu) {
  pool_backward<true>(dx, dy, x, s, relu);
}

void avgpool2d_backward(float* dx, const float* dy, const Pool2DShape& s) { pool_backward<false>(dx, dy, nullptr, s); }

void global_avgpool_backward(float* dx, const float* dy, index_t N, index_t HW, index_t C) {
  check_global("global_avgpool_grad", N, HW, C);
  const float hw = static_cast<float>(HW);
  tasks(N, C, static_cast<double>(HW) * C, [&](index_t n, index_t c0, index_t c1) {
    const float* g = dy + n * C;
    for (index_t p = 0; p < HW; ++p) {
      float* d = dx + (n * HW + p) * C;
      for (index_t c = c0; c < c1; ++c) d[c] = g[c] / hw;  // torch divides (adaptive_avg_pool)
    }
  });
}

void global_maxpool_backward(float* dx, const float* dy, const float* x, index_t N, index_t HW, index_t C,
                             bool split_ties) {
  check_global("global_maxpool_grad", N, HW, C);
  tasks(N, C, 3.0 * HW * C, [&](index_t n, index_t c0, index_t c1) {
    const float* xn = x + n * HW * C;
    float* dn = dx + n * HW * C;
    const float* g = dy + n * C;
    float best[kChunk], count[kChunk];
    index_t at[kChunk];
    const index_t w = c1 - c0;
    for (index_t c = 0; c < w; ++c) best[c] = -std::numeric_limits<float>::infinity(), at[c] = 0, count[c] = 0;
    for (index_t p = 0; p < HW; ++p) {
      const float* xp = xn + p * C + c0;
      for (index_t c = 0; c < w; ++c) {
        const float v = xp[c];
        if (split_ties ? (v > best[c] || (v != v && best[c] == best[c])) : (v > best[c] || v != v))
          best[c] = v, at[c] = p;  // first maximum, last NaN (torch's max); amax: any NaN
      }
    }
    zero_slice(dn, HW, C, c0, c1);
    if (!split_ties) {
      for (index_t c = 0; c < w; ++c) dn[at[c] * C + c0 + c] = g[c0 + c];
      return;
    }
    // amax's backward: dy · (x == max) / count(x == max); a NaN max matches nothing: 0/0 = NaN.
    for (index_t p = 0; p < HW; ++p)
      for (index_t c = 0; c < w; ++c) count[c] += xn[p * C + c0 + c] == best[c] ? 1.f : 0.f;
    for (index_t p = 0; p < HW; ++p)
      for (index_t c = 0; c < w; ++c)
        dn[p * C + c0 + c] = g[c0 + c] * (xn[p * C + c0 + c] == best[c] ? 1.f : 0.f) / count[c];
  });
}

}  // namespace engine
