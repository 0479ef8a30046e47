// Elementwise kernels compiled for portable (vector width 4 floats); see elementwise_impl.h.
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
namespace ew_portable {
#define EW_W 4
#include "cpu/elementwise_impl.h"
#undef EW_W
}  // namespace ew_portable
}  // namespace engine
