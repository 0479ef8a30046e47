// Elementwise kernels compiled for avx512 (vector width 16 floats); see elementwise_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
// GCC 12 flags _mm512_undefined_ps() (inside _mm512_max_ps & co.) as uninitialised.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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
