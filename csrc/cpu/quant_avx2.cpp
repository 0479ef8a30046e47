// quant_matmul's small-M kernels and dequantisation compiled for AVX2 (vpmaddubsw); see quant_impl.h.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/quant_kernels.h"
#include "engine/half.h"

namespace engine {
namespace quant_avx2 {
#define QUANT_SIMD 1
#include "cpu/quant_impl.h"
#undef QUANT_SIMD
}  // namespace quant_avx2
}  // namespace engine
