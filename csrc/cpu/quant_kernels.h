// The per-ISA halves of quant_matmul (quant.cpp holds the dispatch and the large-M path).
// Small M runs straight from the weight blocks: quant.cpp quantises each x row once to XBlocks
// (int8, blocks of 32, one f32 scale), and a kernel takes integer dot products of those with
// the weight's integer codes, scaling per block in f32 (llama.cpp's scheme). F16/BF16 weights
// are converted in registers and multiplied with f32 x (no x quantisation).
// Compiled per ISA from quant_impl.h: quant_avx512vnni.cpp (vpdpbusd), quant_avx2.cpp
// (vpmaddubsw), quant_portable.cpp (scalar).
#pragma once

#include <cstdint>

#include "engine/common.h"
#include "engine/quant.h"

namespace engine {

// 32 values of an x row in two int8 parts: x[i] ~= d * (128 q[i] + lo[i]), d = max|x| / (127*128),
// so |x[i] - d (128 q[i] + lo[i])| <= d/2 = max|x|/32512 (q alone is llama.cpp's int8 rounding,
// max|x|/254; the lo part, |lo| <= 64, makes the products ~128x closer to f32 for one more
// integer dot product). A kernel's integer dot product is 128 dot(w, q) + dot(w, lo).
// sum16: the two halves' sums of 128 q + lo (Q6_K's -32 offset works per 16 values);
// s = d * (sum of 128 q + lo) (the Q4_0 offset and Q4_1/Q4_K minimums multiply it).
// A block holding NaN or inf gets d = s = NaN.
struct XBlock {
  float d, s;
  std::int32_t sum16[2];
  std::int8_t q[32];
  std::int8_t lo[32];
};
static_assert(sizeof(XBlock) == 80, "XBlock layout");
constexpr int kXLoShift = 7;  // q's weight: 2^7 = 128

constexpr index_t kXBlock = 32;

// One x row (K values, K % 32 == 0) to K/32 XBlocks (quant.cpp).
void quantize_row(const float* x, index_t K, XBlock* out);

// Q4_K's 6-bit scale and minimum of sub-block j (ggml's get_scale_min_k4).
inline void k4_scale_min(const std::uint8_t* s, int j, int& sc, int& mn) {
  if (j < 4) {
    sc = s[j] & 63;
    mn = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

struct QuantRows {
  const float* x;        // f32 rows (F16/BF16 weights)
  index_t ldx;
  const XBlock* xq;      // quantised rows, row m at xq + m * xq_ld (quantised weight types)
  index_t xq_ld;
  // The same rows' scales gathered per pass of kMaxRowsPerPass rows (m0 = 8p) and block b, at
  // xs + (p * nb + b) * 32: d of rows m0..m0+7, then s, then sum16[0], sum16[1] (as floats;
  // zeros past M). The kernels for several rows scale all rows' dot products at once with them.
  const float* xs;
  index_t M, K;
  const std::uint8_t* w; // row n at w + n * row_bytes
  index_t row_bytes;
  QuantType type;
  float* y;
  index_t ldy;
  bool accumulate;
};

// Rows m < 8 of x (the small-M kernels hold this many accumulators) at a time.
constexpr index_t kMaxRowsPerPass = 8;

#define ENGINE_QUANT_KERNELS(ns)                                                          \
  namespace ns {                                                                          \
  void matmul_rows(const QuantRows& a, index_t n0, index_t n1);                           \
  void dequantize_rows(const std::uint8_t* w, QuantType t, index_t K, index_t rows, float* out); \
  }
ENGINE_QUANT_KERNELS(quant_avx512vnni)
ENGINE_QUANT_KERNELS(quant_avx2)
ENGINE_QUANT_KERNELS(quant_portable)
#undef ENGINE_QUANT_KERNELS

}  // namespace engine
