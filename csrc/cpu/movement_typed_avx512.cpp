// Movement-family arithmetic compiled for avx512; see movement_typed_impl.h.
#include <cstdint>

#include "cpu/movement_typed.h"

namespace engine {
namespace mt_avx512 {
#include "cpu/movement_typed_impl.h"
}  // namespace mt_avx512
}  // namespace engine
