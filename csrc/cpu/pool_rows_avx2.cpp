// Pooling, avx2 build of pool_impl.h.
#define POOL_ISA avx2
#include "pool_impl.h"
