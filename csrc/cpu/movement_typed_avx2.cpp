// Movement-family arithmetic compiled for avx2; see movement_typed_impl.h.
#include <cstdint>

#include "cpu/movement_typed.h"

namespace engine {
namespace mt_avx2 {
#include "cpu/movement_typed_impl.h"
}  // namespace mt_avx2
}  // namespace engine
