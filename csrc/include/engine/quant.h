// Matrix products straight from GGUF/ggml block-quantized weights, and their dequantisation.
// A weight matrix W is N rows of K values (ggml's layout: row n holds output n's weights,
// blocks of quant_block_size(t) values along K), each row quant_row_bytes(t, K) bytes.
// Small M (decode: one or a few tokens) runs from the blocks, dequantising in registers;
// large M (prompt processing) dequantises panels of W to f32 and runs the GEMM kernels.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

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

// W repacked for the AVX-512 VNNI kernels (docs/quant-kernels.md, "Packed weights"): groups of
// 16 output rows, each 32-value block of a group one tile holding the 16 rows' codes interleaved
// four at a time (so one vpdpbusd multiplies 16 outputs by 4 broadcast x values) and their
// scales. No horizontal sums, and scales are applied once per 16 outputs: faster than the
// blocks' kernels at every M, and a row's result does not depend on the other rows.
// Q4_0, Q4_1, Q8_0 and Q4_K (supports()).
class QuantPacked {
 public:
  static bool supports(QuantType t);
  // Packs N rows of raw blocks (quant_row_bytes(t, K) bytes each). Throws for other types.
  QuantPacked(const void* w, QuantType t, index_t N, index_t K);
  // Packs matrices of the same type and K one after another, as one of sum(rows) rows (a
  // decoder's Q, K and V projections: one product, one quantisation of x, one parallel region).
  struct Part {
    const void* w;
    index_t rows;
  };
  QuantPacked(const std::vector<Part>& parts, QuantType t, index_t K);

  QuantType type() const { return type_; }
  index_t rows() const { return N_; }
  index_t cols() const { return K_; }
  index_t groups() const { return (N_ + 15) / 16; }
  index_t tile_bytes() const { return tile_bytes_; }
  std::size_t bytes() const { return static_cast<std::size_t>(groups() * (K_ / 32) * tile_bytes_); }
  // Tile (group g, block b): groups one after another, each its K/32 tiles in order.
  const std::uint8_t* tile(index_t g, index_t b) const { return data_.get() + (g * (K_ / 32) + b) * tile_bytes_; }

 private:
  struct Free {
    void operator()(std::uint8_t* p) const;
  };
  QuantType type_;
  index_t N_, K_, tile_bytes_;
  std::unique_ptr<std::uint8_t[], Free> data_;
};

// Whether the packed kernels run on this CPU at the current ISA cap (else quant_matmul_packed
// takes the blocks' path): a caller that only runs here can skip packing.
bool quant_packed_active();

// quant_matmul with W packed: blocks are the same weights as raw ggml blocks, read only on ISAs
// without the packed kernels (engine.set_isa can lower the cap at any time).
void quant_matmul_packed(const float* x, index_t ldx, index_t M, const QuantPacked& w, const void* blocks,
                         float* y, index_t ldy, bool accumulate = false);

}  // namespace engine
