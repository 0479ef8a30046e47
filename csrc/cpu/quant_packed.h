// The tile layout of QuantPacked (engine/quant.h) and its kernels (quant_packed_avx512vnni.cpp).
//
// A tile is 16 weight rows (outputs n) by one 32-value block (k), 64-byte aligned:
//  * codes, unsigned bytes, in 64-byte vectors whose 32-bit lane n holds 4 consecutive codes of
//    row n, so vpdpbusd against one broadcast 4-byte group of x gives 16 outputs' partial sums:
//    - Q4_0, Q4_1, Q4_K (nibbles): 4 vectors; in vector v, byte 4n + i holds row n's code 4v + i
//      (low nibble) and code 16 + 4v + i (high nibble);
//    - Q8_0: 8 vectors; in vector j, byte 4n + i holds row n's code 4j + i plus 128;
//  * then the 16 rows' scales: Q4_0, Q8_0 f16 d; Q4_1 f16 d then f16 m (64 bytes in all);
//    Q4_K f32 d*sc then f32 -(dmin*m) (128 bytes).
// What the unsigned codes leave out is a multiple of the x block's sum: Q4_0's -8 and Q8_0's
// -128 (whole numbers: subtracted from the integer dot product), Q4_1's and Q4_K's minimums.
// Rows past N in the last group are zeros.
#pragma once

#include <cstdint>

#include "cpu/quant_kernels.h"
#include "engine/quant.h"

namespace engine {

constexpr index_t kPackRows = 16;

constexpr bool packed_nibbles(QuantType t) { return t != QuantType::Q8_0; }
constexpr index_t packed_code_bytes(QuantType t) { return packed_nibbles(t) ? 256 : 512; }
constexpr index_t packed_scale_bytes(QuantType t) { return t == QuantType::Q4_K ? 128 : 64; }
// The whole-number offset of the codes (0: a float minimum instead, or none).
constexpr int packed_code_offset(QuantType t) {
  return t == QuantType::Q4_0 ? 8 : t == QuantType::Q8_0 ? 128 : 0;
}

// One call's quantised x rows against a packed W (quant_packed.cpp fills it).
struct PackedRows {
  const XBlock* xq;         // row m's K/32 blocks at xq + m * nb
  const std::int32_t* xoff; // packed_code_offset * (sum of the block's 128 q + lo), same indexing
  index_t M;
  const QuantPacked* w;
  float* y;
  index_t ldy;
  bool accumulate;
};

namespace quant_packed_avx512vnni {
// quantize_row (quant_kernels.h) of M rows, bit for bit, in vectors; and each block's
// offset * (sum of 128 q + lo) for PackedRows::xoff.
void quantize_rows(const float* x, index_t ldx, index_t M, index_t K, int offset, XBlock* xq, std::int32_t* xoff);
// Output groups [g0, g1) for all M rows.
void matmul_groups(const PackedRows& a, index_t g0, index_t g1);
}  // namespace quant_packed_avx512vnni

}  // namespace engine
