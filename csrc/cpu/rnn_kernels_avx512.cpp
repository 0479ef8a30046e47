// Recurrent kernels compiled for avx512 (16 floats per vector, 6×4-vector tiles); see rnn_kernels_impl.h.
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
namespace avx512 {
#define EW_W 16
#define RNN_MR 6
#define RNN_NV 4
#define RNN_LANES 4
#include "cpu/rnn_kernels_impl.h"
#undef RNN_LANES
#undef RNN_NV
#undef RNN_MR
#undef EW_W
}  // namespace avx512

const Kernels& kernels_avx512() { return avx512::kKernelSet; }

}  // namespace rnnk
}  // namespace engine
