// The attention backward tile compiled for portable (vector width 4 floats); see attention_grad_impl.h.
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
#include "cpu/attention_grad.h"
#include "engine/scratch.h"

namespace engine {
namespace att_grad_portable {
#define EW_W 4
#include "cpu/elementwise_vmath.h"
#include "cpu/attention_grad_impl.h"
#undef EW_W
}  // namespace att_grad_portable
}  // namespace engine
