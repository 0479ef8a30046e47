// Backward loops compiled for avx512 (vector width 16 floats); see grad_kernels.h.
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
namespace grad_avx512 {
#define EW_W 16
#include "cpu/elementwise_vmath.h"
#include "cpu/grad_act_impl.h"
#include "cpu/grad_rows_impl.h"
#include "cpu/grad_spatial_impl.h"
#undef EW_W

}  // namespace grad_avx512
}  // namespace engine
