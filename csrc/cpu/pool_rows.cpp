// Pooling, baseline (SSE2) build of pool_impl.h.
#define POOL_ISA portable
#include "pool_impl.h"
