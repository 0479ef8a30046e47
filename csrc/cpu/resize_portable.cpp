// Resize passes compiled for portable; see resize_impl.h.
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
namespace rs_portable {
#define RS_ALL_TYPES 1
#include "cpu/resize_impl.h"
}  // namespace rs_portable
}  // namespace engine
