// Reduction primitives for float32 / float64 compiled for avx2; see reduce_impl.h.
#include <cmath>
#include <limits>
#include <type_traits>

#include "cpu/reduce_kernels.h"

namespace engine {
namespace rd {
namespace avx2 {
#define RD_COL_BYTES 256  // 4 AVX-512 / 8 AVX2 registers
#include "cpu/reduce_impl.h"
#undef RD_COL_BYTES

Prims<float> prims_f32() { return prims_of<float>(); }
Prims<double> prims_f64() { return prims_of<double>(); }
}  // namespace avx2
}  // namespace rd
}  // namespace engine
