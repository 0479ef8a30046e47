// Internal to the resize kernels: the float16 type (conversions in engine/half.h), and what each
// ISA's build of resize_impl.h exports (resize.cpp dispatches on cpu_isa()).
#pragma once

#include <cstdint>
#include <cstring>

#include "engine/dtype.h"
#include "engine/half.h"
#include "engine/resize.h"

namespace engine {

// IEEE binary16 bits: a distinct type so that templates tell it from uint16.
struct Half {
  std::uint16_t bits;
};

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
  }
RESIZE_DECLARE(rs_avx512)
RESIZE_DECLARE(rs_avx2)
RESIZE_DECLARE(rs_portable)
#undef RESIZE_DECLARE

}  // namespace engine
