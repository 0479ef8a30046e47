// Argument checks shared by the binding files: every array handed to a kernel is checked
// for dtype, contiguity, writability and size here, before any kernel touches memory.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "engine/common.h"
#include "engine/dtype.h"

namespace engine::bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// By value, not identity: an array that went through pickle or a multiprocessing queue has
// an equal but distinct dtype object. Native byte order only ('=', or '<' spelled out).
inline bool is_f32(const py::array& a) {
  const py::dtype dt = a.dtype();
  const char order = dt.byteorder();
  constexpr char kNative = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '<' : '>';
  return dt.kind() == 'f' && dt.itemsize() == 4 && (order == '=' || order == '|' || order == kNative);
}

// The engine type of a native-byte-order numpy array (DType::Any for anything else).
inline DType array_dtype(const py::array& a) {
  const py::dtype dt = a.dtype();
  const char order = dt.byteorder();
  constexpr char kNative = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '<' : '>';
  if (!(order == '=' || order == '|' || order == kNative)) return DType::Any;
  const auto n = dt.itemsize();
  switch (dt.kind()) {
    case 'f': return n == 4 ? DType::F32 : n == 8 ? DType::F64 : n == 2 ? DType::F16 : DType::Any;
    case 'i': return n == 1 ? DType::I8 : n == 2 ? DType::I16 : n == 4 ? DType::I32 : n == 8 ? DType::I64 : DType::Any;
    case 'u': return n == 1 ? DType::U8 : n == 2 ? DType::U16 : n == 4 ? DType::U32 : n == 8 ? DType::U64 : DType::Any;
    case 'b': return n == 1 ? DType::Bool : DType::Any;
    default: return DType::Any;
  }
}

// A C-contiguous array of exactly `want` (by value, native byte order).
inline void check_typed(const py::array& a, DType want, const char* name) {
  if (array_dtype(a) != want)
    throw Error(std::string(name) + ": expected a " + dtype_name(want) + " array, got " +
                std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw Error(std::string(name) + ": expected a C-contiguous array (use np.ascontiguousarray)");
}

inline void check_f32(const py::array& a, const char* name) {
  if (!is_f32(a))
    throw Error(std::string(name) + ": expected a float32 array, got " +
                std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw Error(std::string(name) + ": expected a C-contiguous array (use np.ascontiguousarray)");
}

inline const float* in_ptr(const py::array& a, const char* name) {
  check_f32(a, name);
  return static_cast<const float*>(a.data());
}

inline float* out_ptr(py::array& a, const char* name) {
  check_f32(a, name);
  if (!a.writeable()) throw Error(std::string(name) + ": array is read-only");
  return static_cast<float*>(a.mutable_data());
}

inline void check_size(const py::array& a, index_t expected, const char* name) {
  if (static_cast<index_t>(a.size()) != expected)
    throw Error(std::string(name) + ": expected " + std::to_string(expected) +
                " elements, got " + std::to_string(a.size()) + " (shape " + shape_str(a) + ")");
}

inline void check_shape(const py::array& a, const std::vector<index_t>& expected, const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(expected.size());
  for (size_t i = 0; ok && i < expected.size(); ++i) ok = a.shape(i) == expected[i];
  if (!ok) {
    std::string e = "(";
    for (size_t i = 0; i < expected.size(); ++i) e += (i ? ", " : "") + std::to_string(expected[i]);
    throw Error(std::string(name) + ": expected shape " + e + (expected.size() == 1 ? ",)" : ")") +
                ", got " + shape_str(a));
  }
}

}  // namespace engine::bind
