// The typed GEMM kernel, AVX2 build of convnd_gemm_impl.h.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

#include "engine/nchw.h"

#define GEMM_VB 32  // vector bytes
#define GEMM_MR 6  // 12 accumulators of 16 registers
#define GEMM_NV 2
#define GEMM_NS gemm_typed_avx2
#include "convnd_gemm_impl.h"
