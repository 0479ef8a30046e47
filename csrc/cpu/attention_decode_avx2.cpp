// The decode attention block compiled for avx2 (vector width 8 floats); see attention_decode_impl.h.
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
namespace att_decode_avx2 {
#define EW_W 8
#include "cpu/elementwise_vmath.h"
#include "cpu/attention_decode_impl.h"
#undef EW_W
}  // namespace att_decode_avx2
}  // namespace engine
