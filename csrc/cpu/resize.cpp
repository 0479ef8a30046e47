// Resize kernels: the nearest gather (any type) and the dispatch and threading of the
// separable pass (resize_impl.h, compiled per ISA). Nothing here allocates.
#include "engine/resize.h"

#include <algorithm>
#include <cstring>

#include "cpu/resize_kernels.h"
#include "engine/cpu_features.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr index_t kGrain = 1 << 15;  // element-taps below which work stays on the caller
constexpr int kMaxDims = 16;

// One output line of the nearest gather: out_len blocks of `block` elements.
template <class U>
void gather_line(U* y, const U* x, const std::int64_t* tab, index_t n, const U* fill) {
  for (index_t j = 0; j < n; ++j) y[j] = tab[j] >= 0 ? x[tab[j]] : *fill;
}

void nearest_line(char* y, const char* x, const std::int64_t* tab, index_t n, index_t block, size_t elem,
                  const char* fill) {
  if (block == 1) {
    switch (elem) {
      case 1: return gather_line(reinterpret_cast<std::uint8_t*>(y), reinterpret_cast<const std::uint8_t*>(x), tab, n,
                                 reinterpret_cast<const std::uint8_t*>(fill));
      case 2: return gather_line(reinterpret_cast<std::uint16_t*>(y), reinterpret_cast<const std::uint16_t*>(x), tab,
                                 n, reinterpret_cast<const std::uint16_t*>(fill));
      case 4: return gather_line(reinterpret_cast<std::uint32_t*>(y), reinterpret_cast<const std::uint32_t*>(x), tab,
                                 n, reinterpret_cast<const std::uint32_t*>(fill));
      case 8: return gather_line(reinterpret_cast<std::uint64_t*>(y), reinterpret_cast<const std::uint64_t*>(x), tab,
                                 n, reinterpret_cast<const std::uint64_t*>(fill));
      default: break;
    }
  }
  const size_t bytes = static_cast<size_t>(block) * elem;
  for (index_t j = 0; j < n; ++j) {
    char* d = y + j * bytes;
    if (tab[j] >= 0) {
      std::memcpy(d, x + tab[j] * static_cast<index_t>(elem), bytes);
    } else {
      for (index_t b = 0; b < block; ++b) std::memcpy(d + b * elem, fill, elem);
    }
  }
}

void fill_line(char* y, index_t count, size_t elem, const char* fill) {
  for (index_t k = 0; k < count; ++k) std::memcpy(y + k * elem, fill, elem);
}

}  // namespace

void resize_nearest(void* y, const void* x, const void* fill, const std::int64_t* const* tables,
                    const index_t* out_shape, int nd, index_t block, size_t elem) {
  if (nd <= 0 || nd > kMaxDims) return;
  const index_t len = out_shape[nd - 1];
  index_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= out_shape[d];
  if (rows == 0 || len == 0 || block == 0) return;
  const index_t line_bytes = len * block * static_cast<index_t>(elem);
  auto run = [&](index_t r0, index_t r1) {
    index_t pos[kMaxDims] = {0};
    for (index_t r = r0, d = nd - 2; d >= 0; --d) {  // the first row's index
      pos[d] = r % out_shape[d];
      r /= out_shape[d];
    }
    std::int64_t prev_base = -1;
    for (index_t r = r0; r < r1; ++r) {
      std::int64_t base = 0;
      bool outside = false;
      for (int d = 0; d < nd - 1; ++d) {
        const std::int64_t off = tables[d][pos[d]];
        outside |= off < 0;
        base += off;
      }
      char* dst = static_cast<char*>(y) + r * line_bytes;
      if (!outside && base == prev_base)  // upsampling repeats lines: copy the one just written
        std::memcpy(dst, dst - line_bytes, static_cast<size_t>(line_bytes));
      else if (outside)
        fill_line(dst, len * block, elem, static_cast<const char*>(fill));
      else
        nearest_line(dst, static_cast<const char*>(x) + base * static_cast<index_t>(elem), tables[nd - 1], len,
                     block, elem, static_cast<const char*>(fill));
      prev_base = outside ? -1 : base;
      for (int d = nd - 2; d >= 0; --d) {  // next row
        if (++pos[d] < out_shape[d]) break;
        pos[d] = 0;
      }
    }
  };
  const index_t per_row = len * block;
  if (rows * per_row <= kGrain) return run(0, rows);
  parallel_for(rows, std::max<index_t>(1, kGrain / per_row), run);
}

bool resize_axis_supports(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::F64: case DType::I8: case DType::U8: case DType::I16:
    case DType::U16: case DType::I32: case DType::U32: case DType::I64: case DType::U64:
      return true;
    default:
      return false;
  }
}

void resize_axis(void* y, DType ty, const void* x, DType tx, DType elem, const ResizeAxis& a) {
  const bool last = a.inner == 1;
  const index_t rows = last ? a.outer : a.outer * a.out_len;
  const index_t per_row = (last ? a.out_len : a.inner) * a.taps;
  if (rows == 0 || a.out_len == 0 || a.inner == 0) return;
  auto fn = rs_portable::axis_rows;
  if (elem == DType::F32 || elem == DType::F16) {
    const Isa isa = cpu_isa();
    if (isa == Isa::Avx512) fn = rs_avx512::axis_rows;
    else if (isa == Isa::Avx2) fn = rs_avx2::axis_rows;
  }
  if (rows * per_row <= kGrain) {
    fn(y, ty, x, tx, elem, a, 0, rows);
    return;
  }
  parallel_for(rows, std::max<index_t>(1, kGrain / std::max<index_t>(per_row, 1)),
               [&](index_t r0, index_t r1) { fn(y, ty, x, tx, elem, a, r0, r1); });
}

index_t resize_2d_max_taps() { return kResizeMaxTaps2D; }

void resize_2d(void* y, const void* x, DType elem, const ResizeAxis& h, const ResizeAxis& w) {
  const index_t outer = h.outer, OH = h.out_len, OW = w.out_len;
  if (outer == 0 || OH == 0 || OW == 0) return;
  auto fn = rs_portable::plane_2d;
  if (elem == DType::F32 || elem == DType::F16) {
    const Isa isa = cpu_isa();
    if (isa == Isa::Avx512) fn = rs_avx512::plane_2d;
    else if (isa == Isa::Avx2) fn = rs_avx2::plane_2d;
  }
  // Tasks: planes x column strips x row blocks; row blocks only when there are too few
  // planes and strips to share (each block re-resamples up to h.taps source rows).
  const index_t sw = std::min(OW, std::max<index_t>(16, kResizeRing / h.taps));
  const index_t strips = (OW + sw - 1) / sw;
  const index_t work = outer * OH * OW * (h.taps + w.taps);
  const index_t want = work <= kGrain ? 1 : std::min<index_t>(4 * num_threads(), work / kGrain);
  const index_t blocks = std::max<index_t>(1, std::min(OH, (want + outer * strips - 1) / (outer * strips)));
  const index_t rb = (OH + blocks - 1) / blocks;
  auto run = [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t o = t / (strips * blocks), s = t / blocks % strips, b = t % blocks;
      const index_t q0 = s * sw, j0 = b * rb;
      fn(y, x, elem, h, w, o, q0, std::min(OW, q0 + sw), j0, std::min(OH, j0 + rb));
    }
  };
  const index_t tasks = outer * strips * blocks;
  if (work <= kGrain || tasks == 1) return run(0, tasks);
  parallel_for(tasks, 1, run);
}

}  // namespace engine
