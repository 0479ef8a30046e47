// PLACEHOLDER naive GEMM (to be replaced by the packed, register-blocked implementation).
#include "engine/gemm.h"

#include <vector>

#include "engine/elementwise.h"

namespace engine {

struct PackedMatrixB::Impl {
  std::vector<float> b;  // K×N row-major
};

static void epilogue_rows(float* C, index_t M, index_t N, index_t ldc, const Epilogue& ep) {
  for (index_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (ep.bias)
      for (index_t j = 0; j < N; ++j) c[j] += ep.bias_per_row ? ep.bias[i] : ep.bias[j];
    if (ep.act != Act::None) activation(c, c, N, ep.act, ep.act_alpha, ep.act_beta);
  }
}

void sgemm(bool ta, bool tb, index_t M, index_t N, index_t K, float alpha, const float* A,
           index_t lda, const float* B, index_t ldb, float beta, float* C, index_t ldc,
           const Epilogue& ep) {
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      float s = 0;
      for (index_t k = 0; k < K; ++k)
        s += (ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = alpha * s + (beta == 0.f ? 0.f : beta * C[i * ldc + j]);
    }
  epilogue_rows(C, M, N, ldc, ep);
}

PackedMatrixB::PackedMatrixB(bool tb, index_t K, index_t N, const float* B, index_t ldb)
    : K_(K), N_(N), impl_(new Impl) {
  impl_->b.resize(K * N);
  for (index_t k = 0; k < K; ++k)
    for (index_t j = 0; j < N; ++j) impl_->b[k * N + j] = tb ? B[j * ldb + k] : B[k * ldb + j];
}
PackedMatrixB::~PackedMatrixB() = default;

void sgemm_packed(bool ta, index_t M, float alpha, const float* A, index_t lda,
                  const PackedMatrixB& B, float beta, float* C, index_t ldc, const Epilogue& ep) {
  sgemm(ta, false, M, B.N(), B.K(), alpha, A, lda, B.impl().b.data(), B.N(), beta, C, ldc, ep);
}

}  // namespace engine
