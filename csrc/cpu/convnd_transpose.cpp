// Batched 2-D transposes of 4-byte elements, y[b][c][r] = x[b][r][c]: the NCHW <-> NHWC
// conversions around the NHWC conv2d kernel (rows = C, cols = H·W or the reverse). Tiles of
// 16×16 read and write 16 rows each, which stay within a few cache lines, where a plain
// strided copy of a big plane touches a new line on every element; full tiles go through
// 8×8 register transposes (convnd_transpose_avx2.cpp) when the ISA has AVX2.
#include <algorithm>
#include <cstdint>

#include "engine/cpu_features.h"
#include "engine/nchw.h"
#include "engine/threadpool.h"

namespace engine {

namespace transpose_avx2 {
void block8(std::uint32_t* y, index_t ldy, const std::uint32_t* x, index_t ldx);
}

namespace {

constexpr index_t kTile = 16;
constexpr index_t kParallelElems = 1 << 16;

void tile(std::uint32_t* y, const std::uint32_t* x, index_t rows, index_t cols, index_t r0, index_t c0, bool avx2) {
  const index_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
  if (r1 - r0 == kTile && c1 - c0 == kTile && avx2) {
    for (index_t r = 0; r < kTile; r += 8)
      for (index_t c = 0; c < kTile; c += 8)
        transpose_avx2::block8(y + (c0 + c) * rows + r0 + r, rows, x + (r0 + r) * cols + c0 + c, cols);
    return;
  }
  if (r1 - r0 == kTile && c1 - c0 == kTile) {
    std::uint32_t t[kTile][kTile];
    for (index_t r = 0; r < kTile; ++r)
      for (index_t c = 0; c < kTile; ++c) t[c][r] = x[(r0 + r) * cols + c0 + c];
    for (index_t c = 0; c < kTile; ++c)
      for (index_t r = 0; r < kTile; ++r) y[(c0 + c) * rows + r0 + r] = t[c][r];
    return;
  }
  for (index_t c = c0; c < c1; ++c)
    for (index_t r = r0; r < r1; ++r) y[c * rows + r] = x[r * cols + c];
}

}  // namespace

void transpose32(void* y, const void* x, index_t batch, index_t rows, index_t cols) {
  ENGINE_CHECK(batch >= 0 && rows >= 0 && cols >= 0, "transpose: negative size");
  auto* out = static_cast<std::uint32_t*>(y);
  const auto* in = static_cast<const std::uint32_t*>(x);
  const bool avx2 = cpu_isa() != Isa::Portable;
  const index_t rt = (rows + kTile - 1) / kTile, ct = (cols + kTile - 1) / kTile, tiles = batch * rt * ct;
  auto run = [&](std::int64_t t0, std::int64_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t b = t / (rt * ct), r = (t / ct) % rt, c = t % ct;
      tile(out + b * rows * cols, in + b * rows * cols, rows, cols, r * kTile, c * kTile, avx2);
    }
  };
  if (batch * rows * cols < kParallelElems) return run(0, tiles);
  parallel_for(tiles, std::max<index_t>(1, kParallelElems / (kTile * kTile)), run);
}

}  // namespace engine
