// Index-driven data movement: Gather, GatherElements, GatherND (read through an index
// tensor), ScatterElements, ScatterND (write through one, optionally reducing). Indices are
// int32 or int64; negative ones count from the end. Every kernel checks all of its indices
// first, on the calling thread, and throws engine::Error naming the op and the bad index
// before it writes through any index or splits work over the thread pool.
#pragma once

#include <cstddef>

#include "engine/common.h"
#include "engine/dtype.h"

namespace engine {

enum class Reduction : int { None = 0, Add, Mul, Max, Min };

// y[o, j, i] = x[o, idx[j], i] for o < outer, j < n_idx, i < inner (x: [outer, axis_len, inner]).
void gather(void* y, const void* x, const void* idx, DType idx_type, index_t outer, index_t axis_len,
            index_t inner, index_t n_idx, size_t elem);

// y[i] = x[i with dim `axis` replaced by idx[i]] for every index i of idx's shape (ndim dims);
// x_strides are x's element strides, axis_len x's size along `axis`.
void gather_elements(void* y, const void* x, const void* idx, DType idx_type, int ndim, const index_t* idx_shape,
                     const index_t* x_strides, int axis, index_t axis_len, size_t elem);

// For each batch b < batch and tuple t < tuples: y[b, t, :slice] = x[b, idx[b, t, 0..depth), :slice].
// x per batch is [dims[0], ..., dims[depth-1], slice] (batch_stride elements apart).
void gather_nd(void* y, const void* x, const void* idx, DType idx_type, index_t batch, index_t tuples, int depth,
               const index_t* dims, index_t batch_stride, index_t slice, size_t elem);

// y (already holding the data) [i with dim `axis` replaced by idx[i]] (op)= upd[i] for every
// index i of idx's shape, in order. y_strides are y's element strides.
void scatter_elements(void* y, const void* upd, const void* idx, DType idx_type, DType type, Reduction op, int ndim,
                      const index_t* idx_shape, const index_t* y_strides, int axis, index_t axis_len);

// y (already holding the data) [idx[t, 0..depth), :slice] (op)= upd[t, :slice] for t < tuples,
// in order; y is [dims[0], ..., dims[depth-1], slice].
void scatter_nd(void* y, const void* upd, const void* idx, DType idx_type, DType type, Reduction op, index_t tuples,
                int depth, const index_t* dims, index_t slice);

// Whether scatter kernels can reduce elements of `type` with `op` (None: every type).
bool scatter_supports(DType type, Reduction op);

}  // namespace engine
