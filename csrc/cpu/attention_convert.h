// Float-type conversions for the seq family (recurrent layers, attention, rotary embedding):
// float16 data is computed in float32 and rounded back to float16 (round to nearest even).
// Vectorised with F16C where the ISA has it (attention_convert_avx2.cpp), a portable bit
// conversion otherwise.
#pragma once

#include <cstdint>

#include "engine/common.h"
#include "engine/dtype.h"

namespace engine {
namespace seq {

float half_to_float(std::uint16_t h);
std::uint16_t float_to_half(float f);

// dst[i] = src[i] converted, for dst/src types F16, F32, F64 (any pair; the same type copies).
// Serial: callers split big arrays themselves.
void convert(void* dst, DType dst_type, const void* src, DType src_type, index_t n);

// convert() split over the thread pool when n is large.
void convert_parallel(void* dst, DType dst_type, const void* src, DType src_type, index_t n);

// Whether convert() handles the type.
inline bool is_float_type(DType t) { return t == DType::F16 || t == DType::F32 || t == DType::F64; }

// F16C kernels (attention_convert_avx2.cpp), called only when cpu_isa() >= Avx2.
void half_to_float_f16c(float* dst, const std::uint16_t* src, index_t n);
void float_to_half_f16c(std::uint16_t* dst, const float* src, index_t n);

}  // namespace seq
}  // namespace engine
