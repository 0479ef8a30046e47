// Attention's small products compiled for avx2; see attention_loops.h.
#include <algorithm>

#include "engine/common.h"

namespace engine {
namespace att_avx2 {
#include "cpu/attention_loops.h"
}  // namespace att_avx2
}  // namespace engine
