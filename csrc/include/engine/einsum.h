// Einsum's own kernels (the planner lowers transposes and diagonals to strided copies and
// float32 products to the GEMM): a strided sum and a batched matrix product for the other
// element types. Integers wrap like numpy's einsum.
#pragma once

#include "engine/common.h"
#include "engine/dtype.h"

namespace engine {

// y (contiguous over the kept dims) = sum over the reduced dims of x:
//   y[k_0, ..., k_{nk-1}] = sum_r x[sum_d k_d·kstrides[d] + sum_e r_e·rstrides[e]]
// Strides in elements, 0 for broadcast, repeated labels as summed strides (diagonals).
// Types: float32, float64, every integer type.
bool einsum_sum_supports(DType t);
void einsum_sum(void* y, const void* x, DType t, int nk, const index_t* kshape, const index_t* kstrides, int nr,
                const index_t* rshape, const index_t* rstrides);

// C[b] = A[b]·B[b] for b < batch: A[b] is M×K at A + b·a_batch_stride, B[b] K×N at
// B + b·b_batch_stride (0: broadcast), C contiguous. float64 and every integer type.
bool einsum_bmm_supports(DType t);
void einsum_bmm(void* C, const void* A, const void* B, DType t, index_t batch, index_t M, index_t N, index_t K,
                index_t a_batch_stride, index_t b_batch_stride);

}  // namespace engine
