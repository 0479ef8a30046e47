// The decode attention block compiled for avx512 (vector width 16 floats); see attention_decode_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/attention_decode.h"
#include "engine/scratch.h"

namespace engine {
namespace att_decode_avx512 {
#define EW_W 16
#include "cpu/elementwise_vmath.h"
#include "cpu/attention_decode_impl.h"
#undef EW_W
}  // namespace att_decode_avx512
}  // namespace engine
