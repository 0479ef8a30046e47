// Optimizer loops compiled for portable (vector width 4 floats); see optim_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/optim_kernels.h"

namespace engine {
namespace optim_portable {
#define EW_W 4
#include "cpu/optim_impl.h"
#undef EW_W
}  // namespace optim_portable
}  // namespace engine
