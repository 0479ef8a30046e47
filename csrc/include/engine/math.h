// Typed elementwise math for every element type: unary math and activations, broadcasting
// binary arithmetic / comparisons / logic, Clip, Where, Cast, and float16 conversions.
//
// Each op is resolved once per (op, type) to a serial kernel over a run of elements; the
// resolvers return nullptr for a combination the op does not define, so a step factory can
// refuse it when the plan is made. float32 runs on the vectorised kernels (elementwise.h and
// math_f32_*.cpp), float16 is converted to float32 in short blocks (F16C where the CPU has
// it) and rounded back, float64 and the integers use typed loops the compiler vectorises.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/half.h"
#include "engine/common.h"
#include "engine/dtype.h"
#include "engine/threadpool.h"

namespace engine {

// Unary ops. alpha/beta carry the attributes noted; the Python op layer (engine/ops/arith.py
// UNARY_CODES) uses the same numbers.
enum class UnaryOp : int {
  Abs = 0, Neg, Sign, Relu, Square, Not,     // Not: bool only; Relu/Neg: signed and float
  IsNaN, IsInf,                              // float -> bool; IsInf: alpha = detect_negative, beta = detect_positive
  Acos, Acosh, Asin, Asinh, Atan, Atanh, Cos, Cosh, Sin, Sinh, Tan, Tanh,
  Ceil, Floor, Round,                        // Round: half to even
  Erf, Exp, Log, Sqrt, Reciprocal,
  Sigmoid, Softplus, Softsign, Mish, HardSwish, Gelu, GeluTanh,
  Swish,            // x·sigmoid(alpha·x)
  LeakyRelu,        // alpha
  Elu,              // alpha
  Selu,             // alpha, gamma (beta)
  Celu,             // alpha
  HardSigmoid,      // max(0, min(1, alpha·x + beta))
  ThresholdedRelu,  // x > alpha ? x : 0
  Shrink,           // bias (alpha), lambd (beta); every numeric type
  Count
};

// Binary ops with broadcasting. Arithmetic keeps the input type; comparisons give bool.
enum class MathBinaryOp : int {
  Add = 0, Sub, Mul, Div, Pow, Max, Min,
  Mod,    // sign of the divisor (Python %, numpy mod)
  FMod,   // sign of the dividend (C fmod / truncated integer %)
  PRelu,  // a < 0 ? a·b : a
  Equal, Less, Greater, LessOrEqual, GreaterOrEqual,
  And, Or, Xor,  // bool only
  Count
};

// y[i] = op(x[i]) for i < n; y may equal x. Element types: x of `in`, y of `out`.
using UnaryFn = void (*)(void* y, const void* x, index_t n, float alpha, float beta);
// out[i] = op(a[i*sa], b[i*sb]) for i < n (strides in elements).
using BinaryRowFn = void (*)(void* out, const void* a, index_t sa, const void* b, index_t sb, index_t n);
// y[i] = x[i] converted (n elements).
using CastFn = void (*)(void* y, const void* x, index_t n);

// The kernel for (op, input type), or nullptr. `out` receives the output type it writes.
UnaryFn unary_kernel(UnaryOp op, DType in, DType* out);
BinaryRowFn binary_kernel(MathBinaryOp op, DType in, DType* out);
CastFn cast_kernel(DType from, DType to);
// True when the op costs far more than a load and a store (transcendentals, libm calls):
// such work is split over threads at a smaller size.
bool unary_heavy(UnaryOp op);
bool binary_heavy(MathBinaryOp op);

// y = min(max(x, lo), hi) for every numeric type; lo/hi point to one element of the same type,
// or are null (no bound). NaN stays NaN for floats.
void clip(DType t, void* y, const void* x, index_t n, const void* lo, const void* hi);


// A broadcast of up to three inputs to one contiguous output, its dims collapsed once when the
// plan is made: size-1 dims dropped and neighbours merged where every input is contiguous
// across them, so a scalar, a row or a column broadcast all become one or two dims.
struct Broadcast {
  static constexpr int kMaxDims = 16;
  int nin = 0, nd = 0;          // inputs; collapsed dims, innermost first
  index_t total = 0;            // output elements
  index_t shape[kMaxDims] = {};
  index_t strides[3][kMaxDims] = {};  // per input, element strides (0: broadcast)
};

// shape: the output's dims (outermost first); strides[k]: input k's element strides in it.
Broadcast make_broadcast(int nin, int ndim, const index_t* shape, const index_t* const* strides);

// Calls row(out_offset, in_offsets, len) over every innermost run of the output (element
// offsets; the innermost strides are b.strides[k][0]). Work over `grain` elements is split over
// the thread pool; `row` must not throw.
void for_each_row(const Broadcast& b, index_t grain, FunctionRef<void(index_t, const index_t*, index_t)> row);

// out = cond ? x : y over a three-input broadcast (inputs: cond (bool), x, y), for elements
// of `elem` bytes (1, 2, 4 or 8).
void where(size_t elem, const Broadcast& b, void* out, const void* cond, const void* x, const void* y);

// Splits [0, n) into blocks for the pool when n > grain (block bounds on 64-byte multiples).
void for_each_block(index_t n, index_t grain, FunctionRef<void(index_t, index_t)> fn);

}  // namespace engine
