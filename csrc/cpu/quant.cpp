// Block formats and the quant_matmul entry point (csrc/include/engine/quant.h).
// This first version holds the type table and the F32 path only; the quantized kernels
// (per ISA, in quant_*_avx512.cpp / _avx2.cpp / _portable.cpp) come next.
#include "engine/quant.h"

#include <cstring>
#include <string>

#include "engine/gemm.h"

namespace engine {

namespace {
struct TypeInfo {
  QuantType type;
  const char* name;
  index_t block, bytes;
};
constexpr TypeInfo kTypes[] = {
    {QuantType::F32, "F32", 1, 4},     {QuantType::F16, "F16", 1, 2},
    {QuantType::Q4_0, "Q4_0", 32, 18}, {QuantType::Q4_1, "Q4_1", 32, 20},
    {QuantType::Q8_0, "Q8_0", 32, 34}, {QuantType::Q4_K, "Q4_K", 256, 144},
    {QuantType::Q6_K, "Q6_K", 256, 210}, {QuantType::BF16, "BF16", 1, 2},
};

const TypeInfo& info(QuantType t) {
  for (const auto& i : kTypes)
    if (i.type == t) return i;
  throw Error("quant: unknown weight type id " + std::to_string(static_cast<int>(t)));
}
}  // namespace

bool quant_type_known(int t) {
  for (const auto& i : kTypes)
    if (static_cast<int>(i.type) == t) return true;
  return false;
}
const char* quant_type_name(QuantType t) { return info(t).name; }
index_t quant_block_size(QuantType t) { return info(t).block; }
index_t quant_block_bytes(QuantType t) { return info(t).bytes; }

index_t quant_row_bytes(QuantType t, index_t K) {
  const TypeInfo& i = info(t);
  ENGINE_CHECK(K > 0 && K % i.block == 0, std::string("quant: a row of ") + i.name + " holds a multiple of " +
                                              std::to_string(i.block) + " values, got K=" + std::to_string(K));
  return K / i.block * i.bytes;
}

void quant_matmul(const float* x, index_t ldx, index_t M, index_t K, const void* w, QuantType t, index_t N,
                  float* y, index_t ldy, bool accumulate) {
  quant_row_bytes(t, K);
  if (M == 0 || N == 0) return;
  if (t == QuantType::F32) {
    sgemm(false, true, M, N, K, 1.0f, x, ldx, static_cast<const float*>(w), K, accumulate ? 1.0f : 0.0f, y, ldy);
    return;
  }
  throw Error(std::string("quant_matmul: weight type ") + quant_type_name(t) + " is not implemented yet");
}

void quant_dequantize_rows(const void* w, QuantType t, index_t K, index_t n0, index_t n1, float* out) {
  const index_t row = quant_row_bytes(t, K);
  if (t == QuantType::F32) {
    std::memcpy(out, static_cast<const char*>(w) + n0 * row, static_cast<size_t>((n1 - n0) * row));
    return;
  }
  throw Error(std::string("quant_dequantize_rows: weight type ") + quant_type_name(t) + " is not implemented yet");
}

}  // namespace engine
