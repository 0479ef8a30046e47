// The typed GEMM kernel, AVX-512 build of convnd_gemm_impl.h.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

#include "engine/nchw.h"

#define GEMM_VB 64  // vector bytes
#define GEMM_MR 6  // 24 accumulators of 32 registers
#define GEMM_NV 4
#define GEMM_NS gemm_typed_avx512
#include "convnd_gemm_impl.h"
