// Conv2D backward, NHWC × HWIO (engine/grad.h), for every variant conv2d_nhwc runs.
//
// Per group g (cg input and og output channels, K = KH·KW·cg), with the forward as
// y_g = im2col(x)_g · W_g (W_g the K×og columns g·og.. of the HWIO filter seen as K×OC):
//  * data:   dcol = dy_g · W_gᵀ (sgemm, a row block at a time), then col2im adds each row's
//            taps back into dx. 1×1 stride-1 unpadded: dx_g = dy_g · W_gᵀ directly.
//  * filter: dW_g += im2col(x)_gᵀ · dy_g per row block (1×1: x itself is the column matrix).
//  * depthwise (groups == C): direct loops vectorised over channels (grad_spatial_impl.h).
// Threads: the data gradient splits images (col2im of one image stays on one thread, so
// overlapping windows never race); with fewer images than threads each GEMM threads itself.
// The filter gradient splits rows over threads, each into its own partial filter (the first
// writes dw), summed at the end. Column blocks live in per-thread scratch.
#include <algorithm>
#include <cstring>

#include "cpu/grad_kernels.h"
#include "cpu/grad_util.h"
#include "engine/gemm.h"
#include "engine/grad.h"

namespace engine {
namespace {

constexpr double kParallelFlops = 2e6;  // below this a gradient stays on the calling thread

struct Geo {
  index_t OH, OW, OHW, M, G, cg, og, K;
  explicit Geo(const Conv2DShape& s)
      : OH(s.OH()), OW(s.OW()), OHW(OH * OW), M(s.N * OH * OW), G(s.groups), cg(s.C / s.groups),
        og(s.OC / s.groups), K(s.KH * s.KW * (s.C / s.groups)) {}
  // Rows per column block: the block (rows × K floats) stays within ~256 KiB.
  index_t block() const { return std::max<index_t>(16, (64 * 1024) / std::max<index_t>(K, 1)); }
};

bool pointwise(const Conv2DShape& s) {
  return s.KH == 1 && s.KW == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 && s.pad_left == 0 &&
         s.pad_bottom == 0 && s.pad_right == 0;
}
bool depthwise(const Conv2DShape& s) { return s.groups == s.C && s.groups > 1; }

// Calls f(r, kh, kw0, kw1, at) for every row r of [m0, m0 + rows) and kernel row kh inside x:
// taps [kw0, kw1) of that kernel row are inside x, and `at` is tap kw0's offset in x.
template <class F>
void for_tap_runs(const Conv2DShape& s, const Geo& g, index_t m0, index_t rows, F&& f) {
  index_t n = m0 / g.OHW, oh = (m0 / g.OW) % g.OH, ow = m0 % g.OW;
  for (index_t r = 0; r < rows; ++r) {
    const index_t ih0 = oh * s.stride_h - s.pad_top, iw0 = ow * s.stride_w - s.pad_left;
    index_t kw0, kw1;
    if (s.dil_w == 1) {  // no division on the common path: a row holds few taps (9 for a 3×3×1 kernel)
      kw0 = std::max<index_t>(0, -iw0), kw1 = std::min(s.KW, s.W - iw0);
    } else {
      kw0 = iw0 >= 0 ? 0 : (-iw0 + s.dil_w - 1) / s.dil_w;
      kw1 = iw0 >= s.W ? 0 : std::min(s.KW, (s.W - 1 - iw0) / s.dil_w + 1);
    }
    if (kw0 < kw1)
      for (index_t kh = 0; kh < s.KH; ++kh) {
        const index_t ih = ih0 + kh * s.dil_h;
        if (ih >= 0 && ih < s.H) f(r, kh, kw0, kw1, ((n * s.H + ih) * s.W + iw0 + kw0 * s.dil_w) * s.C);
      }
    if (++ow == g.OW) {
      ow = 0;
      if (++oh == g.OH) oh = 0, ++n;
    }
  }
}

// Copies n floats; tiny runs (a 1- or 3-channel input: 3 floats a kernel row) inline, as a
// plain loop would become a memmove call per run.
inline void copy_run(float* __restrict d, const float* __restrict s, index_t n) {
  switch (n) {
    case 4: d[3] = s[3]; [[fallthrough]];
    case 3: d[2] = s[2]; [[fallthrough]];
    case 2: d[1] = s[1]; [[fallthrough]];
    case 1: d[0] = s[0]; [[fallthrough]];
    case 0: return;
    default: std::memcpy(d, s, static_cast<size_t>(n) * sizeof(float));
  }
}

// Rows [m0, m0 + rows) of group gi's column matrix (rows × K); out-of-bounds taps are 0. A
// kernel row's taps are one run of x when they are adjacent pixels holding every channel.
void im2col(float* col, const float* x, const Conv2DShape& s, const Geo& g, index_t gi, index_t m0, index_t rows) {
  std::memset(col, 0, static_cast<size_t>(rows * g.K) * sizeof(float));
  const float* xg = x + gi * g.cg;
  const index_t cg = g.cg, step = s.dil_w * s.C;
  const bool runs = s.dil_w == 1 && cg == s.C;
  for_tap_runs(s, g, m0, rows, [&](index_t r, index_t kh, index_t kw0, index_t kw1, index_t at) {
    float* dst = col + r * g.K + (kh * s.KW + kw0) * cg;
    if (runs) return copy_run(dst, xg + at, (kw1 - kw0) * cg);
    for (index_t kw = kw0; kw < kw1; ++kw) copy_run(dst + (kw - kw0) * cg, xg + at + (kw - kw0) * step, cg);
  });
}

// dx (group gi's channels) += the taps of column rows [m0, m0 + rows).
void col2im_add(float* dx, const float* col, const Conv2DShape& s, const Geo& g, index_t gi, index_t m0,
                index_t rows) {
  const auto& k = gradk::kernels();
  float* dg = dx + gi * g.cg;
  const index_t cg = g.cg, step = s.dil_w * s.C;
  const bool runs = s.dil_w == 1 && cg == s.C;
  for_tap_runs(s, g, m0, rows, [&](index_t r, index_t kh, index_t kw0, index_t kw1, index_t at) {
    const float* src = col + r * g.K + (kh * s.KW + kw0) * cg;
    if (runs) return k.add(dg + at, src, (kw1 - kw0) * cg);
    for (index_t kw = kw0; kw < kw1; ++kw) {
      float* __restrict d = dg + at + (kw - kw0) * step;
      const float* __restrict c = src + (kw - kw0) * cg;
      if (cg < 16)
        for (index_t i = 0; i < cg; ++i) d[i] += c[i];
      else
        k.add(d, c, cg);
    }
  });
}

void zero(float* p, index_t n) { std::memset(p, 0, static_cast<size_t>(n) * sizeof(float)); }

gradk::DwGeom dw_geom(const Conv2DShape& s, const Geo& g) {
  return {s.H, s.W, s.C, s.OC / s.C, g.OH, g.OW, s.KH, s.KW, s.stride_h, s.stride_w, s.dil_h, s.dil_w, s.pad_top,
          s.pad_left};
}

void depthwise_data(float* dx, const float* dy, const float* w, const Conv2DShape& s, const Geo& g, bool acc) {
  const auto& k = gradk::kernels();
  const gradk::DwGeom dg = dw_geom(s, g);
  const index_t HW = s.H * s.W, C = s.C, OC = s.OC, chunk = 64, nc = (C + chunk - 1) / chunk;
  const double work = 2.0 * g.M * s.KH * s.KW * OC;
  auto task = [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t n = t / nc, c0 = (t % nc) * chunk, c1 = std::min(C, c0 + chunk);
      k.dw_data(dx + n * HW * C, dy + n * g.OHW * OC, w, dg, c0, c1, acc);
    }
  };
  if (work < kParallelFlops) return task(0, s.N * nc);
  parallel_for(s.N * nc, 1, task);
}

// Splits the images into P ranges (each its own partial filter; range 0 writes dw) and the
// channels into Q chunks (disjoint parts of a partial).
void depthwise_filter(float* dw, const float* dy, const float* x, const Conv2DShape& s, const Geo& g, bool acc) {
  const auto& k = gradk::kernels();
  const gradk::DwGeom dg = dw_geom(s, g);
  const index_t HW = s.H * s.W, C = s.C, OC = s.OC, taps = s.KH * s.KW, size = taps * OC;
  const int T = num_threads();
  const double work = 2.0 * g.M * taps * OC;
  const index_t P = work < kParallelFlops ? 1 : std::min<index_t>(s.N, T);
  const index_t Q = work < kParallelFlops || P >= T ? 1 : std::min<index_t>(T / P, (C + 15) / 16);
  float* part = P > 1 ? thread_scratch<float, gradu::kTagPartials>(static_cast<size_t>((P - 1) * size)) : nullptr;
  auto task = [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t p = t / Q, q = t % Q;
      const index_t c0 = C * q / Q, c1 = C * (q + 1) / Q;  // channel chunk; M filters each
      float* out = p == 0 ? dw : part + (p - 1) * size;
      if (p > 0 || !acc)
        for (index_t tp = 0; tp < taps; ++tp) zero(out + tp * OC + c0 * dg.M, (c1 - c0) * dg.M);
      for (index_t n = s.N * p / P; n < s.N * (p + 1) / P; ++n)
        k.dw_filter(out, dy + n * g.OHW * OC, x + n * HW * C, dg, c0, c1);
    }
  };
  if (P * Q == 1) task(0, 1);
  else parallel_for(P * Q, 1, task);
  for (index_t p = 1; p < P; ++p) {
    const float* src = part + (p - 1) * size;
    for (index_t i = 0; i < size; ++i) dw[i] += src[i];
  }
}

}  // namespace

void conv2d_backward_data(float* dx, const float* dy, const float* w, const Conv2DShape& s, bool acc) {
  s.validate();
  const Geo g(s);
  if (depthwise(s)) return depthwise_data(dx, dy, w, s, g, acc);
  if (pointwise(s)) {
    for (index_t gi = 0; gi < g.G; ++gi)
      sgemm(false, true, g.M, g.cg, g.og, 1.f, dy + gi * g.og, s.OC, w + gi * g.og, s.OC, acc ? 1.f : 0.f,
            dx + gi * g.cg, s.C);
    return;
  }
  const index_t HWC = s.H * s.W * s.C, MB = std::min(g.block(), g.OHW);
  const double flops = 2.0 * g.M * g.K * s.OC;
  const bool by_image = s.N >= num_threads() && flops >= kParallelFlops && num_threads() > 1;
  auto image = [&](index_t n) {
    if (!acc) zero(dx + n * HWC, HWC);
    float* col = thread_scratch<float, gradu::kTagCols>(static_cast<size_t>(MB * g.K));
    for (index_t m0 = n * g.OHW; m0 < (n + 1) * g.OHW; m0 += MB) {
      const index_t rows = std::min(MB, (n + 1) * g.OHW - m0);
      for (index_t gi = 0; gi < g.G; ++gi) {
        sgemm(false, true, rows, g.K, g.og, 1.f, dy + m0 * s.OC + gi * g.og, s.OC, w + gi * g.og, s.OC, 0.f, col, g.K);
        col2im_add(dx, col, s, g, gi, m0, rows);
      }
    }
  };
  if (!by_image) {
    for (index_t n = 0; n < s.N; ++n) image(n);
    return;
  }
  parallel_for(s.N, 1, [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n) image(n);
  });
}

void conv2d_backward_filter(float* dw, float* db, const float* dy, const float* x, const Conv2DShape& s, bool acc) {
  s.validate();
  const Geo g(s);
  if (db) column_sums(db, dy, g.M, s.OC, acc);
  if (!dw) return;
  if (depthwise(s)) return depthwise_filter(dw, dy, x, s, g, acc);
  const bool unit = pointwise(s);
  const index_t MB = unit ? g.M : 4 * g.block(), size = g.K * s.OC;  // the GEMMs reduce over rows: longer is better
  const double flops = 2.0 * g.M * g.K * s.OC;
  // Row ranges, one per thread, each into its own partial filter: the GEMMs' output (the
  // filter) is often too small to split well, their long reduction over rows is not. One
  // range (GEMMs threading themselves) when the partials would take over 32 MiB.
  const int T = num_threads();
  const bool split = flops >= kParallelFlops && T > 1 && g.M >= 2 * T && (T - 1) * size <= (8 << 20);
  const index_t P = split ? T : 1;
  float* part = P > 1 ? thread_scratch<float, gradu::kTagPartials>(static_cast<size_t>((P - 1) * size)) : nullptr;
  auto range = [&](index_t p) {
    float* out = p == 0 ? dw : part + (p - 1) * size;
    const index_t r0 = g.M * p / P, r1 = g.M * (p + 1) / P;
    const float beta0 = p == 0 && acc ? 1.f : 0.f;
    if (r0 == r1) {
      if (beta0 == 0.f) zero(out, size);
      return;
    }
    float* col = unit ? nullptr : thread_scratch<float, gradu::kTagCols>(static_cast<size_t>(MB * g.K));
    for (index_t m0 = r0; m0 < r1; m0 += MB) {
      const index_t rows = std::min(MB, r1 - m0);
      const float beta = m0 == r0 ? beta0 : 1.f;
      for (index_t gi = 0; gi < g.G; ++gi) {
        const float* a = x + m0 * s.C + gi * g.cg;
        index_t lda = s.C;
        if (!unit) {
          im2col(col, x, s, g, gi, m0, rows);
          a = col, lda = g.K;
        }
        sgemm(true, false, g.K, g.og, rows, 1.f, a, lda, dy + m0 * s.OC + gi * g.og, s.OC, beta, out + gi * g.og, s.OC);
      }
    }
  };
  if (P == 1) return range(0);
  parallel_for(P, 1, [&](index_t p0, index_t p1) {
    for (index_t p = p0; p < p1; ++p) range(p);
  });
  gradu::split_elems(size, 1 << 16, [&](index_t i0, index_t i1) {
    for (index_t p = 1; p < P; ++p) {
      const float* src = part + (p - 1) * size;
      for (index_t i = i0; i < i1; ++i) dw[i] += src[i];
    }
  });
}

}  // namespace engine
