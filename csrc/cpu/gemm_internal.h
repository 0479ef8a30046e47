// Internal interface between the GEMM driver (gemm.cpp) and the per-ISA micro-kernels
// (gemm_kernels_{avx512,avx2,portable}.cpp). Not part of the public API.
#pragma once

#include "engine/common.h"
#include "engine/cpu_features.h"

namespace engine {
namespace gemm {

// How the micro-kernel reads op(A):
//   ACol: a(i,k) = A[i + k*csa]  (packed MR-high panels: csa = MR; or trans(A) unpacked: csa = lda)
//   ARow: a(i,k) = A[i*rsa + k]  (non-transposed A read directly, no packing)
enum AMode : int { ACol = 0, ARow = 1 };

// Bias handling for the tile: none, one per column (bias points at column j0 of the tile),
// one per row (bias points at row i0 of the tile).
enum BiasMode : int { BiasNone = 0, BiasCol = 1, BiasRow = 2 };

// Everything the micro-kernel needs besides the operands. Constant for a whole call.
struct TileParams {
  float alpha;
  float beta;      // 0: C is not read; 1: accumulate; else beta*C
  int bias_mode;   // BiasMode (only applied on the last K block)
  bool relu;       // apply max(x,0) in registers (only on the last K block)
  bool mask_b = false;  // B is read in place with only n valid columns (KernelSet::masked_b)
  // Set per tile on the last K block: a residual tile added after the bias (row i at
  // res + i·ldr), and a clip to [lo, hi] after it (ReLU6), both in registers.
  const float* res = nullptr;
  index_t ldr = 0;
  bool clip = false;
  float lo = 0.f, hi = 0.f;
};

// C[0:m, 0:n] = alpha * sum_k a(i,k) * B[k*ldb + j] + beta*C (+bias, relu).
// B holds K rows of NR readable floats, ldb apart: a packed panel (ldb = NR, zero-padded
// beyond n) or, for full-width tiles, op(B) read in place. 1 <= m <= MR, 1 <= n <= NR.
using MicroKernel = void (*)(int m, int n, index_t k, const float* A, index_t rsa, index_t csa,
                             const float* B, index_t ldb, float* C, index_t ldc,
                             const TileParams& p, const float* bias);

// Dot products for C = A·B^T with few rows of A (a GEMV whose weights are stored N×K):
// out[i*4 + r] = sum_k A[i*lda + k] * B[r*ldb + k] for i < m <= 4, r < nb <= 4.
using DotKernel = void (*)(int m, int nb, index_t k, const float* A, index_t lda, const float* B,
                           index_t ldb, float* out);

void dot_portable(int m, int nb, index_t k, const float* A, index_t lda, const float* B,
                  index_t ldb, float* out);

struct KernelSet {
  Isa isa;
  int mr, nr;         // register tile
  int kc, mc, nc;     // cache blocking (kc: L1, mc: L2 A block, nc: B block)
  MicroKernel acol;   // A in ACol mode
  MicroKernel arow;   // A in ARow mode
  bool masked_b = false;  // honours TileParams::mask_b (reads only n columns of B)
  DotKernel dot = &dot_portable;
};

const KernelSet& kernels_portable();
const KernelSet& kernels_avx2();    // only call when the CPU supports AVX2+FMA
const KernelSet& kernels_avx512();  // only call when the CPU supports AVX-512

}  // namespace gemm
}  // namespace engine
