// Sampling passes: the ISA dispatch (the passes themselves are in lm_sampling_passes_impl.h,
// compiled per ISA). AVX2 runs them ~3x faster than the SSE2 baseline (docs/lm-sampling.md).
#include "cpu/lm_sampling_passes.h"

#include "engine/cpu_features.h"

namespace engine::sampling {
namespace sp_portable { const Passes& passes(); }
namespace sp_avx2 { const Passes& passes(); }
namespace sp_avx512 { const Passes& passes(); }

const Passes& passes() {
  switch (cpu_isa()) {  // one relaxed atomic load (tests lower it with set_isa)
    case Isa::Avx512: return sp_avx512::passes();
    case Isa::Avx2: return sp_avx2::passes();
    default: return sp_portable::passes();
  }
}

}  // namespace engine::sampling
