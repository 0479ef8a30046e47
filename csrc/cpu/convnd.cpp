// N-d convolution and transposed convolution over NCHW tensors (the ONNX layout), for the
// cases the NHWC conv2d kernel does not take: 3-D, filters computed at run time, float64.
//
// Conv: per image and group, Y_g (og × P) = W_g (og × K) · col (K × P), K = C/groups · |kernel|,
// P the output positions; col is built (im2col) one tile of output positions at a time so it
// stays in L2 (a 1×1, stride-1, unpadded conv reads X in place). Bias is the GEMM epilogue.
// ConvTranspose: col (og·|kernel| × P_in) = W_gᵀ · X_g, then scattered and summed into Y
// (col2im), output channels split over threads (their outputs are disjoint).
// Threads: tiles (or images × groups) go to the pool when there are enough of them, each
// running its GEMM inline; otherwise the GEMM itself is threaded.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "engine/gemm.h"
#include "engine/scratch.h"
#include "engine/nchw.h"
#include "engine/threadpool.h"

namespace engine {

void WindowND::validate(const char* what) const {
  for (int d = 0; d < 3; ++d) {
    ENGINE_CHECK(in[d] >= 0 && out[d] >= 0, std::string(what) + ": negative spatial size");
    ENGINE_CHECK(k[d] >= 1 && stride[d] >= 1 && dil[d] >= 1,
                 std::string(what) + ": kernel, strides and dilations must be >= 1");
  }
}

namespace {

// [lo, hi): the o in [0, n) with 0 <= o·s + off < in (s >= 1).
inline void valid_range(index_t n, index_t s, index_t off, index_t in, index_t& lo, index_t& hi) {
  lo = off >= 0 ? 0 : (-off + s - 1) / s;
  hi = off >= in ? 0 : std::min(n, (in - 1 - off) / s + 1);
  lo = std::min(lo, n);
  hi = std::max(hi, lo);
}

constexpr double kParallelFlops = 2e5;
constexpr index_t kColElems = 64 * 1024;  // target im2col tile (elements): a few hundred KiB

// C (M×N, ldc) = op(A)·B (+ bias[i] on row i); op(A) = Aᵀ when ta (A stored K×M).
void mm(bool ta, index_t M, index_t N, index_t K, const float* A, index_t lda, const float* B, index_t ldb,
        float* C, index_t ldc, const float* row_bias) {
  Epilogue ep;
  ep.bias = row_bias;
  ep.bias_per_row = true;
  sgemm(ta, false, M, N, K, 1.f, A, lda, B, ldb, 0.f, C, ldc, ep);
}

void mm(bool ta, index_t M, index_t N, index_t K, const double* A, index_t lda, const double* B, index_t ldb,
        double* C, index_t ldc, const double* row_bias) {
  gemm_strided<double>(M, N, K, 1.0, A, ta ? 1 : lda, ta ? lda : 1, B, ldb, 1, 0.0, C, ldc);
  if (row_bias)
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < N; ++j) C[i * ldc + j] += row_bias[i];
}

// Rows (c, kd, kh, kw) × columns [p0, p1) of the im2col matrix of the cg channels at x.
template <class T>
void im2col(T* col, const T* x, index_t cg, const WindowND& g, index_t p0, index_t p1) {
  const index_t P = p1 - p0, D = g.in[0], H = g.in[1], W = g.in[2], OH = g.out[1], OW = g.out[2];
  T* dst = col;
  for (index_t c = 0; c < cg; ++c)
    for (index_t kd = 0; kd < g.k[0]; ++kd)
      for (index_t kh = 0; kh < g.k[1]; ++kh)
        for (index_t kw = 0; kw < g.k[2]; ++kw, dst += P) {
          const index_t offd = kd * g.dil[0] - g.pad[0], offh = kh * g.dil[1] - g.pad[1];
          const index_t offw = kw * g.dil[2] - g.pad[2], sw = g.stride[2];
          index_t lo, hi;
          valid_range(OW, sw, offw, W, lo, hi);
          for (index_t p = p0; p < p1;) {
            const index_t ow0 = p % OW, r = p / OW, oh = r % OH, od = r / OH;
            const index_t run = std::min(OW - ow0, p1 - p);
            T* d = dst + (p - p0);  // d[ow - ow0] for ow in [ow0, ow0 + run)
            const index_t id = od * g.stride[0] + offd, ih = oh * g.stride[1] + offh;
            const index_t a = std::clamp(lo, ow0, ow0 + run), b = std::clamp(hi, a, ow0 + run);
            if (id < 0 || id >= D || ih < 0 || ih >= H) {
              std::fill(d, d + run, T(0));
            } else {
              const T* src = x + ((c * D + id) * H + ih) * W;
              std::fill(d, d + (a - ow0), T(0));
              if (sw == 1)
                std::memcpy(d + (a - ow0), src + a + offw, (b - a) * sizeof(T));
              else
                for (index_t ow = a; ow < b; ++ow) d[ow - ow0] = src[ow * sw + offw];
              std::fill(d + (b - ow0), d + run, T(0));
            }
            p += run;
          }
        }
}

// Y_g[o] += col rows (o, kd, kh, kw) scattered to their output positions, for o in [o0, o1);
// col columns are the input positions [p0, p1).
template <class T>
void col2im(T* yg, const T* col, index_t o0, index_t o1, const WindowND& g, index_t p0, index_t p1) {
  const index_t P = p1 - p0, ID = g.in[0], IH = g.in[1], IW = g.in[2];
  const index_t OD = g.out[0], OH = g.out[1], OW = g.out[2], KS = g.k_size();
  (void)ID;
  for (index_t o = o0; o < o1; ++o) {
    T* yo = yg + o * g.out_size();
    const T* row = col + o * KS * P;
    for (index_t kd = 0; kd < g.k[0]; ++kd)
      for (index_t kh = 0; kh < g.k[1]; ++kh)
        for (index_t kw = 0; kw < g.k[2]; ++kw, row += P) {
          const index_t offd = kd * g.dil[0] - g.pad[0], offh = kh * g.dil[1] - g.pad[1];
          const index_t offw = kw * g.dil[2] - g.pad[2], sw = g.stride[2];
          index_t lo, hi;  // input columns iw whose output column is inside [0, OW)
          valid_range(IW, sw, offw, OW, lo, hi);
          for (index_t p = p0; p < p1;) {
            const index_t iw0 = p % IW, r = p / IW, ih = r % IH, id = r / IH;
            const index_t run = std::min(IW - iw0, p1 - p);
            const index_t od = id * g.stride[0] + offd, oh = ih * g.stride[1] + offh;
            if (od >= 0 && od < OD && oh >= 0 && oh < OH) {
              const index_t a = std::clamp(lo, iw0, iw0 + run), b = std::clamp(hi, a, iw0 + run);
              T* dst = yo + (od * OH + oh) * OW;
              const T* src = row + (p - p0);  // src[iw - iw0]
              if (sw == 1)
                for (index_t iw = a; iw < b; ++iw) dst[iw + offw] += src[iw - iw0];
              else
                for (index_t iw = a; iw < b; ++iw) dst[iw * sw + offw] += src[iw - iw0];
            }
            p += run;
          }
        }
  }
}

void check_channels(const char* what, index_t N, index_t C, index_t OC, index_t groups) {
  ENGINE_CHECK(N >= 0 && C >= 0 && OC >= 0 && groups >= 1 && C % groups == 0 && OC % groups == 0,
               std::string(what) + ": bad batch / channel / group sizes");
}

}  // namespace

template <class T>
void conv_nd(T* y, const T* x, const T* w, const T* bias, index_t N, index_t C, index_t OC, index_t G,
             const WindowND& g) {
  g.validate("conv");
  check_channels("conv", N, C, OC, G);
  const index_t cg = C / G, og = OC / G, K = cg * g.k_size(), P = g.out_size(), Pin = g.in_size();
  if (N == 0 || OC == 0 || P == 0) return;
  bool direct = g.k_size() == 1;  // 1×1, stride 1, unpadded: X is the GEMM's B as it is
  for (int d = 0; d < 3; ++d) direct = direct && g.stride[d] == 1 && g.pad[d] == 0 && g.out[d] == g.in[d];
  const index_t PB = direct ? P : std::min(P, std::max<index_t>(64, kColElems / std::max<index_t>(K, 1)));
  const index_t tiles = (P + PB - 1) / PB, tasks = N * G * tiles;
  auto task = [&](std::int64_t t) {
    const index_t tile = t % tiles, ng = t / tiles, gi = ng % G, n = ng / G;
    const index_t p0 = tile * PB, p1 = std::min(P, p0 + PB);
    const T* xg = x + (n * C + gi * cg) * Pin;
    const T* B = xg + p0;
    index_t ldb = Pin;
    if (!direct) {
      T* col = thread_scratch<T, kScratchConvNdCols>(static_cast<size_t>(K * (p1 - p0)));
      im2col(col, xg, cg, g, p0, p1);
      B = col;
      ldb = p1 - p0;
    }
    mm(false, og, p1 - p0, K, w + gi * og * K, K, B, ldb, y + (n * OC + gi * og) * P + p0, P,
       bias ? bias + gi * og : nullptr);
  };
  const int T_ = num_threads();
  const double flops = 2.0 * double(N) * double(OC) * double(K) * double(P);
  if (T_ > 1 && tasks >= T_ && flops > kParallelFlops) return parallel_tasks(tasks, task);
  for (index_t t = 0; t < tasks; ++t) task(t);
}

template <class T>
void conv_transpose_nd(T* y, const T* x, const T* w, const T* bias, index_t N, index_t C, index_t OC, index_t G,
                       const WindowND& g) {
  g.validate("conv_transpose");
  check_channels("conv_transpose", N, C, OC, G);
  const index_t cg = C / G, og = OC / G, Kc = og * g.k_size(), Pin = g.in_size(), Pout = g.out_size();
  if (N == 0 || OC == 0 || Pout == 0) return;
  for (index_t n = 0; n < N; ++n)
    for (index_t o = 0; o < OC; ++o) std::fill(y + (n * OC + o) * Pout, y + (n * OC + o + 1) * Pout, bias ? bias[o] : T(0));
  if (cg == 0 || Pin == 0) return;
  const index_t PB = std::min(Pin, std::max<index_t>(64, kColElems / std::max<index_t>(Kc, 1)));
  const int T_ = num_threads();
  const double flops = 2.0 * double(N) * double(C) * double(Kc) * double(Pin);
  const bool split_groups = T_ > 1 && N * G >= T_ && flops > kParallelFlops;
  auto group = [&](index_t n, index_t gi, bool inner_threads) {
    T* yg = y + (n * OC + gi * og) * Pout;
    for (index_t p0 = 0; p0 < Pin; p0 += PB) {
      const index_t p1 = std::min(Pin, p0 + PB);
      T* col = thread_scratch<T, kScratchConvNdCols2>(static_cast<size_t>(Kc * (p1 - p0)));
      mm(true, Kc, p1 - p0, cg, w + gi * cg * Kc, Kc, x + (n * C + gi * cg) * Pin + p0, Pin, col, p1 - p0, nullptr);
      const double work = double(Kc) * double(p1 - p0);
      if (inner_threads && work > kParallelFlops)
        parallel_for(og, std::max<index_t>(1, static_cast<index_t>(kParallelFlops * og / work)),
                     [&](std::int64_t o0, std::int64_t o1) { col2im(yg, col, o0, o1, g, p0, p1); });
      else
        col2im(yg, col, 0, og, g, p0, p1);
    }
  };
  if (split_groups) return parallel_tasks(N * G, [&](std::int64_t t) { group(t / G, t % G, false); });
  for (index_t n = 0; n < N; ++n)
    for (index_t gi = 0; gi < G; ++gi) group(n, gi, true);
}

template void conv_nd<float>(float*, const float*, const float*, const float*, index_t, index_t, index_t, index_t,
                             const WindowND&);
template void conv_nd<double>(double*, const double*, const double*, const double*, index_t, index_t, index_t,
                              index_t, const WindowND&);
template void conv_transpose_nd<float>(float*, const float*, const float*, const float*, index_t, index_t, index_t,
                                       index_t, const WindowND&);
template void conv_transpose_nd<double>(double*, const double*, const double*, const double*, index_t, index_t,
                                        index_t, index_t, const WindowND&);

}  // namespace engine
