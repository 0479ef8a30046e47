// ONNX-layout (NCHW, N-d) convolution, transposed convolution and pooling, the typed GEMM
// they and the linear ops use for element types sgemm does not cover, and float16 <-> float32
// conversion. Spatial ranks 1..3: a window's spatial dims are right-aligned in 3 slots, the
// missing leading ones have size 1, kernel 1, stride 1, dilation 1 and no padding.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {

struct WindowND {
  index_t in[3] = {1, 1, 1};      // input spatial sizes (D, H, W)
  index_t out[3] = {1, 1, 1};     // output spatial sizes
  index_t k[3] = {1, 1, 1};       // kernel
  index_t stride[3] = {1, 1, 1};
  index_t dil[3] = {1, 1, 1};
  index_t pad[3] = {0, 0, 0};     // leading padding (may be negative for ConvTranspose)
  index_t in_size() const { return in[0] * in[1] * in[2]; }
  index_t out_size() const { return out[0] * out[1] * out[2]; }
  index_t k_size() const { return k[0] * k[1] * k[2]; }
  // Throws engine::Error naming `what` unless every size is sane (>= 1, out >= 0); a window
  // that does not match its output size is still memory-safe: every tap is bounds-checked.
  void validate(const char* what) const;
};

// y: N×OC×out, x: N×C×in, w: OC×(C/groups)×k, bias: OC or null.
template <class T>
void conv_nd(T* y, const T* x, const T* w, const T* bias, index_t N, index_t C, index_t OC, index_t groups,
             const WindowND& g);

// y: N×OC×out, x: N×C×in, w: C×(OC/groups)×k, bias: OC or null. out[o] = in[i]·stride - pad
// + k·dil for every tap (positions outside [0, out) are dropped).
template <class T>
void conv_transpose_nd(T* y, const T* x, const T* w, const T* bias, index_t N, index_t C, index_t OC,
                       index_t groups, const WindowND& g);

enum class PoolKind : int { Max = 0, Avg = 1, Lp = 2 };

// y: planes×out, x: planes×in. Max ignores padding and propagates NaN (as torch); Avg divides
// by the taps inside the input, or with count_include_pad by the taps inside the padded input;
// Lp is (Σ|x|^p)^(1/p) over the taps inside the input. pad_end bounds count_include_pad.
// indices (Max only, may be null): flat index of each max in x, row-major or, with
// col_major, column-major over the spatial dims (ONNX storage_order=1), plane-major outside.
struct PoolParams {
  PoolKind kind = PoolKind::Max;
  index_t pad_end[3] = {0, 0, 0};
  bool count_include_pad = false;
  int p = 2;
  bool col_major = false;
};
template <class T>
void pool_nd(T* y, std::int64_t* indices, const T* x, index_t planes, const WindowND& g, const PoolParams& pp);

// y[i] = max or mean of x[i·size : (i+1)·size] (NaN propagates).
template <class T>
void global_pool(T* y, const T* x, index_t planes, index_t size, bool is_max);

// C (M×N, row stride ldc) = alpha·op(A)·op(B) + beta·C for types without a tuned GEMM (double;
// integers with wrap-around products, alpha/beta applied in double when not 1/0).
// A(i, k) = A[i·a_row + k·a_col], B(k, j) = B[k·b_row + j·b_col]. beta == 0: C is not read.
template <class T>
void gemm_strided(index_t M, index_t N, index_t K, double alpha, const T* A, index_t a_row, index_t a_col,
                  const T* B, index_t b_row, index_t b_col, double beta, T* C, index_t ldc);

// y[b][c][r] = x[b][r][c] for 4-byte elements (batch planes of rows × cols), cache-blocked.
void transpose32(void* y, const void* x, index_t batch, index_t rows, index_t cols);


}  // namespace engine
