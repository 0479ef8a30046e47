// The flash attention block compiled for avx2 (vector width 8 floats); see attention_flash_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/attention_dropout.h"
#include "cpu/attention_flash.h"
#include "engine/scratch.h"

namespace engine {
namespace att_flash_avx2 {
#define EW_W 8
#include "cpu/elementwise_vmath.h"
#include "cpu/attention_flash_impl.h"
#undef EW_W
}  // namespace att_flash_avx2
}  // namespace engine
