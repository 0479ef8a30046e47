// Batch norm in training mode (forward with batch statistics, backward) and layer norm
// backward (engine/grad.h). Channel sums run over fixed row chunks (gradu::Chunks), one float
// partial per chunk, added in order in double: exact enough over large batches and the same
// for any thread count. The per-element passes are in grad_rows_impl.h.
#include <cmath>
#include <cstring>
#include <string>

#include "cpu/grad_kernels.h"
#include "cpu/grad_util.h"
#include "engine/grad.h"

namespace engine {
namespace {

using gradu::str;

// out[c] = Σ over chunks of part[chunk][c], in double.
void add_partials(double* out, const float* part, index_t chunks, index_t C) {
  for (index_t c = 0; c < C; ++c) out[c] = 0;
  for (index_t k = 0; k < chunks; ++k)
    for (index_t c = 0; c < C; ++c) out[c] += part[k * C + c];
}

void check_sizes(const char* what, index_t rows, index_t cols) {
  ENGINE_CHECK(rows >= 1 && cols >= 1, std::string(what) + ": expected at least one row and one channel, got " +
                                           str(rows) + " and " + str(cols));
}

}  // namespace

void batchnorm_train_forward(float* y, float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                             const float* x, const float* gamma, const float* beta, index_t M, index_t C, double eps,
                             double momentum, bool unbiased) {
  check_sizes("batchnorm_train_fwd", M, C);
  ENGINE_CHECK(eps >= 0 && std::isfinite(eps), "batchnorm_train_fwd: eps must be >= 0");
  ENGINE_CHECK(momentum >= 0 && momentum <= 1, "batchnorm_train_fwd: momentum must be in [0, 1], got " +
                                                   std::to_string(momentum));
  ENGINE_CHECK(!unbiased || M >= 2, "batchnorm_train_fwd: the unbiased running variance needs at least 2 values "
                                    "per channel, got 1");
  const auto& k = gradk::kernels();
  const gradu::Chunks chunks(M, C);
  float* part = thread_scratch<float, gradu::kTagPartials>(static_cast<size_t>(chunks.count * C));
  double* sum = thread_scratch<double, gradu::kTagPartials2>(static_cast<size_t>(C));
  float* coef = thread_scratch<float, gradu::kTagStats>(static_cast<size_t>(2 * C));  // scale, shift
  chunks.run(C, [&](index_t ci, index_t r0, index_t r1) {
    std::memset(part + ci * C, 0, static_cast<size_t>(C) * sizeof(float));
    k.col_sum(part + ci * C, x + r0 * C, r1 - r0, C, C);
  });
  add_partials(sum, part, chunks.count, C);
  for (index_t c = 0; c < C; ++c) save_mean[c] = static_cast<float>(sum[c] / M);
  chunks.run(C, [&](index_t ci, index_t r0, index_t r1) {
    std::memset(part + ci * C, 0, static_cast<size_t>(C) * sizeof(float));
    k.col_sqdev(part + ci * C, x + r0 * C, save_mean, r1 - r0, C);
  });
  add_partials(sum, part, chunks.count, C);
  for (index_t c = 0; c < C; ++c) {
    const double var = sum[c] / M, invstd = 1.0 / std::sqrt(var + eps);
    save_invstd[c] = static_cast<float>(invstd);
    coef[c] = static_cast<float>((gamma ? gamma[c] : 1.0) * invstd);
    coef[C + c] = beta ? beta[c] : 0.f;
    const double v_run = unbiased ? var * M / (M - 1) : var;
    running_mean[c] = static_cast<float>(running_mean[c] * momentum + save_mean[c] * (1 - momentum));
    running_var[c] = static_cast<float>(running_var[c] * momentum + v_run * (1 - momentum));
  }
  chunks.run(C, [&](index_t, index_t r0, index_t r1) {
    k.rows_affine(y + r0 * C, x + r0 * C, save_mean, coef, coef + C, r1 - r0, C);
  });
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma,
                        const float* mean, const float* stat, index_t M, index_t C, bool batch_stats, double eps) {
  check_sizes("batchnorm_grad", M, C);
  const auto& k = gradk::kernels();
  const gradu::Chunks chunks(M, C);
  float* part = thread_scratch<float, gradu::kTagPartials>(static_cast<size_t>(2 * chunks.count * C));
  double* sums = thread_scratch<double, gradu::kTagPartials2>(static_cast<size_t>(2 * C));  // Σdy, Σdy·(x−mean)
  float* coef = thread_scratch<float, gradu::kTagStats>(static_cast<size_t>(4 * C));  // invstd, a, b, c
  float* invstd = coef;
  for (index_t c = 0; c < C; ++c)
    invstd[c] = batch_stats ? stat[c] : static_cast<float>(1.0 / std::sqrt(static_cast<double>(stat[c]) + eps));
  const bool need_sums = dgamma || dbeta || (dx && batch_stats);
  if (need_sums) {
    float* p_dy = part;
    float* p_xc = part + chunks.count * C;
    chunks.run(2 * C, [&](index_t ci, index_t r0, index_t r1) {
      std::memset(p_dy + ci * C, 0, static_cast<size_t>(C) * sizeof(float));
      std::memset(p_xc + ci * C, 0, static_cast<size_t>(C) * sizeof(float));
      k.col_dy_xc(p_dy + ci * C, p_xc + ci * C, dy + r0 * C, x + r0 * C, mean, r1 - r0, C);
    });
    add_partials(sums, p_dy, chunks.count, C);
    add_partials(sums + C, p_xc, chunks.count, C);
    for (index_t c = 0; c < C; ++c) {
      if (dbeta) dbeta[c] = static_cast<float>(sums[c]);
      if (dgamma) dgamma[c] = static_cast<float>(sums[C + c] * invstd[c]);
    }
  }
  if (!dx) return;
  // dx = a·dy + b·(x − mean) + c: γ·invstd·(dy − Σdy/M − x̂·Σ(dy·x̂)/M) with batch statistics.
  float *a = coef + C, *b = coef + 2 * C, *c3 = coef + 3 * C;
  for (index_t c = 0; c < C; ++c) {
    const double g = gamma ? gamma[c] : 1.0, is = invstd[c];
    a[c] = static_cast<float>(g * is);
    b[c] = batch_stats ? static_cast<float>(-g * is * is * is * sums[C + c] / M) : 0.f;
    c3[c] = batch_stats ? static_cast<float>(-g * is * sums[c] / M) : 0.f;
  }
  chunks.run(C, [&](index_t, index_t r0, index_t r1) {
    k.rows_bn_dx(dx + r0 * C, dy + r0 * C, x + r0 * C, mean, a, b, c3, r1 - r0, C);
  });
}

void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma,
                        const float* mean, const float* invstd, index_t rows, index_t D, bool rms) {
  check_sizes("layernorm_grad", rows, D);
  const auto& k = gradk::kernels();
  const gradu::Chunks chunks(rows, D);
  if (dx)
    chunks.run(D, [&](index_t, index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r)
        k.ln_row(dx + r * D, dy + r * D, x + r * D, gamma, rms ? 0.f : mean[r], invstd[r], D, rms);
    });
  if (!dgamma && !dbeta) return;
  float* part = thread_scratch<float, gradu::kTagPartials>(static_cast<size_t>(2 * chunks.count * D));
  float* p_g = part;
  float* p_b = part + chunks.count * D;
  chunks.run(2 * D, [&](index_t ci, index_t r0, index_t r1) {
    std::memset(p_g + ci * D, 0, static_cast<size_t>(D) * sizeof(float));
    std::memset(p_b + ci * D, 0, static_cast<size_t>(D) * sizeof(float));
    k.ln_params(dgamma ? p_g + ci * D : nullptr, dbeta ? p_b + ci * D : nullptr, dy + r0 * D, x + r0 * D,
                rms ? nullptr : mean + r0, invstd + r0, r1 - r0, D, rms);
  });
  double* sums = thread_scratch<double, gradu::kTagPartials2>(static_cast<size_t>(D));
  if (dgamma) {
    add_partials(sums, p_g, chunks.count, D);
    for (index_t c = 0; c < D; ++c) dgamma[c] = static_cast<float>(sums[c]);
  }
  if (dbeta) {
    add_partials(sums, p_b, chunks.count, D);
    for (index_t c = 0; c < D; ++c) dbeta[c] = static_cast<float>(sums[c]);
  }
}

}  // namespace engine
