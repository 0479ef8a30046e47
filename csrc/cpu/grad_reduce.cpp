// Reductions the backward needs (engine/grad.h): column sums (bias gradients) and a sum over
// broadcast dims. Column sums split rows in fixed chunks (gradu::Chunks) with a float partial
// per chunk, added in order in double: the result is the same for any thread count, and
// accurate over many rows. sum_to_shape runs the existing reduce() once per group of adjacent
// reduced dims (usually one), column sums where that group leads.
#include <cstring>
#include <vector>

#include "cpu/grad_kernels.h"
#include "cpu/grad_util.h"
#include "engine/grad.h"
#include "engine/reduce.h"

namespace engine {

using gradu::str;

void column_sums(float* y, const float* x, index_t rows, index_t cols, bool accumulate) {
  ENGINE_CHECK(rows >= 0 && cols >= 0, "column_sums: negative size");
  if (cols == 0) return;
  const auto& k = gradk::kernels();
  const gradu::Chunks chunks(rows, cols);
  if (chunks.count <= 1) {
    if (!accumulate) std::memset(y, 0, static_cast<size_t>(cols) * sizeof(float));
    if (rows > 0) k.col_sum(y, x, rows, cols, cols);
    return;
  }
  float* part = thread_scratch<float, gradu::kTagPartials>(static_cast<size_t>(chunks.count * cols));
  chunks.run(cols, [&](index_t c, index_t r0, index_t r1) {
    float* p = part + c * cols;
    std::memset(p, 0, static_cast<size_t>(cols) * sizeof(float));
    k.col_sum(p, x + r0 * cols, r1 - r0, cols, cols);
  });
  double* acc = thread_scratch<double, gradu::kTagPartials2>(static_cast<size_t>(cols));
  for (index_t j = 0; j < cols; ++j) acc[j] = accumulate ? y[j] : 0.0;
  for (index_t c = 0; c < chunks.count; ++c) {
    const float* p = part + c * cols;
    for (index_t j = 0; j < cols; ++j) acc[j] += p[j];
  }
  for (index_t j = 0; j < cols; ++j) y[j] = static_cast<float>(acc[j]);
}

void sum_to_shape(float* y, const float* x, int ndim, const index_t* x_shape, const index_t* y_shape) {
  ENGINE_CHECK(ndim >= 0 && ndim <= 16, "sum_to_shape: ndim must be 0 to 16, got " + std::to_string(ndim));
  index_t total = 1, y_total = 1;
  // Collapsed groups, outermost first: (size, reduced). Size-1 dims of x are dropped.
  index_t size[16];
  bool red[16];
  int ng = 0;
  for (int d = 0; d < ndim; ++d) {
    const index_t xs = x_shape[d], ys = y_shape[d];
    ENGINE_CHECK(xs >= 0 && (ys == xs || ys == 1),
                 "sum_to_shape: dim " + std::to_string(d) + " of y must be 1 or x's (" + str(xs) + "), got " + str(ys));
    total *= xs;
    y_total *= ys;
    if (xs == 1) continue;
    const bool r = ys == 1;
    if (ng > 0 && red[ng - 1] == r) {
      size[ng - 1] *= xs;
    } else {
      size[ng] = xs, red[ng] = r;
      ++ng;
    }
  }
  if (total == 0) {
    std::memset(y, 0, static_cast<size_t>(y_total) * sizeof(float));
    return;
  }
  // Reduce the reduced groups innermost first, ping-ponging between two scratch buffers; the
  // last reduction writes y.
  int left = 0;
  for (int g = 0; g < ng; ++g) left += red[g];
  if (left == 0) {
    std::memcpy(y, x, static_cast<size_t>(total) * sizeof(float));
    return;
  }
  const float* src = x;
  index_t cur = total;
  for (int g = ng - 1; g >= 0; --g) {
    if (!red[g]) continue;
    index_t outer = 1, inner = 1;
    for (int h = 0; h < g; ++h) outer *= size[h];
    for (int h = g + 1; h < ng; ++h) inner *= red[h] ? 1 : size[h];  // inner groups already reduced
    const index_t out_n = cur / size[g];
    float* dst = y;
    if (--left > 0) {
      float* a = thread_scratch<float, gradu::kTagCols>(static_cast<size_t>(out_n));
      dst = a != src ? a : thread_scratch<float, gradu::kTagStats>(static_cast<size_t>(out_n));
    }
    if (outer == 1 && inner > 1) column_sums(dst, src, size[g], inner, false);
    else reduce<float>(dst, src, outer, size[g], inner, ReduceOp::Sum);
    src = dst;
    cur = out_n;
  }
}

}  // namespace engine
