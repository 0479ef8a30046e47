// Rotary position embedding (see engine/attention.h). Rows (b, s, h) are independent: split
// over the pool when there are enough of them. float16 rows are widened to float32 (thread-local
// row buffers), rotated, and rounded back.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/attention_convert.h"
#include "cpu/rotary_row.h"
#include "engine/scratch.h"
#include "engine/attention.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

void rotate(float* y, const float* x, const float* c, const float* s, const RotaryDims& d) {
  rotate_row(y, x, c, s, d.head_dim, d.rot_dim, d.interleaved);
}

void rotate(std::uint16_t* y, const std::uint16_t* x, const std::uint16_t* c, const std::uint16_t* s,
            const RotaryDims& d) {
  const index_t half = d.rot_dim / 2;
  float* xf = thread_scratch<float, kScratchRotary>(static_cast<size_t>(d.head_dim + 2 * half));
  float *cf = xf + d.head_dim, *sf = cf + half;
  seq::convert(xf, DType::F32, x, DType::F16, d.rot_dim);
  seq::convert(cf, DType::F32, c, DType::F16, half);
  seq::convert(sf, DType::F32, s, DType::F16, half);
  rotate_row(xf, xf, cf, sf, d.rot_dim, d.rot_dim, d.interleaved);
  seq::convert(y, DType::F16, xf, DType::F32, d.rot_dim);
  if (y != x) std::copy(x + d.rot_dim, x + d.head_dim, y + d.rot_dim);
}

}  // namespace

template <class T>
void rotary_embedding(HeadView<T> y, HeadView<const T> x, const T* cos, const T* sin, const std::int64_t* pos,
                      const RotaryDims& d) {
  const index_t rows = d.batch * d.seq * d.heads, half = d.rot_dim / 2;
  if (rows == 0 || d.head_dim == 0) return;
  auto run = [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t h = r % d.heads, bs = r / d.heads, b = bs / d.seq, s = bs % d.seq;
      const index_t p = pos ? pos[bs] : bs;
      rotate(y.row(b, h, s), x.row(b, h, s), cos + p * half, sin + p * half, d);
    }
  };
  const index_t grain = std::max<index_t>(1, (index_t{1} << 15) / d.head_dim);
  if (rows <= grain) return run(0, rows);
  parallel_for(rows, grain, run);
}

template void rotary_embedding<float>(HeadView<float>, HeadView<const float>, const float*, const float*,
                                      const std::int64_t*, const RotaryDims&);
template void rotary_embedding<std::uint16_t>(HeadView<std::uint16_t>, HeadView<const std::uint16_t>,
                                              const std::uint16_t*, const std::uint16_t*, const std::int64_t*,
                                              const RotaryDims&);

}  // namespace engine
