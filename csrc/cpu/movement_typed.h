// The arithmetic of the movement family (scatter reductions, Range), written once in
// movement_typed_impl.h and compiled per ISA (movement_typed_{avx512,avx2,portable}.cpp):
// float16 is computed in float32 and rounded back, with F16C where the ISA has it.
#pragma once

#include "engine/common.h"
#include "engine/dtype.h"
#include "engine/gather.h"

namespace engine {

// dst[i] = op(dst[i], src[i]) for i < n, elements of one type.
using ReduceRowFn = void (*)(void* dst, const void* src, index_t n);

#define ENGINE_MOVEMENT_TYPED_API(ns)                                                         \
  namespace ns {                                                                            \
  ReduceRowFn reduce_row(DType type, Reduction op);                                         \
  bool range(void* y, DType type, const void* start, const void* delta, index_t n, bool stash_double); \
  }
ENGINE_MOVEMENT_TYPED_API(mt_avx512)
ENGINE_MOVEMENT_TYPED_API(mt_avx2)
ENGINE_MOVEMENT_TYPED_API(mt_portable)
#undef ENGINE_MOVEMENT_TYPED_API

// The current ISA's reduction for (type, op); null if the type cannot be reduced that way.
ReduceRowFn reduce_row_fn(DType type, Reduction op);

}  // namespace engine
