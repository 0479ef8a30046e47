// Backward loops compiled for portable (vector width 4 floats); see grad_kernels.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/grad_kernels.h"
#include "engine/grad.h"

namespace engine {
namespace grad_portable {
#define EW_W 4
#include "cpu/elementwise_vmath.h"
#include "cpu/grad_act_impl.h"
#include "cpu/grad_rows_impl.h"
#include "cpu/grad_spatial_impl.h"
#undef EW_W

}  // namespace grad_portable
}  // namespace engine
