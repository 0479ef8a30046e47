// Where: out = cond ? x : y with three-way broadcasting, for any element size (the bytes are
// moved, never interpreted, as unsigned integers). The select is a bit mask, not a branch:
// random conditions would mispredict, and a masked blend vectorises. Rows whose strides are
// all 0 or 1 use a loop specialised on them.
#include <cstdint>
#include <cstring>

#include "engine/math.h"

namespace engine {
namespace {

template <class T>
inline T select(std::uint8_t c, T x, T y) {
  const T m = static_cast<T>(T(0) - T(c != 0));  // all ones where c
  return static_cast<T>((x & m) | (y & static_cast<T>(~m)));
}

template <class T, bool SC, bool SX, bool SY>
void where_unit(T* o, const std::uint8_t* c, const T* x, const T* y, index_t n) {
  for (index_t i = 0; i < n; ++i) o[i] = select(c[SC ? i : 0], x[SX ? i : 0], y[SY ? i : 0]);
}

template <class T>
void where_row(T* o, const std::uint8_t* c, index_t sc, const T* x, index_t sx, const T* y, index_t sy, index_t n) {
  if ((sc | sx | sy) & ~index_t(1)) {  // a stride other than 0 or 1
    for (index_t i = 0; i < n; ++i) o[i] = select(c[i * sc], x[i * sx], y[i * sy]);
    return;
  }
  switch ((sc << 2) | (sx << 1) | sy) {
    case 0: return where_unit<T, false, false, false>(o, c, x, y, n);
    case 1: return where_unit<T, false, false, true>(o, c, x, y, n);
    case 2: return where_unit<T, false, true, false>(o, c, x, y, n);
    case 3: return where_unit<T, false, true, true>(o, c, x, y, n);
    case 4: return where_unit<T, true, false, false>(o, c, x, y, n);
    case 5: return where_unit<T, true, false, true>(o, c, x, y, n);
    case 6: return where_unit<T, true, true, false>(o, c, x, y, n);
    default: return where_unit<T, true, true, true>(o, c, x, y, n);
  }
}

template <class T>
void where_typed(const Broadcast& b, void* out, const std::uint8_t* c, const void* x, const void* y) {
  T* o = static_cast<T*>(out);
  const T* xp = static_cast<const T*>(x);
  const T* yp = static_cast<const T*>(y);
  const index_t sc = b.strides[0][0], sx = b.strides[1][0], sy = b.strides[2][0];
  for_each_row(b, 1 << 16, [&](index_t oo, const index_t* in, index_t n) {
    where_row(o + oo, c + in[0], sc, xp + in[1], sx, yp + in[2], sy, n);
  });
}

}  // namespace

void where(size_t elem, const Broadcast& b, void* out, const void* cond, const void* x, const void* y) {
  const auto* c = static_cast<const std::uint8_t*>(cond);
  switch (elem) {
    case 1: return where_typed<std::uint8_t>(b, out, c, x, y);
    case 2: return where_typed<std::uint16_t>(b, out, c, x, y);
    case 4: return where_typed<std::uint32_t>(b, out, c, x, y);
    case 8: return where_typed<std::uint64_t>(b, out, c, x, y);
    default: throw Error("where: element size must be 1, 2, 4 or 8 bytes");
  }
}

}  // namespace engine
