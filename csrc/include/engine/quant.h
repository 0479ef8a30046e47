// Matrix products straight from GGUF/ggml block-quantized weights, and their dequantisation.
// A weight matrix W is N rows of K values (ggml's layout: row n holds output n's weights,
// blocks of quant_block_size(t) values along K), each row quant_row_bytes(t, K) bytes.
// Small M (decode: one or a few tokens) runs from the blocks, dequantising in registers;
// large M (prompt processing) dequantises panels of W to f32 and runs the GEMM kernels.
#pragma once

#include "engine/common.h"

namespace engine {

// ggml's type ids, so a GGUF tensor's type passes through unchanged.
enum class QuantType : int {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q8_0 = 8,
  Q4_K = 12,
  Q6_K = 14,
  BF16 = 30,
};

bool quant_type_known(int t);
const char* quant_type_name(QuantType t);
index_t quant_block_size(QuantType t);   // values per block (1 for F32/F16/BF16)
index_t quant_block_bytes(QuantType t);  // bytes per block
index_t quant_row_bytes(QuantType t, index_t K);  // checks K % block size == 0

// y[m*ldy + n] (=, or += when accumulate) sum_k x[m*ldx + k] * W[n, k], m < M, n < N.
// Threads over N on the engine pool (row ranges, or panels of rows when M is large).
// Call from one thread.
void quant_matmul(const float* x, index_t ldx, index_t M, index_t K, const void* w, QuantType t,
                  index_t N, float* y, index_t ldy, bool accumulate = false);

// out[(n - n0)*K + k] = W[n, k] for rows n0 <= n < n1 (f32).
void quant_dequantize_rows(const void* w, QuantType t, index_t K, index_t n0, index_t n1, float* out);

}  // namespace engine
