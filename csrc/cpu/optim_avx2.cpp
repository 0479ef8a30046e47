// Optimizer loops compiled for avx2 (vector width 8 floats); see optim_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/optim_kernels.h"

namespace engine {
namespace optim_avx2 {
#define EW_W 8
#include "cpu/optim_impl.h"
#undef EW_W
}  // namespace optim_avx2
}  // namespace engine
