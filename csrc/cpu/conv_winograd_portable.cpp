// Winograd F(4×4, 3×3) transforms, baseline (SSE2) build of conv_winograd_impl.h: used when
// the ISA was lowered after the filters were packed.
#define WINO_SUFFIX portable
#include "conv_winograd_impl.h"
