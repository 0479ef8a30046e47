// Einsum kernels compiled for avx512; see einsum_impl.h.
#include <algorithm>
#include <cstdint>

#include "engine/einsum.h"
#include "engine/threadpool.h"

namespace engine {
namespace es_avx512 {
#include "cpu/einsum_impl.h"
}  // namespace es_avx512
}  // namespace engine
