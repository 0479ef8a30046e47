#include "runtime/registry.h"

#include "runtime/kernels/families.h"

namespace engine {

std::int64_t StepSpec::i(size_t k) const {
  ENGINE_CHECK(k < ints.size(), name + ": integer parameter " + std::to_string(k) + " missing");
  return ints[k];
}

double StepSpec::f(size_t k) const {
  ENGINE_CHECK(k < floats.size(), name + ": float parameter " + std::to_string(k) + " missing");
  return floats[k];
}

void StepSpec::expect(size_t n_in, size_t n_out, size_t n_ints, size_t n_floats) const {
  ENGINE_CHECK(in.size() == n_in && out.size() == n_out,
               name + ": expected " + std::to_string(n_in) + " inputs and " + std::to_string(n_out) +
                   " outputs, got " + std::to_string(in.size()) + " and " + std::to_string(out.size()));
  ENGINE_CHECK(ints.size() == n_ints && floats.size() == n_floats,
               name + ": expected " + std::to_string(n_ints) + " integer and " + std::to_string(n_floats) +
                   " float parameters, got " + std::to_string(ints.size()) + " and " +
                   std::to_string(floats.size()));
}

void KernelRegistry::add(const std::string& name, DType dtype, StepFactory factory, Isa isa) {
  ENGINE_CHECK(table_.emplace(std::make_tuple(name, static_cast<int>(dtype), static_cast<int>(isa)), factory).second,
               "kernel registered twice: " + name + " " + dtype_name(dtype) + " " + isa_name(isa));
}

StepFactory KernelRegistry::find(const std::string& name, DType dtype, Isa isa) const {
  for (DType t : {dtype, DType::Any})
    for (int i = static_cast<int>(isa); i >= 0; --i) {
      auto it = table_.find({name, static_cast<int>(t), i});
      if (it != table_.end()) return it->second;
    }
  return nullptr;
}

std::vector<std::pair<std::string, DType>> KernelRegistry::entries() const {
  std::vector<std::pair<std::string, DType>> out;
  for (const auto& kv : table_) {
    std::pair<std::string, DType> e{std::get<0>(kv.first), static_cast<DType>(std::get<1>(kv.first))};
    if (out.empty() || out.back() != e) out.push_back(e);
  }
  return out;
}

const KernelRegistry& kernel_registry() {
  static const KernelRegistry table = [] {
    KernelRegistry r;
    register_all_kernels(r);
    return r;
  }();
  return table;
}

}  // namespace engine
