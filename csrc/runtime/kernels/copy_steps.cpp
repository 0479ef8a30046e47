// Byte-moving steps, for every element type.
//   copy: in [x], out [y]; ints [bytes]
#include <cstring>

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

}  // namespace

void register_copy_steps(KernelRegistry& r) { r.add("copy", DType::Any, copy_step); }

}  // namespace engine
