// N-d NCHW pooling rows, AVX2 build of pool_nd_impl.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "engine/nchw.h"

#define POOLND_VB 32  // vector bytes
#define POOLND_NS pool_nd_avx2
#include "pool_nd_impl.h"
