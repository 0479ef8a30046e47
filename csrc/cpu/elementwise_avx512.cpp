// Elementwise kernels compiled for avx512 (vector width 16 floats); see elementwise_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "engine/elementwise.h"

namespace engine {
namespace ew_avx512 {
#define EW_W 16
#include "cpu/elementwise_impl.h"
#undef EW_W
}  // namespace ew_avx512
}  // namespace engine
