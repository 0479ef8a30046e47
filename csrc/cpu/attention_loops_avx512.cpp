// Attention's small products compiled for avx512; see attention_loops.h.
#include <algorithm>

#include "engine/common.h"

namespace engine {
namespace att_avx512 {
#include "cpu/attention_loops.h"
}  // namespace att_avx512
}  // namespace engine
