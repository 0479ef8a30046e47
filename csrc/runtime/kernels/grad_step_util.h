// Parameter checks shared by the backward steps (grad_*_steps.cpp).
#pragma once

#include <string>
#include <vector>

#include "engine/common.h"
#include "runtime/registry.h"

namespace engine {
namespace gradstep {

inline std::string str(std::int64_t v) { return std::to_string(v); }

// Every present input is float32, except input `skip` (an index tensor).
inline void check_f32(const StepSpec& s, int skip = -1) {
  if (s.in_types.size() != s.in.size()) return;  // callers that do not state types
  for (size_t k = 0; k < s.in.size(); ++k)
    ENGINE_CHECK(s.in[k] < 0 || static_cast<int>(k) == skip || s.in_types[k] == DType::F32,
                 s.name + ": input " + str(static_cast<std::int64_t>(k)) + " must be float32, got " +
                     dtype_name(s.in_types[k]));
}

inline bool flag(const StepSpec& s, size_t k, const char* what) {
  ENGINE_CHECK(s.i(k) == 0 || s.i(k) == 1, s.name + ": " + what + " must be 0 or 1, got " + str(s.i(k)));
  return s.i(k) != 0;
}

// Output slots for a mask over n outputs: -1 where not wanted. The out list must hold one slot
// per set bit.
inline std::vector<int> masked_outputs(const StepSpec& s, std::int64_t mask, int n) {
  ENGINE_CHECK(mask > 0 && mask < (1 << n), s.name + ": outputs mask must be 1 to " + str((1 << n) - 1) + ", got " +
                                                str(mask));
  std::vector<int> slots(n, -1);
  size_t used = 0;
  for (int k = 0; k < n; ++k)
    if (mask >> k & 1) {
      ENGINE_CHECK(used < s.out.size(), s.name + ": outputs mask " + str(mask) + " wants " + str(__builtin_popcountll(mask)) +
                                            " outputs, got " + str(static_cast<std::int64_t>(s.out.size())));
      slots[k] = s.out[used++];
    }
  ENGINE_CHECK(used == s.out.size(), s.name + ": outputs mask " + str(mask) + " wants " + str(static_cast<std::int64_t>(used)) +
                                         " outputs, got " + str(static_cast<std::int64_t>(s.out.size())));
  return slots;
}

inline void need_input(const StepSpec& s, size_t k, const char* what, const char* for_what) {
  ENGINE_CHECK(s.in[k] >= 0, s.name + ": " + for_what + " needs " + what + " (input " + str(static_cast<std::int64_t>(k)) + ")");
}

inline float* out_ptr(void* const* sl, int k) { return k >= 0 ? slot<float>(sl, k) : nullptr; }
inline const float* in_ptr(void* const* sl, int k) { return k >= 0 ? slot<const float>(sl, k) : nullptr; }

}  // namespace gradstep
}  // namespace engine
