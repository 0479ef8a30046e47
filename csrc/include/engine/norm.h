// Normalisation kernels: layer / RMS / group / instance / mean-variance normalisation over
// rows, batch normalisation (inference and training), LRN, Lp normalisation, and the
// negative log-likelihood loss. T is float or double; float computes in float, double in
// double. Outputs first, then inputs, then sizes.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {

enum class NormMode : int {
  Layer = 0,  // (x - mean) / sqrt(var + eps)
  Rms,        // x / sqrt(mean(x²) + eps)
  Mvn,        // (x - mean) / (sqrt(var) + eps)
};

// Each of `rows` rows of x holds cps segments of seg elements (len = cps·seg) and is
// normalised over all of them; then y = normalised · scale[c] + bias[c] with
// c = (row % groups)·cps + segment (a LayerNorm row: groups 1, seg 1, one scale per
// element; InstanceNorm: groups C, cps 1; GroupNorm: groups G, cps C/G). scale / bias may
// be null (1 / 0). mean / inv_std (rows values, float) are written when not null; RMS
// writes 0 as its mean.
template <class T>
void normalize_rows(T* y, float* mean, float* inv_std, const T* x, const T* scale, const T* bias, index_t rows,
                    index_t groups, index_t cps, index_t seg, double eps, NormMode mode);

// The same for float16 x / y (uint16_t bits), computed in float32 one row at a time;
// scale / bias are float32.
void normalize_rows_f16(std::uint16_t* y, float* mean, float* inv_std, const std::uint16_t* x, const float* scale,
                        const float* bias, index_t rows, index_t groups, index_t cps, index_t seg, double eps,
                        NormMode mode);

// Inference batch norm over (N, C, S): y = (x - mean[c]) · scale[c] / sqrt(var[c] + eps) + bias[c].
template <class T>
void batchnorm(T* y, const T* x, const T* scale, const T* bias, const T* mean, const T* var, index_t N, index_t C,
               index_t S, double eps);

// Training batch norm: normalises with the batch's own mean and (population) variance per
// channel and returns the running statistics input·momentum + batch·(1 - momentum).
template <class T>
void batchnorm_train(T* y, T* running_mean, T* running_var, const T* x, const T* scale, const T* bias,
                     const T* mean, const T* var, index_t N, index_t C, index_t S, double eps, double momentum);

// Local response normalisation across channels of (N, C, S).
template <class T>
void lrn(T* y, const T* x, index_t N, index_t C, index_t S, index_t size, double alpha, double beta, double bias);

// y = x / ||x||_p over the middle dim of (outer, n, inner), p = 1 or 2; a zero norm gives 0.
template <class T>
void lp_normalize(T* y, const T* x, index_t outer, index_t n, index_t inner, int p);

enum class LossReduction : int { None = 0, Sum, Mean };

// Negative log-likelihood: loss[n, d] = -logp[n, target[n, d], d] · weight[target] over
// (N, C, D), 0 where target == ignore_index (when has_ignore). Mean divides by the sum of
// the weights used. A target outside [0, C) that is not ignored throws engine::Error.
// I is int32_t or int64_t.
template <class T, class I>
void nll_loss(T* loss, const T* logp, const I* target, const T* weight, index_t N, index_t C, index_t D,
              LossReduction reduction, bool has_ignore, std::int64_t ignore_index);

}  // namespace engine
