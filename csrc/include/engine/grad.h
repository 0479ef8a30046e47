// Backward kernels for training (float32, NHWC as the forward kernels). Each mirrors a forward
// kernel and computes what torch's autograd computes for it (same formulas, same handling of
// ties, NaN and boundaries), so a training step matches torch. Outputs first, then inputs,
// then sizes. `accumulate`: add into the outputs instead of overwriting them (a tensor used
// twice, gradient accumulation).
//
// Reductions over rows (bias, batch-norm and layer-norm parameter gradients, losses) sum
// fixed chunks whose size depends only on the shape, then the chunks in order: the result is
// the same whatever the thread count. Conv weight gradients split rows by thread and are not.
#pragma once

#include <cstdint>

#include "engine/common.h"
#include "engine/conv.h"
#include "engine/dtype.h"
#include "engine/pool.h"

namespace engine {

// ---- activations -------------------------------------------------------------------------

// Activation codes act_backward knows: every Act (same numbers), plus the unary ops outside
// Act that Keras activations map to (their forward is math_unary).
namespace grad_act {
constexpr int kSoftsign = 64;   // x / (1 + |x|)
constexpr int kHardSwish = 65;  // x · relu6(x + 3) / 6
constexpr int kMish = 66;       // x · tanh(softplus(x))
}  // namespace grad_act

// Which forward tensor the derivative reads: the input x, the output y where that is exact
// and cheaper (relu, sigmoid, tanh, exp, sqrt, reciprocal), or neither (linear, neg). Throws
// for an unknown code.
enum class ActSource : int { X = 0, Y = 1, None = 2 };
ActSource act_grad_source(int act);

// dx = dy · f'(src) as torch computes it (relu: 0 where y <= 0; leaky relu, elu, selu: the
// x > 0 branch for NaN; hard sigmoid / clip (hardtanh): dy strictly inside the linear
// range; softplus: dy above x = 20). alpha/beta as the forward Act. dx may alias dy; src is
// not read where the source is None.
void act_backward(float* dx, const float* dy, const float* src, index_t n, int act, float alpha = 0.f,
                  float beta = 0.f);

// ---- softmax and cross-entropy -----------------------------------------------------------

// Over the middle dim of (outer, axis, inner), y the forward output: softmax
// dx = y·(dy − Σ dy·y); log-softmax dx = dy − exp(y)·Σ dy. dx may alias dy.
void softmax_backward(float* dx, const float* dy, const float* y, index_t outer, index_t axis, index_t inner,
                      bool log);

enum class XentReduction : int {
  None = 0,      // loss[i] per sample
  Sum,           // Σ w_i·l_i
  Mean,          // Σ w_i·l_i / N (Keras's sum_over_batch_size)
  WeightedMean,  // Σ w_i·l_i / Σ w_i (torch's mean with class weights)
};

// Softmax cross-entropy from logits (N rows of C), stable (log-sum-exp with the row max):
// l_i = logsumexp(z_i) − z_i[label_i] (sparse) or −Σ_c t_ic·log_softmax(z_i)_c (dense
// targets: one-hot or probabilities). weight: N per-sample weights or null (1).
// loss: N values (None) or 1. dlogits (may be null, may alias logits): the gradient of the
// loss times dloss (null = 1; N values for None, else 1): g_i = s_i·(p_i·Σt_i − t_i) with s_i
// = dloss·w_i (/N or /Σw). Sparse labels are int32 or int64; the return value is -1, or the
// position of the first label outside [0, C) (then nothing is written).
index_t softmax_xent_sparse(float* loss, float* dlogits, const float* logits, const void* labels, DType label_type,
                            const float* weight, const float* dloss, index_t N, index_t C, XentReduction red);
void softmax_xent_dense(float* loss, float* dlogits, const float* logits, const float* target, const float* weight,
                        const float* dloss, index_t N, index_t C, XentReduction red);

// ---- dense / matmul ----------------------------------------------------------------------

// y[j] (+)= Σ_i x[i, j] over rows × cols (row-major): the bias gradient.
void column_sums(float* y, const float* x, index_t rows, index_t cols, bool accumulate);

// C = op(A)·op(B) per batch (the `matmul` step's layout): A is M×K (K×M if trans_a), B K×N
// (N×K if trans_b), C M×N, batch strides in elements, 0 = broadcast (its gradient is then
// summed over the batch). da / db may be null (not wanted).
struct MatMulGrad {
  index_t batch = 1, M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  index_t a_stride = 0, b_stride = 0;
  void validate() const;
};
void matmul_backward(float* da, float* db, const float* dc, const float* a, const float* b, const MatMulGrad& g,
                     bool accumulate);

// ---- conv2d (NHWC activations, HWIO filters, every variant of conv2d_nhwc) ----------------

// dx = the transposed convolution of dy (col2im of dy·Wᵀ; depthwise: direct).
void conv2d_backward_data(float* dx, const float* dy, const float* filter, const Conv2DShape& s, bool accumulate);
// dw = im2colᵀ·dy (depthwise: direct), db = column sums of dy; either may be null.
void conv2d_backward_filter(float* dw, float* db, const float* dy, const float* x, const Conv2DShape& s,
                            bool accumulate);

// ---- pooling (NHWC, the forward's Pool2DShape); dx is overwritten -------------------------

// dy goes to the window's first maximum (a NaN wins, the last one: torch's rule).
// relu: x is a ReLU's output and dx also carries the ReLU's derivative (dy where x > 0 or NaN):
// the ReLU backward folded into this pass.
void maxpool2d_backward(float* dx, const float* dy, const float* x, const Pool2DShape& s, bool relu = false);
// dy / divisor to every tap the forward averaged (its count_include_pad rule).
void avgpool2d_backward(float* dx, const float* dy, const Pool2DShape& s);
// dx: N×HW×C, dy: N×C.
void global_avgpool_backward(float* dx, const float* dy, index_t N, index_t HW, index_t C);
// split_ties: dy shared equally by equal maxima (amax / Keras reduce_max); otherwise all to the
// first (max / adaptive max pool). A NaN is the maximum, as in the forward.
void global_maxpool_backward(float* dx, const float* dy, const float* x, index_t N, index_t HW, index_t C,
                             bool split_ties);

// ---- normalisation (rows × C, channels last) ---------------------------------------------

// Training batch norm over M rows of C channels: batch mean and population variance, y =
// (x − mean)·invstd·gamma + beta, saved mean / invstd for the backward, and the running
// statistics r = r·momentum + batch·(1 − momentum) (Keras's momentum; torch's m is 1 − this),
// with the population variance (Keras) or the unbiased one (torch). gamma / beta may be null.
void batchnorm_train_forward(float* y, float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                             const float* x, const float* gamma, const float* beta, index_t M, index_t C, double eps,
                             double momentum, bool unbiased_running_var);
// Batch norm backward. batch_stats: mean / stat are the saved batch mean and invstd (training);
// otherwise they are the running mean and variance (a frozen layer: stat → 1/√(var + eps)).
// dgamma / dbeta may be null; gamma may be null (1).
void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma,
                        const float* mean, const float* stat, index_t M, index_t C, bool batch_stats, double eps);

// Layer norm backward over rows of D, from the forward's per-row mean and invstd (the
// `normalize` step's outputs; rms: x̂ = x·invstd, no mean). dgamma / dbeta may be null.
void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const float* gamma,
                        const float* mean, const float* invstd, index_t rows, index_t D, bool rms);

// ---- embedding ---------------------------------------------------------------------------

// dw[idx[i], :] (+)= dy[i, :] for V rows of D; duplicates add up (in index order, so the
// result does not depend on the thread count). Negative indices count from the end, as the
// forward gather. Returns -1, or the position of the first index outside [-V, V) (nothing
// written then).
index_t embedding_backward(float* dw, const float* dy, const void* idx, DType idx_type, index_t n_idx, index_t V,
                           index_t D, bool accumulate);

// ---- dropout -----------------------------------------------------------------------------

// Masks come from Philox4x32-10 (Salmon et al., SC'11), a counter-based generator, so element
// i's draw depends on (seed, step, i) only, whatever the thread count: element i takes word
// i % 4 of the block for counter (i / 4 as 64 bits, step as 64 bits) and key seed, and is kept
// when its top 24 bits / 2^24 >= rate.
// y = x · (keep ? 1 / (1 − rate) : 0) (the scale rounded once to float; a product, so a NaN
// stays NaN, as in torch); mask (1 kept / 0) if not null. 0 <= rate < 1.
void dropout_forward(float* y, std::uint8_t* mask, const float* x, index_t n, double rate, std::uint64_t seed,
                     std::uint64_t step);
// dx = dy masked and scaled the same way: from the forward's mask, or (mask null) the mask
// drawn again from (seed, step).
void dropout_backward(float* dx, const float* dy, const std::uint8_t* mask, index_t n, double rate,
                      std::uint64_t seed, std::uint64_t step);

// ---- broadcast -----------------------------------------------------------------------------

// y = x summed over the dims where y_shape is 1 and x_shape is not (a gradient reduced to
// the shape its input was broadcast from). Both shapes have ndim dims (y left-padded with 1s).
void sum_to_shape(float* y, const float* x, int ndim, const index_t* x_shape, const index_t* y_shape);

}  // namespace engine
