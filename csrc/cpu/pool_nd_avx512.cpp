// N-d NCHW pooling rows, AVX-512 build of pool_nd_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "engine/nchw.h"

#define POOLND_VB 64  // vector bytes
#define POOLND_NS pool_nd_avx512
#include "pool_nd_impl.h"
