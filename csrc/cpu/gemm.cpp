// SGEMM driver (Goto/BLIS structure): C = alpha·op(A)·op(B) + beta·C, then bias + activation.
//
//   for pc in K by KC:
//     for ic in M by MC:          A is read in place, except when it is transposed or its rows
//                                 are a multiple of 4 KiB apart (L1 set aliasing): then pack
//                                 A[ic:ic+mc, pc:pc+kc] into MR-high panels (MC is large, so A
//                                 is copied once; A^T panels are [k][MR], A panels plain rows).
//       for jc in N by NC:        pack B[pc:pc+kc, jc:jc+nc] into NR-wide panels, or use the
//                                 pre-packed weights of a PackedMatrixB, or (few rows,
//                                 non-transposed B) read B in place
//         for ir in mc by MR:     A micro-panel (MR×kc) stays in L1, the B block in L2
//           for jr in nc by NR:   micro-kernel on an MR×NR tile of C
//
// Blocking per ISA lives with the kernels (gemm_kernels_*.cpp); KC=256, NC=1024 on AVX-512
// (measured against 128..512 / 512..4096 on a 2 MiB-L2 core). With a single row panel K is
// not blocked at all (GEMV streams each weight panel once).
//
// Threads: C is cut into one rectangle per thread along MR/NR panel boundaries, choosing the
// split with the shortest critical path (ties: N for pre-packed weights, so each core keeps
// its share of the weights hot in its own L2; M otherwise); each thread runs the loops above
// on its rectangle with its own thread-local, grow-only, 64-byte-aligned pack buffers.
// Few rows over pre-packed weights with a long K (a Dense layer at batch 1) split K instead:
// each thread multiplies its K slice into a partial C and the caller sums (run_split_k).
// Small problems run on the caller (see kMinParallelFlops).
// The epilogue (bias, residual, relu / clip) is applied in registers on the last K block; other
// activations run on each finished tile row while it is still in L1.
#include "engine/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "cpu/gemm_internal.h"
#include "engine/cpu_features.h"
#include "engine/elementwise.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {

using gemm::KernelSet;
using gemm::TileParams;

namespace {

// Below this many flops (2·M·N·K) a GEMM runs on the calling thread: splitting it would
// cost more in wake-up and synchronisation than it saves (measured: 64³ is faster on one
// core, 80³ on two). Few-row products are bandwidth-bound instead: they are split once B
// is large enough (kMinParallelBFloats) that streaming it takes a few microseconds.
constexpr double kMinParallelFlops = 800e3;
constexpr double kMinParallelBFloats = 128 * 1024;

const KernelSet& kernels_for(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return gemm::kernels_avx512();
    case Isa::Avx2: return gemm::kernels_avx2();
    default: return gemm::kernels_portable();
  }
}

// 64-byte aligned, grow-only float buffer.
struct AlignedBuf {
  float* p = nullptr;
  size_t cap = 0;  // floats
  AlignedBuf() = default;
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  ~AlignedBuf() { std::free(p); }
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      p = nullptr;
      cap = 0;
      const size_t bytes = ((std::max<size_t>(n, 16) * sizeof(float) + 63) / 64) * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
      cap = bytes / sizeof(float);
    }
    return p;
  }
};

// Per-thread packing buffers (engine/scratch.h: grow-only, counted, trimmed after each run).
float* pack_a_scratch(size_t n) { return thread_scratch<float, kScratchGemmPackA>(n); }
float* pack_b_scratch(size_t n) { return thread_scratch<float, kScratchGemmPackB>(n); }

bool act_in_registers(Act a) { return a == Act::None || a == Act::Identity || a == Act::Relu || a == Act::Clip; }
bool has_act(Act a) { return a != Act::None && a != Act::Identity; }

// The tail of the epilogue on one finished row of C (n columns from column j): + residual,
// then the activation.
void finish_row(float* c, index_t i, index_t j, index_t n, const Epilogue& ep) {
  if (ep.residual) {
    const float* r = ep.residual + i * ep.ldr + j;
    for (index_t k = 0; k < n; ++k) c[k] += r[k];
  }
  if (has_act(ep.act)) activation(c, c, n, ep.act, ep.act_alpha, ep.act_beta);
}

// op(B)[k0:k0+kc, j0:j0+nc] -> panels of NR columns: dst[p][k][0:NR], zero-padded.
template <int NR>
void pack_b_t(float* dst, bool tb, const float* B, index_t ldb, index_t k0, index_t kc, index_t j0,
              index_t nc) {
  if (!tb) {
    // Full panels row by row: each source row is read sequentially (prefetcher-friendly).
    const index_t full = nc / NR;
    for (index_t k = 0; k < kc; ++k) {
      const float* s = B + (k0 + k) * ldb + j0;
      float* d = dst + k * NR;
      for (index_t p = 0; p < full; ++p) std::memcpy(d + p * kc * NR, s + p * NR, sizeof(float) * NR);
    }
  }
  for (index_t jp = tb ? 0 : nc / NR * NR; jp < nc; jp += NR) {
    const int nr = static_cast<int>(std::min<index_t>(NR, nc - jp));
    float* d = dst + (jp / NR) * kc * NR;
    if (!tb) {  // the ragged last panel, zero-padded
      const float* s = B + k0 * ldb + j0 + jp;
      static constexpr float kZeros[NR] = {};
      for (index_t k = 0; k < kc; ++k) {
        float* dk = d + k * NR;
        std::memcpy(dk, kZeros, sizeof(kZeros));  // fixed size: a few vector stores
        for (int j = 0; j < nr; ++j) dk[j] = s[k * ldb + j];
      }
    } else {
#if defined(__SSE2__)
      if (nr == NR) {
        // Full panel: 4 k at a time across all NR columns, so every destination row (one
        // cache line pair) is completed while it is in L1; 4×4 transposes.
        const float* s = B + (j0 + jp) * ldb + k0;
        index_t k = 0;
        for (; k + 4 <= kc; k += 4) {
          float* dk = d + k * NR;
          for (int j = 0; j < NR; j += 4) {
            const float* sj = s + j * ldb + k;
            __m128 r0 = _mm_loadu_ps(sj), r1 = _mm_loadu_ps(sj + ldb);
            __m128 r2 = _mm_loadu_ps(sj + 2 * ldb), r3 = _mm_loadu_ps(sj + 3 * ldb);
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            _mm_storeu_ps(dk + j, r0);
            _mm_storeu_ps(dk + NR + j, r1);
            _mm_storeu_ps(dk + 2 * NR + j, r2);
            _mm_storeu_ps(dk + 3 * NR + j, r3);
          }
        }
        for (; k < kc; ++k)
          for (int j = 0; j < NR; ++j) d[k * NR + j] = s[j * ldb + k];
        continue;
      }
#endif
      if (nr < NR)
        for (index_t k = 0; k < kc; ++k)
          for (int j = nr; j < NR; ++j) d[k * NR + j] = 0.f;
      // Four source rows (output columns) at a time: contiguous reads, 4×4 transposes.
      int j = 0;
      for (; j + 4 <= nr; j += 4) {
        const float* s0 = B + (j0 + jp + j) * ldb + k0;
        const float* s1 = s0 + ldb;
        const float* s2 = s1 + ldb;
        const float* s3 = s2 + ldb;
        index_t k = 0;
#if defined(__SSE2__)
        for (; k + 4 <= kc; k += 4) {
          __m128 r0 = _mm_loadu_ps(s0 + k), r1 = _mm_loadu_ps(s1 + k);
          __m128 r2 = _mm_loadu_ps(s2 + k), r3 = _mm_loadu_ps(s3 + k);
          _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
          float* dk = d + k * NR + j;
          _mm_storeu_ps(dk, r0);
          _mm_storeu_ps(dk + NR, r1);
          _mm_storeu_ps(dk + 2 * NR, r2);
          _mm_storeu_ps(dk + 3 * NR, r3);
        }
#endif
        for (; k < kc; ++k) {
          float* dk = d + k * NR + j;
          dk[0] = s0[k];
          dk[1] = s1[k];
          dk[2] = s2[k];
          dk[3] = s3[k];
        }
      }
      for (; j < nr; ++j) {
        const float* s = B + (j0 + jp + j) * ldb + k0;
        for (index_t k = 0; k < kc; ++k) d[k * NR + j] = s[k];
      }
    }
  }
}

void pack_b(float* dst, bool tb, const float* B, index_t ldb, index_t k0, index_t kc, index_t j0,
            index_t nc, int NR) {
  switch (NR) {
    case 32: return pack_b_t<32>(dst, tb, B, ldb, k0, kc, j0, nc);
    case 16: return pack_b_t<16>(dst, tb, B, ldb, k0, kc, j0, nc);
    case 8: return pack_b_t<8>(dst, tb, B, ldb, k0, kc, j0, nc);
    default: ENGINE_CHECK(false, "gemm: unsupported NR");
  }
}

// op(A)[i0:i0+mc, k0:k0+kc] -> panels of MR rows.
//   trans(A): dst[p][k][0:MR] (read by the kernel in ACol mode, csa = MR)
//   A:        dst[p][i][0:kc] (plain row copies, read in ARow mode with rsa = kc; the copy
//             keeps rows close together so a power-of-two lda cannot alias them in L1)
template <int MR>
void pack_at_full(float* d, const float* s, index_t lda, index_t kc) {
  for (index_t k = 0; k < kc; ++k) std::memcpy(d + k * MR, s + k * lda, sizeof(float) * MR);
}

void pack_a(float* dst, bool ta, const float* A, index_t lda, index_t i0, index_t mc, index_t k0,
            index_t kc, int MR) {
  for (index_t ip = 0; ip < mc; ip += MR) {
    const int mr = static_cast<int>(std::min<index_t>(MR, mc - ip));
    float* d = dst + (ip / MR) * kc * MR;
    if (ta) {
      const float* s0 = A + k0 * lda + i0 + ip;
      if (mr == MR && MR == 14) pack_at_full<14>(d, s0, lda, kc);
      else if (mr == MR && MR == 6) pack_at_full<6>(d, s0, lda, kc);
      else
        for (index_t k = 0; k < kc; ++k) {
          const float* s = s0 + k * lda;
          float* dk = d + k * MR;
          for (int i = 0; i < mr; ++i) dk[i] = s[i];
        }
    } else {
      for (int i = 0; i < mr; ++i)
        std::memcpy(d + i * kc, A + (i0 + ip + i) * lda + k0, sizeof(float) * kc);
    }
  }
}

struct Problem {
  const KernelSet* ks;
  bool ta, tb;
  index_t M, N, K;
  float alpha, beta;
  const float* A;
  index_t lda;
  const float* B;   // unpacked op(B) source (when Bp == nullptr)
  index_t ldb;
  const float* Bp;  // pre-packed panels [N/NR][K][NR], or nullptr
  float* C;
  index_t ldc;
  const Epilogue* ep;
};

// Runs the blocked loops on C[m0:m1, n0:n1] (n0 a multiple of NR when B is pre-packed).
void run_block(const Problem& pr, index_t m0, index_t m1, index_t n0, index_t n1) {
  const KernelSet& ks = *pr.ks;
  const int MR = ks.mr, NR = ks.nr;
  const index_t mrange = m1 - m0, nrange = n1 - n0;
  const Epilogue& ep = *pr.ep;
  const bool inline_act = act_in_registers(ep.act);
  const int bias_mode = ep.bias ? (ep.bias_per_row ? gemm::BiasRow : gemm::BiasCol) : gemm::BiasNone;
  const bool one_row_panel = mrange <= MR;
  // A is read in place unless it is transposed (columns would touch a new row per k) or its
  // rows are a multiple of 4 KiB apart (they would all map to the same L1 sets).
  const bool pack_a_needed = !one_row_panel && nrange > NR && (pr.ta || pr.lda % 1024 == 0);
  // One row panel: the B micro-panel is used once, so no point blocking K for L1.
  const index_t KC = one_row_panel ? pr.K : ks.kc;
  // When A is packed, it is packed once per K block for the whole row range (up to
  // kAPackMax floats), so it is copied only once overall; B blocks (kc×nc) are packed inside
  // and stay in L2.
  constexpr index_t kAPackMax = index_t(1) << 20;
  const index_t NC = ks.nc;
  const index_t kc_max = std::min<index_t>(KC, pr.K);
  const index_t MC = std::max<index_t>(MR, std::min<index_t>((mrange + MR - 1) / MR * MR,
                                                             kAPackMax / kc_max / MR * MR));

  // Few rows: B is used by at most three row panels, so packing it would cost as much as
  // the product. Read op(B) in place (full-width panels; only a ragged last panel is packed).
  const bool direct_b = !pr.Bp && !pr.tb && mrange <= 3 * MR;
  float* bbuf = nullptr;
  if (direct_b) bbuf = pack_b_scratch(static_cast<size_t>(kc_max) * NR);
  else if (!pr.Bp) bbuf = pack_b_scratch(static_cast<size_t>(kc_max) *
                                        ((std::min<index_t>(NC, nrange) + NR - 1) / NR * NR));
  float* abuf = nullptr;
  if (pack_a_needed) abuf = pack_a_scratch(static_cast<size_t>(kc_max) * MC);

  for (index_t pc = 0; pc < pr.K; pc += KC) {
    const index_t kc = std::min(KC, pr.K - pc);
    const bool last = pc + kc >= pr.K;
    TileParams tp{pr.alpha, pc == 0 ? pr.beta : 1.f, last ? bias_mode : gemm::BiasNone,
                  last && ep.act == Act::Relu};
    tp.clip = last && ep.act == Act::Clip;
    tp.lo = ep.act_alpha;
    tp.hi = ep.act_beta;
    for (index_t ic = m0; ic < m1; ic += MC) {
      const index_t mc = std::min(MC, m1 - ic);
      if (pack_a_needed) pack_a(abuf, pr.ta, pr.A, pr.lda, ic, mc, pc, kc, MR);
      for (index_t jc = n0; jc < n1; jc += NC) {
        const index_t nc = std::min(NC, n1 - jc);
        const float* bblk;
        index_t pstride, bld = NR;
        const index_t nc_full = nc / NR * NR;
        if (pr.Bp) {
          bblk = pr.Bp + (jc / NR) * pr.K * NR + pc * NR;
          pstride = pr.K * NR;
        } else if (direct_b) {
          bblk = pr.B + pc * pr.ldb + jc;
          pstride = NR;
          bld = pr.ldb;
          if (nc_full < nc && !ks.masked_b)
            pack_b(bbuf, false, pr.B, pr.ldb, pc, kc, jc + nc_full, nc - nc_full, NR);
        } else {
          pack_b(bbuf, pr.tb, pr.B, pr.ldb, pc, kc, jc, nc, NR);
          bblk = bbuf;
          pstride = kc * NR;
        }
        auto tile = [&](index_t ir, index_t jr) {
          const int nr = static_cast<int>(std::min<index_t>(NR, nc - jr));
          const bool ragged = direct_b && jr >= nc_full;
          const bool packed_edge = ragged && !ks.masked_b;
          const float* bp = packed_edge ? bbuf : bblk + (jr / NR) * pstride;
          const index_t ldb = packed_edge ? NR : bld;
          TileParams tpt = tp;
          tpt.mask_b = ragged && ks.masked_b;
          if (last && ep.residual) {
            tpt.res = ep.residual + (ic + ir) * ep.ldr + jc + jr;
            tpt.ldr = ep.ldr;
          }
          const int mr = static_cast<int>(std::min<index_t>(MR, mc - ir));
          const index_t i = ic + ir, j = jc + jr;
          float* c = pr.C + i * pr.ldc + j;
          const float* bias = bias_mode == gemm::BiasCol ? ep.bias + j
                              : bias_mode == gemm::BiasRow ? ep.bias + i : nullptr;
          if (pack_a_needed && pr.ta)
            ks.acol(mr, nr, kc, abuf + (ir / MR) * kc * MR, 1, MR, bp, ldb, c, pr.ldc, tpt, bias);
          else if (pack_a_needed)
            ks.arow(mr, nr, kc, abuf + (ir / MR) * kc * MR, kc, 1, bp, ldb, c, pr.ldc, tpt, bias);
          else if (pr.ta)
            ks.acol(mr, nr, kc, pr.A + pc * pr.lda + i, 1, pr.lda, bp, ldb, c, pr.ldc, tpt, bias);
          else
            ks.arow(mr, nr, kc, pr.A + i * pr.lda + pc, pr.lda, 1, bp, ldb, c, pr.ldc, tpt, bias);
          if (last && !inline_act)
            for (int r = 0; r < mr; ++r) activation(c + r * pr.ldc, c + r * pr.ldc, nr, ep.act, ep.act_alpha, ep.act_beta);
        };
        // The A micro-panel (MR×kc) stays in L1 while the B block (kc×nc) streams from L2.
        for (index_t ir = 0; ir < mc; ir += MR)
          for (index_t jr = 0; jr < nc; jr += NR) tile(ir, jr);
      }
    }
  }
}

// C = A·B^T for at most 4 rows of A, columns [n0, n1): dot products over contiguous rows of
// A and B (a GEMV with weights stored N×K streams them once, without packing).
void run_dot(const Problem& pr, index_t n0, index_t n1) {
  const Epilogue& ep = *pr.ep;
  const int m = static_cast<int>(pr.M);
  float out[16];
  for (index_t j = n0; j < n1; j += 4) {
    const int nb = static_cast<int>(std::min<index_t>(4, n1 - j));
    pr.ks->dot(m, nb, pr.K, pr.A, pr.lda, pr.B + j * pr.ldb, pr.ldb, out);
    for (int i = 0; i < m; ++i)
      for (int r = 0; r < nb; ++r) {
        float* c = pr.C + i * pr.ldc + j + r;
        float v = pr.alpha * out[i * 4 + r];
        if (pr.beta != 0.f) v += pr.beta * *c;
        if (ep.bias) v += ep.bias_per_row ? ep.bias[i] : ep.bias[j + r];
        *c = v;
      }
  }
  for (int i = 0; i < m; ++i) finish_row(pr.C + i * pr.ldc + n0, i, n0, n1 - n0, ep);
}

// C = beta·C (C not read when beta == 0), then the epilogue. Used when K == 0 or alpha == 0.
void scale_and_epilogue(index_t M, index_t N, float beta, float* C, index_t ldc, const Epilogue& ep) {
  for (index_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.f) std::memset(c, 0, sizeof(float) * N);
    else if (beta != 1.f) for (index_t j = 0; j < N; ++j) c[j] *= beta;
    if (ep.bias) {
      if (ep.bias_per_row) for (index_t j = 0; j < N; ++j) c[j] += ep.bias[i];
      else for (index_t j = 0; j < N; ++j) c[j] += ep.bias[j];
    }
    finish_row(c, i, 0, N, ep);
  }
}

// Few rows × pre-packed weights with a long K (a Dense layer's GEMV): thread t multiplies
// A[:, K_t] by the weight rows K_t of every panel into its own partial C, and the caller sums
// the partials and applies alpha/beta/bias/activation. Each core streams the same share of
// the weights as with an N split, but reads only its own K slice of A, which the previous
// layer usually wrote on that same core (an N split pulls all of A across cores).
void run_split_k(const Problem& pr, int nt) {
  const KernelSet& ks = *pr.ks;
  const int NR = ks.nr;
  const index_t M = pr.M, N = pr.N, np = (N + NR - 1) / NR;
  float* partial = thread_scratch<float, kScratchGemmPartial>(static_cast<size_t>(nt) * M * N);
  parallel_tasks(nt, [&](std::int64_t t) {
    const index_t k0 = pr.K * t / nt / 16 * 16, k1 = t + 1 == nt ? pr.K : pr.K * (t + 1) / nt / 16 * 16;
    float* c = partial + t * M * N;
    const TileParams tp{1.f, 0.f, gemm::BiasNone, false};
    for (index_t jp = 0; jp < np; ++jp) {
      const int nr = static_cast<int>(std::min<index_t>(NR, N - jp * NR));
      ks.arow(static_cast<int>(M), nr, k1 - k0, pr.A + k0, pr.lda, 1, pr.Bp + jp * pr.K * NR + k0 * NR, NR,
              c + jp * NR, N, tp, nullptr);
    }
  });
  const Epilogue& ep = *pr.ep;
  for (index_t i = 0; i < M; ++i) {
    float* c = pr.C + i * pr.ldc;
    for (index_t j = 0; j < N; ++j) {
      float v = 0.f;
      for (int t = 0; t < nt; ++t) v += partial[(t * M + i) * N + j];
      v *= pr.alpha;
      if (pr.beta != 0.f) v += pr.beta * c[j];
      if (ep.bias) v += ep.bias_per_row ? ep.bias[i] : ep.bias[j];
      c[j] = v;
    }
    finish_row(c, i, 0, N, ep);
  }
}

void run(const Problem& pr_in) {
  if (pr_in.M == 0 || pr_in.N == 0) return;
  // A residual that is C itself is C's old value: accumulate into it (beta = 1) instead.
  Epilogue ep_alias;
  Problem pr = pr_in;
  if (pr.ep->residual && pr.ep->residual == pr.C) {
    ENGINE_CHECK(pr.beta == 0.f && pr.ep->ldr == pr.ldc, "sgemm: a residual aliasing C needs beta = 0 and ldr = ldc");
    ep_alias = *pr.ep;
    ep_alias.residual = nullptr;
    pr.ep = &ep_alias;
    pr.beta = 1.f;
  }
  if (pr.K == 0 || pr.alpha == 0.f) {
    scale_and_epilogue(pr.M, pr.N, pr.beta, pr.C, pr.ldc, *pr.ep);
    return;
  }
  const int MR = pr.ks->mr, NR = pr.ks->nr;
  const int nt = num_threads();
  const double flops = 2.0 * double(pr.M) * double(pr.N) * double(pr.K);
  const index_t mp = (pr.M + MR - 1) / MR, np = (pr.N + NR - 1) / NR;
  int best_tm = 1, best_tn = 1;
  const bool worth_splitting =
      flops >= kMinParallelFlops ||
      (double(pr.K) * double(pr.N) >= kMinParallelBFloats && flops >= kMinParallelFlops / 4);
  if (pr.tb && !pr.Bp && !pr.ta && pr.M <= 4) {
    const index_t groups = (pr.N + 3) / 4;
    if (nt > 1 && worth_splitting && groups > 1)
      parallel_for(groups, std::max<index_t>(1, groups / nt), [&](std::int64_t g0, std::int64_t g1) {
        run_dot(pr, g0 * 4, std::min(pr.N, g1 * 4));
      });
    else
      run_dot(pr, 0, pr.N);
    return;
  }
  if (nt > 1 && worth_splitting && pr.Bp && !pr.ta && pr.M <= MR && pr.K >= std::max<index_t>(4 * pr.N, 512 * nt)) {
    run_split_k(pr, nt);
    return;
  }
  if (nt > 1 && worth_splitting) {
    double best = -1;
    for (int tm = 1; tm <= nt; ++tm) {
      if (nt % tm) continue;
      const int tn = nt / tm;
      if (tm > mp || tn > np) continue;
      // The critical path: the largest per-thread share, in rows (the first thread gets
      // whole MR panels) times NR-wide column panels.
      double cost = double(std::min<index_t>(pr.M, (mp + tm - 1) / tm * MR)) *
                    double((np + tn - 1) / tn * NR);
      // Near-ties (within 5%): split N for pre-packed weights (each core streams its own
      // share of the weights), else M (measured faster at 512..2048: each core reads only
      // its own rows of A, and the B blocks it packs stay in its own L2).
      cost *= 1.0 + 0.05 * double(pr.Bp ? tm - 1 : tn - 1) / double(nt - 1);
      if (best < 0 || cost < best) best = cost, best_tm = tm, best_tn = tn;
    }
  }
  const int ntasks = best_tm * best_tn;
  if (ntasks <= 1) {
    run_block(pr, 0, pr.M, 0, pr.N);
    return;
  }
  const int tm = best_tm, tn = best_tn;
  parallel_tasks(ntasks, [&](std::int64_t t) {
    const index_t im = t / tn, in = t % tn;
    const index_t m0 = std::min(pr.M, (im * mp / tm) * MR);
    const index_t m1 = std::min(pr.M, ((im + 1) * mp / tm) * MR);
    const index_t n0 = std::min(pr.N, (in * np / tn) * NR);
    const index_t n1 = std::min(pr.N, ((in + 1) * np / tn) * NR);
    if (m0 < m1 && n0 < n1) run_block(pr, m0, m1, n0, n1);
  });
}

void check_ld(index_t ld, index_t row_len, const char* what) {
  ENGINE_CHECK(ld >= row_len && ld >= 0,
               std::string("sgemm: ") + what + " (" + std::to_string(ld) +
                   ") is smaller than the row length " + std::to_string(row_len));
}

}  // namespace

void sgemm(bool ta, bool tb, index_t M, index_t N, index_t K, float alpha, const float* A,
           index_t lda, const float* B, index_t ldb, float beta, float* C, index_t ldc,
           const Epilogue& ep) {
  ENGINE_CHECK(M >= 0 && N >= 0 && K >= 0,
               "sgemm: negative size M=" + std::to_string(M) + " N=" + std::to_string(N) +
                   " K=" + std::to_string(K));
  check_ld(lda, ta ? M : K, "lda");
  check_ld(ldb, tb ? K : N, "ldb");
  check_ld(ldc, N, "ldc");
  if (M == 0 || N == 0) return;
  ENGINE_CHECK(C != nullptr, "sgemm: C is null");
  ENGINE_CHECK(K == 0 || (A != nullptr && B != nullptr), "sgemm: A or B is null");
  Problem pr{&kernels_for(cpu_isa()), ta, tb, M, N, K, alpha, beta, A, lda, B, ldb, nullptr, C, ldc, &ep};
  run(pr);
}

struct PackedMatrixB::Impl {
  const KernelSet* ks = nullptr;  // the ISA (and panel width) the data was packed for
  AlignedBuf data;                // [ceil(N/NR)][K][NR], zero-padded
};

PackedMatrixB::PackedMatrixB(bool tb, index_t K, index_t N, const float* B, index_t ldb)
    : K_(K), N_(N), impl_(new Impl) {
  ENGINE_CHECK(K >= 0 && N >= 0,
               "PackedMatrixB: negative size K=" + std::to_string(K) + " N=" + std::to_string(N));
  ENGINE_CHECK(ldb >= (tb ? K : N), "PackedMatrixB: ldb (" + std::to_string(ldb) +
                                        ") is smaller than the row length " +
                                        std::to_string(tb ? K : N));
  ENGINE_CHECK(K * N == 0 || B != nullptr, "PackedMatrixB: B is null");
  impl_->ks = &kernels_for(cpu_isa());
  const int NR = impl_->ks->nr;
  const index_t np = (N + NR - 1) / NR;
  float* d = impl_->data.get(static_cast<size_t>(np * NR * K));
  if (K > 0 && N > 0) {
    // Pack in parallel over panel groups (weights can be large).
    parallel_for(np, std::max<index_t>(1, (1 << 16) / std::max<index_t>(1, K * NR)),
                 [&](std::int64_t p0, std::int64_t p1) {
                   const index_t j0 = p0 * NR, j1 = std::min(N, p1 * NR);
                   pack_b(d + p0 * K * NR, tb, B, ldb, 0, K, j0, j1 - j0, NR);
                 });
  }
}

PackedMatrixB::~PackedMatrixB() = default;

void sgemm_packed(bool ta, index_t M, float alpha, const float* A, index_t lda,
                  const PackedMatrixB& B, float beta, float* C, index_t ldc, const Epilogue& ep) {
  const index_t N = B.N(), K = B.K();
  ENGINE_CHECK(M >= 0, "sgemm_packed: negative M=" + std::to_string(M));
  check_ld(lda, ta ? M : K, "lda");
  check_ld(ldc, N, "ldc");
  if (M == 0 || N == 0) return;
  ENGINE_CHECK(C != nullptr, "sgemm_packed: C is null");
  ENGINE_CHECK(K == 0 || A != nullptr, "sgemm_packed: A is null");
  Problem pr{B.impl().ks, ta, false, M, N, K, alpha, beta, A, lda, nullptr, 0,
             B.impl().data.p, C, ldc, &ep};
  run(pr);
}

}  // namespace engine
