// Movement-family arithmetic compiled for portable; see movement_typed_impl.h.
#include <cstdint>

#include "cpu/movement_typed.h"

namespace engine {
namespace mt_portable {
#include "cpu/movement_typed_impl.h"
}  // namespace mt_portable
}  // namespace engine
