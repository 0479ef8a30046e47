// The kernel dispatch table: (kernel name, element type) -> a step factory, filled once at
// start-up by every kernel family (csrc/runtime/kernels/*.cpp). The planner asks for a
// kernel by name and type with its slots and parameters; the factory checks every parameter
// then (a bad one is a KernelError at plan time, never a crash at run time) and returns the
// step: a closure over typed, decoded parameters that the executor calls with the slot
// table. Per-ISA variants are chosen inside the kernels (cpu_isa(), a relaxed load).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/common.h"
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
  void add(const std::string& name, DType dtype, StepFactory factory);
  template <class... T>
  void add_each(const std::string& name, StepFactory factory, T... dtypes) {
    (add(name, dtypes, factory), ...);
  }
  // The factory for (name, dtype), falling back to (name, Any); null if neither exists.
  StepFactory find(const std::string& name, DType dtype) const;
  std::vector<std::pair<std::string, DType>> entries() const;

 private:
  std::map<std::pair<std::string, int>, StepFactory> table_;
};

const KernelRegistry& kernel_registry();

template <class T>
inline T* slot(void* const* s, int i) {
  return static_cast<T*>(s[i]);
}

}  // namespace engine
