// Reductions and the ops built on a scan along one axis: Reduce*, ArgMax/ArgMin, CumSum,
// TopK, Hardmax, a float64 softmax, and float16 <-> float32 conversion (float16 ops run on
// float32 copies). Every kernel sees its input as (outer, n, inner): the reduced or scanned
// run `n` sits between `outer` and `inner`, all contiguous (lowerings transpose first when
// the axes are not adjacent). Outputs first, then inputs, then sizes.
//
// Element types: T is float, double, int8..int64, uint8..uint64 (and bool for ReduceMax /
// ReduceMin); explicit instantiations live in the reduce*.cpp files. Reductions accumulate
// float in float, double in double, integers in 64 bits (a sum wraps exactly as in the
// element type, a mean does not); CumSum adds in the element type.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {

enum class ReduceOp : int { Sum = 0, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare };

// y[o, j] = op over r of x[o, r, j]. An empty run (n == 0) gives the op's identity
// (0, 1, -inf / lowest, +inf / highest; LogSum/LogSumExp -inf; Mean NaN for floats).
template <class T>
void reduce(T* y, const T* x, index_t outer, index_t n, index_t inner, ReduceOp op);

// y[o, j] = index r of the first (or last) max (or min) of x[o, :, j]; NaN counts as the
// largest value and the first NaN wins (numpy). n >= 1.
template <class T>
void arg_reduce(std::int64_t* y, const T* x, index_t outer, index_t n, index_t inner, bool is_min, bool last);

// Cumulative sum along the middle dim; exclusive skips the element itself, reverse scans
// from the end. y must not alias x.
template <class T>
void cumsum(T* y, const T* x, index_t outer, index_t n, index_t inner, bool exclusive, bool reverse);

// The k largest (or smallest) of each contiguous row of n, sorted best first; equal values
// keep the lower index first, NaN ranks above every number. values / indices: rows × k.
template <class T>
void topk(T* values, std::int64_t* indices, const T* x, index_t rows, index_t n, index_t k, bool largest);

// y = 1 at the first maximum of x[o, :, j], 0 elsewhere.
template <class T>
void hardmax(T* y, const T* x, index_t outer, index_t n, index_t inner);

// Softmax / log-softmax over the middle dim in float64 (float32 lives with elementwise.h).
void softmax_f64(double* y, const double* x, index_t outer, index_t n, index_t inner, bool log);


}  // namespace engine
