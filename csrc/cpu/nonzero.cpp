#include "engine/nonzero.h"

#include <cstdint>
#include <cstring>

namespace engine {
namespace {

template <class T>
bool nz(const void* x, index_t i) {
  return static_cast<const T*>(x)[i] != T(0);
}

bool nz_f16(const void* x, index_t i) {  // any bits but the sign bit
  return (static_cast<const std::uint16_t*>(x)[i] & 0x7fff) != 0;
}

using Pred = bool (*)(const void*, index_t);

Pred pred_for(DType t) {
  switch (t) {
    case DType::F32: return nz<float>;
    case DType::F64: return nz<double>;
    case DType::F16: case DType::BF16: return nz_f16;
    case DType::I8: return nz<std::int8_t>;
    case DType::U8: case DType::Bool: return nz<std::uint8_t>;
    case DType::I16: return nz<std::int16_t>;
    case DType::U16: return nz<std::uint16_t>;
    case DType::I32: return nz<std::int32_t>;
    case DType::U32: return nz<std::uint32_t>;
    case DType::I64: return nz<std::int64_t>;
    case DType::U64: return nz<std::uint64_t>;
    default: throw Error(std::string("NonZero: unsupported element type ") + dtype_name(t));
  }
}

}  // namespace

index_t nonzero_count(const void* x, index_t n, DType t) {
  const Pred p = pred_for(t);
  index_t c = 0;
  for (index_t i = 0; i < n; ++i) c += p(x, i);
  return c;
}

void nonzero_indices(std::int64_t* out, index_t count, const void* x, const index_t* shape, int ndim, DType t) {
  const Pred p = pred_for(t);
  index_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  index_t k = 0;
  for (index_t i = 0; i < n && k < count; ++i) {
    if (!p(x, i)) continue;
    index_t rem = i;
    for (int d = ndim - 1; d >= 0; --d) {
      out[d * count + k] = rem % shape[d];
      rem /= shape[d];
    }
    ++k;
  }
}

}  // namespace engine
