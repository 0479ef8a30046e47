// Strided copies (see engine/copy.h). After merging dims, the innermost dim is copied with
// memcpy when both sides are contiguous there, else with a typed loop for 1/2/4/8-byte
// elements; the outer dims are walked with an odometer. A transpose (the destination
// contiguous along one dim, the source along another) is copied in square tiles instead, so
// both sides stay in cache. Large copies split their rows (or tiles) over the thread pool.
#include <algorithm>
#include <utility>
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

// Transposes: d[i + k*dk] = s[i*si + k] over an n0 x nk plane, in tiles of kTile x kTile.
constexpr index_t kTile = 32;

template <class T>
void transpose_tile(char* d, index_t dk, const char* s, index_t si, index_t i0, index_t i1, index_t k0, index_t k1) {
  T* dp = reinterpret_cast<T*>(d);
  const T* sp = reinterpret_cast<const T*>(s);
  if (i1 - i0 >= k1 - k0) {  // the longer side innermost
    for (index_t k = k0; k < k1; ++k)
      for (index_t i = i0; i < i1; ++i) dp[i + k * dk] = sp[i * si + k];
  } else {
    for (index_t i = i0; i < i1; ++i)
      for (index_t k = k0; k < k1; ++k) dp[i + k * dk] = sp[i * si + k];
  }
}

void tile(char* d, index_t dk, const char* s, index_t si, index_t i0, index_t i1, index_t k0, index_t k1,
          size_t elem) {
  switch (elem) {
    case 1: return transpose_tile<std::uint8_t>(d, dk, s, si, i0, i1, k0, k1);
    case 2: return transpose_tile<std::uint16_t>(d, dk, s, si, i0, i1, k0, k1);
    case 4: return transpose_tile<std::uint32_t>(d, dk, s, si, i0, i1, k0, k1);
    default: return transpose_tile<std::uint64_t>(d, dk, s, si, i0, i1, k0, k1);
  }
}

// The merged copy (dims innermost first) as planes of dims 0 and k: dim 0 contiguous in the
// destination, dim k in the source. Every other dim indexes a plane.
void copy_transposed(char* d0, const char* s0, const index_t* sh, const index_t* ds, const index_t* ss, int nd, int k,
                     size_t elem, index_t total) {
  const index_t e = static_cast<index_t>(elem), n0 = sh[0], nk = sh[k];
  index_t osh[kMaxDims], ods[kMaxDims], oss[kMaxDims];
  int no = 0;
  for (int d = 1; d < nd; ++d)
    if (d != k) osh[no] = sh[d], ods[no] = ds[d], oss[no] = ss[d], ++no;
  const index_t ktiles = (nk + kTile - 1) / kTile, tasks = total / (n0 * nk) * ktiles;
  auto run = [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      index_t plane = t / ktiles, doff = 0, soff = 0;
      for (int d = 0; d < no; ++d) {
        const index_t i = plane % osh[d];
        plane /= osh[d];
        doff += i * ods[d];
        soff += i * oss[d];
      }
      const index_t kb = (t % ktiles) * kTile, ke = std::min(nk, kb + kTile);
      for (index_t ib = 0; ib < n0; ib += kTile)
        tile(d0 + doff * e, ds[k], s0 + soff * e, ss[0], ib, std::min(n0, ib + kTile), kb, ke, elem);
    }
  };
  const index_t task_bytes = std::max<index_t>(1, n0 * std::min(nk, kTile) * e);
  if (total * e < kParallelBytes || tasks == 1) return run(0, tasks);
  parallel_for(tasks, std::max<index_t>(1, kParallelBytes / task_bytes), run);
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
  if (ds[0] == 1 && ss[0] != 1 && (elem == 1 || elem == 2 || elem == 4 || elem == 8)) {
    for (int k = 1; k < nd; ++k) {
      if (ss[k] != 1 || sh[k] < 4) continue;
      if (sh[0] >= 4) return copy_transposed(d0, s0, sh, ds, ss, nd, k, elem, total);
      // A short contiguous destination run (DepthToSpace's block): rows along the source's
      // contiguous dim instead, written with a small stride.
      std::swap(sh[0], sh[k]), std::swap(ds[0], ds[k]), std::swap(ss[0], ss[k]);
      break;
    }
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
