// float32 math kernels compiled for portable (vector width 4 floats); see math_f32_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "engine/math.h"

namespace engine {
namespace mf_portable {
#define EW_W 4
#include "cpu/math_f32_impl.h"
#undef EW_W
}  // namespace mf_portable
}  // namespace engine
