// The kernel dispatch table: (kernel name, element type, ISA) -> a step factory, filled once
// at start-up by every kernel family (csrc/runtime/kernels/*.cpp). The planner asks for a
// kernel by name and type with its slots and parameters; the table picks the entry for the
// best ISA the CPU (capped by set_isa) has, falling back to lower ones and to an ISA-neutral
// entry; the factory checks every parameter (a bad one is a KernelError at plan time, never a
// crash at run time) and returns the step: a closure over typed, decoded parameters that the
// executor calls with the slot table. Families that compile one entry for every ISA choose
// their per-ISA loops inside (cpu_isa(), a relaxed load); either way the ISA of a plan is the
// one in force when it was made.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/common.h"
#include "engine/cpu_features.h"
#include "engine/dtype.h"

namespace engine {

// What the planner asks for. Slots index the program's slot table; -1 marks an absent
// optional input. The meaning of ints/floats is documented by each kernel's factory.
struct StepSpec {
  std::string name;
  DType dtype = DType::Any;
  std::vector<int> in, out;
  std::vector<DType> in_types, out_types;
  std::vector<std::int64_t> ints;
  std::vector<double> floats;
  std::shared_ptr<const KernelState> state;

  // Checked accessors: the factory names what is missing.
  std::int64_t i(size_t k) const;
  double f(size_t k) const;
  void expect(size_t n_in, size_t n_out, size_t n_ints, size_t n_floats = 0) const;
  template <class S>
  std::shared_ptr<const S> state_as() const {
    auto s = std::dynamic_pointer_cast<const S>(state);
    ENGINE_CHECK(s != nullptr, name + ": missing or wrong kernel state");
    return s;
  }
};

using StepFn = std::function<void(void* const* slots)>;
using StepFactory = StepFn (*)(const StepSpec&);

class KernelRegistry {
 public:
  // isa: the lowest ISA the factory's code needs (Portable = none: the ISA-neutral entry).
  void add(const std::string& name, DType dtype, StepFactory factory, Isa isa = Isa::Portable);
  template <class... T>
  void add_each(const std::string& name, StepFactory factory, T... dtypes) {
    (add(name, dtypes, factory), ...);
  }
  // The factory for (name, dtype) at the best ISA <= `isa`, falling back to (name, Any); null
  // if there is none.
  StepFactory find(const std::string& name, DType dtype, Isa isa) const;
  std::vector<std::pair<std::string, DType>> entries() const;

 private:
  std::map<std::tuple<std::string, int, int>, StepFactory> table_;
};

const KernelRegistry& kernel_registry();

template <class T>
inline T* slot(void* const* s, int i) {
  return static_cast<T*>(s[i]);
}

}  // namespace engine
