// Byte-moving steps, for every element type.
//   copy:          in [x], out [y]; ints [bytes]
//   strided_copy:  in [x], out [y]; ints [elem_size, dst_offset, src_offset, ndim, shape...,
//                  dst_strides..., src_strides...] (offsets and strides in elements). Several of
//                  these write disjoint views of one output (Concat, Pad's interior).
//   fill:          in [value (one element)], out [y]; ints [elem_size, count]
#include <cstring>
#include <vector>

#include "engine/copy.h"

#include "runtime/kernels/families.h"
#include "runtime/registry.h"

namespace engine {
namespace {

StepFn copy_step(const StepSpec& s) {
  s.expect(1, 1, 1);
  const std::int64_t bytes = s.i(0);
  ENGINE_CHECK(bytes >= 0, "copy: negative size");
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) {
    if (sl[out] != sl[in]) std::memcpy(sl[out], sl[in], static_cast<size_t>(bytes));
  };
}

StepFn strided_copy_step(const StepSpec& s) {
  ENGINE_CHECK(s.in.size() == 1 && s.out.size() == 1 && s.ints.size() >= 4, "strided_copy: bad arguments");
  const std::int64_t elem = s.i(0), doff = s.i(1), soff = s.i(2), nd = s.i(3);
  ENGINE_CHECK(elem > 0 && doff >= 0 && soff >= 0 && nd >= 0 && nd <= 16, "strided_copy: bad parameters");
  ENGINE_CHECK(s.ints.size() == static_cast<size_t>(4 + 3 * nd), "strided_copy: expected 4 + 3*ndim ints");
  std::vector<index_t> shape(s.ints.begin() + 4, s.ints.begin() + 4 + nd);
  std::vector<index_t> dst(s.ints.begin() + 4 + nd, s.ints.begin() + 4 + 2 * nd);
  std::vector<index_t> src(s.ints.begin() + 4 + 2 * nd, s.ints.end());
  for (index_t d : shape) ENGINE_CHECK(d >= 0, "strided_copy: negative dimension");
  const int in = s.in[0], out = s.out[0];
  const size_t e = static_cast<size_t>(elem);
  return [=](void* const* sl) {
    strided_copy(static_cast<char*>(sl[out]) + doff * elem, dst.data(), static_cast<const char*>(sl[in]) + soff * elem,
                 src.data(), shape.data(), static_cast<int>(nd), e);
  };
}

StepFn fill_step(const StepSpec& s) {
  s.expect(1, 1, 2);
  const std::int64_t elem = s.i(0), n = s.i(1);
  ENGINE_CHECK(elem > 0 && n >= 0, "fill: bad parameters");
  const int in = s.in[0], out = s.out[0];
  return [=](void* const* sl) { fill(sl[out], sl[in], n, static_cast<size_t>(elem)); };
}

}  // namespace

void register_copy_steps(KernelRegistry& r) {
  r.add("copy", DType::Any, copy_step);
  r.add("strided_copy", DType::Any, strided_copy_step);
  r.add("fill", DType::Any, fill_step);
}

}  // namespace engine
