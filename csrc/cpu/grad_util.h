// Work splitting shared by the backward drivers (grad_*.cpp).
#pragma once

#include <algorithm>
#include <string>

#include "engine/common.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {
namespace gradu {

inline std::string str(index_t v) { return std::to_string(v); }

// f(i0, i1) over [0, n) in pieces starting on 16-element (64-byte) boundaries; n <= grain
// runs on the caller.
template <class F>
void split_elems(index_t n, index_t grain, F&& f) {
  constexpr index_t kBlock = 16;
  if (n <= grain) return f(index_t(0), n);
  const index_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(blocks, std::max<index_t>(1, grain / kBlock), [&](index_t b0, index_t b1) {
    f(b0 * kBlock, std::min(n, b1 * kBlock));
  });
}

// Row chunks whose size depends on the shape only: f(chunk, r0, r1) for every chunk, over the
// pool when the total is big enough. Reductions keep one partial per chunk and add the
// partials in order afterwards, so their result does not depend on the thread count.
struct Chunks {
  index_t rows, size, count;
  Chunks(index_t rows_, index_t row_elems, index_t target_elems = 1 << 14)
      : rows(rows_), size(std::max<index_t>(1, target_elems / std::max<index_t>(row_elems, 1))) {
    count = rows == 0 ? 0 : (rows + size - 1) / size;
  }
  template <class F>
  void run(index_t row_elems, F&& f) const {
    auto task = [&](index_t c0, index_t c1) {
      for (index_t c = c0; c < c1; ++c) f(c, c * size, std::min(rows, (c + 1) * size));
    };
    constexpr index_t kInline = 1 << 15;  // elements below which threads cost more than they save
    if (rows * row_elems <= kInline) return task(0, count);
    parallel_for(count, std::max<index_t>(1, kInline / std::max<index_t>(size * row_elems, 1)), task);
  }
};

// The calling thread's scratch for per-chunk partials (tags beyond scratch.h's, private to
// the backward kernels; each held only for the duration of one kernel call).
enum : int { kTagPartials = 1001, kTagPartials2, kTagCols, kTagStats };

}  // namespace gradu
}  // namespace engine
