// Sampling passes compiled for avx2 (8-float vectors); see lm_sampling_passes_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/lm_sampling_passes.h"

namespace engine::sampling::sp_avx2 {
#define EW_W 8
#include "cpu/lm_sampling_passes_impl.h"
#undef EW_W
}  // namespace engine::sampling::sp_avx2
