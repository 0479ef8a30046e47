// Einsum kernels compiled for portable; see einsum_impl.h.
#include <algorithm>
#include <cstdint>

#include "engine/einsum.h"
#include "engine/threadpool.h"

namespace engine {
namespace es_portable {
#include "cpu/einsum_impl.h"
}  // namespace es_portable
}  // namespace engine
