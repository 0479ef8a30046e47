// Pooling, avx512 build of pool_impl.h.
#define POOL_ISA avx512
#include "pool_impl.h"
