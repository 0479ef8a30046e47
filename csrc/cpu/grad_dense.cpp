// MatMul / Dense backward (engine/grad.h) through the existing sgemm with transposes:
// C = op(A)·op(B) gives dop(A) = dC·op(B)ᵀ and dop(B) = op(A)ᵀ·dC, each written in its
// operand's stored layout. A broadcast operand's gradient is summed over the batch: as one
// GEMM over the stacked batch when the other operand's batches are contiguous rows, else by
// accumulating GEMMs. Independent batches run one per thread when they are many and small.
#include <algorithm>
#include <cstring>

#include "cpu/grad_util.h"
#include "engine/gemm.h"
#include "engine/grad.h"

namespace engine {

using gradu::str;

void MatMulGrad::validate() const {
  ENGINE_CHECK(batch >= 1 && M >= 0 && N >= 0 && K >= 0,
               "matmul_grad: expected batch >= 1 and M, N, K >= 0, got batch=" + str(batch) + " M=" + str(M) +
                   " N=" + str(N) + " K=" + str(K));
  ENGINE_CHECK(a_stride >= 0 && b_stride >= 0, "matmul_grad: negative batch stride");
}

namespace {

void zero(float* p, index_t n) { std::memset(p, 0, static_cast<size_t>(n) * sizeof(float)); }

// Runs f(b) for every batch: on the pool, one batch per task, when the outputs are disjoint
// and the batches many or small; else in order on the caller (each GEMM threads itself).
template <class F>
void batches(const MatMulGrad& g, bool disjoint, F&& f) {
  const double flops = 2.0 * g.M * g.N * g.K;
  if (disjoint && g.batch > 1 && (g.batch >= 2 * num_threads() || flops < 4e6))
    return parallel_for(g.batch, 1, [&](index_t b0, index_t b1) {
      for (index_t b = b0; b < b1; ++b) f(b);
    });
  for (index_t b = 0; b < g.batch; ++b) f(b);
}

}  // namespace

void matmul_backward(float* da, float* db, const float* dc, const float* a, const float* b, const MatMulGrad& g,
                     bool accumulate) {
  g.validate();
  const index_t M = g.M, N = g.N, K = g.K;
  const index_t lda = g.trans_a ? M : K, ldb = g.trans_b ? K : N;
  const float beta = accumulate ? 1.f : 0.f;
  const index_t a_batches = g.a_stride == 0 ? 1 : g.batch, b_batches = g.b_stride == 0 ? 1 : g.batch;
  if (M == 0 || N == 0 || K == 0) {  // an empty product: the gradients are zero
    if (!accumulate && da) zero(da, a_batches * M * K);
    if (!accumulate && db) zero(db, b_batches * K * N);
    return;
  }
  if (da) {
    const bool bcast = g.a_stride == 0 && g.batch > 1;
    batches(g, !bcast, [&](index_t i) {
      const float *dci = dc + i * M * N, *bi = b + i * g.b_stride;
      float* dai = da + (bcast ? 0 : i * g.a_stride);
      const float bt = bcast && i > 0 ? 1.f : beta;
      if (!g.trans_a) sgemm(false, !g.trans_b, M, K, N, 1.f, dci, N, bi, ldb, bt, dai, K);
      else sgemm(g.trans_b, true, K, M, N, 1.f, bi, ldb, dci, N, bt, dai, M);
    });
  }
  if (db) {
    const bool bcast = g.b_stride == 0 && g.batch > 1;
    if (bcast && !g.trans_a && g.a_stride == M * K) {  // stacked: rows of every batch at once
      if (!g.trans_b) sgemm(true, false, K, N, g.batch * M, 1.f, a, K, dc, N, beta, db, N);
      else sgemm(true, false, N, K, g.batch * M, 1.f, dc, N, a, K, beta, db, K);
    } else {
      batches(g, !bcast, [&](index_t i) {
        const float *dci = dc + i * M * N, *ai = a + i * g.a_stride;
        float* dbi = db + (bcast ? 0 : i * g.b_stride);
        const float bt = bcast && i > 0 ? 1.f : beta;
        if (!g.trans_b) sgemm(!g.trans_a, false, K, N, M, 1.f, ai, lda, dci, N, bt, dbi, N);
        else sgemm(true, g.trans_a, N, K, M, 1.f, dci, N, ai, lda, bt, dbi, K);
      });
    }
  }
}

}  // namespace engine
