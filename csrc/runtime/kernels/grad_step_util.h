// Parameter checks shared by the backward steps (grad_*_steps.cpp).
#pragma once

#include <cmath>
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

// The step counter of seeded dropout, read at run time: int64[1], or the optimizers' float64
// hyper buffer [lr, step, grad_scale]. Absent (slot -1): step 0.
struct StepCounter {
  int at = -1;
  bool f64 = false;
  std::uint64_t read(void* const* sl) const {
    if (at < 0) return 0;
    if (!f64) return static_cast<std::uint64_t>(*slot<const std::int64_t>(sl, at));
    const double v = slot<const double>(sl, at)[1];
    ENGINE_CHECK(v >= 0 && v <= 9.0e15 && v == std::floor(v), "dropout: step must be a whole number >= 0, got " +
                                                                   std::to_string(v));
    return static_cast<std::uint64_t>(v);
  }
};

// Input k as a step counter (its type must be stated).
inline StepCounter step_counter(const StepSpec& s, size_t k) {
  StepCounter c;
  c.at = s.in[k];
  if (c.at < 0) return c;
  ENGINE_CHECK(s.in_types.size() == s.in.size(), s.name + ": input types are required (one per input)");
  const DType t = s.in_types[k];
  ENGINE_CHECK(t == DType::I64 || t == DType::F64,
               s.name + ": the counter must be int64[1] or the float64 hyper buffer, got " + dtype_name(t));
  c.f64 = t == DType::F64;
  return c;
}

inline float* out_ptr(void* const* sl, int k) { return k >= 0 ? slot<float>(sl, k) : nullptr; }
inline const float* in_ptr(void* const* sl, int k) { return k >= 0 ? slot<const float>(sl, k) : nullptr; }

}  // namespace gradstep
}  // namespace engine
