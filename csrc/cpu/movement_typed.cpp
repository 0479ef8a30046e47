// Picks the movement family's typed loops for the current ISA (see movement_typed.h).
#include "cpu/movement_typed.h"

#include "engine/cpu_features.h"
#include "engine/movement.h"

namespace engine {

ReduceRowFn reduce_row_fn(DType type, Reduction op) {
  switch (cpu_isa()) {
    case Isa::Avx512: return mt_avx512::reduce_row(type, op);
    case Isa::Avx2: return mt_avx2::reduce_row(type, op);
    default: return mt_portable::reduce_row(type, op);
  }
}

bool scatter_supports(DType type, Reduction op) {
  return op == Reduction::None ? dtype_size(type) > 0 : mt_portable::reduce_row(type, op) != nullptr;
}

bool range_supports(DType type) {
  switch (type) {
    case DType::F32: case DType::F64: case DType::F16: case DType::I16: case DType::I32: case DType::I64:
      return true;
    default:
      return false;
  }
}

void range(void* y, DType type, const void* start, const void* delta, index_t n, bool stash_double) {
  bool ok;
  switch (cpu_isa()) {
    case Isa::Avx512: ok = mt_avx512::range(y, type, start, delta, n, stash_double); break;
    case Isa::Avx2: ok = mt_avx2::range(y, type, start, delta, n, stash_double); break;
    default: ok = mt_portable::range(y, type, start, delta, n, stash_double);
  }
  ENGINE_CHECK(ok, std::string("range: unsupported element type ") + dtype_name(type));
}

}  // namespace engine
