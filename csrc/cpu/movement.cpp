// Pad, Trilu and OneHot (see engine/movement.h). Big outputs split their rows over the pool;
// nothing here can fail at run time (Pad's layout is checked when it is made).
#include "engine/movement.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr index_t kParallelBytes = 1 << 18;  // below this the work stays on the caller
constexpr int kMaxDims = 16;

template <class Fn>
void for_rows(index_t rows, index_t row_bytes, Fn&& fn) {
  if (rows * row_bytes < kParallelBytes || rows <= 1) return fn(index_t{0}, rows);
  parallel_for(rows, std::max<index_t>(1, kParallelBytes / std::max<index_t>(row_bytes, 1)), fn);
}

template <class T>
void fill_t(char* d, const char* v, index_t n) {
  T value;
  std::memcpy(&value, v, sizeof(T));
  T* dp = reinterpret_cast<T*>(d);
  for (index_t i = 0; i < n; ++i) dp[i] = value;
}

// n copies of the element at v.
void fill_elems(char* d, const char* v, index_t n, size_t elem) {
  switch (elem) {
    case 1: return static_cast<void>(std::memset(d, *v, static_cast<size_t>(n)));
    case 2: return fill_t<std::uint16_t>(d, v, n);
    case 4: return fill_t<std::uint32_t>(d, v, n);
    case 8: return fill_t<std::uint64_t>(d, v, n);
    default:
      for (index_t i = 0; i < n; ++i) std::memcpy(d + i * static_cast<index_t>(elem), v, elem);
  }
}

template <class T>
void reverse_t(char* d, const char* s, index_t n) {  // d[i] = s[-i]
  T* dp = reinterpret_cast<T*>(d);
  const T* sp = reinterpret_cast<const T*>(s);
  for (index_t i = 0; i < n; ++i) dp[i] = sp[-i];
}

void reverse_elems(char* d, const char* s, index_t n, size_t elem) {
  switch (elem) {
    case 1: return reverse_t<std::uint8_t>(d, s, n);
    case 2: return reverse_t<std::uint16_t>(d, s, n);
    case 4: return reverse_t<std::uint32_t>(d, s, n);
    case 8: return reverse_t<std::uint64_t>(d, s, n);
    default: {
      const index_t e = static_cast<index_t>(elem);
      for (index_t i = 0; i < n; ++i) std::memcpy(d + i * e, s - i * e, elem);
    }
  }
}

template <class I>
void onehot_t(char* y, const I* idx, const char* on, index_t outer, index_t depth, index_t inner, size_t elem) {
  const index_t e = static_cast<index_t>(elem);
  for (index_t o = 0; o < outer; ++o)
    for (index_t i = 0; i < inner; ++i) {
      const I raw = idx[o * inner + i];
      index_t v;
      if constexpr (std::is_floating_point_v<I> || std::is_same_v<I, _Float16>) {
        const double f = static_cast<double>(raw);
        if (!(f > -static_cast<double>(depth) - 1 && f < static_cast<double>(depth))) continue;  // NaN too
        v = static_cast<index_t>(f);  // truncates, as a cast to an integer index does
      } else if constexpr (std::is_unsigned_v<I>) {
        if (raw >= static_cast<std::uint64_t>(depth)) continue;
        v = static_cast<index_t>(raw);
      } else {
        v = static_cast<index_t>(raw);
      }
      if (v < 0) v += depth;
      if (v < 0 || v >= depth) continue;  // out of range: the position stays off
      std::memcpy(y + ((o * depth + v) * inner + i) * e, on, elem);
    }
}

}  // namespace

PadLayout pad_layout(int ndim, const index_t* out_shape, const index_t* x_shape, const index_t* tables) {
  ENGINE_CHECK(ndim >= 1 && ndim <= kMaxDims, "pad: rank must be 1 to 16");
  PadLayout p;
  p.out_shape.assign(out_shape, out_shape + ndim);
  p.x_strides.assign(ndim, 1);
  for (int d = ndim - 2; d >= 0; --d) p.x_strides[d] = p.x_strides[d + 1] * x_shape[d + 1];
  const index_t* t = tables;
  for (int d = 0; d < ndim; ++d) {
    ENGINE_CHECK(out_shape[d] >= 0 && x_shape[d] >= 0, "pad: negative dimension");
    for (index_t i = 0; i < out_shape[d]; ++i)
      ENGINE_CHECK(t[i] >= -1 && t[i] < x_shape[d], "pad: source index out of range in dim " + std::to_string(d));
    if (d < ndim - 1) p.src.emplace_back(t, t + out_shape[d]);
    else {
      // The last dim as runs: a run continues while the source moves by the same step.
      const index_t n = out_shape[d];
      for (index_t j = 0; j < n;) {
        PadLayout::Run run{j, 1, t[j], 1};
        if (t[j] < 0) {
          while (j + run.len < n && t[j + run.len] < 0) ++run.len;
        } else if (j + 1 < n && t[j + 1] >= 0 && std::abs(t[j + 1] - t[j]) <= 1) {
          run.step = t[j + 1] - t[j];
          while (j + run.len < n && t[j + run.len] >= 0 && t[j + run.len] - t[j + run.len - 1] == run.step) ++run.len;
        }
        p.runs.push_back(run);
        j += run.len;
      }
    }
    t += out_shape[d];
  }
  return p;
}

void pad(void* y, const void* x, const void* value, const PadLayout& p, size_t elem) {
  const int nd = static_cast<int>(p.out_shape.size());
  index_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= p.out_shape[d];
  const index_t len = p.out_shape[nd - 1], e = static_cast<index_t>(elem);
  if (rows == 0 || len == 0) return;
  char* y0 = static_cast<char*>(y);
  const char* x0 = static_cast<const char*>(x);
  const char* v = static_cast<const char*>(value);
  for_rows(rows, len * e, [&](index_t r0, index_t r1) {
    index_t idx[kMaxDims] = {0};
    index_t rem = r0;
    for (int d = nd - 2; d >= 0; --d) idx[d] = rem % p.out_shape[d], rem /= p.out_shape[d];
    for (index_t r = r0; r < r1; ++r) {
      char* yr = y0 + r * len * e;
      index_t base = 0;
      bool pad_row = false;
      for (int d = 0; d < nd - 1; ++d) {
        const index_t s = p.src[d][idx[d]];
        pad_row = pad_row || s < 0;
        base += s * p.x_strides[d];
      }
      if (pad_row) {
        fill_elems(yr, v, len, elem);
      } else {
        const char* xr = x0 + base * e;
        for (const PadLayout::Run& run : p.runs) {
          char* d = yr + run.dst * e;
          if (run.src < 0) fill_elems(d, v, run.len, elem);
          else if (run.step == 1) std::memcpy(d, xr + run.src * e, static_cast<size_t>(run.len * e));
          else if (run.step == 0) fill_elems(d, xr + run.src * e, run.len, elem);
          else reverse_elems(d, xr + run.src * e, run.len, elem);
        }
      }
      for (int d = nd - 2; d >= 0; --d) {
        if (++idx[d] < p.out_shape[d]) break;
        idx[d] = 0;
      }
    }
  });
}

void trilu(void* y, const void* x, index_t batch, index_t rows, index_t cols, index_t k, bool upper, size_t elem) {
  char* y0 = static_cast<char*>(y);
  const char* x0 = static_cast<const char*>(x);
  const index_t e = static_cast<index_t>(elem);
  for_rows(batch * rows, cols * e, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t i = r % rows;
      // Kept columns [lo, hi): upper keeps j >= i + k, lower keeps j <= i + k.
      const index_t lo = upper ? std::clamp(i + k, index_t{0}, cols) : 0;
      const index_t hi = upper ? cols : std::clamp(i + k + 1, index_t{0}, cols);
      char* yr = y0 + r * cols * e;
      const char* xr = x0 + r * cols * e;
      if (lo > 0) std::memset(yr, 0, static_cast<size_t>(lo * e));
      if (hi > lo && yr != xr) std::memcpy(yr + lo * e, xr + lo * e, static_cast<size_t>((hi - lo) * e));
      if (hi < cols) std::memset(yr + std::max(hi, lo) * e, 0, static_cast<size_t>((cols - std::max(hi, lo)) * e));
    }
  });
}

void onehot(void* y, const void* idx, DType idx_type, const void* values, index_t outer, index_t depth, index_t inner,
            size_t elem) {
  char* yp = static_cast<char*>(y);
  const char* off = static_cast<const char*>(values);
  const char* on = off + elem;
  fill_elems(yp, off, outer * depth * inner, elem);
  switch (idx_type) {
    case DType::I8: return onehot_t(yp, static_cast<const std::int8_t*>(idx), on, outer, depth, inner, elem);
    case DType::I16: return onehot_t(yp, static_cast<const std::int16_t*>(idx), on, outer, depth, inner, elem);
    case DType::I32: return onehot_t(yp, static_cast<const std::int32_t*>(idx), on, outer, depth, inner, elem);
    case DType::I64: return onehot_t(yp, static_cast<const std::int64_t*>(idx), on, outer, depth, inner, elem);
    case DType::U8: return onehot_t(yp, static_cast<const std::uint8_t*>(idx), on, outer, depth, inner, elem);
    case DType::U16: return onehot_t(yp, static_cast<const std::uint16_t*>(idx), on, outer, depth, inner, elem);
    case DType::U32: return onehot_t(yp, static_cast<const std::uint32_t*>(idx), on, outer, depth, inner, elem);
    case DType::U64: return onehot_t(yp, static_cast<const std::uint64_t*>(idx), on, outer, depth, inner, elem);
    case DType::F16: return onehot_t(yp, static_cast<const _Float16*>(idx), on, outer, depth, inner, elem);
    case DType::F32: return onehot_t(yp, static_cast<const float*>(idx), on, outer, depth, inner, elem);
    case DType::F64: return onehot_t(yp, static_cast<const double*>(idx), on, outer, depth, inner, elem);
    default: throw Error(std::string("OneHot: indices of type ") + dtype_name(idx_type) + " are not supported");
  }
}

}  // namespace engine
