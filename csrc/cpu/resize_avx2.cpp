// Resize passes compiled for avx2; see resize_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/resize_kernels.h"

namespace engine {
namespace rs_avx2 {
#include "cpu/resize_impl.h"
}  // namespace rs_avx2
}  // namespace engine
