// Strided copies (see engine/copy.h). After merging dims, the innermost dim is copied with
// memcpy when both sides are contiguous there, else with a typed loop for 1/2/4/8-byte
// elements; the outer dims are walked with an odometer. Large copies split the outer rows
// over the thread pool.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "engine/copy.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr int kMaxDims = 16;
constexpr index_t kParallelBytes = 1 << 18;  // below this a copy stays on the caller

template <class T>
void copy_row(char* d, index_t ds, const char* s, index_t ss, index_t n) {
  T* dp = reinterpret_cast<T*>(d);
  const T* sp = reinterpret_cast<const T*>(s);
  if (ss == 0) {
    const T v = *sp;
    for (index_t i = 0; i < n; ++i) dp[i * ds] = v;
    return;
  }
  for (index_t i = 0; i < n; ++i) dp[i * ds] = sp[i * ss];
}

void row(char* d, index_t ds, const char* s, index_t ss, index_t n, size_t elem) {
  if (ds == 1 && ss == 1) {
    std::memcpy(d, s, static_cast<size_t>(n) * elem);
    return;
  }
  switch (elem) {
    case 1: return copy_row<std::uint8_t>(d, ds, s, ss, n);
    case 2: return copy_row<std::uint16_t>(d, ds, s, ss, n);
    case 4: return copy_row<std::uint32_t>(d, ds, s, ss, n);
    case 8: return copy_row<std::uint64_t>(d, ds, s, ss, n);
    default:
      for (index_t i = 0; i < n; ++i) std::memcpy(d + i * ds * elem, s + i * ss * elem, elem);
  }
}

}  // namespace

void strided_copy(void* dst, const index_t* dst_strides, const void* src, const index_t* src_strides,
                  const index_t* shape, int ndim, size_t elem) {
  ENGINE_CHECK(ndim >= 0 && ndim <= kMaxDims, "strided_copy: rank must be <= 16");
  index_t total = 1;
  for (int d = 0; d < ndim; ++d) {
    ENGINE_CHECK(shape[d] >= 0, "strided_copy: negative dimension");
    total *= shape[d];
  }
  if (total == 0) return;
  // Merge dims (innermost first): drop size-1 dims, join neighbours contiguous in both views.
  index_t sh[kMaxDims], ds[kMaxDims], ss[kMaxDims];
  int nd = 0;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[d] == 1) continue;
    if (nd > 0 && dst_strides[d] == ds[nd - 1] * sh[nd - 1] && src_strides[d] == ss[nd - 1] * sh[nd - 1]) {
      sh[nd - 1] *= shape[d];
      continue;
    }
    sh[nd] = shape[d], ds[nd] = dst_strides[d], ss[nd] = src_strides[d];
    ++nd;
  }
  char* d0 = static_cast<char*>(dst);
  const char* s0 = static_cast<const char*>(src);
  if (nd == 0) {
    std::memcpy(d0, s0, elem);
    return;
  }
  const index_t len = sh[0], rows = total / len;
  const index_t e = static_cast<index_t>(elem);
  auto run = [&](index_t r0, index_t r1) {
    index_t idx[kMaxDims] = {0};
    index_t doff = 0, soff = 0, rem = r0;
    for (int d = 1; d < nd; ++d) {
      idx[d] = rem % sh[d];
      rem /= sh[d];
      doff += idx[d] * ds[d];
      soff += idx[d] * ss[d];
    }
    for (index_t r = r0; r < r1; ++r) {
      row(d0 + doff * e, ds[0], s0 + soff * e, ss[0], len, elem);
      for (int d = 1; d < nd; ++d) {
        doff += ds[d];
        soff += ss[d];
        if (++idx[d] < sh[d]) break;
        doff -= ds[d] * sh[d];
        soff -= ss[d] * sh[d];
        idx[d] = 0;
      }
    }
  };
  if (total * e < kParallelBytes || rows == 1) return run(0, rows);
  parallel_for(rows, std::max<index_t>(1, kParallelBytes / (len * e)), run);
}

void fill(void* dst, const void* value, index_t n, size_t elem) {
  if (n <= 0) return;
  char* d = static_cast<char*>(dst);
  bool zero = true;
  for (size_t i = 0; i < elem; ++i) zero = zero && static_cast<const char*>(value)[i] == 0;
  if (zero) {
    std::memset(d, 0, static_cast<size_t>(n) * elem);
    return;
  }
  index_t zero_strides[1] = {0}, one[1] = {1}, shape[1] = {n};
  strided_copy(d, one, value, zero_strides, shape, 1, elem);
}

}  // namespace engine
