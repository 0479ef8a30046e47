// Element types. The numbers are ONNX's TensorProto.DataType codes, which the Python side
// (engine/dtypes.py) uses too, so a type read from a file reaches a kernel unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace engine {

enum class DType : int {
  Any = 0,  // kernels that only move bytes (copies, gathers): registered once for every type
  F32 = 1,
  U8 = 2,
  I8 = 3,
  U16 = 4,
  I16 = 5,
  I32 = 6,
  I64 = 7,
  Bool = 9,
  F16 = 10,
  F64 = 11,
  U32 = 12,
  U64 = 13,
  BF16 = 16,
};

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::U8: case DType::I8: case DType::Bool: return 1;
    case DType::U16: case DType::I16: case DType::F16: case DType::BF16: return 2;
    case DType::F32: case DType::I32: case DType::U32: return 4;
    case DType::F64: case DType::I64: case DType::U64: return 8;
    default: return 0;
  }
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Any: return "any";
    case DType::F32: return "float32";
    case DType::U8: return "uint8";
    case DType::I8: return "int8";
    case DType::U16: return "uint16";
    case DType::I16: return "int16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::Bool: return "bool";
    case DType::F16: return "float16";
    case DType::F64: return "float64";
    case DType::U32: return "uint32";
    case DType::U64: return "uint64";
    case DType::BF16: return "bfloat16";
  }
  return "?";
}

inline bool dtype_valid(int code) { return code != 0 && dtype_size(static_cast<DType>(code)) != 0; }

}  // namespace engine
