// float16 <-> float32 on the calling thread (ISA-dispatched, no pool): for kernels that
// convert one row at a time inside their own tasks. See reduce_half.cpp.
#pragma once

#include <cstdint>

#include "engine/common.h"

namespace engine {
namespace rd {

void f16_to_f32_serial(float* y, const std::uint16_t* x, index_t n);
void f32_to_f16_serial(std::uint16_t* y, const float* x, index_t n);

}  // namespace rd
}  // namespace engine
