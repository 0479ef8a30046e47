// Internal to the resize kernels: the float16 type, scalar float16 conversions, and what each
// ISA's build of resize_impl.h exports (resize.cpp dispatches on cpu_isa()).
#pragma once

#include <cstdint>
#include <cstring>

#include "engine/dtype.h"
#include "engine/resize.h"

namespace engine {

// IEEE binary16 bits: a distinct type so that templates tell it from uint16.
struct Half {
  std::uint16_t bits;
};

// Scalar conversions, exact (round to nearest even), for CPUs without F16C and loop tails.
// After F. Giesen's float_to_half_fast3_rtne / half_to_float_fast5.
inline float half_bits_to_float(std::uint16_t h) {
  auto as_float = [](std::uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; };
  auto as_bits = [](float f) { std::uint32_t u; std::memcpy(&u, &f, 4); return u; };
  const std::uint32_t shifted_exp = 0x7c00u << 13;
  std::uint32_t o = (h & 0x7fffu) << 13;
  const std::uint32_t exp = shifted_exp & o;
  o += (127u - 15u) << 23;
  if (exp == shifted_exp) {
    o += (128u - 16u) << 23;  // inf / NaN
  } else if (exp == 0) {      // zero / subnormal: renormalise through a float subtraction
    o += 1u << 23;
    o = as_bits(as_float(o) - as_float(113u << 23));
  }
  return as_float(o | (static_cast<std::uint32_t>(h & 0x8000u) << 16));
}

inline std::uint16_t float_to_half_bits(float v) {
  auto as_float = [](std::uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; };
  auto as_bits = [](float f) { std::uint32_t u; std::memcpy(&u, &f, 4); return u; };
  std::uint32_t f = as_bits(v);
  const std::uint32_t sign = f & 0x80000000u;
  f ^= sign;
  std::uint16_t o;
  if (f >= (127u + 16u) << 23) {  // overflow to inf, or inf / NaN (quiet)
    o = f > (255u << 23) ? 0x7e00 : 0x7c00;
  } else if (f < (113u << 23)) {  // subnormal or zero: let a float addition round
    const float magic = as_float(((127u - 15u) + (23u - 10u) + 1u) << 23);
    o = static_cast<std::uint16_t>(as_bits(as_float(f) + magic) - as_bits(magic));
  } else {
    const std::uint32_t mant_odd = (f >> 13) & 1u;
    f += ((15u - 127u) << 23) + 0xfffu;  // rebias (wraps as intended) and round half up...
    f += mant_odd;                        // ...or to even
    o = static_cast<std::uint16_t>(f >> 13);
  }
  return static_cast<std::uint16_t>(o | (sign >> 16));
}

// The 2-D pass keeps h.taps resampled rows of at most kResizeRing / h.taps columns each.
constexpr index_t kResizeRing = 8192;
constexpr index_t kResizeMaxTaps2D = kResizeRing / 16;

// One ISA's build of resize_impl.h. axis_rows: rows [r0, r1) of the pass's row space (outer
// when inner == 1, each row a whole output line; outer·out_len otherwise). plane_2d: output
// rows [j0, j1) and columns [q0, q1) of plane o (h.taps <= kResizeMaxTaps2D, q1 - q0 <= kResizeRing / h.taps).
#define RESIZE_DECLARE(ns)                                                                      \
  namespace ns {                                                                                \
  bool axis_rows(void* y, DType ty, const void* x, DType tx, DType elem, const ResizeAxis& a,   \
                 index_t r0, index_t r1);                                                       \
  bool plane_2d(void* y, const void* x, DType elem, const ResizeAxis& h, const ResizeAxis& w,   \
                index_t o, index_t q0, index_t q1, index_t j0, index_t j1);                     \
  void f16_to_f32(float* y, const std::uint16_t* x, index_t n);                                 \
  void f32_to_f16(std::uint16_t* y, const float* x, index_t n);                                 \
  }
RESIZE_DECLARE(rs_avx512)
RESIZE_DECLARE(rs_avx2)
RESIZE_DECLARE(rs_portable)
#undef RESIZE_DECLARE

}  // namespace engine
