// The typed GEMM kernel, baseline (SSE2) build of convnd_gemm_impl.h.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

#include "engine/nchw.h"

#define GEMM_VB 16  // vector bytes
#define GEMM_MR 4
#define GEMM_NV 2
#define GEMM_NS gemm_typed_portable
#include "convnd_gemm_impl.h"
