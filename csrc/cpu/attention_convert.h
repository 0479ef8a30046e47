// Float-type conversions for the seq family (recurrent layers, attention, rotary embedding):
// float16 data is computed in float32 and rounded back to float16 (engine/half.h).
#pragma once

#include <cstdint>

#include "engine/common.h"
#include "engine/dtype.h"

namespace engine {
namespace seq {

// dst[i] = src[i] converted, for dst/src types F16, F32, F64 (any pair; the same type copies).
// Serial: callers split big arrays themselves.
void convert(void* dst, DType dst_type, const void* src, DType src_type, index_t n);

// convert() split over the thread pool when n is large.
void convert_parallel(void* dst, DType dst_type, const void* src, DType src_type, index_t n);

// Whether convert() handles the type.
inline bool is_float_type(DType t) { return t == DType::F16 || t == DType::F32 || t == DType::F64; }

}  // namespace seq
}  // namespace engine
