// Elementwise kernels: activations (also used by GEMM/conv epilogues), binary ops with
// numpy broadcasting, softmax / log-softmax over an axis.
#pragma once

#include "engine/common.h"

namespace engine {

// y[i] = act(x[i]); y may equal x (in place).
void activation(float* y, const float* x, index_t n, Act act, float alpha = 0.f, float beta = 0.f);

enum class BinaryOp : int { Add = 0, Sub, Mul, Div, Max, Min, Pow };

// out = a op b with broadcasting. All shapes have `ndim` dims (callers left-pad with 1s);
// a_strides / b_strides are element strides with 0 on broadcast dims; out is contiguous.
void binary(float* out, const float* a, const float* b, BinaryOp op, int ndim,
            const index_t* out_shape, const index_t* a_strides, const index_t* b_strides);

// Softmax (or log-softmax) over the middle dim of an (outer, axis, inner) view. Stable:
// subtracts the max first. y may equal x.
void softmax(float* y, const float* x, index_t outer, index_t axis, index_t inner, bool log);

}  // namespace engine
