// Winograd F(4×4, 3×3) driver (see conv_winograd.h; Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016).
//
//   Pack:  U = G g Gᵀ per (input, output) channel pair: 36 matrices C×OC, each packed as the
//          indirect kernel's 32-channel panels (once, or per call for a trained filter).
//   Run:   output tiles of 4×4 pixels (T = N·⌈OH/4⌉·⌈OW/4⌉) in blocks whose transformed
//          inputs and products stay in L2; per block:
//            V[rq] = (Bᵀ d B)[rq]   for each tile's 6×6 input patch     (TB × C per rq)
//            M[rq] = V[rq] · U[rq]  36 GEMMs on the indirect tile kernel (TB × OC per rq)
//            y     = Aᵀ M A + bias (+ residual), activation, for each tile's valid pixels.
//          Threads take equal runs of tiles.
#include "conv_winograd.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "conv_kernels.h"
#include "engine/cpu_features.h"
#include "engine/elementwise.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {

namespace {

constexpr int MR = convk::kIndirectMR, NR = convk::kIndirectNR;
alignas(64) const float kZeros[NR] = {};

// G (6×3) for F(4×4, 3×3).
constexpr double kG[6][3] = {{1.0 / 4, 0, 0},          {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                             {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};

}  // namespace

bool WinogradConv::suits(const Conv2DShape& s) {
  // Measured against the indirect path on 2 cores: 2-3x faster from C = 16 on maps of 20x20 and
  // up; C = 8..12 is 1.4-1.7x slower (its transforms cost as much as the indirect row taps).
  return s.KH == 3 && s.KW == 3 && s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 &&
         s.groups == 1 && s.C >= 16 && s.OC >= 16 && s.OH() * s.OW() >= 400 &&
         36.0 * s.C * s.OC * 4 <= 4.5 * 1024 * 1024 && cpu_isa() == Isa::Avx512;
}

WinogradConv::WinogradConv(const Conv2DShape& s) : s_(s) { np_ = (s.OC + NR - 1) / NR; }

void WinogradConv::pack(float* u, float* bias_out, const float* filter, const float* bias) const {
  const index_t C = s_.C, OC = s_.OC, np = np_;
  for (index_t j = 0; j < np * NR; ++j) bias_out[j] = bias && j < OC ? bias[j] : 0.f;
  // Per input channel and 32-channel panel: t = G g, U = t Gᵀ (in double), vectorised over the
  // panel's output channels (contiguous in HWIO and in U); padded channels are zeros.
  parallel_for(C, std::max<index_t>(1, 2048 / std::max<index_t>(1, OC)), [&](std::int64_t c0, std::int64_t c1) {
    for (index_t c = c0; c < c1; ++c)
      for (index_t p = 0; p < np; ++p) {
        const index_t o0 = p * NR, no = std::min<index_t>(NR, OC - o0);
        double g[3][3][NR], t[6][3][NR];
        for (int kh = 0; kh < 3; ++kh)
          for (int kw = 0; kw < 3; ++kw) {
            const float* src = filter + ((kh * 3 + kw) * C + c) * OC + o0;
            for (index_t o = 0; o < NR; ++o) g[kh][kw][o] = o < no ? src[o] : 0.0;
          }
        for (int r = 0; r < 6; ++r)  // t = G g
          for (int kw = 0; kw < 3; ++kw)
            for (index_t o = 0; o < NR; ++o)
              t[r][kw][o] = kG[r][0] * g[0][kw][o] + kG[r][1] * g[1][kw][o] + kG[r][2] * g[2][kw][o];
        for (int r = 0; r < 6; ++r)
          for (int q = 0; q < 6; ++q) {  // U = t Gᵀ
            float* dst = u + (((r * 6 + q) * np + p) * C + c) * NR;
            for (index_t o = 0; o < NR; ++o)
              dst[o] = static_cast<float>(t[r][0][o] * kG[q][0] + t[r][1][o] * kG[q][1] + t[r][2][o] * kG[q][2]);
          }
      }
  });
}

void WinogradConv::run(float* y, index_t ldy, const float* x, const float* res, index_t batch, Act act, float a,
                       float b, const float* U, const float* ub, const float* hwio) const {
  const Conv2DShape& s = s_;
  const index_t C = s.C, OC = s.OC, OCp = np_ * NR, OH = s.OH(), OW = s.OW();
  const index_t th = (OH + 3) / 4, tw = (OW + 3) / 4, TI = th * tw, T = batch * TI;
  const bool simd = cpu_isa() == Isa::Avx512;
  auto gemm = simd ? convk::indirect_tile_avx512 : convk::indirect_tile_scalar;
  auto win = simd ? convk::wino_input_avx512 : convk::wino_input_portable;
  auto wout = simd ? convk::wino_output_avx512 : convk::wino_output_portable;
  const bool in_kernel = act == Act::None || act == Act::Identity || act == Act::Relu || act == Act::LeakyRelu ||
                         act == Act::Clip;

  // Threads take equal runs of tiles (at least one GEMM row block each); a thread's run is cut
  // into equal blocks whose V and M (36 × TB × (C + OCp) floats) stay within ~1.25 MiB of L2.
  const int ntasks = static_cast<int>(std::clamp<index_t>((T + MR - 1) / MR, 1, num_threads()));
  const index_t tb_max = std::max<index_t>(MR, (1280 * 1024 / (36 * 4 * (C + OCp))) / MR * MR);
  const index_t span = (T + ntasks - 1) / ntasks, nb = (span + tb_max - 1) / tb_max;
  const index_t TB = std::min(tb_max, ((span + nb - 1) / nb + MR - 1) / MR * MR);

  // Per task: V, M, and one flag per tile (an inf / NaN in its transformed patch); 64-byte aligned
  // so that the GEMM's stores into M do not split cache lines.
  const size_t v_floats = static_cast<size_t>((36 * TB * C + 15) / 16 * 16);
  const size_t task_floats = v_floats + static_cast<size_t>((36 * TB * OCp + (TB + 3) / 4 + 15) / 16 * 16);
  float* scratch = thread_scratch<float, kScratchConvWinograd>(task_floats * ntasks);

  // A tile whose transformed patch holds an inf or NaN: the products would smear it over all
  // 16 outputs, so its outputs are computed directly (NaN / inf only where the receptive field
  // has it, as on the other paths). Reads the residual before writing y (they may alias).
  auto direct_tile = [&](index_t n, index_t oh0, index_t ow0, int rows, int cols) {
    const float* img = x + n * s.H * s.W * C;
    for (int r = 0; r < rows; ++r)
      for (int q = 0; q < cols; ++q) {
        const index_t oh = oh0 + r, ow = ow0 + q, px = (n * OH + oh) * OW + ow;
        float* yp = y + px * ldy;
        for (index_t o = 0; o < OC; ++o) {
          float acc = ub[o];
          for (index_t kh = 0; kh < 3; ++kh)
            for (index_t kw = 0; kw < 3; ++kw) {
              const index_t ih = oh + kh - s.pad_top, iw = ow + kw - s.pad_left;
              if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
              const float* xp = img + (ih * s.W + iw) * C;
              const float* gp = hwio + (kh * 3 + kw) * C * OC + o;
              for (index_t c = 0; c < C; ++c) acc += xp[c] * gp[c * OC];
            }
          if (res) acc += res[px * OC + o];
          yp[o] = acc;
        }
        if (act != Act::None && act != Act::Identity) activation(yp, yp, OC, act, a, b);
      }
  };

  auto block = [&](float* V, float* Mx, char* special, index_t t0, index_t t1) {
    const index_t n_t = t1 - t0;
    for (index_t t = t0; t < t1; ++t) {
      const index_t n = t / TI, i = (t % TI) / tw, j = t % tw;
      convk::WinoIn w{x + n * s.H * s.W * C, s.H, s.W, C, 4 * i - s.pad_top, 4 * j - s.pad_left};
      special[t - t0] = !win(V + (t - t0) * C, TB * C, w);
    }
    const float* rows[MR];
    for (int rq = 0; rq < 36; ++rq) {
      const float* Vr = V + rq * TB * C;
      float* Mr = Mx + rq * TB * OCp;
      for (index_t p = 0; p < np_; ++p) {
        convk::IndirectTile g{};
        g.a = rows;
        g.taps = 1;
        g.C = C;
        g.cb = C;
        g.b = U + (rq * np_ + p) * C * NR;
        g.bias = kZeros;
        g.ldy = OCp;
        g.n = NR;
        g.act = Act::None;
        for (index_t r0 = 0; r0 < n_t; r0 += MR) {
          for (int i = 0; i < MR; ++i) rows[i] = Vr + std::min(r0 + i, n_t - 1) * C;
          g.m = static_cast<int>(std::min<index_t>(MR, n_t - r0));
          g.y = Mr + r0 * OCp + p * NR;
          gemm(g);
        }
      }
    }
    for (index_t t = t0; t < t1; ++t) {
      const index_t n = t / TI, i = (t % TI) / tw, j = t % tw;
      if (special[t - t0]) {
        direct_tile(n, 4 * i, 4 * j, static_cast<int>(std::min<index_t>(4, OH - 4 * i)),
                    static_cast<int>(std::min<index_t>(4, OW - 4 * j)));
        continue;
      }
      convk::WinoOut o;
      o.m = Mx + (t - t0) * OCp;
      o.ms = TB * OCp;
      o.OC = OC;
      o.bias = ub;
      const index_t px = (n * OH + 4 * i) * OW + 4 * j;
      o.y = y + px * ldy;
      o.y_row = OW * ldy;
      o.ldy = ldy;
      o.res = res ? res + px * OC : nullptr;
      o.res_row = OW * OC;
      o.ldr = OC;
      o.rows = static_cast<int>(std::min<index_t>(4, OH - 4 * i));
      o.cols = static_cast<int>(std::min<index_t>(4, OW - 4 * j));
      o.act = in_kernel ? act : Act::None;
      o.alpha = a;
      o.beta = b;
      wout(o);
      if (!in_kernel)
        for (int r = 0; r < o.rows; ++r)
          for (int q = 0; q < o.cols; ++q) {
            float* yp = o.y + r * o.y_row + q * ldy;
            activation(yp, yp, OC, act, a, b);
          }
    }
  };
  auto task = [&](std::int64_t k) {
    float* V = scratch + k * task_floats;
    float* Mx = V + v_floats;
    char* special = reinterpret_cast<char*>(Mx + 36 * TB * OCp);
    const index_t t0 = T * k / ntasks, t1 = T * (k + 1) / ntasks;
    for (index_t tb = t0; tb < t1; tb += TB) block(V, Mx, special, tb, std::min(t1, tb + TB));
  };
  if (ntasks == 1) task(0);
  else parallel_tasks(ntasks, task);
}

}  // namespace engine
