// Elementwise kernels compiled for avx2 (vector width 8 floats); see elementwise_impl.h.
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
namespace ew_avx2 {
#define EW_W 8
#include "cpu/elementwise_impl.h"
#undef EW_W
}  // namespace ew_avx2
}  // namespace engine
