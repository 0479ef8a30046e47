// Gather/scatter steps (every element type; indices int32 or int64). Registered by
// register_movement_steps. Index values are checked when a step runs (engine/gather.h).
//   gather:           in [x, indices], out [y]; ints [elem, outer, axis_len, inner, n_idx]
//   gather_elements:  in [x, indices], out [y]; ints [elem, ndim, axis, axis_len,
//                     indices_shape..., x_strides...]
//   gather_nd:        in [x, indices], out [y]; ints [elem, batch, tuples, batch_stride, slice,
//                     depth, dims...]
//   scatter_elements: in [data, indices, updates], out [y]; ints [reduction, data_bytes, ndim,
//                     axis, axis_len, indices_shape..., y_strides...]
//   scatter_nd:       in [data, indices, updates], out [y]; ints [reduction, data_bytes, tuples,
//                     slice, depth, dims...]
// reduction: 0 none, 1 add, 2 mul, 3 max, 4 min. Scatters copy data to y unless y is data (in place).
#include <cstring>
#include <string>
#include <vector>

#include "engine/gather.h"
#include "runtime/registry.h"

namespace engine {
namespace {

void check_index_type(const StepSpec& s, size_t input) {
  const DType t = s.in_types[input];
  ENGINE_CHECK(t == DType::I32 || t == DType::I64, s.name + ": indices must be int32 or int64, got " + dtype_name(t));
}

std::vector<index_t> ints_from(const StepSpec& s, size_t begin, size_t count) {
  ENGINE_CHECK(s.ints.size() >= begin + count, s.name + ": missing integer parameters");
  return std::vector<index_t>(s.ints.begin() + begin, s.ints.begin() + begin + count);
}

StepFn gather_step(const StepSpec& s) {
  s.expect(2, 1, 5);
  const std::int64_t elem = s.i(0), outer = s.i(1), axis_len = s.i(2), inner = s.i(3), n_idx = s.i(4);
  ENGINE_CHECK(elem > 0 && outer >= 0 && axis_len >= 0 && inner >= 0 && n_idx >= 0, "gather: bad sizes");
  check_index_type(s, 1);
  const DType it = s.in_types[1];
  const int x = s.in[0], idx = s.in[1], y = s.out[0];
  const size_t e = static_cast<size_t>(elem);
  return [=](void* const* sl) { gather(sl[y], sl[x], sl[idx], it, outer, axis_len, inner, n_idx, e); };
}

StepFn gather_elements_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 2 && s.out.size() == 1 && s.ints.size() >= 4, "gather_elements: bad arguments");
  const std::int64_t elem = s.i(0), nd = s.i(1), axis = s.i(2), axis_len = s.i(3);
  ENGINE_CHECK(elem == 1 || elem == 2 || elem == 4 || elem == 8, "gather_elements: element size must be 1, 2, 4 or 8");
  ENGINE_CHECK(nd >= 1 && nd <= 16 && axis >= 0 && axis < nd && axis_len >= 0, "gather_elements: bad rank or axis");
  ENGINE_CHECK(s.ints.size() == static_cast<size_t>(4 + 2 * nd), "gather_elements: expected 4 + 2*ndim ints");
  check_index_type(s, 1);
  const std::vector<index_t> shape = ints_from(s, 4, nd), strides = ints_from(s, 4 + nd, nd);
  for (index_t d : shape) ENGINE_CHECK(d >= 0, "gather_elements: negative dimension");
  const DType it = s.in_types[1];
  const int x = s.in[0], idx = s.in[1], y = s.out[0];
  const size_t e = static_cast<size_t>(elem);
  return [=](void* const* sl) {
    gather_elements(sl[y], sl[x], sl[idx], it, static_cast<int>(nd), shape.data(), strides.data(),
                    static_cast<int>(axis), axis_len, e);
  };
}

StepFn gather_nd_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 2 && s.out.size() == 1 && s.ints.size() >= 6, "gather_nd: bad arguments");
  const std::int64_t elem = s.i(0), batch = s.i(1), tuples = s.i(2), batch_stride = s.i(3), slice = s.i(4),
                     depth = s.i(5);
  ENGINE_CHECK(elem > 0 && batch >= 0 && tuples >= 0 && batch_stride >= 0 && slice >= 0 && depth >= 0 && depth <= 16,
               "gather_nd: bad sizes");
  ENGINE_CHECK(s.ints.size() == static_cast<size_t>(6 + depth), "gather_nd: expected 6 + depth ints");
  check_index_type(s, 1);
  const std::vector<index_t> dims = ints_from(s, 6, depth);
  index_t per_batch = slice;
  for (index_t d : dims) {
    ENGINE_CHECK(d >= 0, "gather_nd: negative dimension");
    per_batch *= d;
  }
  ENGINE_CHECK(per_batch == batch_stride, "gather_nd: batch stride does not match the dims");
  const DType it = s.in_types[1];
  const int x = s.in[0], idx = s.in[1], y = s.out[0];
  const size_t e = static_cast<size_t>(elem);
  return [=](void* const* sl) {
    gather_nd(sl[y], sl[x], sl[idx], it, batch, tuples, static_cast<int>(depth), dims.data(), batch_stride, slice, e);
  };
}

Reduction reduction_of(const StepSpec& s, std::int64_t code, DType type) {
  ENGINE_CHECK(code >= 0 && code <= static_cast<std::int64_t>(Reduction::Min), s.name + ": bad reduction code");
  const Reduction r = static_cast<Reduction>(code);
  ENGINE_CHECK(scatter_supports(type, r), s.name + ": cannot reduce elements of type " + dtype_name(type));
  return r;
}

StepFn scatter_elements_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && s.out.size() == 1 && s.ints.size() >= 5, "scatter_elements: bad arguments");
  const DType t = s.out_types[0];
  const Reduction op = reduction_of(s, s.i(0), t);
  const std::int64_t bytes = s.i(1), nd = s.i(2), axis = s.i(3), axis_len = s.i(4);
  ENGINE_CHECK(bytes >= 0 && nd >= 1 && nd <= 16 && axis >= 0 && axis < nd && axis_len >= 0,
               "scatter_elements: bad sizes, rank or axis");
  ENGINE_CHECK(s.ints.size() == static_cast<size_t>(5 + 2 * nd), "scatter_elements: expected 5 + 2*ndim ints");
  ENGINE_CHECK(s.in_types[0] == t && s.in_types[2] == t, "scatter_elements: data, updates and output differ in type");
  check_index_type(s, 1);
  const std::vector<index_t> shape = ints_from(s, 5, nd), strides = ints_from(s, 5 + nd, nd);
  for (index_t d : shape) ENGINE_CHECK(d >= 0, "scatter_elements: negative dimension");
  const DType it = s.in_types[1];
  const int data = s.in[0], idx = s.in[1], upd = s.in[2], y = s.out[0];
  return [=](void* const* sl) {
    if (sl[y] != sl[data]) std::memcpy(sl[y], sl[data], static_cast<size_t>(bytes));
    scatter_elements(sl[y], sl[upd], sl[idx], it, t, op, static_cast<int>(nd), shape.data(), strides.data(),
                     static_cast<int>(axis), axis_len);
  };
}

StepFn scatter_nd_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 3 && s.out.size() == 1 && s.ints.size() >= 5, "scatter_nd: bad arguments");
  const DType t = s.out_types[0];
  const Reduction op = reduction_of(s, s.i(0), t);
  const std::int64_t bytes = s.i(1), tuples = s.i(2), slice = s.i(3), depth = s.i(4);
  ENGINE_CHECK(bytes >= 0 && tuples >= 0 && slice >= 0 && depth >= 1 && depth <= 16, "scatter_nd: bad sizes");
  ENGINE_CHECK(s.ints.size() == static_cast<size_t>(5 + depth), "scatter_nd: expected 5 + depth ints");
  ENGINE_CHECK(s.in_types[0] == t && s.in_types[2] == t, "scatter_nd: data, updates and output differ in type");
  check_index_type(s, 1);
  const std::vector<index_t> dims = ints_from(s, 5, depth);
  index_t total = slice * static_cast<index_t>(dtype_size(t));
  for (index_t d : dims) {
    ENGINE_CHECK(d >= 0, "scatter_nd: negative dimension");
    total *= d;
  }
  ENGINE_CHECK(total == bytes, "scatter_nd: dims do not match the data size");
  const DType it = s.in_types[1];
  const int data = s.in[0], idx = s.in[1], upd = s.in[2], y = s.out[0];
  return [=](void* const* sl) {
    if (sl[y] != sl[data]) std::memcpy(sl[y], sl[data], static_cast<size_t>(bytes));
    scatter_nd(sl[y], sl[upd], sl[idx], it, t, op, tuples, static_cast<int>(depth), dims.data(), slice);
  };
}

}  // namespace

void register_gather_steps(KernelRegistry& r) {
  r.add("gather", DType::Any, gather_step);
  r.add("gather_elements", DType::Any, gather_elements_step);
  r.add("gather_nd", DType::Any, gather_nd_step);
  r.add("scatter_elements", DType::Any, scatter_elements_step);
  r.add("scatter_nd", DType::Any, scatter_nd_step);
}

}  // namespace engine
