// Recurrent kernels compiled for avx2 (8 floats per vector, 3×3-vector tiles); see rnn_kernels_impl.h.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/rnn_kernels.h"

namespace engine {
namespace rnnk {
namespace avx2 {
#define EW_W 8
#define RNN_MR 3
#define RNN_NV 3
#define RNN_LANES 2
#include "cpu/rnn_kernels_impl.h"
#undef RNN_LANES
#undef RNN_NV
#undef RNN_MR
#undef EW_W
}  // namespace avx2

const Kernels& kernels_avx2() { return avx2::kKernelSet; }

}  // namespace rnnk
}  // namespace engine
