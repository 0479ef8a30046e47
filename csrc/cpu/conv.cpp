// 2-D convolution, NHWC activations × HWIO filters (see docs/layout.md).
//
// Algorithms, chosen from the shape when the filters are packed (PackedConv2D: once; a
// DynamicConv2D, whose filter is trained, packs it into its caller's workspace on each call
// and runs the same kernels; its GEMM paths read the HWIO filter in place through sgemm):
//  * Pointwise: 1×1, stride 1, no padding: the input already is the GEMM's A matrix
//    (M = N·H·W rows of C), so conv = sgemm_packed on x directly, per group.
//  * Direct: groups == 1 and a small input depth (first layers, C ≤ 4): vectorised over
//    output channels with register blocking over output pixels (conv_direct_*.cpp).
//  * Depthwise: groups == C: direct, vectorised over channels (conv_depthwise*.cpp).
//  * Winograd (AVX-512, 3×3 stride 1 on large maps): F(4×4, 3×3), 4× fewer multiply-adds
//    (conv_winograd.cpp).
//  * Indirect (AVX-512, groups == 1, C > 4): implicit GEMM over the input in place, one
//    pointer per output pixel and tap (conv_indirect.cpp); filters packed in 32-channel panels.
//  * General: im2col into a row block of M that stays in L2, then sgemm_packed with the
//    HWIO filter (reshaped K×OC per group) packed once. Threads split row blocks (each block's
//    GEMM then runs inline on its thread) when there are enough; otherwise the GEMM threads.
// Bias is folded in at pack time (GEMM epilogue / accumulator init); the activation is fused
// into the GEMM epilogue or applied by the kernel while the output row is in cache. An optional
// residual (laid out like the output) is added before the activation: in the indirect kernel's
// and the GEMM's epilogues, or (direct, depthwise) by a pass over the output.
#include "engine/conv.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "conv_indirect.h"
#include "conv_kernels.h"
#include "conv_winograd.h"
#include "engine/cpu_features.h"
#include "engine/elementwise.h"
#include "engine/gemm.h"
#include "engine/pool.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {

namespace {

enum class Algo { Pointwise, Direct, Depthwise, Winograd, Indirect, Im2col };

// Per-thread scratch (engine/scratch.h: grow-only, counted, trimmed after each run):
float* cols_scratch(size_t n) { return thread_scratch<float, kScratchConvCols>(n); }  // im2col rows / padded input
float* band_scratch(size_t n) { return thread_scratch<float, kScratchConvBand>(n); }  // conv rows of a pooled row
// A residual that is the output itself, and a direct / depthwise output bound for a strided
// destination (those kernels write dense rows).
float* residual_scratch(size_t n) { return thread_scratch<float, kScratchConvResidual>(n); }
float* strided_scratch(size_t n) { return thread_scratch<float, kScratchConvStrided>(n); }

std::string s(index_t v) { return std::to_string(v); }

bool in_kernel_act(Act a) { return a == Act::None || a == Act::Identity || a == Act::Relu || a == Act::LeakyRelu; }
bool in_depthwise_act(Act a) { return in_kernel_act(a) || a == Act::Clip; }

// Floating-point work below which a kernel runs on the calling thread. A worker asleep when
// the job comes has its share taken over by the caller (threadpool.cpp), so splitting costs
// little even then; the seed CNN's first conv + pool (0.39 MFLOP) runs in 4.6 µs on two
// threads against 6.9 µs on one.
constexpr double kParallelFlops = 1e5;

}  // namespace

// The algorithm for a shape and the layout of its packed filter (PackedConv2D and
// DynamicConv2D share it).
struct ConvLayout {
  Conv2DShape s;
  Algo algo = Algo::Im2col;
  index_t K = 0;                                  // GEMM depth per group: KH·KW·C/groups
  index_t OCp = 0;                                // Direct: OC padded to 16
  std::unique_ptr<IndirectConv> indirect;         // Indirect
  std::unique_ptr<WinogradConv> winograd;         // Winograd

  explicit ConvLayout(const Conv2DShape& sh);
  // Floats of the packed filter and of the bias the kernels read (0: the GEMM paths read the
  // HWIO filter, and they and the depthwise kernel the bias, as given).
  size_t w_floats() const;
  size_t bias_floats() const;
  // The HWIO filter and bias (OC floats or null) into the algorithm's layout (64-byte aligned).
  void pack(float* w, float* bias_out, const float* filter, const float* bias) const;
};

// What one call's kernels read.
struct ConvWeights {
  const float* w = nullptr;       // packed filter (Direct, Depthwise, Indirect, Winograd)
  const float* bias = nullptr;    // Direct: OCp, Indirect / Winograd: 32 per panel, else OC (or null)
  const float* filter = nullptr;  // the HWIO filter (Winograd's special tiles; GEMM paths without b)
  const std::vector<std::unique_ptr<PackedMatrixB>>* b = nullptr;  // per-group packed B, or null: sgemm on filter
};

struct PackedConv2D::Impl {
  ConvLayout layout;
  float* data = nullptr;                          // packed filter, then bias (aligned)
  std::vector<float> filter;                      // Winograd: the HWIO filter
  std::vector<float> bias;                        // the OC biases, where the kernels read them as given
  std::vector<std::unique_ptr<PackedMatrixB>> b;  // per group (Pointwise / Im2col; Direct's portable fallback)
  ConvWeights weights;
  explicit Impl(const Conv2DShape& s) : layout(s) {}
  ~Impl() { std::free(data); }
};

void Conv2DShape::validate() const {
  auto pos = [](index_t v, const char* name) {
    ENGINE_CHECK(v >= 1, std::string("conv2d: ") + name + " must be >= 1, got " + s(v));
  };
  pos(N, "N"); pos(H, "H"); pos(W, "W"); pos(C, "C"); pos(OC, "OC"); pos(KH, "KH"); pos(KW, "KW");
  pos(stride_h, "stride_h"); pos(stride_w, "stride_w"); pos(dil_h, "dil_h"); pos(dil_w, "dil_w");
  pos(groups, "groups");
  auto nonneg = [](index_t v, const char* name) {
    ENGINE_CHECK(v >= 0, std::string("conv2d: ") + name + " must be >= 0, got " + s(v));
  };
  nonneg(pad_top, "pad_top"); nonneg(pad_left, "pad_left"); nonneg(pad_bottom, "pad_bottom"); nonneg(pad_right, "pad_right");
  ENGINE_CHECK(C % groups == 0, "conv2d: C (" + s(C) + ") is not divisible by groups (" + s(groups) + ")");
  ENGINE_CHECK(OC % groups == 0, "conv2d: OC (" + s(OC) + ") is not divisible by groups (" + s(groups) + ")");
  const index_t eh = dil_h * (KH - 1) + 1, ew = dil_w * (KW - 1) + 1;
  ENGINE_CHECK(eh <= H + pad_top + pad_bottom,
               "conv2d: dilated kernel height " + s(eh) + " (KH=" + s(KH) + ", dil_h=" + s(dil_h) +
                   ") exceeds padded input height " + s(H + pad_top + pad_bottom) + " (H=" + s(H) +
                   ", pad_top=" + s(pad_top) + ", pad_bottom=" + s(pad_bottom) + ")");
  ENGINE_CHECK(ew <= W + pad_left + pad_right,
               "conv2d: dilated kernel width " + s(ew) + " (KW=" + s(KW) + ", dil_w=" + s(dil_w) +
                   ") exceeds padded input width " + s(W + pad_left + pad_right) + " (W=" + s(W) +
                   ", pad_left=" + s(pad_left) + ", pad_right=" + s(pad_right) + ")");
  ENGINE_CHECK(OH() > 0 && OW() > 0, "conv2d: output would be empty (OH=" + s(OH()) + ", OW=" + s(OW()) + ")");
}

namespace {

Algo choose_algo(const Conv2DShape& sh) {
  const bool unit = sh.KH == 1 && sh.KW == 1 && sh.stride_h == 1 && sh.stride_w == 1 && sh.pad_top == 0 &&
                    sh.pad_left == 0 && sh.pad_bottom == 0 && sh.pad_right == 0;
  if (sh.groups == sh.C && sh.groups > 1) return Algo::Depthwise;
  if (unit) return Algo::Pointwise;
  if (sh.groups == 1 && sh.C <= 4) return Algo::Direct;
  if (WinogradConv::suits(sh)) return Algo::Winograd;
  if (IndirectConv::suits(sh)) return Algo::Indirect;
  return Algo::Im2col;
}

const char* algo_name(Algo a) {
  switch (a) {
    case Algo::Pointwise: return "pointwise";
    case Algo::Direct: return "direct";
    case Algo::Depthwise: return "depthwise";
    case Algo::Winograd: return "winograd";
    case Algo::Indirect: return "indirect";
    case Algo::Im2col: break;
  }
  return "im2col";
}

size_t align16(size_t n) { return (n + 15) / 16 * 16; }  // floats, to 64 bytes

}  // namespace

ConvLayout::ConvLayout(const Conv2DShape& sh) : s(sh) {
  sh.validate();
  K = sh.KH * sh.KW * (sh.C / sh.groups);
  algo = choose_algo(sh);
  if (algo == Algo::Winograd) winograd.reset(new WinogradConv(sh));
  if (algo == Algo::Indirect) indirect.reset(new IndirectConv(sh));
  if (algo == Algo::Direct) OCp = (sh.OC + 15) / 16 * 16;
}

size_t ConvLayout::w_floats() const {
  switch (algo) {
    case Algo::Direct: return static_cast<size_t>(s.KH * s.KW * s.C * OCp);
    case Algo::Depthwise: return static_cast<size_t>(s.KH * s.KW * s.OC);
    case Algo::Indirect: return indirect->w_floats();
    case Algo::Winograd: return winograd->u_floats();
    case Algo::Pointwise:
    case Algo::Im2col: break;
  }
  return 0;
}

size_t ConvLayout::bias_floats() const {
  switch (algo) {
    case Algo::Direct: return static_cast<size_t>(OCp);
    case Algo::Indirect: return indirect->bias_floats();
    case Algo::Winograd: return winograd->bias_floats();
    default: return 0;
  }
}

void ConvLayout::pack(float* w, float* bias_out, const float* filter, const float* bias) const {
  const index_t OC = s.OC;
  switch (algo) {
    case Algo::Direct: {  // [OC/16][KH][KW][C][16], zero-padded; bias padded to OCp
      const index_t taps = s.KH * s.KW * s.C;
      std::memset(w, 0, taps * OCp * sizeof(float));
      for (index_t t = 0; t < taps; ++t)
        for (index_t oc = 0; oc < OC; ++oc) w[((oc / 16) * taps + t) * 16 + oc % 16] = filter[t * OC + oc];
      for (index_t j = 0; j < OCp; ++j) bias_out[j] = bias && j < OC ? bias[j] : 0.f;
      return;
    }
    case Algo::Depthwise: {  // HWIO with I = 1: filter[(kh·KW+kw)·OC + c·mult + m] → [kh][kw][m][c]
      const index_t M = OC / s.C, taps = s.KH * s.KW;
      for (index_t t = 0; t < taps; ++t)
        for (index_t c = 0; c < s.C; ++c)
          for (index_t m = 0; m < M; ++m) w[(t * M + m) * s.C + c] = filter[t * OC + c * M + m];
      return;
    }
    case Algo::Indirect: return indirect->pack(w, bias_out, filter, bias);
    case Algo::Winograd: return winograd->pack(w, bias_out, filter, bias);
    case Algo::Pointwise:
    case Algo::Im2col: return;
  }
}

PackedConv2D::PackedConv2D(const Conv2DShape& sh, const float* filter, const float* bias)
    : shape_(sh), impl_(new Impl(sh)) {
  Impl& im = *impl_;
  const ConvLayout& L = im.layout;
  const index_t G = sh.groups, og = sh.OC / G, OC = sh.OC;
  const size_t wf = align16(L.w_floats()), bf = L.bias_floats();
  ConvWeights& wt = im.weights;
  if (wf + bf) {
    im.data = convk::aligned_floats(wf + bf);
    L.pack(im.data, im.data + wf, filter, bias);
    wt.w = im.data;
    wt.bias = bf ? im.data + wf : nullptr;
  }
  if (L.algo == Algo::Winograd) {
    im.filter.assign(filter, filter + 9 * sh.C * OC);
    wt.filter = im.filter.data();
  }
  if (!bf && bias) {  // the kernel reads OC floats as given: keep a copy
    im.bias.assign(bias, bias + OC);
    wt.bias = im.bias.data();
  }
  if (L.algo == Algo::Direct)  // the portable ISA falls back to im2col + GEMM: pack for that too
    im.b.emplace_back(new PackedMatrixB(false, L.K, OC, filter, OC));
  if (L.algo == Algo::Pointwise || L.algo == Algo::Im2col)
    // Group g's B is the K×og sub-matrix starting at column g·og of the (K, OC) filter.
    for (index_t g = 0; g < G; ++g) im.b.emplace_back(new PackedMatrixB(false, L.K, og, filter + g * og, OC));
  if (!im.b.empty()) wt.b = &im.b;
}
PackedConv2D::~PackedConv2D() = default;

const char* PackedConv2D::algorithm() const { return algo_name(impl_->layout.algo); }

namespace {

// Copies the rows [m0, m0+rows) of the im2col matrix of group g into col (rows × K).
void im2col(float* col, const float* x, const Conv2DShape& s, index_t g, index_t m0, index_t rows) {
  const index_t OH = s.OH(), OW = s.OW(), C = s.C, cg = C / s.groups, KW = s.KW;
  const index_t K = s.KH * KW * cg;
  const bool contig = s.dil_w == 1 && cg == C;  // a kernel row's KW taps are one run of KW·C
  index_t n = m0 / (OH * OW), oh = (m0 / OW) % OH, ow = m0 % OW;
  for (index_t r = 0; r < rows; ++r) {
    float* dst = col + r * K;
    const index_t ih0 = oh * s.stride_h - s.pad_top, iw0 = ow * s.stride_w - s.pad_left;
    const float* img = x + n * s.H * s.W * C + g * cg;
    for (index_t kh = 0; kh < s.KH; ++kh, dst += KW * cg) {
      const index_t ih = ih0 + kh * s.dil_h;
      if (ih < 0 || ih >= s.H) {
        std::memset(dst, 0, KW * cg * sizeof(float));
        continue;
      }
      const float* src = img + ih * s.W * C;
      if (contig && iw0 >= 0 && iw0 + KW <= s.W) {
        std::memcpy(dst, src + iw0 * C, KW * C * sizeof(float));
        continue;
      }
      for (index_t kw = 0; kw < KW; ++kw) {
        const index_t iw = iw0 + kw * s.dil_w;
        if (iw < 0 || iw >= s.W) std::memset(dst + kw * cg, 0, cg * sizeof(float));
        else if (cg == 1) dst[kw] = src[iw * C];
        else std::memcpy(dst + kw * cg, src + iw * C, cg * sizeof(float));
      }
    }
    if (++ow == OW) {
      ow = 0;
      if (++oh == OH) { oh = 0; ++n; }
    }
  }
}

// C (rows × og, row stride ldc) = A (rows × K, row stride lda) · group g's filter, then the
// epilogue: on the packed B, or on the HWIO filter in place.
void group_gemm(const ConvLayout& L, const ConvWeights& wt, index_t g, index_t rows, const float* A, index_t lda,
                float* C, index_t ldc, const Epilogue& e) {
  const index_t og = L.s.OC / L.s.groups;
  if (wt.b) sgemm_packed(false, rows, 1.f, A, lda, *(*wt.b)[g], 0.f, C, ldc, e);
  else sgemm(false, false, rows, og, L.K, 1.f, A, lda, wt.filter + g * og, L.s.OC, 0.f, C, ldc, e);
}

void conv_im2col(float* y, index_t ldy, const float* x, const ConvLayout& L, const ConvWeights& wt, index_t batch,
                 const Epilogue& ep) {
  const Conv2DShape& s = L.s;
  const index_t M = batch * s.OH() * s.OW(), K = L.K, G = s.groups, og = s.OC / G;
  // Row block: the im2col tile (MB × K floats) stays within ~256 KiB of L2.
  index_t MB = std::max<index_t>(16, (256 * 1024 / 4) / std::max<index_t>(K, 1));
  MB = std::min(MB, M);
  // Each block's GEMM streams the whole packed filter again. When the filter is the bigger
  // stream (deep layers: few output pixels, K·OC in megabytes) that re-reading dominates, so
  // the whole im2col matrix is built once (if it is not huge) and one GEMM, threaded over the
  // filter's columns, reads the filter once.
  const double filter_bytes = 4.0 * K * s.OC, col_bytes = 4.0 * M * K;
  if (filter_bytes > 256.0 * 1024 && col_bytes <= 8.0 * 1024 * 1024 && filter_bytes * ((M + MB - 1) / MB) > 2 * col_bytes)
    MB = M;
  index_t nblk = (M + MB - 1) / MB;
  const int T = num_threads();
  const double flops = 2.0 * M * K * s.OC;
  const bool par_blocks = T > 1 && flops > kParallelFlops && nblk >= T;
  if (par_blocks) {  // balance: a multiple of T blocks
    nblk = (nblk + T - 1) / T * T;
    MB = (M + nblk - 1) / nblk;
    nblk = (M + MB - 1) / MB;
  }
  auto run_block = [&](index_t b) {
    const index_t m0 = b * MB, rows = std::min(MB, M - m0);
    float* col = cols_scratch(static_cast<size_t>(rows * K));
    for (index_t g = 0; g < G; ++g) {
      im2col(col, x, s, g, m0, rows);
      Epilogue e = ep;
      if (e.bias) e.bias += g * og;
      if (e.residual) e.residual += m0 * s.OC + g * og;
      group_gemm(L, wt, g, rows, col, K, y + m0 * ldy + g * og, ldy, e);
    }
  };
  if (par_blocks) parallel_tasks(nblk, [&](std::int64_t b) { run_block(b); });
  else
    for (index_t b = 0; b < nblk; ++b) run_block(b);
}

// Runs rows(n, oh0, oh1) over the output rows [r0, r1) of a batch (flattened as n·OH + oh),
// one image at a time, then applies an activation the kernel could not fuse (post_act).
template <class Rows>
void for_image_rows(float* y, index_t r0, index_t r1, index_t OH, index_t row_floats, bool post_act,
                    Act act, float a, float b, Rows&& rows) {
  while (r0 < r1) {
    const index_t n = r0 / OH, oh0 = r0 % OH, oh1 = std::min<index_t>(OH, oh0 + (r1 - r0));
    rows(n, oh0, oh1);
    if (post_act) {
      float* yr = y + (n * OH + oh0) * row_floats;
      activation(yr, yr, (oh1 - oh0) * row_floats, act, a, b);
    }
    r0 += oh1 - oh0;
  }
}

void conv_direct(float* y, const float* x, const ConvLayout& L, const ConvWeights& wt, index_t batch, Act act,
                 float a, float b, Isa isa) {
  const Conv2DShape& s = L.s;
  const index_t OH = s.OH(), OW = s.OW();
  const bool padded = s.pad_top || s.pad_left || s.pad_bottom || s.pad_right;
  const index_t Hp = s.H + s.pad_top + s.pad_bottom, Wp = s.W + s.pad_left + s.pad_right;
  convk::DirectArgs da{nullptr, Hp, Wp, s.C, wt.w, wt.bias, s.OC, L.OCp, s.KH, s.KW,
                       s.stride_h, s.stride_w, s.dil_h, s.dil_w, OW, in_kernel_act(act) ? act : Act::None, a};
  const bool post_act = !in_kernel_act(act);
  const double row_flops = 2.0 * OW * s.OC * s.KH * s.KW * s.C;
  const index_t rows = batch * OH;
  const index_t grain = std::max<index_t>(1, static_cast<index_t>(kParallelFlops / row_flops));
  auto fn = isa == Isa::Avx512 ? convk::direct_rows_avx512 : convk::direct_rows_avx2;
  parallel_for(rows, grain, [&](std::int64_t r0, std::int64_t r1) {
    convk::DirectArgs d = da;
    index_t cur_n = -1;
    for_image_rows(y, r0, r1, OH, OW * s.OC, post_act, act, a, b, [&](index_t n, index_t oh0, index_t oh1) {
      const float* img = x + n * s.H * s.W * s.C;
      if (padded) {
        if (n != cur_n) {
          // Padded copy of the input rows this chunk reads.
          const index_t ih_lo = oh0 * s.stride_h, ih_hi = (oh1 - 1) * s.stride_h + s.dil_h * (s.KH - 1) + 1;
          float* xp = cols_scratch(static_cast<size_t>(Hp * Wp * s.C));
          for (index_t ih = ih_lo; ih < ih_hi; ++ih) {
            float* dst = xp + ih * Wp * s.C;
            const index_t src_h = ih - s.pad_top;
            if (src_h < 0 || src_h >= s.H) {
              std::memset(dst, 0, Wp * s.C * sizeof(float));
              continue;
            }
            std::memset(dst, 0, s.pad_left * s.C * sizeof(float));
            std::memcpy(dst + s.pad_left * s.C, img + src_h * s.W * s.C, s.W * s.C * sizeof(float));
            std::memset(dst + (s.pad_left + s.W) * s.C, 0, s.pad_right * s.C * sizeof(float));
          }
          cur_n = n;
          d.x = xp;
        }
      } else {
        d.x = img;
      }
      fn(y + n * OH * OW * s.OC, d, oh0, oh1);
    });
  });
}

void conv_depthwise(float* y, const float* x, const ConvLayout& L, const ConvWeights& wt, index_t batch, Act act,
                    float a, float b, Isa isa) {
  const Conv2DShape& s = L.s;
  const index_t OH = s.OH(), OW = s.OW();
  convk::DepthwiseArgs da{nullptr, s.H, s.W, s.C, s.OC / s.C, wt.w, wt.bias,
                          s.KH, s.KW, s.stride_h, s.stride_w, s.dil_h, s.dil_w, s.pad_top, s.pad_left, OW,
                          in_depthwise_act(act) ? act : Act::None, a, b};
  const bool post_act = !in_depthwise_act(act);
  auto fn = isa == Isa::Avx512 ? convk::depthwise_rows_avx512
            : isa == Isa::Avx2 ? convk::depthwise_rows_avx2
                               : convk::depthwise_rows_portable;
  const double row_flops = 2.0 * OW * s.OC * s.KH * s.KW;
  const index_t grain = std::max<index_t>(1, static_cast<index_t>(kParallelFlops / row_flops));
  parallel_for(batch * OH, grain, [&](std::int64_t r0, std::int64_t r1) {
    convk::DepthwiseArgs d = da;
    for_image_rows(y, r0, r1, OH, OW * s.OC, post_act, act, a, b, [&](index_t n, index_t oh0, index_t oh1) {
      d.x = x + n * s.H * s.W * s.C;
      fn(y + n * OH * OW * s.OC, d, oh0, oh1);
    });
  });
}

void conv_run(float* y, const float* x, const ConvLayout& L, const ConvWeights& wt, index_t batch, Act act,
              float a, float b, const float* residual, index_t ldy) {
  ENGINE_CHECK(batch >= 0, "conv2d: batch must be >= 0, got " + s(batch));
  const Conv2DShape& sh = L.s;
  if (ldy == 0) ldy = sh.OC;
  ENGINE_CHECK(ldy >= sh.OC, "conv2d: output row stride " + s(ldy) + " is below OC = " + s(sh.OC));
  ENGINE_CHECK(residual != y || ldy == sh.OC, "conv2d: a residual that is the output needs ldy = OC");
  if (batch == 0) return;
  const Isa isa = cpu_isa();
  Epilogue ep;
  ep.bias = wt.bias;
  ep.act = act;
  ep.act_alpha = a;
  ep.act_beta = b;
  ep.residual = residual;
  ep.ldr = sh.OC;
  switch (L.algo) {
    case Algo::Pointwise: {
      const index_t G = sh.groups, cg = sh.C / G, og = sh.OC / G, M = batch * sh.H * sh.W;
      for (index_t g = 0; g < G; ++g) {
        Epilogue e = ep;
        if (e.bias) e.bias += g * og;
        if (e.residual) e.residual += g * og;
        group_gemm(L, wt, g, M, x + g * cg, sh.C, y + g * og, ldy, e);
      }
      return;
    }
    case Algo::Indirect:
      return L.indirect->run(y, ldy, x, residual, batch, act, a, b, wt.w, wt.bias);
    case Algo::Winograd:
      return L.winograd->run(y, ldy, x, residual, batch, act, a, b, wt.w, wt.bias, wt.filter);
    case Algo::Im2col:
      return conv_im2col(y, ldy, x, L, wt, batch, ep);
    case Algo::Direct:
    case Algo::Depthwise:
      break;
  }
  // Direct and depthwise kernels write dense rows and take no residual: they write into a
  // per-thread buffer when the output is strided, and the residual and the activation follow
  // in a pass over the output.
  const index_t n = batch * sh.OH() * sh.OW() * sh.OC;
  float* out = ldy == sh.OC ? y : strided_scratch(static_cast<size_t>(n));
  const Act kact = residual ? Act::None : act;
  if (residual == y) {
    float* copy = residual_scratch(static_cast<size_t>(n));
    std::memcpy(copy, y, n * sizeof(float));
    residual = copy;
  }
  if (L.algo == Algo::Depthwise) conv_depthwise(out, x, L, wt, batch, kact, a, b, isa);
  else if (isa != Isa::Portable) conv_direct(out, x, L, wt, batch, kact, a, b, isa);
  else {
    Epilogue e = ep;
    e.residual = nullptr;
    e.act = kact;
    conv_im2col(out, sh.OC, x, L, wt, batch, e);
  }
  if (residual)
    parallel_for(n, 1 << 16, [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) out[i] += residual[i];
      if (act != Act::None && act != Act::Identity) activation(out + i0, out + i0, i1 - i0, act, a, b);
    });
  if (out != y)
    for (index_t m = 0; m < n / sh.OC; ++m) std::memcpy(y + m * ldy, out + m * sh.OC, sh.OC * sizeof(float));
}

void conv_maxpool_run(float* y, const float* x, const ConvLayout& L, const ConvWeights& wt, index_t batch, index_t ph,
                      index_t pwid, Act act, float a, float b) {
  const Conv2DShape& s = L.s;
  const index_t OH = s.OH(), OW = s.OW(), OC = s.OC;
  ENGINE_CHECK(batch >= 0, "conv2d_maxpool: batch must be >= 0, got " + std::to_string(batch));
  ENGINE_CHECK(ph >= 1 && pwid >= 1 && ph <= OH && pwid <= OW,
               "conv2d_maxpool: pool window " + std::to_string(ph) + "x" + std::to_string(pwid) +
                   " does not fit the " + std::to_string(OH) + "x" + std::to_string(OW) + " conv output");
  if (batch == 0) return;
  const index_t PH = OH / ph, PW = OW / pwid;
  Pool2DShape band;  // one pooled row from a band of ph conv rows
  band.H = ph, band.W = OW, band.C = OC, band.KH = ph, band.KW = pwid, band.stride_h = ph,
  band.stride_w = pwid;
  const Isa isa = cpu_isa();
  const bool padded = s.pad_top || s.pad_left || s.pad_bottom || s.pad_right;
  if (L.algo != Algo::Direct || isa == Isa::Portable || padded) {
    // Two steps through a per-thread buffer (still one plan step, no arena buffer).
    float* tmp = band_scratch(static_cast<size_t>(batch * OH * OW * OC));
    conv_run(tmp, x, L, wt, batch, act, a, b, nullptr, 0);
    Pool2DShape ps = band;
    ps.N = batch, ps.H = OH;
    maxpool2d_nhwc(y, tmp, ps);
    return;
  }
  convk::DirectArgs da{nullptr, s.H, s.W, s.C, wt.w, wt.bias, OC, L.OCp, s.KH, s.KW,
                       s.stride_h, s.stride_w, s.dil_h, s.dil_w, OW, in_kernel_act(act) ? act : Act::None, a};
  const bool post_act = !in_kernel_act(act);
  auto fn = isa == Isa::Avx512 ? convk::direct_rows_avx512 : convk::direct_rows_avx2;
  const double prow_flops = 2.0 * ph * OW * OC * s.KH * s.KW * s.C;
  const index_t grain = std::max<index_t>(1, static_cast<index_t>(kParallelFlops / prow_flops));
  parallel_for(batch * PH, grain, [&](std::int64_t r0, std::int64_t r1) {
    convk::DirectArgs d = da;
    float* rows = band_scratch(static_cast<size_t>(ph * OW * OC));
    for (index_t r = r0; r < r1; ++r) {
      const index_t n = r / PH, p = r % PH;
      // Rows [p·ph, p·ph + ph) of image n, written to the band from its row 0: start the
      // input at the band's first row and compute rows [0, ph).
      d.x = x + (n * s.H + p * ph * s.stride_h) * s.W * s.C;
      fn(rows, d, 0, ph);
      if (post_act) activation(rows, rows, ph * OW * OC, act, a, b);
      maxpool2d_nhwc(y + (n * PH + p) * PW * OC, rows, band);
    }
  });
}

}  // namespace

void conv2d_nhwc(float* y, const float* x, const PackedConv2D& pw, index_t batch, Act act, float a, float b,
                 const float* residual, index_t ldy) {
  conv_run(y, x, pw.impl().layout, pw.impl().weights, batch, act, a, b, residual, ldy);
}

void conv2d_maxpool_nhwc(float* y, const float* x, const PackedConv2D& pw, index_t batch, index_t ph,
                         index_t pwid, Act act, float a, float b) {
  conv_maxpool_run(y, x, pw.impl().layout, pw.impl().weights, batch, ph, pwid, act, a, b);
}

// ---- DynamicConv2D: the filter packed on every call, into the caller's workspace ------------
//
// Workspace (floats, each part 64-byte aligned from an aligned start): slack to align the
// start, the HWIO copy of an OIHW filter, the packed filter, the packed bias.

DynamicConv2D::DynamicConv2D(const Conv2DShape& shape, FilterLayout layout)
    : shape_(shape), layout_(layout), plan_(new ConvLayout(shape)) {
  ENGINE_CHECK(layout == FilterLayout::HWIO || layout == FilterLayout::OIHW || layout == FilterLayout::DataGrad,
               "conv2d: unknown filter layout " + s(static_cast<index_t>(layout)));
  if (layout == FilterLayout::DataGrad)
    ENGINE_CHECK(shape.stride_h == 1 && shape.stride_w == 1, "conv2d: a DataGrad filter needs stride 1");
}
DynamicConv2D::~DynamicConv2D() = default;

const char* DynamicConv2D::algorithm() const { return algo_name(plan_->algo); }

namespace {
size_t filter_floats(const Conv2DShape& s) { return static_cast<size_t>(s.KH * s.KW * (s.C / s.groups) * s.OC); }
}  // namespace

size_t DynamicConv2D::workspace_floats() const {
  const size_t hwio = layout_ != FilterLayout::HWIO ? align16(filter_floats(shape_)) : 0;
  return 16 + hwio + align16(plan_->w_floats()) + plan_->bias_floats();
}

void DynamicConv2D::run(float* y, const float* x, const float* filter, const float* bias, float* workspace,
                        index_t batch, Act act, float a, float b, const float* residual, index_t ldy, index_t pool_h,
                        index_t pool_w) const {
  ENGINE_CHECK(batch >= 0, "conv2d: batch must be >= 0, got " + s(batch));
  if (batch == 0) return;
  const ConvLayout& L = *plan_;
  const Conv2DShape& sh = shape_;
  float* ws = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(workspace) + 63) / 64 * 64);
  const float* hwio = filter;
  if (layout_ == FilterLayout::OIHW) {  // [o][ci][kh][kw] -> [kh][kw][ci][o]
    const index_t taps = sh.KH * sh.KW, cg = sh.C / sh.groups, OC = sh.OC;
    float* t = ws;
    parallel_for(taps * cg, std::max<index_t>(1, 4096 / std::max<index_t>(1, OC)), [&](std::int64_t r0, std::int64_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const index_t tap = r / cg, ci = r % cg;
        const float* src = filter + ci * taps + tap;
        float* dst = t + r * OC;
        for (index_t o = 0; o < OC; ++o) dst[o] = src[o * cg * taps];
      }
    });
    hwio = t;
    ws += align16(filter_floats(sh));
  } else if (layout_ == FilterLayout::DataGrad) {
    // The forward filter KH×KW×fc×C (fc = OC/G, its input channels per group) -> this conv's
    // KH×KW×(C/G)×OC: W'[kh][kw][o][j·fc + ci] = W[KH-1-kh][KW-1-kw][ci][j·og + o], og = C/G.
    const index_t taps = sh.KH * sh.KW, G = sh.groups, og = sh.C / G, fc = sh.OC / G, C = sh.C, OC = sh.OC;
    float* t = ws;
    parallel_for(taps * og, std::max<index_t>(1, 4096 / std::max<index_t>(1, OC)), [&](std::int64_t r0, std::int64_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const index_t tap = r / og, o = r % og;
        const float* src = filter + (taps - 1 - tap) * fc * C;  // the tap mirrored in both axes
        float* dst = t + r * OC;
        for (index_t j = 0; j < G; ++j)
          for (index_t ci = 0; ci < fc; ++ci) dst[j * fc + ci] = src[ci * C + j * og + o];
      }
    });
    hwio = t;
    ws += align16(filter_floats(sh));
  }
  ConvWeights wt;
  wt.filter = hwio;
  wt.bias = bias;
  const size_t wf = align16(L.w_floats());
  if (wf) {
    L.pack(ws, ws + wf, hwio, bias);
    wt.w = ws;
    if (L.bias_floats()) wt.bias = ws + wf;
  }
  if (pool_h > 0) {
    ENGINE_CHECK(residual == nullptr && (ldy == 0 || ldy == sh.OC), "conv2d: a fused max-pool takes no residual or output stride");
    return conv_maxpool_run(y, x, L, wt, batch, pool_h, pool_w, act, a, b);
  }
  conv_run(y, x, L, wt, batch, act, a, b, residual, ldy);
}

}  // namespace engine
