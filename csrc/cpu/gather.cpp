// Gather / GatherElements / GatherND and ScatterElements / ScatterND (see engine/gather.h).
// Every kernel first checks all of its indices on the calling thread (throwing engine::Error
// before any work), then moves the data: gathers split big outputs over the pool; scatters
// run in index order on the caller, so duplicate indices reduce deterministically.
#include "engine/gather.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "cpu/movement_typed.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr index_t kParallelBytes = 1 << 18;  // below this a gather stays on the caller
constexpr int kMaxDims = 16;

[[noreturn]] void bad_index(const char* op, std::int64_t v, index_t len) {
  throw Error(std::string(op) + ": index " + std::to_string(v) + " is out of range for a dimension of size " +
              std::to_string(len) + " (valid: " + std::to_string(-len) + " to " + std::to_string(len - 1) + ")");
}

template <class I>
void check_range(const char* op, const I* idx, index_t n, index_t len) {
  for (index_t i = 0; i < n; ++i) {
    const std::int64_t v = static_cast<std::int64_t>(idx[i]);
    if (v < -len || v >= len) bad_index(op, v, len);
  }
}

// Index tuples (GatherND / ScatterND): component c is checked against dims[c].
template <class I>
void check_tuples(const char* op, const I* idx, index_t tuples, int depth, const index_t* dims) {
  for (index_t t = 0; t < tuples; ++t)
    for (int c = 0; c < depth; ++c) {
      const std::int64_t v = static_cast<std::int64_t>(idx[t * depth + c]);
      if (v < -dims[c] || v >= dims[c]) bad_index(op, v, dims[c]);
    }
}

template <class I>
inline index_t wrap(I v, index_t len) {
  const index_t i = static_cast<index_t>(v);
  return i < 0 ? i + len : i;
}

inline void copy_elems(char* d, const char* s, index_t n, size_t elem) {
  std::memcpy(d, s, static_cast<size_t>(n) * elem);
}

// Splits rows of `row_bytes` over the pool when the total is big enough.
template <class Fn>
void for_rows(index_t rows, index_t row_bytes, Fn&& fn) {
  if (rows * row_bytes < kParallelBytes || rows <= 1) return fn(index_t{0}, rows);
  parallel_for(rows, std::max<index_t>(1, kParallelBytes / std::max<index_t>(row_bytes, 1)), fn);
}

// Single elements (inner == 1): a typed loop instead of a memcpy call per element.
template <class T, class I>
void gather_elems(T* y, const T* x, const I* idx, index_t axis_len, index_t n_idx, index_t r0, index_t r1) {
  for (index_t r = r0; r < r1; ++r) y[r] = x[(r / n_idx) * axis_len + wrap(idx[r % n_idx], axis_len)];
}

template <class I>
void gather_t(char* y, const char* x, const I* idx, index_t outer, index_t axis_len, index_t inner, index_t n_idx,
              size_t elem) {
  check_range("Gather", idx, n_idx, axis_len);
  const index_t row = inner * static_cast<index_t>(elem);
  for_rows(outer * n_idx, row, [&](index_t r0, index_t r1) {
    if (inner == 1 && (elem == 4 || elem == 8 || elem == 2 || elem == 1)) {
      switch (elem) {
        case 1: return gather_elems(reinterpret_cast<std::uint8_t*>(y), reinterpret_cast<const std::uint8_t*>(x),
                                    idx, axis_len, n_idx, r0, r1);
        case 2: return gather_elems(reinterpret_cast<std::uint16_t*>(y), reinterpret_cast<const std::uint16_t*>(x),
                                    idx, axis_len, n_idx, r0, r1);
        case 4: return gather_elems(reinterpret_cast<std::uint32_t*>(y), reinterpret_cast<const std::uint32_t*>(x),
                                    idx, axis_len, n_idx, r0, r1);
        default: return gather_elems(reinterpret_cast<std::uint64_t*>(y), reinterpret_cast<const std::uint64_t*>(x),
                                     idx, axis_len, n_idx, r0, r1);
      }
    }
    for (index_t r = r0; r < r1; ++r) {
      const index_t o = r / n_idx, j = r % n_idx;
      std::memcpy(y + r * row, x + (o * axis_len + wrap(idx[j], axis_len)) * row, static_cast<size_t>(row));
    }
  });
}

// Walks the dims of `shape` except the last, calling fn(row, offsets...) per row with the
// element offset of that row's start in each of the strided views.
struct Odometer {
  int nd;
  index_t shape[kMaxDims], idx[kMaxDims];
  explicit Odometer(int n, const index_t* s) : nd(n) {
    for (int d = 0; d < n; ++d) shape[d] = s[d], idx[d] = 0;
  }
  void seek(index_t row) {  // row over dims [0, nd-1)
    for (int d = nd - 2; d >= 0; --d) idx[d] = row % shape[d], row /= shape[d];
  }
  index_t offset(const index_t* strides) const {
    index_t o = 0;
    for (int d = 0; d < nd - 1; ++d) o += idx[d] * strides[d];
    return o;
  }
  void next() {
    for (int d = nd - 2; d >= 0; --d) {
      if (++idx[d] < shape[d]) return;
      idx[d] = 0;
    }
  }
};

template <class T, class I>
void gather_elements_rows(T* y, const T* x, const I* idx, int nd, const index_t* shape, const index_t* xs, int axis,
                          index_t axis_len, index_t r0, index_t r1) {
  Odometer od(nd, shape);
  od.seek(r0);
  const index_t len = shape[nd - 1], sa = xs[axis], sl = xs[nd - 1];
  const bool last = axis == nd - 1;
  for (index_t r = r0; r < r1; ++r) {
    // Along dim `axis` the offset comes from the index, not from the position.
    index_t base = od.offset(xs);
    if (!last) base -= od.idx[axis] * sa;
    const I* ir = idx + r * len;
    T* yr = y + r * len;
    if (last)
      for (index_t j = 0; j < len; ++j) yr[j] = x[base + wrap(ir[j], axis_len) * sa];
    else
      for (index_t j = 0; j < len; ++j) yr[j] = x[base + j * sl + wrap(ir[j], axis_len) * sa];
    od.next();
  }
}

template <class I>
void gather_elements_t(void* y, const void* x, const I* idx, int nd, const index_t* shape, const index_t* xs, int axis,
                       index_t axis_len, size_t elem) {
  index_t total = 1;
  for (int d = 0; d < nd; ++d) total *= shape[d];
  check_range("GatherElements", idx, total, axis_len);
  if (total == 0) return;
  const index_t len = shape[nd - 1], rows = total / len;
  for_rows(rows, len * static_cast<index_t>(elem), [&](index_t r0, index_t r1) {
    switch (elem) {
      case 1: return gather_elements_rows(static_cast<std::uint8_t*>(y), static_cast<const std::uint8_t*>(x), idx, nd,
                                          shape, xs, axis, axis_len, r0, r1);
      case 2: return gather_elements_rows(static_cast<std::uint16_t*>(y), static_cast<const std::uint16_t*>(x), idx,
                                          nd, shape, xs, axis, axis_len, r0, r1);
      case 4: return gather_elements_rows(static_cast<std::uint32_t*>(y), static_cast<const std::uint32_t*>(x), idx,
                                          nd, shape, xs, axis, axis_len, r0, r1);
      default: return gather_elements_rows(static_cast<std::uint64_t*>(y), static_cast<const std::uint64_t*>(x), idx,
                                           nd, shape, xs, axis, axis_len, r0, r1);
    }
  });
}

// Element offset (in slices) of tuple t's target inside one batch.
template <class I>
inline index_t tuple_offset(const I* tup, int depth, const index_t* dims) {
  index_t off = 0;
  for (int c = 0; c < depth; ++c) off = off * dims[c] + wrap(tup[c], dims[c]);
  return off;
}

template <class I>
void gather_nd_t(char* y, const char* x, const I* idx, index_t batch, index_t tuples, int depth, const index_t* dims,
                 index_t batch_stride, index_t slice, size_t elem) {
  check_tuples("GatherND", idx, batch * tuples, depth, dims);
  const index_t row = slice * static_cast<index_t>(elem);
  for_rows(batch * tuples, row, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t b = r / tuples;
      const index_t src = b * batch_stride + tuple_offset(idx + r * depth, depth, dims) * slice;
      copy_elems(y + r * row, x + src * static_cast<index_t>(elem), slice, elem);
    }
  });
}

template <class I>
void scatter_elements_t(char* y, const char* upd, const I* idx, size_t elem, ReduceRowFn reduce, int nd,
                        const index_t* shape, const index_t* ys, int axis, index_t axis_len) {
  index_t total = 1;
  for (int d = 0; d < nd; ++d) total *= shape[d];
  check_range("ScatterElements", idx, total, axis_len);
  if (total == 0) return;
  const index_t len = shape[nd - 1], rows = total / len, sa = ys[axis], sl = ys[nd - 1];
  const index_t e = static_cast<index_t>(elem);
  Odometer od(nd, shape);
  for (index_t r = 0; r < rows; ++r) {
    index_t base = od.offset(ys);
    if (axis != nd - 1) base -= od.idx[axis] * sa;
    for (index_t j = 0; j < len; ++j) {
      const index_t i = r * len + j;
      const index_t at = base + (axis == nd - 1 ? 0 : j * sl) + wrap(idx[i], axis_len) * sa;
      if (reduce) reduce(y + at * e, upd + i * e, 1);
      else std::memcpy(y + at * e, upd + i * e, elem);
    }
    od.next();
  }
}

template <class I>
void scatter_nd_t(char* y, const char* upd, const I* idx, size_t elem, ReduceRowFn reduce, index_t tuples, int depth,
                  const index_t* dims, index_t slice) {
  check_tuples("ScatterND", idx, tuples, depth, dims);
  const index_t row = slice * static_cast<index_t>(elem);
  for (index_t t = 0; t < tuples; ++t) {
    char* dst = y + tuple_offset(idx + t * depth, depth, dims) * row;
    if (reduce) reduce(dst, upd + t * row, slice);
    else std::memcpy(dst, upd + t * row, static_cast<size_t>(row));
  }
}

ReduceRowFn reducer(DType type, Reduction op, const char* name) {
  if (op == Reduction::None) return nullptr;
  ReduceRowFn fn = reduce_row_fn(type, op);
  ENGINE_CHECK(fn != nullptr, std::string(name) + ": cannot reduce " + dtype_name(type) + " elements");
  return fn;
}

}  // namespace

#define ENGINE_BY_INDEX_TYPE(idx_type, name, call_i32, call_i64)                             \
  do {                                                                                     \
    if ((idx_type) == DType::I32) { call_i32; }                                            \
    else if ((idx_type) == DType::I64) { call_i64; }                                       \
    else throw Error(std::string(name) + ": indices must be int32 or int64");              \
  } while (0)

void gather(void* y, const void* x, const void* idx, DType idx_type, index_t outer, index_t axis_len, index_t inner,
            index_t n_idx, size_t elem) {
  auto* yp = static_cast<char*>(y);
  auto* xp = static_cast<const char*>(x);
  ENGINE_BY_INDEX_TYPE(idx_type, "Gather",
      gather_t(yp, xp, static_cast<const std::int32_t*>(idx), outer, axis_len, inner, n_idx, elem),
      gather_t(yp, xp, static_cast<const std::int64_t*>(idx), outer, axis_len, inner, n_idx, elem));
}

void gather_elements(void* y, const void* x, const void* idx, DType idx_type, int ndim, const index_t* idx_shape,
                     const index_t* x_strides, int axis, index_t axis_len, size_t elem) {
  ENGINE_CHECK(ndim >= 1 && ndim <= kMaxDims && axis >= 0 && axis < ndim, "GatherElements: bad rank or axis");
  ENGINE_CHECK(elem == 1 || elem == 2 || elem == 4 || elem == 8, "GatherElements: element size must be 1, 2, 4 or 8");
  ENGINE_BY_INDEX_TYPE(idx_type, "GatherElements",
      gather_elements_t(y, x, static_cast<const std::int32_t*>(idx), ndim, idx_shape, x_strides, axis, axis_len, elem),
      gather_elements_t(y, x, static_cast<const std::int64_t*>(idx), ndim, idx_shape, x_strides, axis, axis_len, elem));
}

void gather_nd(void* y, const void* x, const void* idx, DType idx_type, index_t batch, index_t tuples, int depth,
               const index_t* dims, index_t batch_stride, index_t slice, size_t elem) {
  auto* yp = static_cast<char*>(y);
  auto* xp = static_cast<const char*>(x);
  ENGINE_BY_INDEX_TYPE(idx_type, "GatherND",
      gather_nd_t(yp, xp, static_cast<const std::int32_t*>(idx), batch, tuples, depth, dims, batch_stride, slice, elem),
      gather_nd_t(yp, xp, static_cast<const std::int64_t*>(idx), batch, tuples, depth, dims, batch_stride, slice,
                  elem));
}

void scatter_elements(void* y, const void* upd, const void* idx, DType idx_type, DType type, Reduction op, int ndim,
                      const index_t* idx_shape, const index_t* y_strides, int axis, index_t axis_len) {
  ENGINE_CHECK(ndim >= 1 && ndim <= kMaxDims && axis >= 0 && axis < ndim, "ScatterElements: bad rank or axis");
  const size_t elem = dtype_size(type);
  ReduceRowFn fn = reducer(type, op, "ScatterElements");
  auto* yp = static_cast<char*>(y);
  auto* up = static_cast<const char*>(upd);
  ENGINE_BY_INDEX_TYPE(idx_type, "ScatterElements",
      scatter_elements_t(yp, up, static_cast<const std::int32_t*>(idx), elem, fn, ndim, idx_shape, y_strides, axis,
                         axis_len),
      scatter_elements_t(yp, up, static_cast<const std::int64_t*>(idx), elem, fn, ndim, idx_shape, y_strides, axis,
                         axis_len));
}

void scatter_nd(void* y, const void* upd, const void* idx, DType idx_type, DType type, Reduction op, index_t tuples,
                int depth, const index_t* dims, index_t slice) {
  const size_t elem = dtype_size(type);
  ReduceRowFn fn = reducer(type, op, "ScatterND");
  auto* yp = static_cast<char*>(y);
  auto* up = static_cast<const char*>(upd);
  ENGINE_BY_INDEX_TYPE(idx_type, "ScatterND",
      scatter_nd_t(yp, up, static_cast<const std::int32_t*>(idx), elem, fn, tuples, depth, dims, slice),
      scatter_nd_t(yp, up, static_cast<const std::int64_t*>(idx), elem, fn, tuples, depth, dims, slice));
}

}  // namespace engine
