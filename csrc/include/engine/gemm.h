// Single-precision GEMM: C = alpha·op(A)·op(B) + beta·C, then the epilogue (bias, activation).
// Row-major. op(A) is M×K, op(B) is K×N, C is M×N with leading dimension ldc.
// Goto/BLIS structure: packed panels, register-blocked micro-kernels per ISA, threads over
// the M/N blocks. Weights are packed once (PackedMatrixB) and reused across calls.
#pragma once

#include <memory>
#include <vector>

#include "engine/common.h"

namespace engine {

void sgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha,
           const float* A, index_t lda, const float* B, index_t ldb, float beta, float* C,
           index_t ldc, const Epilogue& ep = {});

// op(B) (K×N) packed once into the micro-kernel's panel layout for the ISA in use.
class PackedMatrixB : public KernelState {
 public:
  PackedMatrixB(bool trans_b, index_t K, index_t N, const float* B, index_t ldb);
  ~PackedMatrixB();
  PackedMatrixB(const PackedMatrixB&) = delete;
  PackedMatrixB& operator=(const PackedMatrixB&) = delete;

  index_t K() const { return K_; }
  index_t N() const { return N_; }
  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  index_t K_, N_;
  std::unique_ptr<Impl> impl_;
};

// C = alpha·op(A)·B + beta·C with B pre-packed.
void sgemm_packed(bool trans_a, index_t M, float alpha, const float* A, index_t lda,
                  const PackedMatrixB& B, float beta, float* C, index_t ldc,
                  const Epilogue& ep = {});

}  // namespace engine
