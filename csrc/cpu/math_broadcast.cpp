// Broadcast iteration shared by the typed binary ops and Where (see engine/math.h): dims are
// collapsed once at plan time; at run time the output is walked row by row (the innermost
// collapsed dim) with an odometer over the outer dims, split over the pool when large.
#include <algorithm>

#include "engine/math.h"

namespace engine {

Broadcast make_broadcast(int nin, int ndim, const index_t* shape, const index_t* const* strides) {
  ENGINE_CHECK(nin >= 1 && nin <= 3, "broadcast: 1 to 3 inputs");
  ENGINE_CHECK(ndim >= 0, "broadcast: negative rank");
  Broadcast b;
  b.nin = nin;
  b.total = 1;
  for (int d = 0; d < ndim; ++d) {
    ENGINE_CHECK(shape[d] >= 0, "broadcast: negative dimension");
    b.total *= shape[d];
  }
  for (int d = ndim - 1; d >= 0; --d) {
    const index_t s = shape[d];
    if (s == 1) continue;
    bool merge = b.nd > 0;
    for (int k = 0; k < nin && merge; ++k)
      merge = strides[k][d] == b.strides[k][b.nd - 1] * b.shape[b.nd - 1];
    if (merge) {
      b.shape[b.nd - 1] *= s;
      continue;
    }
    ENGINE_CHECK(b.nd < Broadcast::kMaxDims, "broadcast: too many non-mergeable dims (max 16)");
    b.shape[b.nd] = s;
    for (int k = 0; k < nin; ++k) b.strides[k][b.nd] = strides[k][d];
    ++b.nd;
  }
  return b;
}

void for_each_row(const Broadcast& b, index_t grain, FunctionRef<void(index_t, const index_t*, index_t)> row) {
  if (b.total == 0) return;
  index_t zero[3] = {0, 0, 0};
  if (b.nd == 0) return row(0, zero, 1);
  const int nin = b.nin, nd = b.nd;
  const index_t len = b.shape[0], rows = b.total / len;
  // Offsets of row r's first element, one per input.
  auto offsets = [&](index_t r, index_t* off, index_t* idx) {
    for (int k = 0; k < nin; ++k) off[k] = 0;
    for (int d = 1; d < nd; ++d) {
      idx[d] = r % b.shape[d];
      r /= b.shape[d];
      for (int k = 0; k < nin; ++k) off[k] += idx[d] * b.strides[k][d];
    }
  };
  auto run_rows = [&](index_t r0, index_t r1) {
    index_t idx[Broadcast::kMaxDims] = {0}, off[3];
    offsets(r0, off, idx);
    for (index_t r = r0; r < r1; ++r) {
      row(r * len, off, len);
      for (int d = 1; d < nd; ++d) {  // odometer step
        for (int k = 0; k < nin; ++k) off[k] += b.strides[k][d];
        if (++idx[d] < b.shape[d]) break;
        for (int k = 0; k < nin; ++k) off[k] -= b.strides[k][d] * b.shape[d];
        idx[d] = 0;
      }
    }
  };
  if (b.total <= grain) return run_rows(0, rows);
  if (len <= grain) return parallel_for(rows, std::max<index_t>(1, grain / len), run_rows);
  // Few long rows: split each row into column chunks so every thread gets work.
  const index_t nc = (len + grain - 1) / grain;
  parallel_for(rows * nc, 1, [&](index_t t0, index_t t1) {
    index_t idx[Broadcast::kMaxDims], off[3], o[3];
    for (index_t t = t0; t < t1; ++t) {
      const index_t r = t / nc, j0 = (t % nc) * grain, j1 = std::min(len, j0 + grain);
      offsets(r, off, idx);
      for (int k = 0; k < nin; ++k) o[k] = off[k] + j0 * b.strides[k][0];
      row(r * len + j0, o, j1 - j0);
    }
  });
}

void for_each_block(index_t n, index_t grain, FunctionRef<void(index_t, index_t)> fn) {
  if (n <= 0) return;
  if (n <= grain) return fn(0, n);
  constexpr index_t kBlock = 16;
  const index_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(blocks, std::max<index_t>(1, grain / kBlock), [&](index_t b0, index_t b1) {
    fn(b0 * kBlock, std::min(n, b1 * kBlock));
  });
}

}  // namespace engine
