#include "engine/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace engine {
namespace {

Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
#endif
  return Isa::Portable;
}

Isa from_env(Isa detected) {
  const char* v = std::getenv("ENGINE_ISA");
  if (!v || !*v) return detected;
  Isa want = detected;
  if (!std::strcmp(v, "portable")) want = Isa::Portable;
  else if (!std::strcmp(v, "avx2")) want = Isa::Avx2;
  else if (!std::strcmp(v, "avx512")) want = Isa::Avx512;
  return want < detected ? want : detected;
}

std::atomic<int>& current() {
  static std::atomic<int> isa{static_cast<int>(from_env(detected_isa()))};
  return isa;
}

}  // namespace

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa cpu_isa() { return static_cast<Isa>(current().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  Isa d = detected_isa();
  current().store(static_cast<int>(isa < d ? isa : d));
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace engine
